"""Your own networks in pyrovamp's models: the contract they meet, and the adapters that fit them
to the models' batches.

A network a user writes sees one batch dimension: an encoder maps ``(N, *input_shape)`` data to
the Gaussian's ``(loc, scale)``, each ``(N, L)``; a decoder maps ``(N, L)`` latent draws to the
likelihood's parameters, ``N`` rows of ``D * params_per_dim`` values in any shape
(``(N, *input_shape)`` Bernoulli logits, ``(N, *input_shape, K)`` categorical logits, ``(N, 2,
*input_shape)`` discretised-logistic locations then log-scales -- flattened row by row, these are
the layouts of :mod:`pyrovamp.distributions`). The models call their networks with any leading
shape (importance sampling passes ``(S, N, ...)``), so :class:`BatchedNetwork` flattens the
leading dimensions into one, calls the network and gives the results their leading shape back.
It also scales the data to ``[0, 1]`` (the likelihood's ``normalize``) before an encoder sees
them, as the built-in encoders do.

:class:`Network` is the base class that makes a network saveable: it records the arguments it
was built with, so :meth:`~pyrovamp.models.VAE.save_pretrained` can write them to
``config.json`` and :func:`~pyrovamp.from_pretrained` can build it again (from an importable
module, not a notebook's ``__main__``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from pyrovamp._rebuild import Rebuildable
from pyrovamp.errors import ArgumentTypeError
from pyrovamp.nn.layers import eval_mode

__all__ = ["Network", "BatchedNetwork", "flatten_event", "check_network"]


class Network(nn.Module, Rebuildable):
    """Base class for a network of your own that pyrovamp can save and rebuild: derive from it
    instead of ``torch.nn.Module`` and write ``__init__`` and ``forward`` as usual. Every
    instance records the arguments of its constructor (numbers, strings, tuples, lists, dicts,
    other ``Network`` instances), which ``save_pretrained`` stores in ``config.json``.

    A class defined in a notebook or script (``__main__``) or inside a function cannot be
    imported by another process: ``save_pretrained`` refuses it, naming the class; define it in
    a module (``mynets.py``) and import it before ``from_pretrained``.
    """

    def __init__(self):  # recorded (no arguments) for a subclass without an __init__ of its own
        super().__init__()


def _shape_text(shape: Sequence[int]) -> str:
    return ", ".join(str(s) for s in shape)


def flatten_event(x: torch.Tensor, shape: Sequence[int], name: str = "x") -> tuple:
    """``(lead, x)`` with ``x`` reshaped to ``(*lead, prod(shape))``, for ``x`` of shape
    ``(*lead, *shape)`` or ``(*lead, prod(shape))`` (the shaped reading first).

    Raises:
        ValueError: ``x``'s trailing dimensions are neither ``shape`` nor ``prod(shape)``.
    """
    shape = tuple(shape)
    d, k = math.prod(shape), len(shape)
    if k > 1 and x.dim() >= k and tuple(x.shape[x.dim() - k :]) == shape:
        lead = tuple(x.shape[: x.dim() - k])
    elif x.dim() >= 1 and x.shape[-1] == d:
        lead = tuple(x.shape[:-1])
    else:
        raise ValueError(
            f"{name} must have shape (..., {_shape_text(shape)}) or (..., {d}), "
            f"got {tuple(x.shape)}"
        )
    return lead, x.reshape(*lead, d)


class BatchedNetwork(nn.Module):
    """A user's network with one batch dimension, called with any leading shape.

    ``forward(*inputs)``: input ``i`` of shape ``(*lead_i, *in_shapes[i])`` (or flat
    ``(*lead_i, prod(in_shapes[i]))``); the leading shapes broadcast to ``lead``, which is
    flattened into ``N``; the network gets ``(N, *in_shapes[i])`` tensors (the first scaled by
    ``normalize`` when given). A Gaussian network (``out_dim=None``) returns ``(loc, scale)``,
    each ``(N, L)``, given back as ``(*lead, L)``; another returns ``N`` rows of ``out_dim``
    values in any shape, given back as ``(*lead, out_dim)``.

    The parameters are the network's own, under ``net.`` (``model.encoder.net`` is the
    user's module).

    Args:
        net: the user's ``nn.Module``.
        in_shapes: the shape of one point of each input, e.g. ``[(1, 16, 16)]`` for an encoder.
        out_dim: values per row of a non-Gaussian output (``D * params_per_dim``), or ``None``.
        latent_dim: ``L`` of a Gaussian output (the prior's size for the encoder).
        normalize: callable scaling the first input to ``[0, 1]`` (the likelihood's), or None.

    Raises:
        ValueError: (in ``forward``) an input whose trailing shape is neither its point shape
            nor flat, or an output whose first dimension is not the batch's ``N`` (a stacked or
            transposed layout: refused, never reshaped into other points' rows).

    Memory: inputs with different leading shapes (``q(z1|x, z2)`` with ``x`` of ``(N, ...)``
    and ``z2`` of ``(S, N, L2)``) are expanded to one batch, so ``x`` is copied ``S`` times
    (the built-in networks compute ``x``'s branch once instead).
    """

    def __init__(
        self,
        net: nn.Module,
        in_shapes: Sequence[Sequence[int]],
        out_dim: int | None = None,
        latent_dim: int | None = None,
        normalize=None,
    ):
        super().__init__()
        self.net = net
        self.in_shapes = [tuple(int(s) for s in shape) for shape in in_shapes]
        self.out_dim = out_dim
        if latent_dim is not None:
            self.latent_dim = latent_dim
        self._normalize = normalize

    def forward(self, *inputs):
        flat = [flatten_event(x, s, "input") for x, s in zip(inputs, self.in_shapes, strict=True)]
        lead = torch.broadcast_shapes(*(torch.Size(lead) for lead, _ in flat))
        n = math.prod(lead)
        xs = []
        for i, ((_, x), shape) in enumerate(zip(flat, self.in_shapes, strict=True)):
            x = x.expand(*lead, x.shape[-1]).reshape(n, *shape)
            if i == 0 and self._normalize is not None:
                x = self._normalize(x)
            xs.append(x)
        out = self.net(*xs)
        if self.out_dim is None:
            loc, scale = out
            if loc.shape[0] != n or scale.shape[0] != n:
                raise ValueError(
                    f"{type(self.net).__name__} returned (loc, scale) of shapes "
                    f"{tuple(loc.shape)} and {tuple(scale.shape)} for a batch of {n}: "
                    "expected (N, L) each"
                )
            return loc.reshape(*lead, loc.shape[-1]), scale.reshape(*lead, scale.shape[-1])
        if out.shape[0] != n:  # rows of other points mixed in: refuse, do not reshape them
            raise ValueError(
                f"{type(self.net).__name__} returned a tensor of shape {tuple(out.shape)} for a "
                f"batch of {n}: expected {n} rows of {self.out_dim} values"
            )
        return out.reshape(*lead, self.out_dim)

    def extra_repr(self) -> str:
        return f"in_shapes={self.in_shapes}, out_dim={self.out_dim}"


def _described(out) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, (tuple, list)):
        inner = ", ".join(
            _described(o) if isinstance(o, torch.Tensor) else type(o).__name__ for o in out
        )
        return f"a {type(out).__name__} of {len(out)} ({inner})"
    return f"a {type(out).__name__}"


def _float_tensor(obj):
    """The first floating parameter or buffer of ``obj`` (the dtype and device of a model or
    network), or None -- also for an object without ``parameters()``."""
    params = obj.parameters() if hasattr(obj, "parameters") else ()
    buffers = obj.buffers() if hasattr(obj, "buffers") else ()
    for t in itertools.chain(params, buffers):
        if torch.is_tensor(t) and t.is_floating_point():
            return t
    return None


def check_network(
    name: str,
    net: nn.Module,
    in_shapes: Sequence[Sequence[int]],
    *,
    out_dim: int | None = None,
    latent_dim: int | None = None,
    role: str = "",
) -> None:
    """Check a user's network against its contract by one forward pass on a batch of three zero
    points (three: not a size a point's shape is likely to have, so a transposed or stacked
    output shows), before any training: in evaluation mode (batch norm's running statistics
    are not touched), without gradients, the caller's random streams left alone.

    Args:
        name: the argument's name in the error (``"encoder"``).
        net: the network.
        in_shapes: shape of one point of each input.
        out_dim: values per row of the output (``D * params_per_dim``), or None for a Gaussian
            network returning ``(loc, scale)`` each ``(N, latent_dim)``.
        latent_dim: ``L`` of a Gaussian network.
        role: a few words saying what the output is (``"the likelihood's parameters"``).

    Raises:
        ArgumentTypeError: ``net`` is not an ``nn.Module``.
        ValueError: the network fails on the contract's input, returns another shape or a
            scale that is not positive -- one line naming ``name``, the shape it was given and
            what it returned.
    """
    if not isinstance(net, nn.Module):
        raise ArgumentTypeError(f"{name} must be a torch.nn.Module, got {type(net).__name__}")
    ref = _float_tensor(net)
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    device = ref.device if ref is not None else torch.device("cpu")
    given = " and ".join(f"(N, {_shape_text(s)})" for s in in_shapes)
    if out_dim is None:
        wanted = f"(loc, scale), each of shape (N, {latent_dim})"
    else:
        wanted = f"N rows of {out_dim} values{' (' + role + ')' if role else ''}"
    n = 3
    inputs = [torch.zeros(n, *s, dtype=dtype, device=device) for s in in_shapes]
    devices = [device] if device.type == "cuda" else []
    with torch.no_grad(), eval_mode(net), torch.random.fork_rng(devices=devices):
        try:
            out = net(*inputs)
        except Exception as e:  # the network's own error, on the contract's input
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(
                f"{name} must map {given} to {wanted}; called on a batch of {n} it raised "
                f"{type(e).__name__}: {first}"
            ) from e
    if out_dim is None:
        ok = (
            isinstance(out, (tuple, list))
            and len(out) == 2
            and all(isinstance(o, torch.Tensor) and tuple(o.shape) == (n, latent_dim) for o in out)
        )
    else:
        ok = (
            isinstance(out, torch.Tensor)
            and out.dim() >= 1
            and out.shape[0] == n
            and (out[0].numel() == out_dim)
        )
    if not ok:
        raise ValueError(
            f"{name} must map {given} to {wanted}; for a batch of {n} it returned {_described(out)}"
        )
    if out_dim is None and not bool((out[1] > 0).all()):
        raise ValueError(
            f"{name} must return a positive scale (the standard deviation) as the second of "
            f"(loc, scale); at zero inputs it returned {float(out[1].min()):.4g}"
        )
