"""Priors p(z) for VAEs, each a ``torch.nn.Module`` whose call returns a Pyro distribution.

The prior contract: ``prior()`` returns a :class:`pyro.distributions.TorchDistribution` with
``event_shape == (latent_dim,)`` and ``batch_shape == ()``, rebuilt from the module's parameters
on every call so gradients flow (the "lazy distribution" pattern of zuko). Its ``log_prob``
accepts any leading shape ``(..., latent_dim)`` and returns ``(...)`` in nats; ``sample(shape)``
returns ``shape + (latent_dim,)``. Its support is ``constraints.independent(constraints.real, 1)``
(a density on R^L), so ``biject_to``, the autoguides, NUTS/HMC and the init strategies handle it.
Built inside a Pyro model (under any Pyro handler) a prior registers its own parameters
(:mod:`pyrovamp.registration`), so a prior drops into any Pyro model in one line::

    z = pyro.sample("z", prior())

Priors (Tomczak, *Deep Generative Modeling*, sec. 4.4.1; Tomczak & Welling, AISTATS 2018):

=================  =====================================================================
``standard``       N(0, I)                                              (book sec. 4.4.1.1)
``mog``            sum_k w_k N(z | mu_k, diag sigma_k^2)                (eq. 4.47)
``vampprior``      sum_k w_k q(z | u_k), pseudo-inputs u_k, w_k = 1/K   (eq. 4.48 / 4.49)
``gtm``            sum_k w_k N(z | mu_g(u_k), diag sigma_g^2(u_k))      (eq. 4.50-4.52)
``gtm-vampprior``  sum_k w_k q(z | g(u_k)), g maps a grid to data space (eq. 4.53)
``flow``           N(0, I) through a zuko flow: RealNVP (default), NSF, MAF (sec. 4.4.1.6)
=================  =====================================================================

All mixtures are mixtures over whole latent vectors: the log-density sums over latent dimensions
first and takes ``logsumexp`` over components second (the book's listings do it the other way
round, which is a different, factorised density).
"""

from __future__ import annotations

import abc
import math
from contextlib import contextmanager
from typing import Sequence

import torch
from torch import nn
import pyro.distributions as dist
from torch.distributions import Distribution as _TorchDistribution

_torch_validation = _TorchDistribution._validate_args
import zuko  # noqa: E402
from pyro.contrib.zuko import ZukoToPyro  # noqa: E402

# zuko switches torch's distribution argument validation off for everyone when it is imported;
# importing pyrovamp changes no global setting, so it is put back as it was
_TorchDistribution.set_default_validate_args(_torch_validation)
from torch.distributions import constraints

from torch.distributions import constraints
from torch.distributions.constraints import MixtureSameFamilyConstraint

from pyrovamp.nn.layers import MLP
from pyrovamp.registration import RegisteredModule

__all__ = [
    "Prior", "StandardPrior", "MoGPrior", "VampPrior", "GTMPrior", "GTMVampPrior", "FlowPrior",
    "DiagonalGaussianMixture", "make_prior", "PRIORS", "FLOWS", "PSEUDO_INPUT_PARAMETERIZATIONS",
    "grid_points",
]

PRIORS = ("standard", "mog", "vampprior", "gtm", "gtm-vampprior", "flow")
PSEUDO_INPUT_PARAMETERIZATIONS = ("sigmoid", "clamp")  # VampPrior(parameterization=...)
_LOG_2PI = math.log(2 * math.pi)
REAL_VECTOR = constraints.independent(constraints.real, 1)
"""The support every prior declares: vectors in R^L."""


def _is_real_vector(support) -> bool:
    return (isinstance(support, constraints.independent)
            and support.base_constraint is constraints.real
            and support.reinterpreted_batch_ndims == 1)


_REAL_SUPPORT_CLASSES: dict = {}


