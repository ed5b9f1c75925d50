"""What every estimator shares: the data converted to the model's dtype and device, the check of a
model/guide pair and the evaluation setting (eval mode, priors cached, seeded random streams)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from pyrovamp._random import fork_rng, seed_forked
from pyrovamp._validate import check_type
from pyrovamp.errors import ArgumentTypeError
from pyrovamp.models import check_data
from pyrovamp.models.vae import _float_tensor
from pyrovamp.nn import eval_mode
from pyrovamp.priors import Prior
from pyrovamp.registration import paused

__all__ = ["as_model_data", "check_model", "evaluation_context"]


def as_model_data(model: Any, x: Any, name: str = "x") -> torch.Tensor:
    """``x`` as a tensor of the model's floating dtype on its device, checked by
    :func:`pyrovamp.check_data` when the model has ``input_dim`` and ``likelihood`` (pyrovamp's
    models). For a model without parameters or buffers (functions over networks of their own),
    numpy arrays and integer tensors become torch's default dtype and floating tensors keep
    theirs: give such a model data of its networks' dtype.

    Args:
        model: the object whose ``model(x)`` / ``guide(x)`` will score ``x``.
        x: ``(N, ...)`` data, a tensor or numpy array of any real dtype.
        name: the argument's name in error messages.

    Returns:
        ``(N, ...)`` floating tensor.

    Raises:
        ArgumentTypeError: not a tensor or array, or a ``model`` without ``model``/``guide``
            methods (a ``TypeError``, also a ``ValueError``).
        ValueError: empty, complex, NaN/inf, wrong shape or support.
    """
    check_model(model)
    ref = _float_tensor(model)
    dtype = None if ref is None else ref.dtype
    device = None if ref is None else ref.device
    if hasattr(model, "input_dim") and hasattr(model, "likelihood"):
        return check_data(x, model.input_dim, model.likelihood, name, dtype=dtype, device=device)
    from_numpy = isinstance(x, np.ndarray)
    if from_numpy:
        x = torch.from_numpy(x)
    check_type(name, x, torch.Tensor, "a torch.Tensor or numpy array of shape (N, ...)")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(
            f"{name} must hold at least one data point along dim 0, got shape {tuple(x.shape)}"
        )
    if x.is_complex():
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or infinite values")
    if dtype is None:  # a model without tensors: keep a floating tensor's dtype
        keep = x.is_floating_point() and not from_numpy
        dtype = x.dtype if keep else torch.get_default_dtype()
    return x.to(device=device if device is not None else x.device, dtype=dtype)


def check_model(model: Any, name: str = "model") -> None:
    """Raise :class:`~pyrovamp.errors.ArgumentTypeError` (a ``TypeError`` and ``ValueError``)
    unless ``model`` has callable ``model`` and ``guide`` methods."""
    if not (callable(getattr(model, "model", None)) and callable(getattr(model, "guide", None))):
        raise ArgumentTypeError(
            f"{name} must have Pyro model(x) and guide(x) methods, got {type(model).__name__}"
        )


@contextlib.contextmanager
def evaluation_context(
    model: Any, seed: int | None = None, no_grad: bool = False
) -> Iterator[None]:
    """The setting of every estimator (IS, AIS, exact, guide refinement): eval mode (batch norm on
    its running statistics, no dropout), priors cached (their components computed once, outside
    any autograd graph), no parameter statements (:func:`pyrovamp.registration.paused`: nothing is
    trained); with ``seed`` the random streams of the CPU and every CUDA device are forked and
    seeded, so the caller's are left as they were; with ``no_grad`` no graph at all (AIS needs one
    for its HMC gradients in ``z``)."""
    with contextlib.ExitStack() as stack:
        if no_grad:
            stack.enter_context(torch.no_grad())
        stack.enter_context(paused())
        if seed is not None:
            stack.enter_context(fork_rng())
            seed_forked(seed)
        if isinstance(model, torch.nn.Module):
            stack.enter_context(eval_mode(model))  # each submodule's own mode comes back
            for m in model.modules():
                if isinstance(m, Prior):
                    stack.enter_context(m.cached())
                    with torch.no_grad():
                        m()  # the cached distribution, once, outside any autograd graph
        yield
