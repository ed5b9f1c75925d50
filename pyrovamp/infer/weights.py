"""The importance log-weights ``log p(x, h) - log q(h|x)`` of a Pyro model/guide pair, in nats.

One implementation, used by importance sampling and the ELBO (:mod:`pyrovamp.infer.importance`),
the IWAE loss (:class:`pyrovamp.infer.importance.IWAELoss`), guide refinement
(:mod:`pyrovamp.infer.refine`) and the memory planner (:mod:`pyrovamp.infer.planning`).

``S`` draws ``h_s ~ q(h|x)`` come from one vectorised ``pyro.plate(PLATE, S, dim=-2)`` around the
guide, and the model is replayed on them inside the same plate, so an amortised guide encodes
each data point once, never ``S`` copies of it. Every site must sit in one ``pyro.plate`` over
the data points at ``dim=-1``; the log-weights then have shape ``(S, N)``.

Scales. The log-densities are the sites' *unscaled* ``log_prob`` (a ``poutine.mask`` applies):
a log-likelihood or an ELBO is a property of the model and of each data point, not of the
training objective, so ``pyro.plate(..., subsample_size=...)``'s scale ``size / subsample_size``
and a ``poutine.scale`` (KL annealing) leave it unchanged. A training loss that must honour the
scales (:class:`pyrovamp.infer.importance.IWAELoss`) asks :func:`log_weights` for them
(``with_scale=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample

from pyrovamp._random import fork_rng

__all__ = [
    "PLATE",
    "site_log_prob",
    "site_log_probs",
    "trace_pair",
    "check_latent_sites",
    "log_weights",
    "dreg_log_weights",
]

PLATE = "importance_samples"
"""Name of the plate over the draws (at ``dim=-2``)."""


def site_log_prob(name: str, site: Any) -> torch.Tensor:
    """The log-density of a traced sample site at its value, *unscaled*: ``poutine.mask`` and
    ``obs_mask`` apply, plates' subsample scales and ``poutine.scale`` do not (nats, the site's
    batch shape). Computed without the host synchronisations of
    ``Trace.compute_log_prob`` (its NaN warnings).

    Raises:
        ValueError: the distribution refuses the value (one line naming the site).
    """
    try:
        log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    except ValueError as e:
        raise ValueError(f"site {name!r}: {e}".splitlines()[0]) from e
    return scale_and_mask(log_p, 1.0, site["mask"])


def _scored_sites(trace: Trace, x: torch.Tensor, require_rsample: str | None):
    """``(name, site, log_prob)`` for every sample site of ``trace`` but plates' subsample sites,
    ``log_prob`` unscaled (:func:`site_log_prob`) and checked to be one value per data point."""
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
        lp = site_log_prob(name, site)
        n = x.shape[0]
        if n > 1 and (lp.dim() == 0 or lp.shape[-1] == 1):  # one value for the whole batch
            raise ValueError(
                f"site {name!r} has log_prob shape {tuple(lp.shape)} for {n} data points: it "
                "is outside the data plate (one value for the whole batch, e.g. a "
                "to_event over the data points); every site must sit in one plate over the "
                "data points at dim=-1"
            )
        if lp.dim() > 2 or (lp.dim() >= 1 and lp.shape[-1] not in (1, n)):
            raise ValueError(
                f"site {name!r} has log_prob shape {tuple(lp.shape)} for {x.shape[0]} data "
                "points: every site must sit in one plate over the data points at dim=-1, "
                "not subsampled (score the minibatch itself); a guide with one latent per "
                "training point (e.g. an AutoNormal, not amortised) scores only the data it "
                "was fitted on"
            )
        yield name, site, lp


def site_log_probs(
    trace: Trace, x: torch.Tensor, *, require_rsample: str | None = None
) -> tuple[Any, Any]:
    """``(observed, latent)``: the sums of the unscaled log-densities (:func:`site_log_prob`)
    over the observed and over the latent sample sites of a Pyro ``trace`` run on data ``x``
    (``(S, N)``-broadcastable tensors, or ``0.0`` where there is no such site), nats per data
    point. Plates' subsample sites are skipped.

    Args:
        trace: a trace of a model or guide, run on ``x``.
        x: ``(N, ...)`` data.
        require_rsample: the name of what needs every latent site reparameterised (a gradient
            through the draws, e.g. ``"loss='iwae'"``): a site without ``rsample`` is refused
            with a message naming it. ``None``: no check.

    Raises:
        ValueError: a site whose log-density is not one value per data point of ``x`` (outside
            the data plate at ``dim=-1``, or in a plate subsampled to fewer points than ``x``),
            or (with ``require_rsample``) a latent site without ``rsample``.
    """
    observed: torch.Tensor | float = 0.0
    latent: torch.Tensor | float = 0.0
    for _, site, lp in _scored_sites(trace, x, require_rsample):
        if site["is_observed"]:
            observed = observed + lp
        else:
            latent = latent + lp
    return observed, latent


def trace_pair(
    model_fn: Callable, guide_fn: Callable, x: torch.Tensor, num_samples: int
) -> tuple[Trace, Trace]:
    """``(model_trace, guide_trace)``: ``num_samples`` draws of ``guide_fn(x)`` in one vectorised
    plate at ``dim=-2``, and ``model_fn(x)`` replayed on them in the same plate.

    Raises:
        ValueError: a model or guide that cannot run with that plate (a latent site outside the
            data plate, a plate at ``dim=-2``), a latent site of the model that the guide
            does not sample (its draws would come from the prior, with no proposal density to
            weigh them by), or a guide site that is no latent of the model (its density would
            count in the weights); one line naming the site.
    """
    with pyro.plate(PLATE, num_samples, dim=-2):
        guide_trace = _traced(guide_fn, x, (model_fn, guide_fn))
        model_trace = _traced(model_fn, x, (model_fn, guide_fn), replay=guide_trace)
    check_latent_sites(model_trace, guide_trace)
    return model_trace, guide_trace


def _plate_failure(error: ValueError, model_fn, guide_fn, x) -> ValueError:
    """What to raise for ``error``, raised by the model or guide inside the importance samples'
    plate: a line saying the pair cannot run vectorised when the plate caused it (Pyro's plate
    collision, or a shape mismatch the pair does not have without the plate), else ``error``
    itself (the pair's own bug)."""
    first = str(error).splitlines()[0].strip() if str(error) else ""
    if "Shape mismatch inside plate" not in first and "collide at dim" not in first:
        return error
    if "collide at dim" not in first:
        try:  # without the plate, once: does the pair run on x at all?
            with fork_rng(), torch.no_grad():
                trace = poutine.trace(guide_fn).get_trace(x)
                poutine.trace(poutine.replay(model_fn, trace=trace)).get_trace(x)
        except Exception:
            return error
    return ValueError(
        f"the model or guide does not run with the importance samples in a plate at dim=-2 "
        f"(Pyro: {first}): every site must sit in one plate over the data points at dim=-1, "
        "with no latent site outside it"
    )


def _traced(fn, x, pair, replay: Trace | None = None) -> Trace:
    """The trace of ``fn(x)`` (replayed on ``replay``) inside the importance samples' plate; a
    failure the plate caused is said so (:func:`_plate_failure` of the model/guide ``pair``)."""
    try:
        run = fn if replay is None else poutine.replay(fn, trace=replay)
        return poutine.trace(run).get_trace(x)
    except ValueError as e:
        error = _plate_failure(e, pair[0], pair[1], x)
        if error is e:
            raise
        raise error from e


def check_latent_sites(model_trace: Trace, guide_trace: Trace) -> None:
    """Refuse a latent site of the model that the guide does not sample (its draws would come
    from the prior, with no proposal density to weigh them by) and a guide site that is no
    latent of the model (its density would count in the weights); the guide's auxiliary sites
    (``infer={"is_auxiliary": True}``, e.g. an autoguide's unconstrained draws) are part of its
    density and pass.

    Raises:
        ValueError: one line naming the site.
    """
    model_latents, guide_latents = (
        {n for n, s in t.nodes.items() if s["type"] == "sample" and not s["is_observed"]
         and not site_is_subsample(s) and not (s["infer"] or {}).get("is_auxiliary")}
        for t in (model_trace, guide_trace)
    )  # fmt: skip
    for name in sorted(model_latents - guide_latents):
        raise ValueError(
            f"latent site {name!r} of the model is not sampled by the guide: the guide "
            "(the importance-sampling proposal) must sample every latent site of the model"
        )
    for name in sorted(guide_latents - model_latents):
        raise ValueError(
            f"guide site {name!r} is not a latent site of the model: the guide (the "
            "importance-sampling proposal) samples the model's latent sites only"
        )


def log_weights(
    model_fn: Callable,
    guide_fn: Callable,
    x: torch.Tensor,
    num_samples: int,
    *,
    split: bool = False,
    require_rsample: str | None = None,
    guide_log_density: Callable[[Trace], torch.Tensor] | None = None,
    with_scale: bool = False,
) -> Any:
    """Importance log-weights ``log p(x, h_s) - log q(h_s|x)``, ``h_s ~ q(h|x)``, nats per data
    point, from the sites' unscaled log-densities (see the module docstring).

    Args:
        model_fn: Pyro model, called as ``model_fn(x)``.
        guide_fn: Pyro guide, called as ``guide_fn(x)``.
        x: ``(N, ...)`` data.
        num_samples: ``S`` draws per data point.
        split: return the ELBO's two parts instead (see Returns).
        require_rsample: the name of a loss whose gradient flows through the draws: a latent
            guide site without ``rsample`` is refused (not checked with ``guide_log_density``).
        guide_log_density: computes ``log q(h|x)`` (``(S, N)``-broadcastable, nats) from the
            guide trace instead of the trace's own ``log_prob`` -- e.g. a proposal's density
            evaluated another way; ``None``: the trace's.
        with_scale: the training objective's reading of the sites' scales (for a loss, not an
            estimate): the observed sites must share one scale ``c`` (a data plate's
            ``size / subsample_size``, a ``poutine.scale``); a latent site with scale
            ``c * beta`` enters the weights multiplied by ``beta`` (KL annealing). Returns
            ``(log_weights, c)``; the objective is ``c`` times the per-point bound.

    Returns:
        ``(S, N)`` tensor; with ``split=True`` the pair ``(log p(x|h), log q(h|x) - log p(h))``
        of ``(S, N)`` tensors (the observed sites; the latent sites); with ``with_scale=True``
        the pair ``(log_weights, c)`` (``c`` a float or an ``(N,)``-broadcastable tensor).

    Raises:
        ValueError: a site outside the data plate at ``dim=-1`` or subsampled; a latent guide
            site without ``rsample`` when ``require_rsample``; with ``with_scale``, observed
            sites of different scales.
    """
    model_trace, guide_trace = trace_pair(model_fn, guide_fn, x, num_samples)
    shape = (num_samples, x.shape[0])
    if with_scale:
        return _scaled_log_weights(model_trace, guide_trace, x, require_rsample, shape)
    observed, latent = _unscaled_parts(
        model_trace, guide_trace, x, require_rsample, guide_log_density
    )
    if split:
        return torch.as_tensor(observed).expand(shape), (-torch.as_tensor(latent)).expand(shape)
    return torch.as_tensor(observed + latent).expand(shape)


def _unscaled_parts(model_trace, guide_trace, x, require_rsample, guide_log_density=None):
    """``(observed, latent)`` of the unscaled log-weights: ``sum log p(x|h)`` over the observed
    sites of ``model_trace``, and ``log p(h) - log q(h|x)`` (``log q`` from
    ``guide_log_density(guide_trace)`` when given, else the guide trace's sites)."""
    observed, latent_p = site_log_probs(model_trace, x)
    if guide_log_density is None:
        observed_q, latent_q = site_log_probs(guide_trace, x, require_rsample=require_rsample)
        log_q = observed_q + latent_q
    else:
        log_q = guide_log_density(guide_trace)
    return observed, latent_p - log_q


def _scaled_log_weights(model_trace, guide_trace, x, require_rsample, shape):
    """``(log_weights, c)`` of :func:`log_weights` with ``with_scale=True``."""
    sites = [(n, s, lp, 1.0) for n, s, lp in _scored_sites(model_trace, x, None)]
    sites += [(n, s, lp, -1.0) for n, s, lp in _scored_sites(guide_trace, x, require_rsample)]
    observed = [(n, s["scale"]) for n, s, _, sign in sites if s["is_observed"] and sign > 0]
    c = observed[0][1] if observed else 1.0
    if any(not _same_scale(c, other) for _, other in observed[1:]):
        raise ValueError(
            f"the observed sites {', '.join(repr(n) for n, _ in observed)} have different "
            "scales; an importance-weighted loss needs one scale per data point for all of them"
        )
    total: Any = 0.0
    for _, site, lp, sign in sites:
        if not site["is_observed"]:
            lp = lp * (site["scale"] / c)
        total = total + sign * lp
    return torch.as_tensor(total).expand(shape), c


def _latent_ratio(trace, c):
    """The scales ``beta = scale / c`` of the latent sites of ``trace`` (KL annealing), without
    computing any log-density."""
    return [
        (n, s["scale"] / c)
        for n, s in trace.nodes.items()
        if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
    ]


def _scaled_latent_sum(trace, x, c) -> Any:
    """``sum_s beta_s log q_s`` over the latent sites of a guide ``trace`` (``beta_s = scale /
    c``), nats."""
    total: Any = 0.0
    for _, site, lp in _scored_sites(trace, x, None):
        if not site["is_observed"]:
            total = total + lp * (site["scale"] / c)
    return total


def _scale_gradient(holder: dict, event_dim: int):
    """A tensor hook multiplying the gradient of a ``(K, N, *event)`` value by ``holder["f"]``
    (``(K, N)``, set once the forward pass has computed it)."""

    def hook(grad):
        f = holder["f"]
        return grad * f.reshape(f.shape + (1,) * event_dim).to(grad.dtype)

    return hook


def dreg_log_weights(
    model_fn: Callable,
    guide_fn: Callable,
    x: torch.Tensor,
    num_samples: int,
    *,
    require_rsample: str = "the doubly reparameterised gradient",
    scaled: bool = True,
) -> tuple[torch.Tensor, Any]:
    """``(log_w, c)`` as :func:`log_weights` with ``with_scale=True`` returns them -- the same
    values (with ``scaled=False``: the unscaled ``log_weights(...)`` and ``c = 1.0``) -- but
    differentiated for the doubly reparameterised gradient (DReG) of the
    importance-weighted bound ``L_K = logsumexp_k log w_k - log K`` (Tucker, Lawson, Gu &
    Maddison 2019, "Doubly reparameterized gradient estimators for Monte Carlo objectives",
    eq. 7): the gradient of ``logsumexp(log_w, 0)`` is, in every parameter,

    - through ``log p(x, h)`` at the draws (the model's parameters, and a prior's that go through
      the encoder, e.g. the VampPrior's): ``sum_k w~_k grad log p(x, h_k)``, the IWAE gradient;
    - through the draws ``h_k = T(eps_k; phi)`` (the guide's parameters):
      ``sum_k ((1 - beta) w~_k + beta w~_k^2) d log w_k / d h_k  d h_k / d phi``, which is the
      DReG estimator ``sum_k w~_k^2 ...`` at ``beta = 1``;
    - the score term ``d log q(h; phi) / d phi`` at fixed ``h`` is removed: its expectation is
      what the second line estimates by reparameterisation, with a variance that does not grow
      with ``K`` as the IWAE gradient's does (Rainforth et al. 2018).

    ``w~ = softmax_k(log w_k)`` are the normalised importance weights and ``beta`` the latent
    sites' scale relative to the observed ones (1 without KL annealing; the formula for
    ``beta != 1`` follows from Tucker et al.'s derivation with ``log w = log p(x|h) + beta (log
    p(h) - log q(h|x))``). Both halves are unbiased for the gradient of ``E[L_K]``.

    How: the guide is traced once; the model and the guide are replayed on copies of the draws
    whose gradient is multiplied by ``(1 - beta) + beta w~_k`` (a tensor hook), so that a draw's
    path inside the guide (``z1 = T1(eps1, z2; phi)`` in a hierarchical guide) is differentiated
    once, after the weighting; a third pass, the guide replayed on detached draws, gives the
    score term to subtract (``log q(stop(h); phi) - stop(...)``, zero in value). A guide with
    dropout in training mode draws other masks in its replays than in its first pass.

    Args:
        model_fn: Pyro model, called as ``model_fn(x)``.
        guide_fn: Pyro guide, called as ``guide_fn(x)``; every latent site must be
            reparameterised and have one value per draw and data point (``(K, N, *event)``).
        x: ``(N, ...)`` data.
        num_samples: ``K`` draws per data point.
        require_rsample: what the error message names when a latent guide site has no
            ``rsample``.
        scaled: the training objective's reading of the sites' scales (``with_scale=True`` of
            :func:`log_weights`: a loss, KL annealing's ``beta``); ``False``: the sites'
            unscaled log-densities and ``beta = 1`` -- the bound on ``log p(x)`` itself, as the
            likelihood estimators read it (:func:`pyrovamp.refine_guide`).

    Returns:
        ``(log_w, c)``: ``(K, N)`` log-weights (nats) and the observed sites' scale (``1.0``
        with ``scaled=False``).

    Raises:
        ValueError: as :func:`log_weights` (with ``with_scale=scaled``); with ``scaled``, latent
            sites with different ``beta``; a latent guide site whose value is not
            ``(K, N, *event)``.
    """
    with pyro.plate(PLATE, num_samples, dim=-2):
        guide_trace = _traced(guide_fn, x, (model_fn, guide_fn))
    holder: dict = {}
    hooked, stopped = guide_trace.copy(), guide_trace.copy()
    new_values: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    site: Any
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        value: torch.Tensor = site["value"]
        event_dim: int = site["fn"].event_dim
        if tuple(value.shape[: value.dim() - event_dim]) != (num_samples, x.shape[0]):
            raise ValueError(
                f"{require_rsample} needs one value per draw and data point at every latent "
                f"site; {name!r} has batch shape {tuple(value.shape[: value.dim() - event_dim])}"
            )
        copy = value.view_as(value)
        if copy.requires_grad:
            copy.register_hook(_scale_gradient(holder, event_dim))
        new_values[name] = (copy, value.detach())
    for name, (copy, detached) in new_values.items():
        hooked.nodes[name] = dict(hooked.nodes[name], value=copy)  # type: ignore[assignment]
        stopped.nodes[name] = dict(stopped.nodes[name], value=detached)  # type: ignore[assignment]
    with pyro.plate(PLATE, num_samples, dim=-2):
        model_trace = _traced(model_fn, x, (model_fn, guide_fn), replay=hooked)
        guide_live = poutine.trace(poutine.replay(guide_fn, trace=hooked)).get_trace(x)
        guide_stopped = poutine.trace(poutine.replay(guide_fn, trace=stopped)).get_trace(x)
    shape = (num_samples, x.shape[0])
    beta: Any
    if scaled:
        log_w, c = _scaled_log_weights(model_trace, guide_live, x, require_rsample, shape)
        ratios = _latent_ratio(model_trace, c) + _latent_ratio(guide_live, c)
        beta = ratios[0][1] if ratios else 1.0
        if any(not _same_scale(beta, other) for _, other in ratios[1:]):
            raise ValueError(
                f"{require_rsample} needs one KL scale for all latent sites; "
                f"{', '.join(repr(n) for n, _ in ratios)} are scaled differently"
            )
        score = torch.as_tensor(_scaled_latent_sum(guide_stopped, x, c))
    else:
        observed, latent = _unscaled_parts(model_trace, guide_live, x, require_rsample)
        log_w = torch.as_tensor(observed + latent).expand(shape)
        c, beta = 1.0, 1.0
        score = torch.as_tensor(sum(site_log_probs(guide_stopped, x)))
    check_latent_sites(model_trace, guide_trace)  # after the sites' own checks
    log_w = log_w + (score - score.detach())
    weights = torch.softmax(log_w.detach(), 0)
    holder["f"] = (1 - beta) + beta * weights
    return log_w, c


def _same_scale(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return bool(torch.equal(torch.as_tensor(a), torch.as_tensor(b)))
    return a == b
