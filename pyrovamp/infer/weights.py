"""The importance log-weights ``log p(x, h) - log q(h|x)`` of a Pyro model/guide pair, in nats.

One implementation, used by importance sampling and the ELBO (:mod:`pyrovamp.infer.importance`),
the IWAE loss (:class:`pyrovamp.infer.importance.IWAELoss`), guide refinement
(:mod:`pyrovamp.infer.refine`) and the memory planner (:mod:`pyrovamp.infer.planning`).

``S`` draws ``h_s ~ q(h|x)`` come from one vectorised ``pyro.plate(PLATE, S, dim=-2)`` around the
guide, and the model is replayed on them inside the same plate, so an amortised guide encodes
each data point once, never ``S`` copies of it. Every site must sit in one ``pyro.plate`` over
the data points at ``dim=-1``; the log-weights then have shape ``(S, N)``. The log-densities are
the traces' ``log_prob`` (a handler's ``scale`` applies, as in Pyro's ELBOs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample

__all__ = ["PLATE", "site_log_probs", "trace_pair", "log_weights"]

PLATE = "importance_samples"
"""Name of the plate over the draws (at ``dim=-2``)."""


def site_log_probs(
    trace: Trace, x: torch.Tensor, *, require_rsample: str | None = None
) -> tuple[Any, Any]:
    """``(observed, latent)``: the sums of ``log_prob`` over the observed and over the latent
    sample sites of a Pyro ``trace`` run on data ``x`` (``(S, N)``-broadcastable tensors, or
    ``0.0`` where there is no such site), nats. Plates' subsample sites are skipped.

    Args:
        trace: a trace of a model or guide, run on ``x``.
        x: ``(N, ...)`` data.
        require_rsample: the name of what needs every latent site reparameterised (a gradient
            through the draws, e.g. ``"loss='iwae'"``): a site without ``rsample`` is refused
            with a message naming it. ``None``: no check.

    Raises:
        ValueError: a site whose ``log_prob`` is not in the data plate at ``dim=-1``, or (with
            ``require_rsample``) a latent site without ``rsample``.
    """
    observed: torch.Tensor | float = 0.0
    latent: torch.Tensor | float = 0.0
    trace.compute_log_prob()
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if (
            require_rsample
            and not site["is_observed"]
            and not getattr(site["fn"], "has_rsample", False)
        ):
            raise ValueError(
                f"{require_rsample} needs reparameterised guide sites; {name!r} has no rsample "
                f"(guide site {name!r} is not reparameterised: {type(site['fn']).__name__})"
            )
        lp = site["log_prob"]
        if lp.dim() > 2 or (lp.dim() == 2 and lp.shape[-1] not in (1, x.shape[0])):
            raise ValueError(
                f"site {name!r} has log_prob shape {tuple(lp.shape)}: every site "
                "must sit in the data plate at dim=-1"
            )
        if site["is_observed"]:
            observed = observed + lp
        else:
            latent = latent + lp
    return observed, latent


def trace_pair(
    model_fn: Callable, guide_fn: Callable, x: torch.Tensor, num_samples: int
) -> tuple[Trace, Trace]:
    """``(model_trace, guide_trace)``: ``num_samples`` draws of ``guide_fn(x)`` in one vectorised
    plate at ``dim=-2``, and ``model_fn(x)`` replayed on them in the same plate."""
    with pyro.plate(PLATE, num_samples, dim=-2):
        guide_trace = poutine.trace(guide_fn).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model_fn, trace=guide_trace)).get_trace(x)
    return model_trace, guide_trace


def log_weights(
    model_fn: Callable,
    guide_fn: Callable,
    x: torch.Tensor,
    num_samples: int,
    *,
    split: bool = False,
    require_rsample: str | None = None,
    guide_log_density: Callable[[Trace], torch.Tensor] | None = None,
) -> Any:
    """Importance log-weights ``log p(x, h_s) - log q(h_s|x)``, ``h_s ~ q(h|x)``, nats.

    Args:
        model_fn, guide_fn: Pyro model and guide, called as ``fn(x)``.
        x: ``(N, ...)`` data.
        num_samples: ``S`` draws per data point.
        split: return the ELBO's two parts instead (see Returns).
        require_rsample: the name of a loss whose gradient flows through the draws: a latent
            guide site without ``rsample`` is refused (not checked with ``guide_log_density``).
        guide_log_density: computes ``log q(h|x)`` from the guide trace instead of the trace's
            own ``log_prob`` (guide refinement: ``log q`` with the parameters' gradient stopped).

    Returns:
        ``(S, N)`` tensor; with ``split=True`` the pair ``(log p(x|h), log q(h|x) - log p(h))``
        of ``(S, N)`` tensors (the observed sites; the latent sites).

    Raises:
        ValueError: a site outside the data plate at ``dim=-1``; a latent guide site without
            ``rsample`` when ``require_rsample``.
    """
    model_trace, guide_trace = trace_pair(model_fn, guide_fn, x, num_samples)
    observed, latent_p = site_log_probs(model_trace, x)
    if guide_log_density is None:
        observed_q, latent_q = site_log_probs(guide_trace, x, require_rsample=require_rsample)
        log_q = observed_q + latent_q
    else:
        log_q = guide_log_density(guide_trace)
    latent = latent_p - log_q
    shape = (num_samples, x.shape[0])
    if split:
        return torch.as_tensor(observed).expand(shape), (-torch.as_tensor(latent)).expand(shape)
    return torch.as_tensor(observed + latent).expand(shape)
