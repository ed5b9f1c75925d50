"""Bayesian-workflow comparison of trained models with ArviZ.

* :func:`to_inference_data` -- an ``arviz.InferenceData`` of a model on a test set: the
  per-data-point importance-sampled log-likelihood (group ``log_likelihood``), the ELBO, the
  Pareto-smoothed (PSIS) estimate, the Pareto shape k-hat and the effective sample size of every
  data point's importance weights, the importance log-weights themselves (group
  ``importance_sampling``), and the training history (group ``training_history``).
* :func:`compare` -- models ranked on the same test set, in the layout of ``arviz.compare``
  (which computes it): summed log-likelihood, the difference to the best model and the standard
  error of that difference from the paired per-data-point values.
* :func:`importance_diagnostics` -- PSIS of each data point's log-weights (``arviz.psislw``;
  Vehtari et al. 2024): k-hat > 0.7 flags an estimate that cannot be trusted.

Units: nats; log-likelihoods per data point unless a name says ``sum``.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from pathlib import Path

import numpy as np
import torch

__all__ = ["importance_diagnostics", "to_inference_data", "compare", "plot_compare",
           "plot_pareto_k", "KHAT_THRESHOLD"]

KHAT_THRESHOLD = 0.7


def importance_diagnostics(log_weights) -> dict:
    """PSIS diagnostics of importance log-weights.

    Args:
        log_weights: ``(S, N)`` log importance weights (``S`` samples for each of ``N`` data
            points), e.g. from :func:`pyrovamp.log_importance_weights`.

    Returns:
        dict of ``(N,)`` float64 numpy arrays: ``log_likelihood`` (plain estimate
        ``logsumexp - log S``), ``log_likelihood_psis`` (with Pareto-smoothed weights),
        ``pareto_k`` (k-hat; above 0.7 the estimate is unreliable), ``ess`` (effective sample
        size ``1 / sum w_norm^2`` of the raw weights), and the float ``share_k_above_0.7``.
    """
    import arviz as az
    from scipy.special import logsumexp

    lw = torch.as_tensor(log_weights).detach().double().cpu().numpy().T  # N x S
    S = lw.shape[1]
    plain = logsumexp(lw, axis=1) - math.log(S)
    smoothed, khat = az.psislw(lw.copy(), reff=1.0, normalize=False)
    # psislw shifts each row; the lower half of the weights is left unsmoothed: undo the shift
    low = lw <= np.median(lw, axis=1, keepdims=True)
    shift = np.array([np.median((smoothed[i] - lw[i])[low[i]]) for i in range(lw.shape[0])])
    psis = logsumexp(smoothed - shift[:, None], axis=1) - math.log(S)
    ess = np.exp(2 * logsumexp(lw, axis=1) - logsumexp(2 * lw, axis=1))
    khat = np.asarray(khat, dtype=np.float64)
    return {"log_likelihood": plain, "log_likelihood_psis": psis, "pareto_k": khat, "ess": ess,
            f"share_k_above_{KHAT_THRESHOLD}": float(np.mean(khat > KHAT_THRESHOLD))}


def _fingerprint(x: torch.Tensor) -> str:
    return hashlib.sha1(x.detach().cpu().float().numpy().tobytes()).hexdigest()[:16]


def to_inference_data(run_or_model, x: torch.Tensor | None = None, num_samples: int = 1000, *,
                      seed: int = 0, keep_log_weights: bool = True, device: str = "cpu",
                      name: str | None = None, history: list | None = None):
    """Evaluate a model on a test set into an ``arviz.InferenceData``.

    Args:
        run_or_model: a run folder (``pyrovamp train --out``) or a model with Pyro
            ``model``/``guide`` (``VAE``, ``HVAE``, ...).
        x: ``(N, D)`` test data; defaults to the run's test set.
        num_samples: importance samples per data point ``S``.
        seed: seed of the importance samples.
        keep_log_weights: store the ``(N, S)`` log-weights (float32) in the result.
        device: where a run folder's model is evaluated.
        name: the model's name (default: the run folder's name or the class name).
        history: training history to store (default: the run's).

    Returns:
        ``InferenceData`` with groups ``log_likelihood`` (variable ``x``, dims
        ``chain, draw, obs`` with one chain and one draw: the importance-sampled log p(x) per
        data point), ``importance_sampling`` (``elbo``, ``log_likelihood_psis``, ``pareto_k``,
        ``ess`` over ``obs``; ``log_weights`` over ``obs, importance_sample``) and, when known,
        ``training_history`` (over ``epoch``). ``attrs`` hold the name, ``num_samples``, the
        test data's fingerprint and ``unit = "nats"``.

    Raises:
        ValueError: no data for a model; bad data or ``num_samples``.
    """
    import arviz as az
    import xarray as xr

    from .evaluation import log_importance_weights

    attrs = {}
    if isinstance(run_or_model, (str, Path)):
        from .runs import load_run

        model, cfg, dataset, ckpt = load_run(run_or_model, device)
        x = dataset.test[: cfg.get("max_points")].to(device) if x is None else x
        history = ckpt["history"] if history is None else history
        name = name or Path(run_or_model).name
        attrs.update(dataset=cfg["dataset"], prior=cfg["prior"], model=cfg.get("model", "vae"))
    else:
        model = run_or_model
        if x is None:
            raise ValueError("to_inference_data needs the test data x for a model")
        name = name or type(model).__name__
    log_w = log_importance_weights(model, x, num_samples, seed=seed)  # S x N
    diag = importance_diagnostics(log_w)
    elbo = log_w.double().mean(0).cpu().numpy()
    n = log_w.shape[1]
    obs = np.arange(n)
    ll = xr.Dataset({"x": (("chain", "draw", "obs"), diag["log_likelihood"][None, None, :])},
                    coords={"chain": [0], "draw": [0], "obs": obs})
    isd = {"elbo": ("obs", elbo), "log_likelihood_psis": ("obs", diag["log_likelihood_psis"]),
           "pareto_k": ("obs", diag["pareto_k"]), "ess": ("obs", diag["ess"])}
    if keep_log_weights:
        isd["log_weights"] = (("obs", "importance_sample"), log_w.T.float().cpu().numpy())
    groups = {"log_likelihood": ll,
              "importance_sampling": xr.Dataset(isd, coords={"obs": obs})}
    if history:
        keys = [k for k in history[0] if k != "epoch"]
        groups["training_history"] = xr.Dataset(
            {k: ("epoch", np.array([r.get(k, np.nan) for r in history], dtype=float)) for k in keys},
            coords={"epoch": [r["epoch"] for r in history]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # custom groups are outside ArviZ's scheme
        idata = az.InferenceData(**groups)
    idata.attrs.update(name=name, num_samples=num_samples, data_fingerprint=_fingerprint(x),
                       unit="nats", share_k_above_07=diag[f"share_k_above_{KHAT_THRESHOLD}"], **attrs)
    return idata


def _elpd(idata):
    """An ``arviz.ELPDData`` holding the test log-likelihood in the slots ``az.compare`` reads."""
    import arviz as az
    import xarray as xr

    ll = idata.log_likelihood["x"].values.reshape(-1)
    k = idata.importance_sampling["pareto_k"].values
    n = ll.size
    return az.ELPDData(
        data=[ll.sum(), math.sqrt(n * ll.var()), 0.0, int(idata.attrs["num_samples"]), n,
              bool((k > KHAT_THRESHOLD).any()),
              xr.DataArray(ll, dims=["obs"], name="loo_i"), xr.DataArray(k, dims=["obs"]),
              "log", KHAT_THRESHOLD],
        index=["elpd_loo", "se", "p_loo", "n_samples", "n_data_points", "warning", "loo_i",
               "pareto_k", "scale", "good_k"])


def compare(runs, num_samples: int = 1000, seed: int = 0, device: str = "cpu"):
    """Rank models on one test set by their importance-sampled test log-likelihood.

    ``arviz.compare`` computes the table from each model's per-data-point values: ``elpd_diff``
    is the difference of summed log-likelihoods to the best model and ``dse`` its standard
    error from the paired per-data-point differences. The columns are then renamed to what they
    hold here (a test-set log-likelihood, not a leave-one-out estimate).

    Args:
        runs: a dict ``{name: InferenceData | run folder | model}`` or a list of run folders /
            ``InferenceData`` (named by their ``name`` attribute).
        num_samples, seed, device: for runs that must be evaluated first.

    Returns:
        ``pandas.DataFrame`` indexed by model, best first, with columns ``rank``,
        ``log_likelihood_sum``, ``log_likelihood_diff``, ``se``, ``dse``, ``mean_log_likelihood``,
        ``mean_log_likelihood_diff``, ``mean_dse``, ``elbo_sum``, ``mean_elbo``,
        ``log_likelihood_psis_sum``, ``share_k_above_0.7``, ``warning``, ``weight``.

    Raises:
        ValueError: fewer than two models, or models evaluated on different test sets.
    """
    import arviz as az

    if isinstance(runs, dict):
        items = dict(runs)
    else:
        items = {}
        for r in runs:
            idata = r if hasattr(r, "log_likelihood") else to_inference_data(
                r, num_samples=num_samples, seed=seed, device=device)
            items[idata.attrs["name"]] = idata
    idatas = {}
    for key, r in items.items():
        if hasattr(r, "groups") and "importance_sampling" in r.groups():
            idatas[key] = r
        else:
            idatas[key] = to_inference_data(r, num_samples=num_samples, seed=seed, device=device,
                                            name=key)
    if len(idatas) < 2:
        raise ValueError(f"compare needs at least two models, got {len(idatas)}")
    prints = {k: v.attrs["data_fingerprint"] for k, v in idatas.items()}
    if len(set(prints.values())) > 1:
        raise ValueError(f"models were evaluated on different test sets: {prints}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.compare({k: _elpd(v) for k, v in idatas.items()}, ic="loo", method="stacking")
    n = next(iter(idatas.values())).log_likelihood["x"].size
    table = table.rename(columns={"elpd_loo": "log_likelihood_sum", "elpd_diff": "log_likelihood_diff"})
    table = table.drop(columns=["p_loo", "scale"], errors="ignore")
    table["mean_log_likelihood"] = table["log_likelihood_sum"] / n
    table["mean_log_likelihood_diff"] = table["log_likelihood_diff"] / n
    table["mean_dse"] = table["dse"] / n
    table["elbo_sum"] = [float(idatas[k].importance_sampling["elbo"].sum()) for k in table.index]
    table["mean_elbo"] = table["elbo_sum"] / n
    table["log_likelihood_psis_sum"] = [
        float(idatas[k].importance_sampling["log_likelihood_psis"].sum()) for k in table.index]
    table[f"share_k_above_{KHAT_THRESHOLD}"] = [idatas[k].attrs["share_k_above_07"] for k in table.index]
    table.attrs["num_test_points"] = n
    return table


def plot_compare(table):
    """``arviz.plot_compare`` of a :func:`compare` table; returns the ``Figure``."""
    import arviz as az
    from matplotlib.figure import Figure

    df = table.rename(columns={"log_likelihood_sum": "elpd_loo", "log_likelihood_diff": "elpd_diff"})
    df["p_loo"] = 0.0
    df["scale"] = "log"
    fig = Figure(figsize=(6, 0.6 * len(df) + 1.5))
    ax = fig.add_subplot(111)
    az.plot_compare(df, ax=ax, insample_dev=False, plot_ic_diff=True, legend=False)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel(f"test log-likelihood, summed over {table.attrs.get('num_test_points', 'the')} "
                  "test points (nats; higher is better)")
    ax.set_title("models on one test set: estimate, difference to the best and its SE")
    return fig


def plot_pareto_k(idatas: dict):
    """Pareto k-hat of every data point's importance weights, one panel per model, with the 0.7
    threshold (``arviz.plot_khat``); returns the ``Figure``."""
    import arviz as az
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * min(3, len(idatas)), 3.2 * math.ceil(len(idatas) / 3)))
    for i, (name, idata) in enumerate(idatas.items()):
        ax = fig.add_subplot(math.ceil(len(idatas) / 3), min(3, len(idatas)), i + 1)
        k = idata.importance_sampling["pareto_k"].values
        az.plot_khat(k, ax=ax, show_hlines=True, hlines_kwargs={"hlines": [KHAT_THRESHOLD]})
        ax.set_title(f"{name}: {np.mean(k > KHAT_THRESHOLD):.1%} with k > {KHAT_THRESHOLD}")
        ax.set_xlabel("test data point")
    fig.tight_layout()
    return fig
