"""Bayesian-workflow comparison of trained models with ArviZ (0.2x or 1.x).

* :func:`to_inference_data` -- a model's evaluation on a test set as an ``arviz.InferenceData``
  (ArviZ 0.2x, Python 3.11) or ``xarray.DataTree`` (ArviZ 1.x, Python 3.12+): per data point the
  importance-sampled log-likelihood, the ELBO, the Pareto-smoothed (PSIS) estimate, k-hat, the
  effective sample size and a summary of the log-weights, all in the group
  ``importance_sampling``; the training history in ``training_history``. There is deliberately
  no ``log_likelihood`` or ``posterior`` group: the numbers are importance-sampling estimates of
  log p(x) on held-out data, not draws, and ArviZ's ``loo``/``waic`` must not treat them as such.
* :func:`compare` -- models ranked on one test set, computed by ArviZ's ``compare`` from the
  per-data-point values: summed log-likelihood, the difference to the best model and the standard
  error of that difference from the paired per-data-point differences. Takes models (with
  ``x``), run folders and evaluations from :func:`to_inference_data`.
* A run folder keeps its evaluation: ``evaluation.nc`` (netCDF) holds the per-point results with
  the number of samples, the seed and fingerprints of the test data and of the trained
  parameters; it is reused while they match and recomputed when any changes. The defaults use
  it; only ``keep_log_weights=True`` (the ``(N, S)`` log-weights, which it does not store) or
  ``recompute=True`` evaluate anew.
* :func:`compare_run_folders` -- ``pyrovamp compare``: the table and its figures for run folders.
* :func:`importance_diagnostics`, :func:`khat_threshold` -- PSIS (from
  :mod:`pyrovamp.infer.diagnostics`; Vehtari et al. 2024).

Units: nats; log-likelihoods per data point unless a name says ``sum``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyrovamp import _arviz
from pyrovamp._io import atomic_write, atomic_write_text
from pyrovamp._validate import check_int, check_type
from pyrovamp.errors import ArgumentTypeError
from pyrovamp.infer import importance_diagnostics, khat_threshold, log_importance_weights
from pyrovamp.pretrained import PRETRAINED
from pyrovamp.training import MODEL, read_checkpoint
from pyrovamp.workflow.estimates import check_pyro_model, khat_summary
from pyrovamp.workflow.parallel import check_device
from pyrovamp.workflow.runs import (
    check_folder_option,
    check_required,
    check_writable,
    load_run,
    make_folder,
    missing_run_file,
    read_json_object,
    save_figure,
    scored_test_set,
)
from pyrovamp.workflow.zoo import pretrained_dataset, pretrained_test_set, run_or_pretrained

__all__ = [
    "importance_diagnostics",
    "khat_threshold",
    "to_inference_data",
    "compare",
    "plot_compare",
    "plot_pareto_k",
    "load_evaluation",
    "compare_run_folders",
    "EVALUATION_FILE",
    "KHAT_THRESHOLD",
]

logger = logging.getLogger(__name__)

#: Cap of the k-hat threshold, reached for S >= 10^(10/3) ~ 2154 samples; the threshold for S
#: samples is :func:`khat_threshold` ``(S) = min(1 - 1/log10(S), 0.7)``.
KHAT_THRESHOLD = 0.7

#: File in a run folder holding its stored evaluation (netCDF).
EVALUATION_FILE = "evaluation.nc"
_EVALUATION_FORMAT = 1
_PER_POINT = (
    "log_likelihood",
    "elbo",
    "log_likelihood_psis",
    "pareto_k",
    "ess",
    "log_weights_max",
    "log_weights_std",
)


def _fingerprint_tensor(x) -> str:
    x = torch.as_tensor(x).detach().cpu().float().contiguous()
    h = hashlib.sha256(str(tuple(x.shape)).encode())
    h.update(x.numpy().tobytes())
    return h.hexdigest()[:16]


def _fingerprint_parameters(model) -> str:
    """sha256 over the names and bytes of every tensor in ``model.state_dict()``."""
    h = hashlib.sha256()
    for k, t in sorted(model.state_dict().items()):
        h.update(k.encode())
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _as_data(x, what="x"):
    check_type(what, x, (torch.Tensor, np.ndarray), "a tensor or numpy array of shape (N, D)")
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


def _check_num_samples(num_samples) -> int:
    return check_int("num_samples", num_samples)


def _evaluate(model, x, num_samples, seed, keep_log_weights):
    """Importance sampling of ``model`` on ``x``: the per-point dataset (and the log-weights)."""
    import xarray as xr

    log_w = log_importance_weights(model, x, num_samples, seed=seed)  # S x N
    diag = importance_diagnostics(log_w)
    lw = log_w.double().cpu().numpy()
    n = lw.shape[1]
    values = {
        "log_likelihood": diag["log_likelihood"],
        "elbo": lw.mean(0),
        "log_likelihood_psis": diag["log_likelihood_psis"],
        "pareto_k": diag["pareto_k"],
        "ess": diag["ess"],
        "log_weights_max": lw.max(0),
        "log_weights_std": lw.std(0) if lw.shape[0] > 1 else np.zeros(n),
    }
    ds = xr.Dataset(
        {k: ("obs", np.asarray(v, dtype=np.float64)) for k, v in values.items()},
        coords={"obs": np.arange(n)},
    )
    ds["log_likelihood"].attrs.update(
        units="nats", long_name="importance-sampled log p(x) per data point (Burda et al. 2016)"
    )
    ds["elbo"].attrs.update(units="nats", long_name=f"ELBO, mean of the {num_samples} log-weights")
    ds["pareto_k"].attrs.update(long_name="PSIS Pareto shape k-hat (Vehtari et al. 2024)")
    if keep_log_weights:
        ds["log_weights"] = (("obs", "importance_sample"), lw.T.astype(np.float32))
    return ds


def _summary_attrs(ds, num_samples):
    return {
        "num_samples": int(num_samples),
        **khat_summary(ds["pareto_k"].values, num_samples),
        "unit": "nats",
    }


def load_evaluation(
    run_dir,
    num_samples: int | None = None,
    seed: int | None = None,
    data_fingerprint: str | None = None,
    parameters_fingerprint: str | None = None,
):
    """The evaluation stored in a run folder (``evaluation.nc``), if it matches.

    Args:
        run_dir: a run folder.
        num_samples: what the stored evaluation must have been computed with (``None``:
            anything).
        seed: likewise.
        data_fingerprint: likewise.
        parameters_fingerprint: likewise.

    Returns:
        The ``xarray.Dataset`` (per-point variables over ``obs``; ``attrs`` with
        ``num_samples``, ``seed``, ``data_fingerprint``, ``parameters_fingerprint``), or ``None``
        when there is none, it does not match, or it cannot be read (it is then recomputed and
        overwritten by :func:`to_inference_data`).
    """
    import xarray as xr

    path = Path(run_dir) / EVALUATION_FILE
    if not path.is_file():
        return None
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            ds = ds.load()
    except Exception:  # unreadable (truncated, foreign): a cache miss, never an error
        return None
    a = ds.attrs
    wanted = {
        "num_samples": num_samples,
        "seed": seed,
        "data_fingerprint": data_fingerprint,
        "parameters_fingerprint": parameters_fingerprint,
        "format": _EVALUATION_FORMAT,
    }
    for key, value in wanted.items():
        if value is not None and (key not in a or str(a[key]) != str(value)):
            return None
    if any(v not in ds for v in _PER_POINT):
        return None
    return ds


def _store_evaluation(run_dir, ds) -> None:
    """Write ``ds`` to ``run_dir/evaluation.nc`` atomically."""
    # by the temporary file's name: xarray before 2025.07 writes file objects with scipy only
    atomic_write(Path(run_dir) / EVALUATION_FILE, lambda f: ds.to_netcdf(f.name, engine="h5netcdf"))


def to_inference_data(
    run_or_model,
    x=None,
    num_samples: int = 1000,
    *,
    seed: int = 0,
    keep_log_weights: bool = False,
    device: str = "cpu",
    name: str | None = None,
    history: list | None = None,
    cache: bool = True,
    recompute: bool = False,
):
    """Evaluate a model on a test set by importance sampling, as ArviZ data.

    Args:
        run_or_model: a run folder (``pyrovamp train --out``) or a model with Pyro
            ``model``/``guide`` (``VAE``, ``HVAE``, ...).
        x: ``(N, D)`` test data (tensor or numpy array); defaults to a run folder's test set.
        num_samples: importance samples per data point ``S``.
        seed: seed of the importance samples (an integer >= 0).
        keep_log_weights: also keep the ``(N, S)`` log-weights (float32; ``4 N S`` bytes). Off by
            default: the run folder's stored evaluation does not hold them, so asking for them
            evaluates a run folder anew (the result is still stored for later calls without).
        device: where a run folder's model is evaluated.
        name: the model's name (default: the run folder's name or the class name).
        history: training history to store (default: a run folder's).
        cache: for a run folder, reuse its stored evaluation (``evaluation.nc``) when it was
            made with the same ``num_samples``, ``seed``, test data and trained parameters (and
            ``keep_log_weights`` is off); otherwise evaluate and store the result there.
        recompute: evaluate a run folder anew even when a matching evaluation is stored (and
            store the new one when ``cache``).

    Returns:
        ``arviz.InferenceData`` (ArviZ 0.2x) or ``xarray.DataTree`` (ArviZ 1.x) with the group
        ``importance_sampling``: over ``obs`` (one per data point) ``log_likelihood`` (the
        importance-sampled log p(x), nats; Burda et al. 2016 eq. 1), ``elbo``,
        ``log_likelihood_psis``, ``pareto_k``, ``ess``, ``log_weights_max``, ``log_weights_std``
        and, with ``keep_log_weights``, ``log_weights`` over ``obs, importance_sample``; and, when
        known, ``training_history`` (over ``epoch``). ``attrs``: ``name``, ``num_samples``,
        ``seed``, ``khat_threshold`` (Vehtari et al. 2024: ``min(1 - 1/log10 S, 0.7)``),
        ``share_k_above_threshold``, ``data_fingerprint``, ``unit = "nats"``, and for run
        folders ``parameters_fingerprint``, ``dataset``, ``prior``, ``model`` and
        ``from_cache`` (1 when the stored evaluation was reused).

    Raises:
        pyrovamp.errors.ArgumentTypeError: an argument of the wrong type (``run_or_model``
            neither a path nor an object with Pyro ``model``/``guide``, ``x`` not a tensor or
            array, ``num_samples`` not an integer, ...), one line naming it.
        ValueError: no data for a model; bad data, ``num_samples < 1`` or ``seed < 0``.
        FileNotFoundError: a path that is not a run folder.
    """
    import xarray as xr

    num_samples = _check_num_samples(num_samples)
    seed = check_int("seed", seed, 0)
    for flag, value in (
        ("keep_log_weights", keep_log_weights),
        ("cache", cache),
        ("recompute", recompute),
    ):
        check_type(flag, value, bool, "True or False")
    check_type("device", device, (str, torch.device), "a device such as 'cpu' or 'cuda'")
    if name is not None:
        check_type("name", name, str, "a string or None")
    if history is not None:
        check_type("history", history, (list, tuple), "a list of dicts (one per epoch) or None")
    if not isinstance(run_or_model, (str, Path)):
        check_pyro_model(run_or_model, "run_or_model", "a run folder (str or path) or an object")
    attrs: dict[str, Any] = {}
    run_dir = None
    if isinstance(run_or_model, (str, Path)):
        run_dir = Path(run_or_model)
        model, cfg, dataset, ckpt = load_run(run_dir, device)
        x = dataset.test[: cfg.get("max_points")] if x is None else _as_data(x)
        if history is None and isinstance(ckpt, dict):
            history = ckpt.get("history")
        name = name or run_dir.name
        attrs.update(
            dataset=cfg["dataset"],
            prior=cfg["prior"],
            model=cfg.get("model") or "vae",
            parameters_fingerprint=_fingerprint_parameters(model),
        )
    else:
        model = run_or_model
        if x is None:
            raise ValueError("to_inference_data needs the test data x for a model")
        x = _as_data(x)
        name = name or type(model).__name__
    if x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"x must hold at least one data point, shape (N, D); got {tuple(x.shape)}")
    if run_dir is not None:
        x = x.to(device)
    data_fp = _fingerprint_tensor(x)
    ds = None
    from_cache = False
    if run_dir is not None and cache and not keep_log_weights and not recompute:
        ds = load_evaluation(run_dir, num_samples, seed, data_fp, attrs["parameters_fingerprint"])
        from_cache = ds is not None
    if ds is None:
        ds = _evaluate(model, x, num_samples, seed, keep_log_weights)
        if run_dir is not None and cache:
            stored = ds.drop_vars("log_weights", errors="ignore")
            stored.attrs.update(
                num_samples=num_samples,
                seed=int(seed),
                data_fingerprint=data_fp,
                parameters_fingerprint=attrs["parameters_fingerprint"],
                format=_EVALUATION_FORMAT,
                name=name,
                device=str(device),
                arviz_version=_arviz.arviz().__version__,
            )
            _store_evaluation(run_dir, stored)
    ds = ds.copy()
    ds.attrs = {}
    summary = _summary_attrs(ds, num_samples)
    groups = {"importance_sampling": ds.assign_attrs(summary)}
    if history:
        keys = [k for k in history[0] if k != "epoch"]
        groups["training_history"] = xr.Dataset(
            {
                k: ("epoch", np.array([r.get(k, np.nan) for r in history], dtype=float))
                for k in keys
            },
            coords={"epoch": [r["epoch"] for r in history]},
        )
    attrs.update(name=name, seed=int(seed), data_fingerprint=data_fp, **summary)
    if run_dir is not None:
        attrs["from_cache"] = int(from_cache)
    return _arviz.make_tree(groups, attrs)


def _evaluation_of(obj, key):
    """The ``importance_sampling`` dataset and attrs of an evaluation, or an
    ArgumentTypeError (not an evaluation) / ValueError (one without the group)."""
    if not _arviz.is_tree(obj):
        raise ArgumentTypeError(
            f"model {key!r}: expected a model, a run folder or the result of "
            f"to_inference_data, got {type(obj).__name__}"
        )
    if "importance_sampling" not in _arviz.groups(obj):
        raise ValueError(
            f"model {key!r}: its InferenceData has no 'importance_sampling' group; "
            "make it with pyrovamp.workflow.to_inference_data"
        )
    return _arviz.group(obj, "importance_sampling"), dict(obj.attrs)


def compare(
    runs, num_samples: int = 1000, seed: int = 0, device: str = "cpu", *, x=None, cache: bool = True
):
    """Rank models on one test set by their importance-sampled test log-likelihood.

    ArviZ's ``compare`` computes the table from each model's per-data-point values:
    ``log_likelihood_diff`` is the summed log-likelihood of the best model minus this model's
    (>= 0) and ``dse`` its standard error from the paired per-data-point differences,
    ``sqrt(N var_n(d_n))`` (Vehtari, Gelman and Gabry 2017, eq. 24). The columns are named for
    what they hold here: a test-set log-likelihood, not a leave-one-out estimate.

    Args:
        runs: a dict ``{name: model | run folder | evaluation}`` or a list of run folders /
            evaluations (named by their ``name`` attribute); an evaluation is the result of
            :func:`to_inference_data` (``InferenceData`` or ``DataTree``).
        num_samples: for models and run folders that must be evaluated first.
        seed: likewise.
        device: likewise.
        x: ``(N, D)`` test data (tensor or numpy array), needed for models (and used instead of
            a run folder's test set when given).
        cache: reuse and store run folders' evaluations (see :func:`to_inference_data`).

    Returns:
        ``pandas.DataFrame`` indexed by model, best first, with columns ``rank`` (0 = best),
        ``log_likelihood_sum``, ``se``, ``log_likelihood_diff``, ``dse``, ``weight`` (stacking),
        ``warning`` (some k-hat above the threshold), ``mean_log_likelihood``,
        ``mean_log_likelihood_diff``, ``mean_dse`` (the same per data point), ``mean_elbo``,
        ``elbo_sum``, ``log_likelihood_psis_sum``, ``share_k_above_threshold``,
        ``khat_threshold``, ``num_samples``; ``table.attrs["num_test_points"]`` is ``N``.

    Raises:
        pyrovamp.errors.ArgumentTypeError: ``runs`` neither a dict nor a list, an entry that is
            none of the accepted kinds, ``num_samples`` or ``seed`` not an integer.
        ValueError: fewer than two models, a model without ``x``, models evaluated on different
            test sets, ``num_samples < 1``, ``seed < 0``.
    """
    num_samples = _check_num_samples(num_samples)
    seed = check_int("seed", seed, 0)
    if isinstance(runs, dict):
        items = dict(runs)
    elif isinstance(runs, (list, tuple)):
        items = {}
        for r in runs:
            key = (
                Path(r).name
                if isinstance(r, (str, Path))
                else (r.attrs.get("name") if _arviz.is_tree(r) else None)
            )
            if key is None:
                raise ValueError("compare: models in a list need names; pass a dict {name: model}")
            if key in items:
                raise ValueError(f"compare: two models are named {key!r}; pass a dict")
            items[key] = r
    else:
        raise ArgumentTypeError(
            f"runs must be a dict {{name: model}} or a list of run folders, got "
            f"{type(runs).__name__}"
        )
    if len(items) < 2:
        raise ValueError(f"compare needs at least two models, got {len(items)}")
    for key, r in items.items():
        if isinstance(r, (str, Path)) or _arviz.is_tree(r):
            continue
        if not (hasattr(r, "model") and hasattr(r, "guide")):
            raise ArgumentTypeError(
                f"model {key!r}: expected a model, a run folder or the result "
                f"of to_inference_data, got {type(r).__name__}"
            )
        if x is None:
            raise ValueError(f"model {key!r} needs the test data: compare(..., x=x_test)")
    evals = {}
    for key, r in items.items():
        if not _arviz.is_tree(r):
            r = to_inference_data(
                r,
                x,
                num_samples,
                seed=seed,
                device=device,
                name=key,
                keep_log_weights=False,
                cache=cache,
            )
        evals[key] = _evaluation_of(r, key)
    prints = {k: a.get("data_fingerprint") for k, (_, a) in evals.items()}
    sizes = {k: ds.sizes["obs"] for k, (ds, _) in evals.items()}
    if len(set(prints.values())) > 1 or len(set(sizes.values())) > 1:
        raise ValueError(f"models were evaluated on different test sets: {prints}")
    n = next(iter(sizes.values()))
    s_of = {k: int(a.get("num_samples", 0)) for k, (_, a) in evals.items()}
    raw = _arviz.compare(
        {k: ds["log_likelihood"].values for k, (ds, _) in evals.items()},
        {k: ds["pareto_k"].values for k, (ds, _) in evals.items()},
        s_of,
        {k: khat_threshold(s) for k, s in s_of.items()},
    )
    table = raw.rename(columns={"elpd": "log_likelihood_sum", "elpd_diff": "log_likelihood_diff"})
    table = table[
        ["rank", "log_likelihood_sum", "se", "log_likelihood_diff", "dse", "weight", "warning"]
    ].copy()
    table["mean_log_likelihood"] = table["log_likelihood_sum"] / n
    table["mean_log_likelihood_diff"] = table["log_likelihood_diff"] / n
    table["mean_dse"] = table["dse"] / n
    table["elbo_sum"] = [float(evals[k][0]["elbo"].sum()) for k in table.index]
    table["mean_elbo"] = table["elbo_sum"] / n
    table["log_likelihood_psis_sum"] = [
        float(evals[k][0]["log_likelihood_psis"].sum()) for k in table.index
    ]
    summaries = {k: khat_summary(evals[k][0]["pareto_k"].values, s_of[k]) for k in table.index}
    table["khat_threshold"] = [summaries[k]["khat_threshold"] for k in table.index]
    table["share_k_above_threshold"] = [
        summaries[k]["share_k_above_threshold"] for k in table.index
    ]
    table["num_samples"] = [s_of[k] for k in table.index]
    table.index.name = "model"
    table.attrs["num_test_points"] = n
    return table


def plot_compare(table):
    """ArviZ's comparison plot (``plot_compare``) of a :func:`compare` table: every model's
    difference to the best with its paired standard error (summed over the test points, nats);
    returns the matplotlib ``Figure``."""
    from matplotlib.ticker import MaxNLocator

    df = table.rename(columns={"log_likelihood_sum": "elpd", "log_likelihood_diff": "elpd_diff"})
    fig, ax = _arviz.plot_compare(df[["rank", "elpd", "se", "elpd_diff", "dse", "weight"]])
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel(
        f"test log-likelihood, summed over {table.attrs.get('num_test_points', 'the')} "
        "test points (nats; higher is better)"
    )
    ax.set_title("models on one test set: difference to the best and its paired SE")
    return fig


def plot_pareto_k(idatas: dict):
    """Pareto k-hat of every data point's importance weights, one panel per model, with the
    threshold ``min(1 - 1/log10 S, 0.7)`` of its number of samples (ArviZ's ``plot_khat``);
    ``idatas`` maps names to :func:`to_inference_data` results. Returns the ``Figure``.

    Raises:
        pyrovamp.errors.ArgumentTypeError: ``idatas`` is not a dict, or an entry is not an
            evaluation from :func:`to_inference_data`.
        ValueError: ``idatas`` is empty.
    """
    check_type("idatas", idatas, dict, "a dict {name: evaluation}")
    if not idatas:
        raise ValueError("idatas must hold at least one evaluation")
    ks, thresholds = {}, {}
    for name, idata in idatas.items():
        ds, attrs = _evaluation_of(idata, name)
        ks[name] = ds["pareto_k"].values
        thresholds[name] = khat_threshold(int(attrs["num_samples"]))
    fig, axes = _arviz.plot_khat(ks, thresholds)
    for name, ax in axes.items():
        k, t = ks[name], thresholds[name]
        ax.set_title(f"{name}: {np.mean(k > t):.1%} with k > {t:.2f}")
        ax.set_xlabel("test data point")
    fig.tight_layout()
    return fig


def compare_run_folders(
    run_dirs, out, *, num_samples: int = 1000, device="cpu", recompute=False, data_root=None
):
    """``pyrovamp compare``: rank run folders and pretrained models on their common test set
    (:func:`compare`) and write ``out/comparison.csv``, ``out/compare.png``
    (:func:`plot_compare`) and ``out/pareto_k.png`` (:func:`plot_pareto_k`). Each run's stored
    evaluation is reused unless ``recompute`` (:func:`to_inference_data`); a pretrained model (a
    zoo name, a pretrained folder or a Hub repository id) is evaluated on its card's test set
    (from ``data_root``, default: the usual place) with seed 0, as a run is, storing nothing.

    Returns:
        ``(table, evaluations)``: the :func:`compare` table and ``{name: evaluation}`` (a run
        folder's or a pretrained folder's name; a zoo model's name).

    Raises:
        ValueError: fewer than two entries, a folder that is not a run folder (a missing or
            incomplete ``config.json``, a read-only folder), two of one name, different data
            sets, an unusable ``out``, ``device`` or ``data_root`` (one line, before any work; an
            ``out`` made for a failing comparison is removed); as :func:`pyrovamp.from_pretrained`.
        pyrovamp.errors.CheckpointError: a damaged ``model.pt`` (one line, before any work).
    """
    check_device(device)
    num_samples = _check_num_samples(num_samples)
    check_folder_option(data_root, "--data-root")
    check_type("run_dirs", run_dirs, (list, tuple), "a list of run folders")
    for r in run_dirs:
        check_type("run_dirs", r, (str, Path), "a list of run folders (str or path)")
    pretrained = {str(r) for r in run_dirs if run_or_pretrained(str(r))}
    runs = [Path(r) for r in run_dirs if str(r) not in pretrained]
    for r in runs:
        if missing := missing_run_file(r):
            raise ValueError(missing)
    names = [str(r) if str(r) in PRETRAINED else Path(r).name for r in run_dirs]
    if len(set(names)) != len(names):
        raise ValueError(f"the models compared must have distinct names, got {names}")
    if len(names) < 2:
        raise ValueError("compare needs at least two run folders or pretrained models")
    entries = list(zip(run_dirs, names, strict=True))
    made = not Path(out).exists()
    out = make_folder(out)
    try:
        datasets = {}
        for r, name in entries:  # every one's files, before any work
            if str(r) in pretrained:
                datasets[name] = scored_test_set({"dataset": pretrained_dataset(str(r))})
                continue
            cfg = check_required(read_json_object(Path(r) / "config.json"), Path(r) / "config.json")
            datasets[name] = scored_test_set(cfg)
            read_checkpoint(Path(r) / MODEL, map_location="cpu")
            check_writable(Path(r), "run folder")  # its evaluation is stored there
        if len(set(datasets.values())) > 1:
            on = ", ".join(f"{k} on {v}" for k, v in datasets.items())
            raise ValueError(f"compare ranks models on one test set; got {on}")
        loaded = {n: pretrained_test_set(str(r), data_root, device)
                  for r, n in entries if str(r) in pretrained}  # fmt: skip
        evaluations = {}
        for r, name in entries:
            t0 = time.perf_counter()
            model, x = (loaded[name].model, loaded[name].x) if name in loaded else (Path(r), None)
            evaluations[name] = to_inference_data(
                model, x, num_samples=num_samples, device=device, name=name, recompute=recompute
            )
            how = f"evaluated in {time.perf_counter() - t0:.1f} s"
            if evaluations[name].attrs.get("from_cache"):
                how = "reused its stored evaluation"
            logger.info("%s: %s (S=%d)", name, how, num_samples)
        table = compare(evaluations)
    except BaseException:
        if made and not any(out.iterdir()):  # no empty folder left behind by a failed compare
            out.rmdir()
        raise
    atomic_write_text(out / "comparison.csv", table.to_csv())
    save_figure(plot_compare(table), out / "compare.png")
    save_figure(plot_pareto_k(evaluations), out / "pareto_k.png")
    return table, evaluations
