"""The flow-based prior (book sec. 4.4.1.6) on zuko, wrapped as a Pyro distribution."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from pyro.contrib.zuko import ZukoToPyro
from torch.distributions import Independent, Normal, constraints

from pyrovamp._precision import autocast_off, full_precision
from pyrovamp._validate import check_int
from pyrovamp.priors._zuko import zuko
from pyrovamp.priors.base import Prior, check_latent

__all__ = ["FlowPrior", "FLOWS"]


_NO_CLOSED_FORM = "a flow's {} has no closed form: estimate it by Monte Carlo, {}"


class _ZukoFlowDistribution(ZukoToPyro):
    """:class:`pyro.contrib.zuko.ZukoToPyro` with what the prior contract adds: the support
    ``independent(real, 1)`` (so ``biject_to``, autoguides and NUTS work), ``rsample``/``sample``
    (``prior().sample(shape)``, not only ``prior()(shape)``) and ``expand`` keeping this type.
    Sampling through ``pyro.sample`` uses zuko's ``rsample_and_log_prob`` (reparameterised; the
    log-density of the draw is cached for scoring, as ``ZukoToPyro`` does). Under autocast the
    flow runs in float32 on ``device`` (its networks are its density: see
    :mod:`pyrovamp._precision`). ``log_prob`` checks its value
    (:func:`pyrovamp.priors.base.check_latent`) and scores it in the flow's ``dtype``, returning
    the value's float type (as the mixtures do: a float64 ``z`` for a float32 flow)."""

    arg_constraints = {}
    support = constraints.independent(constraints.real, 1)

    def __init__(
        self, dist, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ):
        super().__init__(dist)
        self.device, self.dtype = device, dtype

    def __call__(self, shape=()) -> torch.Tensor:
        with autocast_off(self.device):
            return super().__call__(shape)

    @property
    def mean(self) -> torch.Tensor:
        raise NotImplementedError(_NO_CLOSED_FORM.format("mean", "sample((n,)).mean(0)"))

    @property
    def variance(self) -> torch.Tensor:
        raise NotImplementedError(_NO_CLOSED_FORM.format("variance", "sample((n,)).var(0)"))

    def entropy(self) -> torch.Tensor:
        raise NotImplementedError(
            _NO_CLOSED_FORM.format("entropy", "-log_prob(sample((n,))).mean(0)")
        )

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x in self.cache:
            return self.cache[x]
        x = full_precision(check_latent(x, self.event_shape[-1], self.dtype))
        with autocast_off(self.device, x):
            lp = self.dist.log_prob(x.to(self.dtype)).to(x.dtype)
        # density 0 at an infinite coordinate (the flow's layers give NaN there), as a Gaussian's
        return lp.masked_fill(x.sum(-1).isinf(), -math.inf)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with autocast_off(self.device):
            return self.dist.rsample(torch.Size(sample_shape))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def expand(self, batch_shape, _instance=None):
        return _ZukoFlowDistribution(
            self.dist.expand(torch.Size(batch_shape)), self.device, self.dtype
        )


FLOWS = ("realnvp", "nsf", "maf")
# Per-flow defaults: (num_flows, hidden_dims), chosen on Digits (L=2).
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

    def __init__(
        self,
        latent_dim: int = 2,
        *,
        flow: str = "realnvp",
        num_flows: int | None = None,
        hidden_dims: Sequence[int] | None = None,
        bins: int = 8,
    ):
        super().__init__(latent_dim)
        if flow not in FLOWS:
            raise ValueError(f"flow must be one of {', '.join(FLOWS)}, got {flow!r}")
        if flow == "realnvp" and latent_dim < 2:
            raise ValueError(f"the flow prior needs latent_dim >= 2 for RealNVP, got {latent_dim}")
        default_flows, default_hidden = _FLOW_DEFAULTS[flow]
        num_flows = default_flows if num_flows is None else num_flows
        hidden_dims = tuple(default_hidden if hidden_dims is None else hidden_dims)
        check_int("num_flows", num_flows)
        check_int("bins", bins)
        for h in hidden_dims:
            check_int("hidden_dims", h)
        self.flow_name, self.num_flows, self.hidden_dims = flow, num_flows, hidden_dims
        kw = dict(transforms=num_flows, hidden_features=hidden_dims)
        if flow == "realnvp":
            self.flow = zuko.flows.RealNVP(latent_dim, **kw)
        elif flow == "nsf":
            self.flow = zuko.flows.NSF(latent_dim, bins=bins, **kw)
        else:
            self.flow = zuko.flows.MAF(latent_dim, **kw)

    def _parts(self) -> tuple:
        """The flow's transform and base distribution, built once and reused while the flow
        holds the same tensors (rebuilt after ``.to()``/``.double()`` or an assigning
        ``load_state_dict``).

        zuko's transforms read the flow's parameters when they are applied, not when they are
        built, so one transform serves every step; building it anew would cost a host
        synchronisation per coupling layer and step on a GPU (the coupling masks' indices), and
        the base distribution's argument checks two more."""
        key = tuple(itertools.chain(self.flow.parameters(), self.flow.buffers()))
        cached = self.__dict__.get("_parts_cache")
        if (
            cached is None
            or len(cached[0]) != len(key)
            or any(a is not b for a, b in zip(cached[0], key, strict=True))
        ):
            d = self.flow()
            cached = (key, d.transform, d.base)
            self.__dict__["_parts_cache"] = cached
        return cached[1], cached[2]

    def distribution(self):
        transform, base = self._parts()
        if isinstance(base, Independent) and isinstance(base.base_dist, Normal):
            # the same N(0, I) without argument checks: no host synchronisation per step
            normal = base.base_dist
            base = Independent(
                Normal(normal.loc, normal.scale, validate_args=False),
                base.reinterpreted_batch_ndims,
                validate_args=False,
            )
        first = next(itertools.chain(self.flow.parameters(), self.flow.buffers()))
        flow = zuko.distributions.NormalizingFlow(transform, base)
        return _ZukoFlowDistribution(flow, first.device, first.dtype)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_parts_cache", None)  # a copy builds its own from its own flow
        return state

    def extra_repr(self) -> str:
        return f"flow={self.flow_name!r}, latent_dim={self.latent_dim}, num_flows={self.num_flows}"
