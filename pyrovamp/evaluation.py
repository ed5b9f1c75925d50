"""Evaluation: importance-sampled log-likelihood, the ELBO, per data point in nats.

Importance sampling with the guide as proposal (Burda et al. 2016, eq. 1; VampPrior paper,
sec. 4): for each data point ``x``,

    log p(x) ~= logsumexp_s [ log p(x, h_s) - log q(h_s | x) ] - log S,   h_s ~ q(h | x),

where ``h`` are all latent sites of the model (``z`` for the VAE). The estimator is a stochastic
lower bound that tightens as ``S`` grows and equals the ELBO's expectation at ``S = 1``.

Works for any object with Pyro ``model(x)`` and ``guide(x)`` methods whose latent and observed
sites sit in one ``pyro.plate`` over data points at ``dim=-1``: the samples are drawn in a
vectorised ``pyro.plate("importance_samples", S, dim=-2)`` around both, so the guide encodes each
data point once, never ``S`` copies of it.
"""

from __future__ import annotations

import contextlib
import math

import torch
import pyro
from pyro import poutine

from .priors import Prior

__all__ = ["log_importance_weights", "log_likelihood", "elbo", "elbo_terms", "active_units"]

DEFAULT_MEMORY_BUDGET = 512 * 2**20  # bytes of intermediate tensors per chunk


def _pair_cost(model) -> int:
    """Rough bytes of intermediates per (importance sample, data point) pair."""
    floats = 4096
    like = getattr(model, "likelihood", None)
    if like is not None:
        floats = 4 * like.output_dim + 1024
    for m in model.modules() if hasattr(model, "modules") else ():
        if isinstance(m, torch.nn.Linear):
            floats += 3 * m.out_features
        k = getattr(m, "num_components", None)
        if isinstance(m, Prior) and isinstance(k, int):
            floats += 2 * k
    return 4 * floats


@contextlib.contextmanager
def _evaluation_context(model, seed):
    """``no_grad``, eval mode, priors cached (their components computed once), optional seed
    (in a forked RNG so the caller's random stream is left as it was)."""
    was_training = getattr(model, "training", False)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        if seed is not None:
            devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
            stack.enter_context(torch.random.fork_rng(devices=devices))
            torch.manual_seed(seed)  # Pyro samples with torch's generator
        if hasattr(model, "modules"):
            model.eval()
            for m in model.modules():
                if isinstance(m, Prior):
                    stack.enter_context(m.cached())
        try:
            yield
        finally:
            if hasattr(model, "train"):
                model.train(was_training)


def _log_weights_chunk(model, x, num_samples, split=False):
    """``log p(x, h) - log q(h|x)`` for ``num_samples`` draws: ``(S, N)``; with ``split=True``
    the pair ``(observed-site log-likelihood, latent log q - log p)`` instead."""
    with pyro.plate("importance_samples", num_samples, dim=-2):
        guide_trace = poutine.trace(model.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x)
    observed, latent = 0.0, 0.0
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        trace.compute_log_prob()
        for name, site in trace.nodes.items():
            if site["type"] != "sample":
                continue
            lp = site["log_prob"]
            if lp.dim() > 2 or (lp.dim() == 2 and lp.shape[-1] not in (1, x.shape[0])):
                raise ValueError(f"site {name!r} has log_prob shape {tuple(lp.shape)}: every site "
                                 "must sit in the data plate at dim=-1")
            if site["is_observed"]:
                observed = observed + lp
            else:
                latent = latent + sign * lp
    shape = (num_samples, x.shape[0])
    if split:
        return torch.as_tensor(observed).expand(shape), (-torch.as_tensor(latent)).expand(shape)
    return torch.as_tensor(observed + latent).expand(shape)


def _check(model, x):
    if hasattr(model, "input_dim") and hasattr(model, "likelihood"):
        from .models import check_data
        return check_data(x, model.input_dim, model.likelihood)
    return x


