"""Priors by name: :func:`make_prior` and the names it knows (:data:`PRIORS`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from pyrovamp.priors.base import Prior
from pyrovamp.priors.flow import FlowPrior
from pyrovamp.priors.mixtures import GTMPrior, MoGPrior
from pyrovamp.priors.standard import StandardPrior
from pyrovamp.priors.vamp import GTMVampPrior, VampPrior

__all__ = ["make_prior", "PRIORS"]

PRIORS = ("standard", "mog", "vampprior", "gtm", "gtm-vampprior", "flow")
"""The names :func:`make_prior` knows."""


def make_prior(
    name: str,
    latent_dim: int,
    *,
    encoder: nn.Module | None = None,
    input_dim: int | None = None,
    input_shape=None,
    data_range=(0.0, 1.0),
    num_components: int = 16,
    grid_side: int | None = None,
    hidden_dims: Sequence[int] = (64, 64),
    learn_weights: bool | None = None,
    num_flows: int | None = None,
    flow: str = "realnvp",
    pseudo_input_parameterization: str | None = None,
) -> Prior:
    """Build a prior by name: one of ``standard, mog, vampprior, gtm, gtm-vampprior, flow``.

    ``encoder`` and ``input_dim`` are needed by the VampPrior and the GTM-VampPrior;
    ``input_shape`` (default ``(input_dim,)``) is the shape of their pseudo-inputs' points.
    For the GTM priors ``grid_side`` defaults to ``sqrt(num_components)``, which must then be a
    whole number. ``learn_weights=None`` means each prior's own default (uniform weights).
    For the flow prior, ``flow`` picks ``realnvp`` (default), ``nsf`` or ``maf`` and
    ``num_flows=None`` the flow's own default number of layers (:class:`FlowPrior`).
    ``pseudo_input_parameterization`` (``"sigmoid"`` or ``"clamp"``; ``None``: the default) is
    the VampPrior's ``parameterization``.

    Raises:
        ValueError: unknown name or flow, missing encoder, a non-square ``num_components``
            for a GTM, or ``grid_side`` for a prior other than the GTMs.
    """
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; expected one of {', '.join(PRIORS)}")
    if grid_side is not None and name not in ("gtm", "gtm-vampprior"):
        raise ValueError(
            f"grid_side applies to the gtm and gtm-vampprior priors, not prior={name!r}"
        )
    kw: dict[str, Any] = {} if learn_weights is None else {"learn_weights": learn_weights}
    side = math.isqrt(num_components) if grid_side is None else grid_side
    if name in ("gtm", "gtm-vampprior") and side**2 != num_components and grid_side is None:
        raise ValueError(
            f"the {name} prior needs a square number of components (K = grid_side**2); "
            f"got num_components={num_components}; pass grid_side instead"
        )
    if name == "standard":
        return StandardPrior(latent_dim)
    if name == "mog":
        return MoGPrior(latent_dim, num_components, **kw)
    if name == "gtm":
        return GTMPrior(latent_dim, side, hidden_dims, **kw)
    if name == "flow":
        return FlowPrior(latent_dim, flow=flow, num_flows=num_flows, hidden_dims=hidden_dims)
    if encoder is None or input_dim is None:
        raise ValueError(f"the {name} prior needs the model's encoder and input_dim")
    if name == "vampprior":
        if pseudo_input_parameterization is not None:
            kw["parameterization"] = pseudo_input_parameterization
        return VampPrior(
            encoder,
            input_dim,
            num_components,
            data_range,
            latent_dim=latent_dim,
            input_shape=input_shape,
            **kw,
        )
    return GTMVampPrior(
        encoder,
        input_dim,
        side,
        data_range,
        hidden_dims,
        latent_dim=latent_dim,
        input_shape=input_shape,
        **kw,
    )
