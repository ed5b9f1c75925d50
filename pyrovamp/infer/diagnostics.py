"""Diagnostics of importance weights: Pareto-smoothed importance sampling (PSIS).

For each data point the importance sampler of :mod:`pyrovamp.infer.importance` draws ``S`` latent
values from the guide and weighs them by ``w_s = p(x, h_s) / q(h_s | x)``. How far the estimate
``log mean_s w_s`` can be trusted depends on the right tail of the weights' distribution; PSIS
(Vehtari, Simpson, Gelman, Yao and Gabry 2024, "Pareto smoothed importance sampling", JMLR
25(72)) fits a generalised Pareto distribution to the largest weights: its shape ``k-hat`` is the
diagnostic, and the smoothed weights give a lower-variance estimate.

The threshold above which an estimate is unreliable depends on ``S`` (Vehtari et al. 2024,
sec. 3.2.4 and Table 1): ``min(1 - 1 / log10(S), 0.7)`` -- 0.67 for S=1000, 0.7 for S>=5000,
0.5 for S=100. This module sits between the evaluation and the workflow: it imports nothing of
pyrovamp but the internal ArviZ adapter.
"""

from __future__ import annotations

import math

import numpy as np

from pyrovamp._arviz import psislw
from pyrovamp._validate import check_int, check_positive

__all__ = ["khat_threshold", "importance_diagnostics", "khat_against_truth"]


def khat_threshold(num_samples: int) -> float:
    """The Pareto k-hat above which an importance-sampling estimate from ``num_samples`` draws
    is unreliable: ``min(1 - 1/log10(S), 0.7)`` (Vehtari et al. 2024, sec. 3.2.4).

    Args:
        num_samples: ``S``, importance samples per data point (a positive integer).

    Returns:
        The threshold (at most 0.7; below 0 for ``S < 10`` and ``-inf`` for ``S = 1``: too
        few draws to judge a tail, so every estimate is flagged).

    Raises:
        ValueError: ``num_samples`` is not a positive integer.
    """
    if isinstance(num_samples, np.integer):
        num_samples = int(num_samples)
    check_int("num_samples", num_samples)
    if num_samples == 1:
        return -math.inf
    return min(1.0 - 1.0 / math.log10(int(num_samples)), 0.7)


