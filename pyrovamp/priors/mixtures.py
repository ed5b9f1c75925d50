"""Mixture-of-Gaussians priors over whole latent vectors: the mixture distribution
(:class:`DiagonalGaussianMixture`), the MoG prior (book eq. 4.47) and the GTM prior
(eqs. 4.50-4.52)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from pyro.util import ignore_jit_warnings
from torch import nn

from pyrovamp._blocks import block_rows, exp_floor
from pyrovamp._precision import autocast_off, full_precision
from pyrovamp._validate import check_int, check_positive
from pyrovamp.nn import MLP
from pyrovamp.priors.base import REAL_VECTOR, Prior, check_latent, mixing_logits

__all__ = ["DiagonalGaussianMixture", "MoGPrior", "GTMPrior", "grid_points"]

_LOG_2PI = math.log(2 * math.pi)


_FLOAT32_TOLERANCE = 1e-3
"""Nats: the largest bound (:func:`_expansion_error`) on the rounding error of a component
log-density computed in float32 for which evaluation keeps float32 (else float64)."""


def _expansion_error(vc, m, prec) -> float:
    """A bound, in nats, on the rounding error of the component log-densities of values ``vc``
    ``(1, P, L)`` (centred) against components ``m`` ``(1, K, L)`` (centred alike) of precisions
    ``prec`` ``(K, L)`` by the expansion ``-prec/2 (|z'|^2 - 2 z'.m' + |m'|^2)`` in ``vc``'s
    dtype: its unit roundoff times ``sum_l max_k prec_kl (max_p z'_pl^2 + max_k m'_kl^2)``, the
    size of the terms that cancel (Higham 2002, "Accuracy and Stability of Numerical
    Algorithms", sec. 3.1). On the zoo's static-MNIST VampPriors with AIS's chains it is 3e-4,
    the largest error measured against float64 3e-5."""
    eps = torch.finfo(vc.dtype).eps / 2
    # a NaN value scores NaN whatever the dtype: it must not hide the others' bound (an infinite
    # or overflowing one keeps it infinite: float64)
    size = vc.detach().pow(2).nan_to_num(nan=0.0, posinf=math.inf)
    spread = size.amax(dim=(0, 1)) + m.detach().pow(2).amax(dim=(0, 1))
    return float(eps * (prec.detach().amax(0) * spread).sum())


def _centred(value, loc, scale, dtype, grouped: bool):
    """``(vc, m, prec)`` of :meth:`DiagonalGaussianMixture._grouped_terms` in ``dtype``: the values
    ``(G, P, L)`` and the means ``(G, K, L)`` minus the values' mean per group, the precisions
    ``(K, L)``."""
    L = loc.shape[-1]
    v = value.to(dtype)
    v = v.reshape(-1, v.shape[-2], L) if grouped else v.reshape(-1, 1, L)  # P x G x L
    center = v.mean(0)  # G x L
    # a value far from the others (or infinite, or NaN) must not take their centre with it: the
    # centre is kept inside the box of the components' means (their mean where it is not
    # finite), where a value near a component is also near the centre -- no host
    # synchronisation, and a centre already inside the box is kept bit for bit
    means = loc.detach().to(dtype)
    center = torch.where(center.isfinite(), center, means.mean(0))
    center = torch.minimum(torch.maximum(center, means.amin(0)), means.amax(0))
    vc = (v - center).transpose(0, 1)  # G x P x L
    m = loc.to(dtype) - center[:, None, :]  # G x K x L
    return vc, m, scale.to(dtype).pow(-2)


def _floored_logsumexp(a: torch.Tensor) -> torch.Tensor:
    """``logsumexp`` over the last dim, differentiable, with the differences to the maximum
    clamped at :func:`pyrovamp._blocks.exp_floor`: no subnormal ``exp`` forward or backward (the
    same value and gradient up to terms below the dtype's rounding)."""
    top = a.detach().amax(-1, keepdim=True)
    top = torch.where(top.isfinite(), top, torch.zeros_like(top))
    terms = (a - top).clamp(min=exp_floor(a.dtype)).exp()
    return terms.sum(-1).log() + top.squeeze(-1)


def _component_blocks(features, w, const):
    """The ``(G, P, K)`` component log-densities ``baddbmm(const.unsqueeze(1), features, w)`` of
    :meth:`DiagonalGaussianMixture._grouped_log_prob`, block by block of draws: yields
    ``(start, block)``, each block ``(G, p, K)`` made in one reused buffer on CPUs
    (:func:`pyrovamp._blocks.block_rows`: in cache, no temporary of the whole stack; one block on
    other devices) -- valid until the next block is made."""
    g, p, _ = features.shape
    k = w.shape[-1]
    step = block_rows(p, g * k, features.device)
    buf = features.new_empty((g, step, k))
    for r in range(0, p, step):
        f = features[:, r : r + step]
        b = buf[:, : f.shape[1]]
        torch.baddbmm(const.unsqueeze(1), f, w, out=b)
        yield r, b


def _blocked_logsumexp(features, w, const) -> torch.Tensor:
    """``logsumexp_k`` of the component log-densities (:func:`_component_blocks`), ``(G, P)``,
    without autograd. The differences to each row's maximum are clamped at
    :func:`pyrovamp._blocks.exp_floor` (no subnormal ``exp``: a trained VampPrior's far components
    made it a hundred times slower, for terms below float rounding)."""
    out = features.new_empty(features.shape[:2])
    floor = exp_floor(features.dtype)
    with torch.no_grad():
        for r, b in _component_blocks(features, w, const):
            top = b.amax(-1, keepdim=True)
            top = torch.where(top.isfinite(), top, 0.0)  # all -inf: -inf, as torch.logsumexp
            b.sub_(top).clamp_(min=floor).exp_()
            torch.add(b.sum(-1).log_(), top.squeeze(-1), out=out[:, r : r + b.shape[1]])
    return out


class _MixtureLogProb(torch.autograd.Function):
    """``log p(z)`` of a :class:`DiagonalGaussianMixture` whose parameters need no gradient,
    differentiable in ``z`` (AIS's and HMC's gradients): forward :func:`_blocked_logsumexp`;
    backward ``d log p / dz = sum_k r_k prec_k (m_k - z)`` with the responsibilities ``r_k``
    recomputed in the same blocks -- one more matrix product of the forward's size, instead of
    autograd's graph of the ``(P, K)`` log-densities and its half-dozen passes over it. A
    backward that builds a graph (``create_graph=True``: a Hessian, the Laplace approximation)
    differentiates the autograd path instead, so second derivatives are exact too."""

    @staticmethod
    def forward(ctx, value, mixture):
        features, w, const = mixture._grouped_terms(value.detach(), True, float32_ok=True)
        lp = _blocked_logsumexp(features, w, const)
        ctx.save_for_backward(value, features, w, const, lp)
        ctx.mixture = mixture
        ctx.value_shape, ctx.value_dtype = value.shape, value.dtype
        return lp

    @staticmethod
    def backward(ctx, grad_lp):
        value, features, w, const, lp = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: a gradient that is itself differentiable
            lp = _floored_logsumexp(ctx.mixture._grouped_log_prob(value, weights=True))
            (dz,) = torch.autograd.grad(lp, value, grad_lp.to(lp.dtype), create_graph=True)
            return dz, None
        half = features.shape[-1] // 2
        acc = torch.empty_like(features)  # r @ [-prec / 2, m' prec] per draw
        floor = exp_floor(features.dtype)
        wt = w.transpose(1, 2)
        for r, b in _component_blocks(features, w, const):
            b.sub_(lp[:, r : r + b.shape[1], None]).clamp_(min=floor).exp_()  # responsibilities
            torch.bmm(b, wt, out=acc[:, r : r + b.shape[1]])
        vc = features[..., half:]  # the centred values z' = z - c
        dz = acc[..., half:].addcmul_(vc, acc[..., :half], value=2.0)  # r@(m' prec) - z' r@prec
        dz.mul_(grad_lp.to(dz.dtype).unsqueeze(-1))
        return dz.transpose(0, 1).reshape(ctx.value_shape).to(ctx.value_dtype), None


class DiagonalGaussianMixture(dist.MixtureSameFamily):
    """Mixture of ``K`` diagonal Gaussians over whole vectors: a ``MixtureSameFamily``.

    ``p(z) = sum_k softmax(logits)_k N(z | loc_k, diag(scale_k^2))``, ``event_shape == (L,)``.

    It is :class:`pyro.distributions.MixtureSameFamily` of ``Categorical(logits)`` and
    ``Normal(loc, scale).to_event(1)``, with a faster ``log_prob``: the log-densities of all
    components come from one matrix product of the expansion
    ``|z|^2/s^2 - 2 z.mu/s^2 + |mu|^2/s^2`` -- with ``z`` and ``mu`` centred on the mean of each
    group of values along dim -2, so that no precision is lost to cancellation -- instead of a
    ``(..., K, L)`` intermediate. That makes the VampPrior with K=500, L=40 cheap in importance
    sampling. Its support is
    ``independent(real, 1)`` (not torch's ``MixtureSameFamilyConstraint``), so ``biject_to``,
    the autoguides and NUTS handle it.

    Args:
        logits: ``(K,)`` unnormalised log mixing weights.
        loc: ``(K, L)`` component means.
        scale: ``(K, L)`` component standard deviations (positive).
    """

    def __init__(self, logits, loc, scale, validate_args=False):
        with ignore_jit_warnings():  # the shapes are traced under JitTrace_ELBO
            shapes = (logits.shape, loc.shape, scale.shape)
            wrong = bool(loc.dim() != 2 or shapes[2] != shapes[1] or shapes[0] != shapes[1][:1])
        if wrong:
            raise ValueError(
                "DiagonalGaussianMixture expects logits (K,), loc (K, L), scale (K, L); got "
                f"{tuple(logits.shape)}, {tuple(loc.shape)}, {tuple(scale.shape)}"
            )
        super().__init__(
            dist.Categorical(logits=logits, validate_args=False),
            dist.Normal(loc, scale, validate_args=False).to_event(1),
            validate_args=validate_args,
        )
        self._params = (logits, loc, scale)

    support = REAL_VECTOR

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiagonalGaussianMixture, _instance)
        new = super().expand(batch_shape, _instance=new)
        new._params = self._params
        return new

    def rsample(self, sample_shape=torch.Size()):
        raise NotImplementedError(
            "a Gaussian mixture has no reparameterised sample (the component is a discrete "
            "choice): sample() draws without a gradient; a guide's site needs another family"
        )

    def entropy(self):
        raise NotImplementedError(
            "a Gaussian mixture's entropy has no closed form: estimate it as "
            "-log_prob(sample((n,))).mean(0)"
        )

    def sample(self, sample_shape=torch.Size()):
        """Draws ``sample_shape + batch_shape + (L,)``: a component per draw, then a draw of
        that component only (``MixtureSameFamily.sample`` draws from all ``K`` components and
        keeps one: ``K`` times the random numbers and memory)."""
        logits, loc, scale = self._params
        shape = torch.Size(sample_shape) + self.batch_shape
        with torch.no_grad():
            k = torch.distributions.Categorical(logits=logits).sample(shape)
            return torch.normal(loc[k], scale[k])

    def _checked(self, value) -> torch.Tensor:
        """``value`` checked by :func:`pyrovamp.priors.base.check_latent` (integers as floats)."""
        loc = self._params[1]
        return check_latent(value, loc.shape[-1], loc.dtype)

    def _grouped_terms(self, value, weights: bool, float32_ok: bool = False):
        """``(features, w, const)`` of :meth:`_grouped_log_prob` (see there): its component
        log-densities are ``baddbmm(const.unsqueeze(1), features, w)``, ``features``
        ``(G, P, 2L)``, ``w`` ``(G, 2L, K)``, ``const`` ``(G, K)``. With ``float32_ok`` a single
        group is computed in the values' own dtype where :func:`_expansion_error` bounds its
        rounding by :data:`_FLOAT32_TOLERANCE` (evaluation: AIS's chains), else in float64."""
        logits, loc, scale = self._params
        K, L = loc.shape
        grouped = value.dim() >= 3 and value[..., 0, 0].numel() >= 16
        wide = grouped or float32_ok  # else one group in float64 (values far apart: cancellation)
        dtype = torch.promote_types(value.dtype, loc.dtype if wide else torch.float64)
        vc, m, prec = _centred(value, loc, scale, dtype, grouped)
        rounding = _expansion_error(vc, m, prec) if not grouped and dtype != torch.float64 else 0
        if rounding > _FLOAT32_TOLERANCE:
            dtype = torch.float64
            vc, m, prec = _centred(value, loc, scale, dtype, grouped)
        scale = scale.to(dtype)
        const = -0.5 * (m * m * prec).sum(-1) - scale.log().sum(-1) - 0.5 * L * _LOG_2PI  # G x K
        if weights:
            const = const + logits.to(dtype).log_softmax(-1)
        w = torch.cat([(-0.5 * prec).expand_as(m), m * prec], dim=-1)  # G x K x 2L
        return torch.cat([vc * vc, vc], dim=-1), w.transpose(1, 2), const

    def _grouped_log_prob(self, value, weights: bool):
        """Component log-densities ``(G, P, K)`` of ``value`` ``(..., L)``; with ``weights`` the
        log mixing weights are added.

        ``log N(z|m,s) = -0.5 |z'|^2.prec + z'.(m' prec) - 0.5 |m'|^2.prec - sum log s
        - L/2 log 2pi``
        with ``z' = z - c``, ``m' = m - c`` for a centre ``c``: all ``K`` components in one
        (batched) matrix product, and little cancellation error, as the values are centred where
        they lie and ``|m'|^2.prec`` is summed term by term. A stack ``(P, ..., G, L)`` of at least
        16 vectors per index of dim -2 (importance sampling: ``P`` draws for each of ``G`` data
        points) is centred per index ``g`` and computed in its own dtype; any other ``value`` is
        one group, centred on its mean and computed in float64. (:meth:`log_prob` in evaluation
        -- no parameter needs a gradient: AIS's and HMC's chains -- computes one group in its own
        dtype where the rounding bound :func:`_expansion_error` is at most
        :data:`_FLOAT32_TOLERANCE` nats.)
        """
        features, w, const = self._grouped_terms(value, weights)
        return torch.baddbmm(const.unsqueeze(1), features, w)

    def component_log_prob(self, value):
        """``log N(z | loc_k, scale_k)`` for every component: ``(..., L) -> (..., K)``."""
        value = self._checked(value)
        out = self._grouped_log_prob(value, weights=False).to(value.dtype)
        return out.transpose(0, 1).reshape(value.shape[:-1] + (out.shape[-1],))

    def log_prob(self, value):
        """``log p(z) = logsumexp_k [log w_k + log N(z | loc_k, scale_k)]``,
        ``(..., L) -> (...)``.

        Raises:
            pyrovamp.errors.ArgumentTypeError: ``value`` not a tensor.
            ValueError: ``value`` without a last dimension ``L``.
        """
        value = full_precision(self._checked(value))
        grad = torch.is_grad_enabled()
        with autocast_off(value):  # the quadratic forms in float32 (see pyrovamp._precision)
            if grad and any(t.requires_grad for t in self._params):  # training: autograd
                lp = _floored_logsumexp(self._grouped_log_prob(value, weights=True))  # G x P
            elif grad and value.requires_grad:  # AIS, HMC: the gradient in z only, by hand
                lp = _MixtureLogProb.apply(value, self)
            else:
                lp = _blocked_logsumexp(*self._grouped_terms(value, True, float32_ok=True))
        lp = lp.to(value.dtype).transpose(0, 1).reshape(value.shape[:-1])
        # an infinite coordinate has density 0 under every component (the centred forms give NaN;
        # the sum is one cheap pass: a row with both +inf and -inf stays NaN)
        lp = lp.masked_fill(value.sum(-1).isinf(), -math.inf)
        shape = torch.broadcast_shapes(lp.shape, self.batch_shape)
        return lp.expand(shape)


class MoGPrior(Prior):
    """Mixture of Gaussians prior, book eq. (4.47): ``sum_k w_k N(z | mu_k, diag sigma_k^2)``.

    A :class:`DiagonalGaussianMixture` (``MixtureSameFamily``) over whole latent vectors with
    learnable means, log-variances and mixing logits.

    Args:
        latent_dim: latent size ``L``.
        num_components: ``K``.
        learn_weights: learn the mixing weights ``w`` (the book's choice) or keep them uniform
            (default: on Digits uniform weights gave better test log-likelihood).
        init_scale: standard deviation of the random initial means (components start near the
            origin with unit variance, close to the standard prior).

    Raises:
        ArgumentTypeError, ValueError: a ``latent_dim`` or ``num_components`` that is not a
            positive integer, an ``init_scale`` that is not a positive number.
    """

    def __init__(
        self,
        latent_dim: int = 2,
        num_components: int = 16,
        learn_weights: bool = False,
        init_scale: float = 0.1,
    ):
        super().__init__(latent_dim)
        check_int("num_components", num_components)
        check_positive("init_scale", init_scale)
        self.num_components = num_components
        self.means = nn.Parameter(torch.randn(num_components, latent_dim) * init_scale)
        self.logvars = nn.Parameter(torch.zeros(num_components, latent_dim))
        mixing_logits(self, num_components, learn_weights)

    def distribution(self):
        return DiagonalGaussianMixture(self.logits, self.means, torch.exp(0.5 * self.logvars))


def grid_points(side: int, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    """The GTM's fixed ``side x side`` grid in ``[low, high]^2`` as a ``(side**2, 2)`` tensor
    (book sec. 4.4.1.4; both coordinates vary -- the GTM-VampPrior listing's ``u2[i]`` is a bug)."""
    check_int("grid_side", side)
    u = torch.linspace(low, high, side)
    g1, g2 = torch.meshgrid(u, u, indexing="ij")
    return torch.stack([g1.reshape(-1), g2.reshape(-1)], dim=-1)


class GTMPrior(Prior):
    """GTM prior, book eqs. (4.50)-(4.52): a fixed 2-D grid of ``K = grid_side**2`` points
    ``u_k`` mapped by a network ``g`` to component means and log-variances,
    ``p(z) = sum_k w_k N(z | mu_g(u_k), diag sigma_g^2(u_k))``; a ``MixtureSameFamily``.

    Args:
        latent_dim: ``L``.
        grid_side: points per grid side (``K = grid_side**2``; the book uses 4).
        hidden_dims: hidden sizes of ``g``.
        learn_weights: learn ``w`` (as the book) or keep ``1/K`` (default; better on Digits).
    """

    def __init__(
        self,
        latent_dim: int = 2,
        grid_side: int = 4,
        hidden_dims: Sequence[int] = (64, 64),
        learn_weights: bool = False,
    ):
        super().__init__(latent_dim)
        self.grid_side = grid_side
        self.num_components = grid_side**2
        self.register_buffer("grid", grid_points(grid_side))
        self.net = MLP(2, hidden_dims, 2 * latent_dim)
        mixing_logits(self, self.num_components, learn_weights)

    def distribution(self):
        loc, logvar = full_precision(self.net(self.grid)).chunk(2, dim=-1)
        return DiagonalGaussianMixture(self.logits, loc, torch.exp(0.5 * logvar))