def _chunks(model, num_samples, memory_budget, batch_size):
    pairs = max(1, int(memory_budget) // _pair_cost(model))
    points = batch_size or max(1, pairs // num_samples)
    samples = max(1, min(num_samples, pairs // max(1, points)))
    return points, samples


def _iter_log_weights(model, x, num_samples, points, samples):
    """Yield ``(S, n)`` log-weight blocks for consecutive chunks of ``points`` data points."""
    for i in range(0, x.shape[0], points):
        xb = x[i:i + points]
        yield torch.cat([_log_weights_chunk(model, xb, min(samples, num_samples - s))
                         for s in range(0, num_samples, samples)], 0)


def _prepare(model, x, num_samples, memory_budget, batch_size):
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    x = _check(model, x)
    return x, _chunks(model, num_samples, memory_budget, batch_size)


def log_importance_weights(model, x: torch.Tensor, num_samples: int, *,
                           memory_budget: int = DEFAULT_MEMORY_BUDGET,
                           batch_size: int | None = None, seed: int | None = None) -> torch.Tensor:
    """Log importance weights ``log p(x, h_s) - log q(h_s|x)`` with ``h_s ~ q(h|x)``.

    Args:
        model: object with Pyro ``model(x)`` / ``guide(x)`` (e.g. :class:`pyrovamp.VAE`).
        x: ``(N, D)`` data.
        num_samples: ``S`` importance samples per data point.
        memory_budget: bytes of intermediate tensors per chunk.
        batch_size: data points per chunk (default: from the memory budget).
        seed: fix the random draws (the global RNG is left untouched).

    Returns:
        ``(S, N)`` float32 tensor on ``x``'s device, nats.

    Raises:
        ValueError: bad ``x`` (shape, NaN, support) or ``num_samples < 1``.
    """
    x, (points, samples) = _prepare(model, x, num_samples, memory_budget, batch_size)
    with _evaluation_context(model, seed):
        return torch.cat(list(_iter_log_weights(model, x, num_samples, points, samples)), 1)


def log_likelihood(model, x: torch.Tensor, num_samples: int = 5000, *,
                   memory_budget: int = DEFAULT_MEMORY_BUDGET, batch_size: int | None = None,
                   seed: int | None = None, diagnostics: bool = False, method: str = "is",
                   **options):
    """Importance-sampled ``log p(x)`` per data point, in nats (Burda et al. 2016, eq. 1; the
    VampPrior paper's test log-likelihood with ``S = 5000``).

    Vectorised over samples and data points, chunked by ``memory_budget`` bytes; the prior's
    components (e.g. the encoder on all pseudo-inputs) are computed once per call; the
    ``logsumexp`` over samples is taken in float64.

    Args:
        model: object with Pyro ``model(x)`` / ``guide(x)``; the guide is the proposal.
        x: ``(N, D)`` data.
        num_samples: ``S``.
        memory_budget, batch_size, seed: see :func:`log_importance_weights`.
        diagnostics: also return the Pareto-smoothed importance sampling diagnostics of every
            data point's weights (:func:`pyrovamp.workflow.importance_diagnostics`).

    Returns:
        ``(N,)`` float64 tensor of log-likelihoods (nats per data point; higher is better); with
        ``diagnostics=True`` the pair ``(log_likelihood, dict)`` whose dict holds ``(N,)`` numpy
        arrays ``log_likelihood_psis``, ``pareto_k`` and ``ess``.

    With ``method="ais"`` the estimate is annealed importance sampling
    (:func:`pyrovamp.ais.ais_log_likelihood`; ``options``: ``num_chains``, ``num_steps``, ...;
    ``num_samples`` is not used), with ``method="exact"`` quadrature for models with at most two
    latent dimensions (:func:`pyrovamp.exact.exact_log_likelihood`; ``options``: ``tol``, ...;
    with ``diagnostics=True`` its dict holds ``error_estimate``).

    Raises:
        ValueError: bad ``x`` or ``num_samples``, unknown ``method`` or options.
    """
    if method == "ais":
        from .ais import ais_log_likelihood

        return ais_log_likelihood(model, x, memory_budget=memory_budget, batch_size=batch_size,
                                  seed=seed, diagnostics=diagnostics, **options)
    if method == "exact":
        from .exact import exact_log_likelihood

        ll, err, info = exact_log_likelihood(model, x, memory_budget=memory_budget,
                                             diagnostics=True, **options)
        return (ll, {**info, "error_estimate": err.cpu().numpy()}) if diagnostics else ll
    if method != "is":
        raise ValueError(f"method must be 'is', 'ais' or 'exact', got {method!r}")
    if options:
        raise ValueError(f"unexpected option(s) for method='is': {', '.join(sorted(options))}")
    x, (points, samples) = _prepare(model, x, num_samples, memory_budget, batch_size)
    out, diag = [], {"log_likelihood_psis": [], "pareto_k": [], "ess": []}
    if diagnostics:
        from .workflow import importance_diagnostics
    with _evaluation_context(model, seed):
        for lw in _iter_log_weights(model, x, num_samples, points, samples):
            out.append(torch.logsumexp(lw.double(), dim=0) - math.log(num_samples))
            if diagnostics:
                d = importance_diagnostics(lw)
                for k in diag:
                    diag[k].append(d[k])
    ll = torch.cat(out)
    if not diagnostics:
        return ll
    import numpy as np

    return ll, {k: np.concatenate(v) for k, v in diag.items()}


def elbo(model, x: torch.Tensor, num_samples: int = 1, *,
         memory_budget: int = DEFAULT_MEMORY_BUDGET, batch_size: int | None = None,
         seed: int | None = None) -> torch.Tensor:
    """Monte Carlo ELBO ``E_q[log p(x, h) - log q(h|x)]`` per data point, in nats, averaged over
    ``num_samples`` draws from the guide (Kingma & Welling 2014, eq. 3).

    Returns:
        ``(N,)`` float64 tensor (nats per data point; a lower bound of ``log p(x)``).

    Raises:
        ValueError: bad ``x`` or ``num_samples``.
    """
    x, (points, samples) = _prepare(model, x, num_samples, memory_budget, batch_size)
    with _evaluation_context(model, seed):
        return torch.cat([lw.double().mean(0)
                          for lw in _iter_log_weights(model, x, num_samples, points, samples)])


def elbo_terms(model, x: torch.Tensor, num_samples: int = 1, *,
               memory_budget: int = DEFAULT_MEMORY_BUDGET, seed: int | None = None) -> dict:
    """The ELBO's two terms per data point, in nats, averaged over ``num_samples`` draws of the
    guide: ``reconstruction = E_q[log p(x|h)]`` (the observed sites) and
    ``kl = E_q[log q(h|x) - log p(h)]`` (the latent sites; a Monte Carlo KL); ``elbo`` is
    ``reconstruction - kl``.

    Returns:
        dict of ``(N,)`` float64 tensors ``reconstruction``, ``kl``, ``elbo``.

    Raises:
        ValueError: bad ``x`` or ``num_samples``.
    """
    x, (points, samples) = _prepare(model, x, num_samples, memory_budget, None)
    rec, kl = [], []
    with _evaluation_context(model, seed):
        for i in range(0, x.shape[0], points):
            xb = x[i:i + points]
            parts = [_log_weights_chunk(model, xb, min(samples, num_samples - s), split=True)
                     for s in range(0, num_samples, samples)]
            rec.append(torch.cat([p[0] for p in parts]).double().mean(0))
            kl.append(torch.cat([p[1] for p in parts]).double().mean(0))
    rec, kl = torch.cat(rec), torch.cat(kl)
    return {"reconstruction": rec, "kl": kl, "elbo": rec - kl}


def active_units(model, x: torch.Tensor, threshold: float = 0.01, num_samples: int = 10,
                 batch_size: int = 1000) -> dict:
    """Number of active stochastic units per latent layer (Burda et al. 2016, sec. 5.2): unit
    ``i`` is active when ``Cov_x(E_q[z_i | x]) > threshold``, the variance over data points of
    its posterior mean.

    Args:
        model: a model with ``posterior_means(x, num_samples) -> {site: (N, L)}`` (:class:`VAE`:
            ``z``; :class:`HVAE`: ``z1`` and ``z2``, ``E[z1|x]`` by Monte Carlo over ``z2``).
        x: ``(N, D)`` data (N >= 2).
        threshold: activity threshold (Burda et al.: 0.01).
        num_samples: Monte Carlo draws for the lower layer's posterior mean.
        batch_size: data points per forward pass.

    Returns:
        ``{site: number of active units}``.

    Raises:
        ValueError: fewer than 2 data points, or a model without ``posterior_means``.
    """
    if not hasattr(model, "posterior_means"):
        raise ValueError("active_units needs a model with posterior_means(x) (VAE or HVAE)")
    if x.shape[0] < 2:
        raise ValueError(f"active_units needs at least 2 data points, got {x.shape[0]}")
    was_training = model.training
    model.eval()
    try:
        parts = [model.posterior_means(x[i:i + batch_size], num_samples)
                 for i in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was_training)
    out = {}
    for site in parts[0]:
        means = torch.cat([p[site] for p in parts]).double()
        out[site] = int((means.var(0) > threshold).sum())
    return out
