"""Likelihoods p(x|z): the decoder's output distribution over one data point.

A likelihood turns the decoder network's raw output ``h`` (shape ``(..., D * params_per_dim)``)
into a Pyro distribution with ``event_shape == (D,)`` and batch shape ``h.shape[:-1]``. It also
knows its support (to check data before any work starts) and how to rescale data-space values to
``[0, 1]`` for the encoder's input.

Families:

* :class:`BernoulliLikelihood` -- binary data (static / dynamic MNIST), VampPrior paper sec. 4.
* :class:`CategoricalLikelihood` -- integer data with ``num_values`` levels (Digits: 17 levels
  0..16), as in Tomczak, *Deep Generative Modeling*, ch. 4.3.
* :class:`DiscretizedLogisticLikelihood` -- grey images with 256 levels (Frey Faces,
  Histopathology), the VampPrior paper's likelihood for them (sec. 4; Kingma et al. 2016).
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
import pyro.distributions as dist
from torch.distributions import constraints

__all__ = ["Likelihood", "BernoulliLikelihood", "CategoricalLikelihood",
           "DiscretizedLogisticLikelihood", "DiscretizedLogistic", "make_likelihood", "LIKELIHOODS",
           "AutoregressiveImage"]


class Likelihood(abc.ABC):
    """Base class of the likelihood families.

    Attributes:
        input_dim: number of observed dimensions ``D`` (pixels).
        params_per_dim: how many decoder outputs each dimension needs.
        low, high: the data range, ``low <= x <= high``.
        output_blocks: how many parameter-major blocks the decoder output ``h`` stacks, each an
            output layer of its own in the VampPrior paper's code (the discretised logistic's
            locations and log-scales: 2; one otherwise). The decoder's output layer is marked
            with it (:func:`pyrovamp.nets.mark_fused`).
    """

    name = "likelihood"
    params_per_dim = 1
    output_blocks = 1
    low = 0.0
    high = 1.0

    def __init__(self, input_dim: int):
        if int(input_dim) < 1:
            raise ValueError(f"input_dim must be a positive integer, got {input_dim!r}")
        self.input_dim = int(input_dim)

    @property
    def output_dim(self) -> int:
        """Size of the decoder output this likelihood consumes: ``D * params_per_dim``."""
        return self.input_dim * self.params_per_dim

    @abc.abstractmethod
    def __call__(self, h: torch.Tensor) -> dist.TorchDistribution:
        """The distribution p(x|z) for decoder output ``h`` of shape ``(..., output_dim)``."""

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map data-space values ``x`` (any shape) to ``[0, 1]`` for the encoder's input."""
        return (x - self.low) / (self.high - self.low)

    @abc.abstractmethod
    def mean(self, h: torch.Tensor) -> torch.Tensor:
        """Expected value E[x|z] in data space, shape ``(..., D)``."""

    @abc.abstractmethod
    def check_support(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise ``ValueError`` naming ``name`` if ``x`` has values outside the support."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(input_dim={self.input_dim})"


def _check_levels(x, num_values, name, what):
    ok = (x == x.round()) & (x >= 0) & (x <= num_values - 1)
    if not bool(ok.all()):
        bad = x[~ok].flatten()[:3].tolist()
        raise ValueError(f"{name} must hold {what}; found values such as {bad}.")


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
    times faster on CPUs, where ``torch.log1p`` and ``softplus`` are not vectorised: with the
    paper's VAE at S = 5000 the Bernoulli log-likelihood's softplus took 43 % of an
    importance-sampled log-likelihood (``benchmarks/log_likelihood.py``). It allocates one
    temporary; its gradient is ``sigmoid(h)`` (first derivatives only: the ELBO's gradients and
    HMC need no more).
    """
    if torch.is_grad_enabled() and h.requires_grad:
        return _Softplus.apply(h)
    return _softplus_values(h)


class _Bernoulli(dist.Bernoulli):
    """``Bernoulli(logits)`` whose ``log_prob`` is ``x * logits - softplus(logits)`` (the fast
    :func:`softplus`): the same values as ``binary_cross_entropy_with_logits``, without materialising the broadcast target
    (importance sampling evaluates ``S`` decoder outputs against one data point)."""

    def log_prob(self, value):
        return value * self.logits - softplus(self.logits)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(_Bernoulli, _instance)
        return super().expand(batch_shape, _instance=new)


def _dot_last(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(h * x).sum(-1)`` with broadcasting. When ``x`` is a ``(N, D)`` batch and ``h`` a stack
    ``(..., N, D)`` of more than ``N`` decoder outputs per data point (importance sampling), it is
    one matrix-vector product per data point, without the ``(..., N, D)`` product tensor."""
    if h.dim() > 2 and x.dim() == 2 and h.shape[-2:] == x.shape and h.is_contiguous():
        n, d = x.shape
        stack = h.reshape(-1, n, d)
        if stack.shape[0] > n:
            x = x.to(h.dtype)
            return torch.stack([torch.mv(stack[:, j], x[j]) for j in range(n)], -1).reshape(
                h.shape[:-1])
    return (h * x).sum(-1)


class _IndependentBernoulli(dist.Independent):
    """``_Bernoulli(logits).to_event(1)`` whose ``log_prob`` sums over the event without the
    per-pixel tensor: ``sum_d x_d h_d - sum_d softplus(h_d)`` (the first sum by
    :func:`_dot_last`). Values equal ``Bernoulli(logits=h).to_event(1).log_prob(x)``."""

    def log_prob(self, value):
        logits = self.base_dist.logits
        return _dot_last(logits, value) - softplus(logits).sum(-1)


class BernoulliLikelihood(Likelihood):
    """Bernoulli likelihood for binary data: ``p(x|z) = prod_d Bern(x_d | sigmoid(h_d))``.

    The decoder output ``h`` (shape ``(..., D)``) holds logits. Support: ``{0, 1}``.
    """

    name = "bernoulli"

    def __call__(self, h):
        return _IndependentBernoulli(_Bernoulli(logits=h, validate_args=False), 1,
                                     validate_args=False)

    def mean(self, h):
        return torch.sigmoid(h)

    def check_support(self, x, name="x"):
        if not bool(((x == 0) | (x == 1)).all()):
            bad = x[(x != 0) & (x != 1)].flatten()[:3].tolist()
            raise ValueError(
                f"{name} must be binary (0 or 1) for the Bernoulli likelihood; found values such "
                f"as {bad}. Binarise the data or choose another likelihood."
            )


class CategoricalLikelihood(Likelihood):
    """Categorical likelihood over ``num_values`` integer levels ``0..num_values-1`` per dimension.

    ``p(x|z) = prod_d Cat(x_d | softmax(h_d))`` where the decoder output ``h`` has shape
    ``(..., D * num_values)``. Digits uses ``num_values=17`` (values 0..16), as in the book.
    """

    name = "categorical"

    def __init__(self, input_dim: int, num_values: int):
        super().__init__(input_dim)
        if num_values is None or int(num_values) < 2:
            raise ValueError(
                f"num_values must be an integer >= 2 for the categorical likelihood, got {num_values!r}"
            )
        self.num_values = int(num_values)
        self.params_per_dim = self.num_values
        self.high = float(self.num_values - 1)

    def __call__(self, h):
        logits = h.reshape(h.shape[:-1] + (self.input_dim, self.num_values))
        return dist.Categorical(logits=logits, validate_args=False).to_event(1)

    def mean(self, h):
        logits = h.reshape(h.shape[:-1] + (self.input_dim, self.num_values))
        levels = torch.arange(self.num_values, dtype=h.dtype, device=h.device)
        return (logits.softmax(-1) * levels).sum(-1)

    def check_support(self, x, name="x"):
        _check_levels(x, self.num_values, name, f"integers in 0..{self.num_values - 1} for the "
                      f"categorical likelihood with num_values={self.num_values}")

    def __repr__(self):
        return f"CategoricalLikelihood(input_dim={self.input_dim}, num_values={self.num_values})"


class DiscretizedLogistic(dist.TorchDistribution):
    """Discretised logistic over the integer levels ``0..num_levels-1`` (Kingma et al. 2016;
    Salimans et al. 2017; the VampPrior paper's likelihood for grey images).

    Level ``k`` is the bin ``[k/(n-1) - h, k/(n-1) + h]`` with ``h = 0.5/(n-1)`` of a logistic
    distribution with location ``loc`` and scale ``scale`` on ``[0, 1]``; the first and last
    bins take the whole tails, so the probabilities of the ``n`` levels sum to one exactly.

    Args:
        loc: location in ``[0, 1]`` units, any shape (the batch shape).
        scale: positive scale, broadcastable with ``loc``.
        num_levels: number of levels ``n`` (256 for 8-bit images).
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = False

    def __init__(self, loc, scale, num_levels: int = 256, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        self.num_levels = int(num_levels)
        super().__init__(self.loc.shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self.num_levels - 1)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiscretizedLogistic, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc, new.scale = self.loc.expand(batch_shape), self.scale.expand(batch_shape)
        new.num_levels = self.num_levels
        super(DiscretizedLogistic, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value):
        n = self.num_levels
        h = 0.5 / (n - 1)
        x = value / (n - 1)
        log_scale = self.scale.log()
        inv_s = torch.exp(-log_scale)
        centered = x - self.loc
        plus_in = inv_s * (centered + h)
        min_in = inv_s * (centered - h)
        log_cdf_plus = plus_in - F.softplus(plus_in)            # log sigmoid(plus_in)
        log_one_minus_cdf_min = -F.softplus(min_in)             # log (1 - sigmoid(min_in))
        cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
        mid_in = inv_s * centered
        log_pdf_mid = mid_in - log_scale - 2.0 * F.softplus(mid_in)  # density at the bin centre
        log_mid = torch.where(cdf_delta > 1e-5, cdf_delta.clamp_min(1e-12).log(),
                              log_pdf_mid + math.log(2 * h))
        return torch.where(value <= 0, log_cdf_plus,
                           torch.where(value >= n - 1, log_one_minus_cdf_min, log_mid))

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            x = self.loc.expand(shape) + self.scale.expand(shape) * (u.log() - (-u).log1p())
            return (x * (self.num_levels - 1)).round().clamp(0, self.num_levels - 1)

    @property
    def mean(self):
        """Approximately the location in level units (the tails' clipping is ignored)."""
        return (self.loc * (self.num_levels - 1)).clamp(0, self.num_levels - 1)


class DiscretizedLogisticLikelihood(Likelihood):
    """Discretised logistic likelihood for grey images with ``num_levels`` levels (default 256).

    The decoder output ``h`` (shape ``(..., 2 D)``) gives per pixel the location
    ``sigmoid(h_loc)`` in ``[0, 1]`` and the log-scale ``hardtanh(h_scale, -4.5, 0)`` -- the
    VampPrior paper code's parameterisation. Data are integer levels ``0..num_levels-1``.
    """

    name = "discretized_logistic"
    params_per_dim = 2
    output_blocks = 2

    def __init__(self, input_dim: int, num_levels: int = 256):
        super().__init__(input_dim)
        if int(num_levels) < 2:
            raise ValueError(f"num_levels must be an integer >= 2, got {num_levels!r}")
        self.num_values = int(num_levels)
        self.high = float(self.num_values - 1)

    def _params(self, h):
        loc, log_scale = h.chunk(2, dim=-1)
        return torch.sigmoid(loc), torch.exp(F.hardtanh(log_scale, -4.5, 0.0))

    def __call__(self, h):
        loc, scale = self._params(h)
        return DiscretizedLogistic(loc, scale, self.num_values, validate_args=False).to_event(1)

    def mean(self, h):
        return self._params(h)[0] * (self.num_values - 1)

    def check_support(self, x, name="x"):
        _check_levels(x, self.num_values, name, f"integer grey levels in 0..{self.num_values - 1} "
                      "for the discretised logistic likelihood")

    def __repr__(self):
        return f"DiscretizedLogisticLikelihood(input_dim={self.input_dim}, num_levels={self.num_values})"


LIKELIHOODS = ("bernoulli", "categorical", "discretized_logistic")


def make_likelihood(name: str, input_dim: int, num_values: int | None = None) -> Likelihood:
    """Build a likelihood by name (``"bernoulli"``, ``"categorical"`` or
    ``"discretized_logistic"``; ``num_values`` is the number of levels, 256 by default for the
    latter).

    Raises:
        ValueError: unknown ``name``, or ``num_values`` missing for ``"categorical"``.
    """
    if isinstance(name, Likelihood):
        return name
    if name == "bernoulli":
        return BernoulliLikelihood(input_dim)
    if name == "categorical":
        if num_values is None:
            raise ValueError("likelihood='categorical' needs num_values (e.g. 17 for Digits)")
        return CategoricalLikelihood(input_dim, num_values)
    if name == "discretized_logistic":
        return DiscretizedLogisticLikelihood(input_dim, num_values or 256)
    raise ValueError(f"unknown likelihood {name!r}; expected one of {', '.join(LIKELIHOODS)}")


class AutoregressiveImage(dist.TorchDistribution):
    """``p(x | c) = prod_i p(x_i | x_<i, c)`` over whole images, for an autoregressive decoder
    such as the PixelHVAE's PixelCNN (Tomczak & Welling 2018, sec. 4; van den Oord et al. 2016):
    the pixel conditionals are one of the likelihood families above, whose parameters a masked
    network computes from the earlier pixels and the context ``c`` (the latent variables).

    ``log_prob(x)`` runs the network once on the observed ``x`` (teacher forcing: every pixel's
    conditional from one pass) and sums the pixels' log-probabilities, nats per image; so Pyro's
    ELBOs, importance sampling and AIS use it like any other likelihood. ``sample()`` draws
    pixel after pixel (``net.sample``). Not reparameterisable; ``mean`` is not available in
    closed form (see :meth:`sample_with_means`).

    Args:
        net: a module with ``net(x01, *context) -> (..., output_dim)`` (``x01``: the image
            scaled to ``[0, 1]``) and ``net.sample(*context, pixel_likelihood, normalize)``
            (e.g. :class:`pyrovamp.nets.PixelCNNDecoder`).
        likelihood: the pixels' family (:class:`BernoulliLikelihood`,
            :class:`DiscretizedLogisticLikelihood`, :class:`CategoricalLikelihood`).
        context: tensors ``(..., d_k)`` whose broadcast leading shape is the batch shape.

    Shapes: ``batch_shape`` = the context's leading shape, ``event_shape = (D,)``.
    """

    arg_constraints = {}
    has_rsample = False

    def __init__(self, net, likelihood: Likelihood, *context: torch.Tensor, validate_args=False):
        self.net, self.likelihood, self.context = net, likelihood, tuple(context)
        batch_shape = torch.broadcast_shapes(*(c.shape[:-1] for c in self.context))
        super().__init__(batch_shape, torch.Size([likelihood.input_dim]), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        """The pixels' support over the whole image (``independent(..., 1)``)."""
        return self.likelihood(torch.zeros(self.likelihood.output_dim)).support

    def expand(self, batch_shape, _instance=None):
        """The same distribution with the context expanded to ``batch_shape``."""
        batch_shape = torch.Size(batch_shape)
        context = [c.expand(batch_shape + c.shape[-1:]) for c in self.context]
        return AutoregressiveImage(self.net, self.likelihood, *context,
                                   validate_args=self._validate_args)

    def log_prob(self, value):
        """``sum_i log p(x_i | x_<i, c)``: shape ``broadcast(value.shape[:-1], batch_shape)``."""
        h = self.net(self.likelihood.normalize(value), *self.context)
        return self.likelihood(h).log_prob(value)

    def sample_with_means(self, sample_shape=torch.Size()):
        """Draw images and record each pixel's conditional mean ``E[x_i | x_<i, c]`` at the
        moment it was drawn. Returns ``(values, means)``, each ``sample_shape + batch_shape +
        (D,)`` in data space."""
        shape = torch.Size(sample_shape) + self.batch_shape
        context = [c.expand(shape + c.shape[-1:]).reshape(-1, c.shape[-1]) for c in self.context]
        pixel = make_likelihood(self.likelihood.name, 1, getattr(self.likelihood, "num_values", None))
        values, means = self.net.sample(*context, pixel_likelihood=pixel,
                                        normalize=self.likelihood.normalize)
        return values.reshape(shape + self.event_shape), means.reshape(shape + self.event_shape)

    def sample(self, sample_shape=torch.Size()):
        """Images drawn pixel by pixel: ``sample_shape + batch_shape + (D,)``."""
        return self.sample_with_means(sample_shape)[0]
