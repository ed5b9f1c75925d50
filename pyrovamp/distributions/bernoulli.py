"""The Bernoulli likelihood of binary images (VampPrior paper, sec. 4), with a fast softplus."""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pyrovamp._blocks import block_rows, exp_floor
from pyrovamp._precision import autocast_off, full_precision
from pyrovamp.distributions.base import Likelihood

__all__ = ["BernoulliLikelihood", "softplus"]


def _softplus_values(h: torch.Tensor) -> torch.Tensor:
    t = h.abs().neg_().exp_().add_(1).log_()
    return t.add_(h.clamp(min=0))


class _Softplus(torch.autograd.Function):
    """:func:`softplus` with the gradient ``sigmoid(h)`` (only ``h`` is saved for backward)."""

    @staticmethod
    def forward(ctx, h):
        ctx.save_for_backward(h)
        return _softplus_values(h)

    @staticmethod
    def backward(ctx, grad):
        (h,) = ctx.saved_tensors
        return grad * torch.sigmoid(h)


def softplus(h: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(h))`` elementwise (any shape), computed as ``max(h, 0) + log(1 + exp(-|h|))``.

    The same function as :func:`torch.nn.functional.softplus` (threshold off), as accurate in
    float32 (``log(1 + u)`` for ``u = exp(-|h|)`` in ``(0, 1]`` loses at most half an ulp of 1,
    6e-8, per element -- the size of float32 rounding in the sum over pixels), but about five
    times faster on CPUs, where ``torch.log1p`` and ``softplus`` are not vectorised (the
    Bernoulli log-likelihood of importance sampling is dominated by it). It allocates one
    temporary; its gradient is ``sigmoid(h)`` (first derivatives only: the ELBO's gradients and
    HMC need no more).
    """
    if torch.is_grad_enabled() and h.requires_grad:
        return _Softplus.apply(h)
    return _softplus_values(h)


class _Bernoulli(dist.Bernoulli):
    """``Bernoulli(logits)`` whose ``log_prob`` is ``x * logits - softplus(logits)`` (the fast
    :func:`softplus`): the same values as ``binary_cross_entropy_with_logits``, without
    materialising the broadcast target
    (importance sampling evaluates ``S`` decoder outputs against one data point)."""

    def log_prob(self, value):
        return value * self.logits - softplus(self.logits)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(_Bernoulli, _instance)
        return super().expand(batch_shape, _instance=new)


def _dot_last(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(h * x).sum(-1)`` with broadcasting. When ``x`` is a ``(N, D)`` batch and ``h`` a stack
    ``(..., N, D)`` of decoder outputs per data point, it is one matrix-vector product per data
    point when there are more than ``N`` outputs per point (importance sampling's draws), else
    one batched product ``(N, B, D) @ (N, D, 1)`` on a strided view of ``h`` (AIS's chains),
    without the ``(..., N, D)`` product tensor; a ``(D,)`` ``x`` is one matrix-vector product."""
    if h.dim() > 2 and h.is_contiguous() and h.shape[-1] == x.shape[-1]:
        if x.dim() == 2 and h.shape[-2] == x.shape[0]:
            n, d = x.shape
            stack = h.reshape(-1, n, d)
            x = x.to(h.dtype)
            if stack.shape[0] > n:  # many draws per point (importance sampling): one mv each
                per_point = [torch.mv(stack[:, j], x[j]) for j in range(n)]
                return torch.stack(per_point, -1).reshape(h.shape[:-1])
            # few per point (AIS's chains): (N, B, D) @ (N, D, 1) on a strided view
            dots = torch.bmm(stack.transpose(0, 1), x.unsqueeze(-1))
            return dots.squeeze(-1).t().reshape(h.shape[:-1])
        if x.dim() == 1:
            return torch.mv(h.reshape(-1, x.shape[0]), x.to(h.dtype)).reshape(h.shape[:-1])
    return (h * x).sum(-1)