def importance_diagnostics(log_weights) -> dict:
    """PSIS diagnostics of importance log-weights, per data point.

    Args:
        log_weights: ``(S, N)`` log importance weights ``log p(x_n, h_s) - log q(h_s | x_n)``
            (``S`` samples for each of ``N`` data points, nats), e.g. from
            :func:`pyrovamp.log_importance_weights`; a torch tensor or numpy array.

    Returns:
        dict with ``(N,)`` float64 numpy arrays ``log_likelihood`` (the plain estimate
        ``logsumexp_s log w_s - log S``, nats), ``log_likelihood_psis`` (the same with the
        Pareto-smoothed weights), ``pareto_k`` (k-hat; ``inf`` when ``S < 25``, too few draws for
        a tail fit), ``ess`` (effective sample size ``1 / sum_s wbar_s^2`` of the normalised raw
        weights ``wbar``), and the floats ``khat_threshold`` (:func:`khat_threshold` of ``S``)
        and ``share_k_above_threshold`` (the share of points whose estimate is unreliable), and
        the int ``num_samples``.

    Raises:
        ValueError: ``log_weights`` is not 2-D with at least one sample and one point, or holds
            NaN.
    """
    from scipy.special import logsumexp

    if hasattr(log_weights, "detach"):
        log_weights = log_weights.detach().double().cpu().numpy()
    lw = np.asarray(log_weights, dtype=np.float64)
    if lw.ndim != 2 or lw.shape[0] < 1 or lw.shape[1] < 1:
        raise ValueError(f"log_weights must have shape (S, N) with S, N >= 1, got {lw.shape}")
    if np.isnan(lw).any():
        raise ValueError("log_weights must not contain NaN")
    lw = lw.T  # N x S
    num_samples = lw.shape[1]
    # a point whose every weight is 0 (log -inf: a value the model cannot produce) gets
    # log-likelihood -inf and ESS 0, without numpy's warnings about the -inf - -inf on the way
    with np.errstate(divide="ignore", invalid="ignore"):
        log_total = logsumexp(lw, axis=1)
        plain = log_total - math.log(num_samples)
        smoothed, khat = psislw(lw)  # normalised: logsumexp over each row is 0
        # PSIS replaces only the right tail (at most 3 sqrt(S) < S/2 draws); on the lower half
        # the smoothed normalised weights differ from the raw ones by the log of the smoothed
        # total.
        # the median of each point's finite weights (-inf, i.e. 0, weights are not a tail)
        finite = np.isfinite(lw)
        ranked = np.sort(np.where(finite, lw, np.inf), axis=1)
        count = finite.sum(axis=1)
        middle = ranked[np.arange(lw.shape[0]), np.maximum(count - 1, 0) // 2][:, None]
        low = (lw <= middle) & finite
        log_smoothed_total = np.where(low, lw - smoothed, 0.0).sum(axis=1) / low.sum(axis=1)
        psis = log_smoothed_total - math.log(num_samples)
        ess = np.exp(2 * log_total - logsumexp(2 * lw, axis=1))
    impossible = np.isneginf(log_total)
    psis[impossible], ess[impossible] = -np.inf, 0.0
    threshold = khat_threshold(num_samples)
    return {
        "log_likelihood": plain,
        "log_likelihood_psis": psis,
        "pareto_k": khat,
        "ess": ess,
        "khat_threshold": threshold,
        "share_k_above_threshold": float(np.mean(khat > threshold)),
        "num_samples": num_samples,
    }


def khat_against_truth(
    log_likelihood, pareto_k, true_log_likelihood, num_samples: int, tolerance: float = 0.5
) -> dict:
    """How well Pareto k-hat finds the data points whose importance-sampling (IS) estimate is
    wrong, checked against the true log-likelihood (e.g. :func:`pyrovamp.exact_log_likelihood`
    for latent spaces of at most two dimensions, or a long AIS run).

    A point is *off* when its IS estimate is more than ``tolerance`` nats below the truth (IS is
    a stochastic lower bound: its errors are underestimates), and *flagged* when its k-hat is
    above :func:`khat_threshold` of ``num_samples``; precision is the share of flagged points
    that are off, recall the share of off points that are flagged (Vehtari et al. 2024, sec. 3).

    Args:
        log_likelihood: ``(N,)`` IS estimates, nats per data point.
        pareto_k: ``(N,)`` k-hat of each point's weights (:func:`importance_diagnostics`).
        true_log_likelihood: ``(N,)`` true values, nats per data point.
        num_samples: ``S``, the IS samples per point behind the estimates.
        tolerance: nats (> 0).

    Returns:
        dict: ``error`` (the ``(N,)`` array IS minus truth), ``mean_error``, ``worst_error``
        (nats), ``points``, ``points_off``, ``flagged``, ``flagged_and_off``, ``precision`` and
        ``recall`` (``nan`` when nothing is flagged, or nothing is off), ``khat_threshold``.

    Raises:
        ValueError: arrays of different lengths, empty or holding NaN; ``tolerance <= 0``; bad
            ``num_samples``.
    """
    ll, k, truth = (
        np.asarray(a, dtype=np.float64).reshape(-1)
        for a in (log_likelihood, pareto_k, true_log_likelihood)
    )
    if not (ll.size == k.size == truth.size) or ll.size == 0:
        raise ValueError(
            "log_likelihood, pareto_k and true_log_likelihood must be non-empty and "
            f"of one length, got {ll.size}, {k.size} and {truth.size}"
        )
    if np.isnan(ll).any() or np.isnan(k).any() or np.isnan(truth).any():
        raise ValueError("log_likelihood, pareto_k and true_log_likelihood must not hold NaN")
    check_positive("tolerance", tolerance, "a positive number of nats")
    threshold = khat_threshold(num_samples)
    err = ll - truth
    off, flag = err < -tolerance, k > threshold
    both = int((off & flag).sum())
    return {
        "error": err,
        "mean_error": float(err.mean()),
        "worst_error": float(err.min()),
        "points": int(err.size),
        "points_off": int(off.sum()),
        "flagged": int(flag.sum()),
        "flagged_and_off": both,
        "precision": both / int(flag.sum()) if flag.any() else math.nan,
        "recall": both / int(off.sum()) if off.any() else math.nan,
        "khat_threshold": threshold,
        "tolerance": float(tolerance),
    }