def _with_real_support(d: dist.TorchDistribution) -> dist.TorchDistribution:
    """``d`` itself if it declares ``support == independent(real, 1)``; else ``d`` with that
    support declared (a subclass of its own class; kept by ``expand``). Only distributions that
    declare no support, or a mixture of real vectors (torch's ``MixtureSameFamilyConstraint``,
    which ``biject_to`` cannot handle), are changed; any other support is left alone."""
    try:
        support = d.support
    except NotImplementedError:
        support = None
    if _is_real_vector(support):
        return d
    if support is not None and not (isinstance(support, MixtureSameFamilyConstraint)
                                    and _is_real_vector(support.base_constraint)):
        return d
    cls = type(d)
    if cls not in _REAL_SUPPORT_CLASSES:
        def expand(self, *args, **kwargs):
            return _with_real_support(super(new_cls, self).expand(*args, **kwargs))

        new_cls = type(cls.__name__, (cls,), {
            "support": REAL_VECTOR, "expand": expand, "__module__": cls.__module__,
            "__doc__": f"{cls.__name__} with support ``independent(real, 1)`` declared."})
        _REAL_SUPPORT_CLASSES[cls] = new_cls
    d.__class__ = _REAL_SUPPORT_CLASSES[cls]
    return d


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
        if loc.dim() != 2 or scale.shape != loc.shape or logits.shape != loc.shape[:1]:
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

    def _grouped_log_prob(self, value, weights: bool):
        """Component log-densities ``(G, P, K)`` of ``value`` ``(..., L)``; with ``weights`` the
        log mixing weights are added.

        ``log N(z|m,s) = -0.5 |z'|^2.prec + z'.(m' prec) - 0.5 |m'|^2.prec - sum log s - L/2 log 2pi``
        with ``z' = z - c``, ``m' = m - c`` for a centre ``c``: all ``K`` components in one
        (batched) matrix product, and little cancellation error, as the values are centred where
        they lie and ``|m'|^2.prec`` is summed term by term. A stack ``(P, ..., G, L)`` of at least
        16 vectors per index of dim -2 (importance sampling: ``P`` draws for each of ``G`` data
        points) is centred per index ``g`` and computed in its own dtype; any other ``value`` is
        one group, centred on its mean and computed in float64.
        """
        logits, loc, scale = self._params
        K, L = loc.shape
        if value.dim() < 1 or value.shape[-1] != L:
            raise ValueError(f"value must have last dimension {L}, got shape {tuple(value.shape)}")
        grouped = value.dim() >= 3 and value[..., 0, 0].numel() >= 16
        dtype = torch.promote_types(value.dtype, loc.dtype if grouped else torch.float64)
        v = value.to(dtype)
        v = v.reshape(-1, v.shape[-2], L) if grouped else v.reshape(-1, 1, L)  # P x G x L
        loc, scale = loc.to(dtype), scale.to(dtype)
        center = v.mean(0)                                   # G x L
        vc = (v - center).transpose(0, 1)                    # G x P x L
        m = loc - center[:, None, :]                         # G x K x L
        prec = scale.pow(-2)
        const = (-0.5 * (m * m * prec).sum(-1) - scale.log().sum(-1)
                 - 0.5 * L * _LOG_2PI)                       # G x K
        if weights:
            const = const + logits.to(dtype).log_softmax(-1)
        w = torch.cat([(-0.5 * prec).expand_as(m), m * prec], dim=-1)  # G x K x 2L
        return torch.baddbmm(const.unsqueeze(1), torch.cat([vc * vc, vc], dim=-1),
                             w.transpose(1, 2))

    def component_log_prob(self, value):
        """``log N(z | loc_k, scale_k)`` for every component: ``(..., L) -> (..., K)``."""
        out = self._grouped_log_prob(value, weights=False).to(value.dtype)
        return out.transpose(0, 1).reshape(value.shape[:-1] + (out.shape[-1],))

    def log_prob(self, value):
        """``log p(z) = logsumexp_k [log w_k + log N(z | loc_k, scale_k)]``, ``(..., L) -> (...)``."""
        lp = torch.logsumexp(self._grouped_log_prob(value, weights=True), dim=-1)  # G x P
        lp = lp.to(value.dtype).transpose(0, 1).reshape(value.shape[:-1])
        shape = torch.broadcast_shapes(lp.shape, self.batch_shape)
        return lp.expand(shape)


