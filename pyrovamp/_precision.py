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
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["full_precision", "autocast_off"]

_LOW = (torch.bfloat16, torch.float16)


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` as float32 when autocast made it bfloat16 or float16 (autocast on for its device
    type); otherwise ``t`` itself -- a model whose parameters are bfloat16 by choice stays so."""
    if t.dtype in _LOW and torch.is_autocast_enabled(t.device.type):
        return t.float()
    return t


@contextlib.contextmanager
def autocast_off(*tensors: torch.Tensor) -> Iterator[None]:
    """Autocast off, for the device types of ``tensors`` where it is on (a log-density computed
    in float32 from float32 inputs: cast them with :func:`full_precision` first)."""
    with contextlib.ExitStack() as stack:
        for device_type in {t.device.type for t in tensors}:
            if torch.is_autocast_enabled(device_type):
                stack.enter_context(torch.autocast(device_type, enabled=False))
        yield
