"""Mixed precision: the networks in bfloat16/float16 under autocast, the densities in float32.

Under autocast (``precision="bf16-mixed"``, Lightning's mixed precision, ``torch.autocast``) a
network's outputs are bfloat16. A log-density computed from them in bfloat16 sums hundreds of
terms into a number of a few thousand nats (the Bernoulli likelihood of 784 pixels), whose
rounding step in bfloat16 is 16 to 32 nats: the ELBO's gradient survives that (it is taken term
by term), but importance weights, the IWAE bound and every validation bound do not. So the
distributions' parameters are cast back to float32 where they leave a network
(:func:`full_precision`), and the log-densities that use matrix products (which autocast would
round to bfloat16 again: the Bernoulli's ``x . h``, a Gaussian mixture's quadratic forms) run
with autocast off (:func:`autocast_off`), as autocast itself runs its loss functions in float32.
A flow prior's density is its networks (the log-determinant sums their outputs), so it runs with
autocast off as a whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["full_precision", "autocast_off"]

_LOW = (torch.bfloat16, torch.float16)


def _autocast_on(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (``False`` for a device type that has none,
    e.g. ``meta``, where ``torch.is_autocast_enabled`` would raise)."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` as float32 when autocast made it bfloat16 or float16 (autocast on for its device
    type); otherwise ``t`` itself -- a model whose parameters are bfloat16 by choice stays so."""
    if t.dtype in _LOW and _autocast_on(t.device.type):
        return t.float()
    return t


@contextlib.contextmanager
def autocast_off(*where: torch.Tensor | torch.device | str) -> Iterator[None]:
    """Autocast off, for the device types of ``where`` (tensors, devices or device types) where
    it is on (a log-density computed in float32 from float32 inputs: cast them with
    :func:`full_precision` first)."""
    types = {w.device.type if isinstance(w, torch.Tensor) else torch.device(w).type for w in where}
    with contextlib.ExitStack() as stack:
        for device_type in types:
            if _autocast_on(device_type):
                stack.enter_context(torch.autocast(device_type, enabled=False))
        yield