def bernoulli_log_prob(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sum_d log Bern(x_d | sigmoid(h_d))`` over the last dim, in nats, without autograd.

    ``h``: ``(..., D)`` logits; ``x``: ``(D,)``, ``(N, D)`` or ``h``'s shape, values in {0, 1};
    returns ``h.shape[:-1]``. It uses

        x.h - sum_d softplus(h_d) = (x - 1/2).h - 1/2 sum_d |h_d| - sum_d log(1 + exp(-|h_d|))

    (``softplus(h) = max(h, 0) + log(1 + exp(-|h|))`` and ``max(h, 0) = (h + |h|) / 2``): the
    first term is one matrix-vector product per data point (:func:`_dot_last`), the other two
    are computed on CPUs in row blocks (:func:`pyrovamp._blocks.block_rows`) in one reused buffer,
    so that importance sampling's ``(S, N, D)`` logits are read from memory once and the five
    elementwise passes run in cache, with no per-pixel temporary of the whole stack (which costs
    page faults as well as memory traffic). On other devices one block. ``exp`` never returns a
    subnormal number (:func:`pyrovamp._blocks.exp_floor`: a logit beyond about 86 in float32
    would otherwise slow the pass a hundredfold, with the same result). Accuracy: float32
    rounding of sums over ``D`` terms, as the direct formula.

    Raises:
        RuntimeError: ``x`` does not broadcast with ``h``.
    """
    d = h.shape[-1]
    flat = h.reshape(-1, d)
    rows = flat.shape[0]
    step = block_rows(rows, d, h.device)
    buf = torch.empty((step, d), dtype=h.dtype, device=h.device)
    floor = exp_floor(h.dtype)  # no subnormal exp (see exp_floor): the same value, faster
    out = torch.empty(rows, dtype=h.dtype, device=h.device)
    for r in range(0, rows, step):
        block = flat[r : r + step]
        b = buf[: block.shape[0]]
        torch.abs(block, out=b)
        half_abs = b.sum(-1).mul_(0.5)
        b.neg_().clamp_(min=floor).exp_().add_(1.0).log_()  # log(1 + u), u in (0, 1]
        torch.add(b.sum(-1), half_abs, out=out[r : r + block.shape[0]])
    return _dot_last(h, x.to(h.dtype) - 0.5) - out.reshape(h.shape[:-1])


class _BernoulliLogProb(torch.autograd.Function):
    """:func:`bernoulli_log_prob` differentiable in the logits: the gradient
    ``(x - sigmoid(h)) * grad`` by hand (one pass), no autograd graph of the forward's passes."""

    @staticmethod
    def forward(ctx, h, x):
        ctx.save_for_backward(h, x)
        return bernoulli_log_prob(h.detach(), x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        h, x = ctx.saved_tensors
        return _bernoulli_grad(h, x.to(h.dtype), grad), None


def _bernoulli_grad(h: torch.Tensor, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``(x - sigmoid(h)) * grad[..., None]``, ``h``'s shape (``x`` broadcasts to it, ``grad``
    to ``h.shape[:-1]``), made block by block of rows in the cache
    (:func:`pyrovamp._blocks.block_rows`); the product is skipped when ``grad`` is a broadcast
    1 (the gradient of a ``.sum()``). The same values as the direct formula, but that ``h`` is
    clamped from below at :func:`pyrovamp._blocks.exp_floor` (-86.3 in float32): a trained
    decoder's logits of background pixels lie far below it, and their ``sigmoid``, a subnormal
    number, costs a CPU a hundred times a normal one (the gradient changes by less than 1e-37).
    """
    d = h.shape[-1]
    n = h.shape[-2] if h.dim() > 1 else 1
    h3 = h.reshape(-1, n, d)
    # a view where x's broadcast dims lead (AIS's chains, IS's draws); else a copy
    x3 = x.expand(h.shape).reshape(-1, n, d)
    g3 = grad.expand(h.shape[:-1]).reshape(-1, n, 1)
    scaled = not (grad.device.type == "cpu" and _all_ones(grad))
    floor = exp_floor(h.dtype)
    out = torch.empty_like(h3)
    rows = block_rows(h3.shape[0] * n, d, h.device)
    per_block, within = (max(1, rows // n), n) if rows >= n else (1, rows)
    for i in range(0, h3.shape[0], per_block):
        for r in range(0, n, within):
            index = (slice(i, i + per_block), slice(r, r + within))
            b = out[index]
            torch.clamp(h3[index], min=floor, out=b)  # no subnormal sigmoid (see exp_floor)
            torch.sub(x3[index], b.sigmoid_(), out=b)
            if scaled:
                b.mul_(g3[index])
    return out.reshape(h.shape)


def _all_ones(t: torch.Tensor) -> bool:
    """Whether ``t`` is one number broadcast (all strides zero, the gradient of a ``.sum()``)
    equal to 1."""
    return t.numel() > 0 and all(st == 0 for st in t.stride()) and float(t[(0,) * t.dim()]) == 1.0


class _IndependentBernoulli(dist.Independent):
    """``_Bernoulli(logits).to_event(1)`` whose ``log_prob`` sums over the event without the
    per-pixel tensor: :func:`bernoulli_log_prob` (by hand in its gradient in the logits).
    Values equal ``Bernoulli(logits=h).to_event(1).log_prob(x)``."""

    def log_prob(self, value):
        logits = self.base_dist.logits
        with autocast_off(logits):  # x . h in float32 (see pyrovamp._precision)
            if torch.is_grad_enabled() and logits.requires_grad:
                if value.requires_grad or torch.broadcast_shapes(logits.shape, value.shape) != (
                    logits.shape
                ):  # a gradient in the data, or data broadcasting the logits: autograd's formula
                    return _dot_last(logits, value) - softplus(logits).sum(-1)
                return _BernoulliLogProb.apply(logits, value)
            return bernoulli_log_prob(logits, value)


class BernoulliLikelihood(Likelihood):
    """Bernoulli likelihood for binary data: ``p(x|z) = prod_d Bern(x_d | sigmoid(h_d))``.

    The decoder output ``h`` (shape ``(..., D)``) holds logits. Support: ``{0, 1}``.
    """

    name = "bernoulli"

    def __call__(self, h):
        h = full_precision(h)
        return _IndependentBernoulli(
            _Bernoulli(logits=h, validate_args=False), 1, validate_args=False
        )

    def mean(self, h):
        return torch.sigmoid(h)

    def check_support(self, x, name="x"):
        if not bool(((x == 0) | (x == 1)).all()):
            bad = x[(x != 0) & (x != 1)].flatten()[:3].tolist()
            raise ValueError(
                f"{name} must be binary (0 or 1) for the Bernoulli likelihood; found values such "
                f"as {bad}. Binarise the data or choose another likelihood."
            )