class Prior(RegisteredModule, abc.ABC):
    """Base class of the priors: ``prior()`` returns a fresh Pyro distribution over ``z``.

    Subclasses implement :meth:`distribution`. The base class declares its support
    ``independent(real, 1)`` where the subclass's distribution does not (or inherits torch's
    ``MixtureSameFamilyConstraint``), and registers the prior's parameters with Pyro when the
    distribution is built under a Pyro handler (:mod:`pyrovamp.registration`: a name of this
    instance's own, fresh for copies, so two priors never share parameters). Inside
    ``with prior.cached():`` the distribution is built once and reused -- use it for evaluation
    under ``torch.no_grad()`` so that, e.g., the VampPrior's encoder runs on the pseudo-inputs once
    per evaluation instead of once per chunk.

    Attributes:
        latent_dim: size ``L`` of the latent vector.
        pyro_name: the prefix of its parameters' names in Pyro.
    """

    def __init__(self, latent_dim: int):
        super().__init__()
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        self.latent_dim = latent_dim
        self._cache_depth = 0
        self._cache = None

    @abc.abstractmethod
    def distribution(self) -> dist.TorchDistribution:
        """Build p(z) from the current parameters: batch shape ``()``, event ``(L,)``."""

    def forward(self, register: bool = True) -> dist.TorchDistribution:
        """p(z): batch shape ``()``, event shape ``(L,)``, support ``independent(real, 1)``.

        Args:
            register: issue the ``pyro.param`` statements of the prior's parameters (under a Pyro
                handler only). A model that registers the prior as part of itself passes False.
        """
        if register:
            self.register_parameters()
        if self._cache_depth > 0:
            if self._cache is None:
                self._cache = _with_real_support(self.distribution())
            return self._cache
        return _with_real_support(self.distribution())

    def __getstate__(self):
        state = super().__getstate__()
        state["_cache"], state["_cache_depth"] = None, 0  # a copy starts outside cached()
        return state

    @contextmanager
    def cached(self):
        """Context in which ``prior()`` builds its distribution once and returns it again."""
        self._cache_depth += 1
        try:
            yield self
        finally:
            self._cache_depth -= 1
            if self._cache_depth == 0:
                self._cache = None

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z)`` in nats, ``(..., L) -> (...)``."""
        return self(register=False).log_prob(z)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Draw ``sample_shape + (L,)`` latent vectors."""
        return self(register=False).sample(torch.Size(sample_shape))


class StandardPrior(Prior):
    """Standard Gaussian prior ``p(z) = N(z | 0, I)`` (book sec. 4.4.1.1, listing 4.6).

    Args:
        latent_dim: latent size ``L``.
    """

    def __init__(self, latent_dim: int = 2):
        super().__init__(latent_dim)
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def distribution(self):
        return dist.Normal(self.loc, self.scale, validate_args=False).to_event(1)


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
    """

    def __init__(self, latent_dim: int = 2, num_components: int = 16, learn_weights: bool = False,
                 init_scale: float = 0.1):
        super().__init__(latent_dim)
        _check_positive("num_components", num_components)
        self.num_components = num_components
        self.means = nn.Parameter(torch.randn(num_components, latent_dim) * init_scale)
        self.logvars = nn.Parameter(torch.zeros(num_components, latent_dim))
        _weights(self, num_components, learn_weights)

    def distribution(self):
        return DiagonalGaussianMixture(self.logits, self.means, torch.exp(0.5 * self.logvars))


class VampPrior(Prior):
    """VampPrior, book eq. (4.48)/(4.49), Tomczak & Welling (2018) sec. 3:
    ``p(z) = sum_k w_k q(z | u_k)`` with learnable pseudo-inputs ``u_k``.

    The components are the encoder's own posteriors at the pseudo-inputs: ``encoder`` is the same
    module object as the model's guide uses (shared, not copied). Weights are uniform ``1/K`` as in
    the paper unless ``learn_weights=True`` (Alemi et al. 2018, eq. 4.49).

    Pseudo-inputs live in data space, from a learnable ``a`` of shape ``(K, D)``, in one of two
    parameterisations (``parameterization``):

    * ``"sigmoid"`` (default): ``u = low + (high - low) * sigmoid(a)`` -- always valid inputs that
      never lose their gradient at the edge of the range, but a pixel moves by at most a quarter
      of the optimiser's step in ``a`` (much less near the edges); ``init="random"`` draws ``u``
      uniformly over the range.
    * ``"clamp"`` (the paper's code, ``Model.add_pseudoinputs`` of jmtomczak/vae_vampprior):
      ``u = low + (high - low) * hardtanh(a, 0, 1)`` -- ``a`` is in units of the data range, as
      the paper's ``[0, 1]`` pseudo-inputs, so a pixel moves by the optimiser's full step whatever
      the range (0-255 grey levels included); one pushed past an edge stays there (zero
      gradient), as in the paper. ``init="random"`` draws ``a ~ N(0.05, 0.01^2)``: nearly black
      images, the paper's initialisation for MNIST and Omniglot (``load_data.py``; other data
      sets: :meth:`init_normal`).

    Args:
        encoder: module mapping ``(..., D)`` data to ``(loc, scale)`` of shape ``(..., L)``.
        input_dim: data size ``D``.
        num_components: number of pseudo-inputs ``K``.
        data_range: ``(low, high)`` of the data values (``(0, 1)`` binary, ``(0, 16)`` Digits).
        learn_weights: learn the mixing weights (default ``False``: uniform ``1/K``).
        init: ``"random"`` (see above) or a tensor ``(K, D)`` of training points (see
            :meth:`init_from_data`).
        latent_dim: ``L``; read from ``encoder.latent_dim`` when omitted.
        parameterization: ``"sigmoid"`` or ``"clamp"`` (see above).

    Raises:
        ValueError: bad sizes, ``init`` neither ``"random"`` nor a ``(K, D)`` tensor, or an
            unknown ``parameterization``.
    """

    def __init__(self, encoder: nn.Module, input_dim: int, num_components: int = 500,
                 data_range=(0.0, 1.0), learn_weights: bool = False, init="random",
                 latent_dim: int | None = None, parameterization: str = "sigmoid"):
        latent_dim = latent_dim if latent_dim is not None else getattr(encoder, "latent_dim", None)
        if latent_dim is None:
            raise ValueError("VampPrior needs latent_dim (or an encoder with .latent_dim)")
        if parameterization not in PSEUDO_INPUT_PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of "
                             f"{', '.join(PSEUDO_INPUT_PARAMETERIZATIONS)}, got {parameterization!r}")
        if not (isinstance(init, torch.Tensor) or (isinstance(init, str) and init == "random")):
            raise ValueError(f"init must be 'random' or a tensor of training data, got {init!r}")
        super().__init__(latent_dim)
        _check_positive("num_components", num_components)
        _check_positive("input_dim", input_dim)
        self.encoder = encoder
        self.input_dim = input_dim
        self.num_components = num_components
        self.parameterization = parameterization
        self.low, self.high = float(data_range[0]), float(data_range[1])
        # the parameter's name tells the two apart in a saved state dict
        self._param_name = ("pseudo_inputs_logit" if parameterization == "sigmoid"
                            else "pseudo_inputs_unclamped")
        self.register_parameter(self._param_name,
                                nn.Parameter(torch.empty(num_components, input_dim)))
        _weights(self, num_components, learn_weights)
        if isinstance(init, torch.Tensor):
            self.init_from_data(init)
            return
        if parameterization == "sigmoid":
            with torch.no_grad():
                self.pseudo_inputs_logit.copy_(
                    torch.logit(torch.rand(num_components, input_dim).clamp(0.01, 0.99)))
        else:
            self.init_normal(0.05, 0.01)

    @property
    def _raw(self) -> nn.Parameter:
        """The learnable ``a`` behind the pseudo-inputs, ``(K, D)``."""
        return getattr(self, self._param_name)

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """The pseudo-inputs ``u`` in data space, ``(K, D)``."""
        a = self._raw
        unit = (torch.nn.functional.hardtanh(a, 0.0, 1.0) if self.parameterization == "clamp"
                else torch.sigmoid(a))
        return self.low + (self.high - self.low) * unit

    @torch.no_grad()
    def init_normal(self, mean: float, std: float) -> None:
        """Draw the pseudo-inputs' pixels from ``N(mean, std^2)`` in units of the data range
        (``0``: ``low``, ``1``: ``high``) -- the paper's random initialisation (``load_data.py``:
        ``(0.05, 0.01)`` for MNIST and Omniglot, ``(0.5, 0.02)`` for Caltech 101 Silhouettes and
        Frey Faces, ``(0.4, 0.05)`` for Histopathology). With the sigmoid parameterisation the
        draws are clipped to ``[0.01, 0.99]`` first.

        Raises:
            ValueError: ``std`` is negative.
        """
        if std < 0:
            raise ValueError(f"std must be >= 0, got {std}")
        a = self._raw
        a.normal_(mean, std)
        if self.parameterization == "sigmoid":
            a.copy_(torch.logit(a.clamp(0.01, 0.99)))

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, margin: float = 0.05) -> None:
        """Set the pseudo-inputs to ``K`` data points ``x`` (``(K, D)``, data space), pulled
        ``margin`` (fraction of the range) inside the range so their gradients stay alive (the
        paper's code adds N(0, 0.01) noise to the raw points instead, so about half of its black
        pixels start clamped, without gradient).

        Raises:
            ValueError: ``x`` is not ``(K, D)``.
        """
        if x.shape != (self.num_components, self.input_dim):
            raise ValueError(
                f"pseudo-input data must have shape ({self.num_components}, {self.input_dim}), "
                f"got {tuple(x.shape)}"
            )
        a = self._raw
        p = margin + (1 - 2 * margin) * (x.to(a) - self.low) / (self.high - self.low)
        a.copy_(torch.logit(p) if self.parameterization == "sigmoid" else p)

    def distribution(self):
        loc, scale = self.encoder(self.pseudo_inputs)
        return DiagonalGaussianMixture(self.logits, loc, scale)


def grid_points(side: int, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    """The GTM's fixed ``side x side`` grid in ``[low, high]^2`` as a ``(side**2, 2)`` tensor
    (book sec. 4.4.1.4; both coordinates vary -- the GTM-VampPrior listing's ``u2[i]`` is a bug)."""
    _check_positive("grid_side", side)
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

    def __init__(self, latent_dim: int = 2, grid_side: int = 4, hidden_dims: Sequence[int] = (64, 64),
                 learn_weights: bool = False):
        super().__init__(latent_dim)
        self.grid_side = grid_side
        self.num_components = grid_side ** 2
        self.register_buffer("grid", grid_points(grid_side))
        self.net = MLP(2, hidden_dims, 2 * latent_dim)
        _weights(self, self.num_components, learn_weights)

    def distribution(self):
        loc, logvar = self.net(self.grid).chunk(2, dim=-1)
        return DiagonalGaussianMixture(self.logits, loc, torch.exp(0.5 * logvar))


class GTMVampPrior(Prior):
    """GTM-VampPrior, book eq. (4.53): ``p(z) = sum_k w_k q(z | g(u_k))`` -- a fixed 2-D grid
    mapped by a network ``g`` into data space gives the pseudo-inputs, which go through the
    model's (shared) encoder.

    Args:
        encoder: the model's encoder (shared module), ``(..., D) -> (loc, scale)``.
        input_dim: data size ``D``.
        grid_side: points per grid side (``K = grid_side**2``).
        data_range: ``(low, high)`` of the data; ``g``'s output is squashed into it by a sigmoid.
        hidden_dims: hidden sizes of ``g``.
        learn_weights: learn ``w`` (as the book) or keep ``1/K`` (default; better on Digits).
        latent_dim: ``L``; read from ``encoder.latent_dim`` when omitted.
    """

    def __init__(self, encoder: nn.Module, input_dim: int, grid_side: int = 4,
                 data_range=(0.0, 1.0), hidden_dims: Sequence[int] = (64, 64),
                 learn_weights: bool = False, latent_dim: int | None = None):
        latent_dim = latent_dim if latent_dim is not None else getattr(encoder, "latent_dim", None)
        if latent_dim is None:
            raise ValueError("GTMVampPrior needs latent_dim (or an encoder with .latent_dim)")
        super().__init__(latent_dim)
        _check_positive("input_dim", input_dim)
        self.encoder = encoder
        self.input_dim = input_dim
        self.grid_side = grid_side
        self.num_components = grid_side ** 2
        self.low, self.high = float(data_range[0]), float(data_range[1])
        self.register_buffer("grid", grid_points(grid_side))
        self.net = MLP(2, hidden_dims, input_dim)
        _weights(self, self.num_components, learn_weights)

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """``g(u_k)`` in data space, ``(K, D)``."""
        return self.low + (self.high - self.low) * torch.sigmoid(self.net(self.grid))

    def distribution(self):
        loc, scale = self.encoder(self.pseudo_inputs)
        return DiagonalGaussianMixture(self.logits, loc, scale)


class _ZukoFlowDistribution(ZukoToPyro):
    """:class:`pyro.contrib.zuko.ZukoToPyro` with what the prior contract adds: the support
    ``independent(real, 1)`` (so ``biject_to``, autoguides and NUTS work), ``rsample``/``sample``
    (``prior().sample(shape)``, not only ``prior()(shape)``) and ``expand`` keeping this type.
    Sampling through ``pyro.sample`` uses zuko's ``rsample_and_log_prob`` (reparameterised; the
    log-density of the draw is cached for scoring, as ``ZukoToPyro`` does)."""

    arg_constraints = {}
    support = constraints.independent(constraints.real, 1)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.dist.rsample(torch.Size(sample_shape))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.dist.rsample(torch.Size(sample_shape))

    def expand(self, batch_shape, _instance=None):
        return _ZukoFlowDistribution(self.dist.expand(torch.Size(batch_shape)))


FLOWS = ("realnvp", "nsf", "maf")
# Per-flow defaults: (num_flows, hidden_dims), measured on Digits (L=2; see the README).
_FLOW_DEFAULTS = {"realnvp": (4, (64, 64)), "nsf": (3, (64, 64)), "maf": (4, (64, 64))}


class FlowPrior(Prior):
    """Flow-based prior (book sec. 4.4.1.6): a standard normal ``N(0, I)`` pushed through an
    invertible map ``f``, ``p(z) = N(f^{-1}(z); 0, I) |det d f^{-1}(z) / dz|``, built on zuko
    (Rozet et al.) and wrapped as a Pyro distribution with
    :class:`pyro.contrib.zuko.ZukoToPyro`. ``log_prob`` is exact.

    Flows (``zuko.flows``):

    * ``"realnvp"`` (default, as the book): affine coupling layers with alternating masks
      (Dinh et al. 2017, "Density estimation using Real NVP", sec. 3);
    * ``"nsf"``: monotonic rational-quadratic spline autoregressive layers (Durkan et al. 2019,
      "Neural spline flows"; splines on [-5, 5], identity outside), ``bins`` knots;
    * ``"maf"``: masked autoregressive affine layers (Papamakarios et al. 2017, "Masked
      autoregressive flow for density estimation").

    Args:
        latent_dim: ``L`` (``>= 2`` for RealNVP, whose coupling needs two halves).
        flow: ``"realnvp"``, ``"nsf"`` or ``"maf"``.
        num_flows: number of layers (default per flow: RealNVP 4, NSF 3, MAF 4).
        hidden_dims: hidden sizes of each layer's conditioner network (default ``(64, 64)``).
        bins: spline bins of the NSF.

    Raises:
        ValueError: unknown ``flow``, ``latent_dim < 2`` for RealNVP, non-positive sizes.
    """

    def __init__(self, latent_dim: int = 2, *, flow: str = "realnvp", num_flows: int | None = None,
                 hidden_dims: Sequence[int] | None = None, bins: int = 8):
        super().__init__(latent_dim)
        if flow not in FLOWS:
            raise ValueError(f"flow must be one of {', '.join(FLOWS)}, got {flow!r}")
        if flow == "realnvp" and latent_dim < 2:
            raise ValueError(f"the flow prior needs latent_dim >= 2 for RealNVP, got {latent_dim}")
        default_flows, default_hidden = _FLOW_DEFAULTS[flow]
        num_flows = default_flows if num_flows is None else num_flows
        hidden_dims = tuple(default_hidden if hidden_dims is None else hidden_dims)
        _check_positive("num_flows", num_flows)
        _check_positive("bins", bins)
        for h in hidden_dims:
            _check_positive("hidden_dims", h)
        self.flow_name, self.num_flows, self.hidden_dims = flow, num_flows, hidden_dims
        kw = dict(transforms=num_flows, hidden_features=hidden_dims)
        if flow == "realnvp":
            self.flow = zuko.flows.RealNVP(latent_dim, **kw)
        elif flow == "nsf":
            self.flow = zuko.flows.NSF(latent_dim, bins=bins, **kw)
        else:
            self.flow = zuko.flows.MAF(latent_dim, **kw)

    def distribution(self):
        return _ZukoFlowDistribution(self.flow())

    def extra_repr(self) -> str:
        return f"flow={self.flow_name!r}, latent_dim={self.latent_dim}, num_flows={self.num_flows}"


def _check_positive(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _weights(module, k, learn):
    """Mixing logits: a parameter when learned, else a zero buffer (uniform 1/K)."""
    if learn:
        module.logits = nn.Parameter(torch.zeros(k))
    else:
        module.register_buffer("logits", torch.zeros(k))


def make_prior(name: str, latent_dim: int, *, encoder: nn.Module | None = None,
               input_dim: int | None = None, data_range=(0.0, 1.0), num_components: int = 16,
               grid_side: int | None = None, hidden_dims: Sequence[int] = (64, 64),
               learn_weights: bool | None = None, num_flows: int | None = None,
               flow: str = "realnvp", pseudo_input_parameterization: str | None = None) -> Prior:
    """Build a prior by name: one of ``standard, mog, vampprior, gtm, gtm-vampprior, flow``.

    ``encoder`` and ``input_dim`` are needed by the VampPrior and the GTM-VampPrior.
    For the GTM priors ``grid_side`` defaults to ``sqrt(num_components)``, which must then be a
    whole number. ``learn_weights=None`` means each prior's own default (uniform weights).
    For the flow prior, ``flow`` picks ``realnvp`` (default), ``nsf`` or ``maf`` and
    ``num_flows=None`` the flow's own default number of layers (:class:`FlowPrior`).
    ``pseudo_input_parameterization`` (``"sigmoid"`` or ``"clamp"``; ``None``: the default) is
    the VampPrior's ``parameterization``.

    Raises:
        ValueError: unknown name or flow, missing encoder, or a non-square ``num_components``
            for a GTM.
    """
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; expected one of {', '.join(PRIORS)}")
    kw = {} if learn_weights is None else {"learn_weights": learn_weights}
    if name in ("gtm", "gtm-vampprior") and grid_side is None:
        grid_side = math.isqrt(num_components)
        if grid_side ** 2 != num_components:
            raise ValueError(
                f"the {name} prior needs a square number of components (K = grid_side**2); "
                f"got num_components={num_components}; pass grid_side instead"
            )
    if name == "standard":
        return StandardPrior(latent_dim)
    if name == "mog":
        return MoGPrior(latent_dim, num_components, **kw)
    if name == "gtm":
        return GTMPrior(latent_dim, grid_side, hidden_dims, **kw)
    if name == "flow":
        return FlowPrior(latent_dim, flow=flow, num_flows=num_flows, hidden_dims=hidden_dims)
    if encoder is None or input_dim is None:
        raise ValueError(f"the {name} prior needs the model's encoder and input_dim")
    if name == "vampprior":
        if pseudo_input_parameterization is not None:
            kw["parameterization"] = pseudo_input_parameterization
        return VampPrior(encoder, input_dim, num_components, data_range, latent_dim=latent_dim, **kw)
    return GTMVampPrior(encoder, input_dim, grid_side, data_range, hidden_dims,
                        latent_dim=latent_dim, **kw)
