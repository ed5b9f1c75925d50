"""The test metrics of trained models and their summary lines: the test-set evaluation of a run
(:func:`evaluate_run`), each estimator on its own (:func:`evaluate_method`: IS, AIS, exact), IS
with a refined guide (:func:`evaluate_refined`) and BDMC (:func:`evaluate_bdmc`), merged into a
run folder's ``metrics.json`` (under a file lock, so that concurrent evaluations of one run folder
keep each other's results) and per-point ``.npz`` files atomically. Nats per data point.

One k-hat rule everywhere: a data point's importance-sampling estimate is flagged as unreliable
when its Pareto k-hat exceeds :func:`pyrovamp.infer.khat_threshold` of the number of samples,
``min(1 - 1/log10 S, 0.7)`` (Vehtari et al. 2024, "Pareto smoothed importance sampling",
sec. 3.2.4); ``share_k_above_threshold`` is the share of such points."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock

from pyrovamp._io import atomic_write, atomic_write_text
from pyrovamp._validate import check_choice, check_int, check_optional_int, check_type
from pyrovamp.data import Dataset
from pyrovamp.errors import ArgumentTypeError, NonFiniteLossError
from pyrovamp.infer import (
    DEFAULT_NUM_CHAINS,
    DEFAULT_NUM_STEPS,
    MAX_LATENT_DIM,
    active_units,
    bdmc,
    elbo,
    exact_log_likelihood,
    khat_threshold,
    points_per_block,
    refine_guide,
    total_latent_dim,
)
from pyrovamp.infer.context import as_model_data
from pyrovamp.training import sharded_over_processes
from pyrovamp.workflow.parallel import Estimate, Processes, score_shard, sharded_estimates
from pyrovamp.workflow.resumable import estimate_in_pieces

__all__ = [
    "evaluate_run",
    "evaluate_method",
    "evaluate_refined",
    "evaluate_bdmc",
    "evaluate_estimators",
    "merge_metrics",
    "khat_summary",
    "save_per_point",
    "result_line",
    "method_line",
    "bdmc_line",
    "refined_line",
]

logger = logging.getLogger(__name__)

METHODS = ("is", "ais", "exact")
_IS_DIAGNOSTICS = ("log_likelihood_psis", "pareto_k", "ess")  # IS's per-point diagnostics


def khat_summary(pareto_k, num_samples: int) -> dict:
    """The k-hat summary of importance sampling with ``num_samples`` per point:
    ``khat_threshold`` (:func:`pyrovamp.infer.khat_threshold`, ``min(1 - 1/log10 S, 0.7)``,
    Vehtari et al. 2024) and ``share_k_above_threshold``, the share of the ``(N,)`` ``pareto_k``
    above it -- the one rule of :func:`evaluate_run`, :func:`evaluate_method` and
    :func:`evaluate_refined` (and of :mod:`pyrovamp.workflow.comparison`)."""
    threshold = khat_threshold(num_samples)
    k = np.asarray(pareto_k, dtype=np.float64)
    return {"khat_threshold": threshold, "share_k_above_threshold": float(np.mean(k > threshold))}


def check_pyro_model(model, name: str = "model", what: str = "an object") -> None:
    """Raise :class:`~pyrovamp.errors.ArgumentTypeError` (one line naming ``name``) unless
    ``model`` has callable Pyro ``model`` and ``guide`` methods."""
    if not (callable(getattr(model, "model", None)) and callable(getattr(model, "guide", None))):
        raise ArgumentTypeError(
            f"{name} must be {what} with Pyro model(x) and guide(x) methods (a pyrovamp VAE, "
            f"HVAE, ...), got {type(model).__name__}"
        )


def _check_common(model, num_samples, seed) -> int:
    check_pyro_model(model)
    check_int("seed", seed, 0)
    return check_int("num_samples", num_samples)


def evaluate_run(
    model,
    dataset: Dataset,
    num_samples: int,
    device="cpu",
    seed: int = 0,
    max_points: int | None = None,
    trainer=None,
    progress: bool | str = False,
    per_point_file=None,
    processes: Processes | None = None,
) -> dict:
    """Test-set metrics, means in nats per data point: ``test_elbo`` (10 samples per point),
    ``test_log_likelihood`` (importance sampling with ``num_samples``), ``test_nll``, the PSIS
    diagnostics of the importance weights (``test_log_likelihood_psis``,
    ``share_k_above_threshold`` -- the share of test points whose estimate is unreliable, k-hat
    above ``khat_threshold = min(1 - 1/log10 S, 0.7)`` (Vehtari et al. 2024) -- and
    ``median_ess``), the active units per latent layer; for models with at most two latent
    dimensions the exact ``test_log_likelihood_exact`` (quadrature) and its
    ``exact_error_estimate`` (largest per point); for grey images (discretised logistic) also the
    negative log-likelihood per pixel, as the paper's table reports Frey Faces and Histopathology.

    With ``trainer`` (a Lightning ``Trainer`` after data-parallel training) the importance
    sampling and the ELBO are sharded over its processes and gathered; every block of test
    points draws its samples from the seed and the block's index, so the numbers do not depend
    on the number of processes. ``processes`` (:class:`pyrovamp.workflow.parallel.Processes`,
    ``pyrovamp evaluate RUN --devices N``): the importance sampling and the ELBO in that many
    new processes, the same numbers. ``progress``: a progress bar over the test points for the
    importance sampling (one process; process 0's share with ``processes``).
    ``per_point_file``: where to save the per-point IS values and their diagnostics
    (``log_likelihood``, ``log_likelihood_psis``, ``pareto_k``, ``ess``; the arrays of
    ``pyrovamp evaluate RUN --method is``), e.g. ``RUN/log_likelihood_is.npz``; in one process
    the importance sampling's unfinished values are kept in its folder and an interrupted
    evaluation is continued (:func:`pyrovamp.workflow.resumable.estimate_in_pieces`).

    Raises:
        pyrovamp.errors.ArgumentTypeError: an argument of the wrong type (a ``dataset`` that is
            not a :class:`pyrovamp.data.Dataset`, a float ``num_samples``, ...).
        ValueError: a wrong value (``num_samples < 1``, ``seed < 0``, ``max_points < 1``).
    """
    num_samples = _check_common(model, num_samples, seed)
    check_type("dataset", dataset, Dataset, "a pyrovamp.data.Dataset")
    max_points = check_optional_int("max_points", max_points)
    x = dataset.test[:max_points].to(device)

    block: int | None = None
    if processes is not None and processes.devices > 1:
        estimates = [Estimate("is", seed, num_samples=num_samples), Estimate("elbo", seed + 1, 10)]
        shard, shard_elbo = sharded_estimates(processes, x, estimates, progress)
        ll, el = torch.from_numpy(shard["log_likelihood"]), torch.from_numpy(shard_elbo["elbo"])
        block = shard["block_size"]
        diag = {k: shard[k] for k in _IS_DIAGNOSTICS}
    elif trainer is not None and trainer.world_size > 1:
        ll_fn = functools.partial(score_shard, model, Estimate("is", seed, num_samples), False)
        elbo_fn = functools.partial(score_shard, model, Estimate("elbo", seed + 1, 10), False)
        got = sharded_over_processes(ll_fn, x, points_per_block(model, num_samples), trainer)
        ll = got["log_likelihood"]
        diag = {k: got[k].numpy() for k in _IS_DIAGNOSTICS}
        el = sharded_over_processes(elbo_fn, x, points_per_block(model, 10), trainer)["elbo"]
    else:
        folder = None if per_point_file is None else Path(per_point_file).parent
        got = estimate_in_pieces(model, x, Estimate("is", seed, num_samples), folder, progress)
        ll = torch.from_numpy(got["log_likelihood"])
        diag = {k: got[k] for k in _IS_DIAGNOSTICS}
        block = got["block_size"]  # the planner's, already asked once
        el = elbo(model, x, 10, seed=seed + 1)
    if per_point_file is not None and bool(torch.isfinite(ll).all()):  # never a file of NaN
        save_per_point(
            per_point_file,
            log_likelihood=ll.cpu().numpy(),
            **diag,
            **_draws(model, num_samples, seed, block),
        )
    n = ll.numel()
    extra: dict[str, Any] = {"active_units": active_units(model, x)} if x.shape[0] > 1 else {}
    if total_latent_dim(model, x) <= MAX_LATENT_DIM:  # quadrature: the exact log p(x)
        ll_exact, d = exact_log_likelihood(model, x, diagnostics=True)
        extra.update(
            test_log_likelihood_exact=float(ll_exact.mean()),
            exact_error_estimate=float(np.max(d["error_estimate"])),
        )
    if dataset.likelihood == "discretized_logistic":
        extra.update(
            test_nll_per_pixel=float(-ll.mean()) / dataset.input_dim,
            unit_per_pixel="nats per pixel",
        )
    return {
        **extra,
        "test_elbo": float(el.mean()),
        "test_log_likelihood": float(ll.mean()),
        "test_log_likelihood_se": float(ll.std() / n**0.5) if n > 1 else 0.0,
        "test_nll": float(-ll.mean()),
        "test_log_likelihood_psis": float(diag["log_likelihood_psis"].mean()),
        **khat_summary(diag["pareto_k"], num_samples),
        "median_ess": float(np.median(diag["ess"])),
        "num_samples": num_samples,
        "num_test_points": n,
        "unit": "nats per data point",
    }


def merge_metrics(path, new: dict) -> dict:
    """Merge ``new`` into the JSON object in ``path`` (created if missing) and write it back
    atomically; keys not in ``new`` are kept. Returns the merged dict.

    The read, merge and write happen under an exclusive lock on ``.<name>.lock`` beside ``path``
    (:class:`filelock.FileLock`; released by the operating system if the process dies), so that
    processes merging into one file at the same time -- two ``pyrovamp evaluate`` runs on one run
    folder -- keep each other's keys.

    Raises:
        pyrovamp.errors.ArgumentTypeError: ``new`` is not a dict.
        ValueError: ``path`` exists but does not hold a JSON object.
    """
    check_type("new", new, dict, "a dict of metrics")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(f".{path.name}.lock")):
        old = {}
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not valid JSON: {e}") from None
            if not isinstance(old, dict):
                raise ValueError(f"{path} does not hold a JSON object, got a {type(old).__name__}")
        merged = {**old, **new}
        atomic_write_text(path, json.dumps(merged, indent=2) + "\n")
    return merged


def _as_arrays(arrays: dict) -> dict[str, Any]:
    return {k: np.asarray(v) for k, v in arrays.items()}


def save_per_point(path, **arrays) -> Path:
    """``np.savez`` of per-data-point arrays (``(N,)`` each) to ``path``, atomically."""
    return atomic_write(path, lambda f: np.savez(f, **_as_arrays(arrays)))


def _draws(model, num_samples: int, seed: int, batch_size: int | None = None) -> dict:
    """What gives an IS estimate's per-point values again: the seed, S and the block size
    (:func:`pyrovamp.infer.points_per_block`), stored beside them."""
    block = batch_size or points_per_block(model, num_samples)
    return {"seed": seed, "num_samples": num_samples, "block_size": block}


def evaluate_method(
    model,
    x,
    method: str,
    *,
    num_samples: int = 5000,
    num_chains: int | None = None,
    num_steps: int | None = None,
    seed: int = 0,
    progress: bool | str = False,
    batch_size: int | None = None,
    processes: Processes | None = None,
    folder=None,
) -> tuple[dict, dict]:
    """One test log-likelihood estimator on ``x`` with its cost and diagnostics.

    ``method``: ``"is"`` (importance sampling with ``num_samples``, PSIS diagnostics), ``"ais"``
    (:func:`pyrovamp.infer.ais_log_likelihood` with ``num_chains``/``num_steps``, default: its
    own) or ``"exact"`` (:func:`pyrovamp.infer.exact_log_likelihood`). ``progress``: a progress
    bar over the data points. ``batch_size``: IS's block of data points (default: the planner's,
    :func:`pyrovamp.infer.points_per_block`); each block draws from ``seed`` and its index.
    ``processes`` (:class:`pyrovamp.workflow.parallel.Processes`; IS and AIS): shard the
    estimator over that many new processes, the same per-point values as one process
    (``<method>_seconds`` counts the processes' start). ``folder`` (one process, IS and AIS): a
    run folder where the values of an unfinished estimate are kept, piece by piece, and an
    interrupted one is continued, the same values as one uninterrupted call
    (:func:`pyrovamp.workflow.resumable.estimate_in_pieces`).

    Returns:
        ``(metrics, per_point)``: metrics (means in nats per data point, seconds of wall time)
        named ``test_log_likelihood_<method>``, ``<method>_seconds``, ...; for IS also
        ``khat_threshold`` and ``share_k_above_threshold`` (:func:`khat_summary`, the rule of
        :func:`evaluate_run`); ``per_point`` the ``(N,)`` arrays behind them
        (``log_likelihood`` and the method's diagnostics).

    Raises:
        pyrovamp.errors.ArgumentTypeError: an argument of the wrong type.
        ValueError: unknown method, ``num_samples``/``num_chains``/``num_steps`` below 1; a
            model with more than two latent dimensions for "exact"; ``processes`` for "exact".
    """
    check_choice("method", method, METHODS)
    num_samples = _check_common(model, num_samples, seed)
    num_chains = check_optional_int("num_chains", num_chains)
    num_steps = check_optional_int("num_steps", num_steps)
    batch_size = check_optional_int("batch_size", batch_size)
    sharded = processes if processes is not None and processes.devices > 1 else None
    if sharded is not None and method == "exact":
        raise ValueError("--devices: --method exact (quadrature) runs in one process")
    C = num_chains or DEFAULT_NUM_CHAINS
    T = num_steps or DEFAULT_NUM_STEPS
    t0 = time.perf_counter()
    got: dict[str, Any] = {}
    if method != "exact":
        e = Estimate(method, seed, num_samples, C, T, batch_size if method == "is" else None)
        if sharded is not None:
            [got] = sharded_estimates(sharded, x, [e], progress)
        else:
            got = estimate_in_pieces(model, as_model_data(model, x), e, folder, progress)
    if method == "is":
        ll = torch.from_numpy(got["log_likelihood"])
        d = {k: got[k] for k in _IS_DIAGNOSTICS}
        batch_size = got["block_size"]
        per = {
            "log_likelihood": ll.cpu().numpy(),
            **d,
            **_draws(model, num_samples, seed, batch_size),
        }
        extra = {
            "test_log_likelihood_psis": float(d["log_likelihood_psis"].mean()),
            **khat_summary(d["pareto_k"], num_samples),
            "median_ess": float(np.median(d["ess"])),
            "num_samples": num_samples,
        }
    elif method == "ais":
        ll, d = torch.from_numpy(got["log_likelihood"]), got
        per = {
            "log_likelihood": ll.cpu().numpy(),
            "acceptance_rate": d["acceptance_rate"],
            "ess": d["ess"],
        }
        extra = {
            "ais_num_chains": C,
            "ais_num_steps": T,
            "ais_acceptance_rate": float(d["acceptance_rate"].mean()),
            "ais_median_ess": float(np.median(d["ess"])),
        }
    else:
        ll, d = exact_log_likelihood(model, x, diagnostics=True, progress=progress)
        err = np.asarray(d["error_estimate"])
        per = {"log_likelihood": ll.cpu().numpy(), "error_estimate": err}
        extra = {
            "exact_error_estimate": float(err.max()),
            "exact_error_estimate_mean": float(err.mean()),
        }
    seconds = time.perf_counter() - t0
    n = ll.numel()
    key = "test_log_likelihood" if method == "is" else f"test_log_likelihood_{method}"
    metrics = {
        key: float(ll.mean()),
        f"{key}_se": float(ll.std() / n**0.5) if n > 1 else 0.0,
        f"{method}_seconds": seconds,
        **extra,
        "num_test_points": n,
    }
    return metrics, per


def evaluate_refined(
    model,
    dataset: Dataset,
    run_dir,
    *,
    epochs: int,
    refine_num_samples: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    num_samples: int = 5000,
    device="cpu",
    seed: int = 0,
    refine_on: str | None = None,
    trained_epochs: int | None = None,
    progress: bool | str = False,
    report: Callable[[str], None] | None = None,
) -> dict:
    """``pyrovamp evaluate RUN --refine-guide EPOCHS [--refine-on train|test]``: refine a copy of
    the guide with the model frozen (:func:`pyrovamp.infer.refine_guide`, ``epochs`` passes of
    the importance-weighted bound with ``refine_num_samples`` samples, default 10, Adam's ``lr``,
    default 1e-4, and ``batch_size`` points per step, default 100) on the training set
    (``refine_on="train"``, the default: a better amortised
    guide) or on the test images themselves (``"test"``: a proposal fitted to the images it
    scores, as AIS adapts its chains to each image; still a stochastic lower bound of each
    image's ``log p(x)``, since the importance samples are drawn afresh, from per-block seeds
    independent of the refinement's draws), then estimate the test log-likelihood by importance
    sampling with ``num_samples`` from the refined proposal. The model and its run folder's
    parameters are not changed.

    ``run_dir`` (a run folder, or a pretrained model's ``--out``; ``None``: nothing written): merges
    into ``run_dir/metrics.json`` (other keys kept), with ``TAG`` = ``refined`` (training set)
    or ``refined_on_test``: ``test_log_likelihood_TAG`` and its ``_se`` (nats per data point; the
    same model's log-likelihood as ``test_log_likelihood``, a stochastic lower bound, typically
    tighter), ``TAG_num_samples``, ``TAG_seconds`` (IS), the PSIS diagnostics of its importance
    weights ``TAG_median_ess``, ``TAG_khat_threshold`` and ``TAG_share_k_above_threshold``
    (:func:`khat_summary`), ``TAG_epochs`` (the epochs the
    model's parameters were trained for, as ``is_epochs``) and the refinement's settings and cost
    ``TAG_refine_epochs``, ``TAG_refine_num_samples``, ``TAG_refine_lr``, ``TAG_refine_points``,
    ``TAG_refine_seconds``, ``TAG_refine_bound`` (the bound per refinement epoch); saves the
    per-point values to ``run_dir/log_likelihood_TAG.npz``; the summary line (:func:`refined_line`)
    goes to ``report`` (default: this module's logger). Returns the new metrics.

    Raises:
        ValueError: ``refine_on`` not "train" or "test"; as :func:`pyrovamp.infer.refine_guide`.
        pyrovamp.errors.NonFiniteLossError: the bound became non-finite (nothing is written).
    """
    # the command line's defaults (None: not given)
    refine_num_samples = 10 if refine_num_samples is None else refine_num_samples
    lr = 1e-4 if lr is None else lr
    batch_size = 100 if batch_size is None else batch_size
    refine_on = "train" if refine_on is None else refine_on
    check_choice("refine_on", refine_on, ("train", "test"))
    check_type("dataset", dataset, Dataset, "a pyrovamp.data.Dataset")
    num_samples = check_int("num_samples", num_samples)
    check_int("seed", seed, 0)
    trained_epochs = check_optional_int("trained_epochs", trained_epochs, 0)
    tag = "refined" if refine_on == "train" else "refined_on_test"
    # dynamically binarised data: the training set's one stored binarisation
    fit_on = (dataset.train if refine_on == "train" else dataset.test).to(device)
    t0 = time.perf_counter()
    refined, history = refine_guide(
        model,
        fit_on,
        epochs=epochs,
        num_samples=refine_num_samples,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
    refine_seconds = time.perf_counter() - t0
    metrics, per = evaluate_method(
        refined,
        dataset.test.to(device),
        "is",
        num_samples=num_samples,
        seed=seed,
        progress=progress,
    )
    new = {
        f"test_log_likelihood_{tag}": metrics["test_log_likelihood"],
        f"test_log_likelihood_{tag}_se": metrics["test_log_likelihood_se"],
        f"{tag}_num_samples": num_samples,
        f"{tag}_seconds": metrics["is_seconds"],
        f"{tag}_median_ess": metrics["median_ess"],
        f"{tag}_khat_threshold": metrics["khat_threshold"],
        f"{tag}_share_k_above_threshold": metrics["share_k_above_threshold"],
        f"{tag}_refine_epochs": epochs,
        f"{tag}_refine_num_samples": refine_num_samples,
        f"{tag}_refine_lr": lr,
        f"{tag}_refine_points": int(fit_on.shape[0]),
        f"{tag}_refine_seconds": refine_seconds,
        f"{tag}_refine_bound": [h["bound"] for h in history],
        **({} if trained_epochs is None else {f"{tag}_epochs": int(trained_epochs)}),
    }
    if not (
        np.isfinite(per["log_likelihood"]).all() and np.isfinite(new[f"{tag}_refine_bound"]).all()
    ):
        raise NonFiniteLossError(
            "the refined guide gave a non-finite test log-likelihood; "
            "nothing was written (try a smaller --refine-lr)"
        )
    if run_dir is not None:
        save_per_point(Path(run_dir) / f"log_likelihood_{tag}.npz", **per)
        merge_metrics(Path(run_dir) / "metrics.json", new)
    (report or logger.info)(refined_line(new, refine_on, metrics["num_test_points"]))
    return new


def evaluate_bdmc(
    model,
    num_points: int,
    *,
    num_chains: int | None = None,
    num_steps: int | None = None,
    seed: int = 0,
) -> dict:
    """Bidirectional Monte Carlo (:func:`pyrovamp.infer.bdmc`) on ``num_points`` simulated data
    points: ``bdmc_lower``, ``bdmc_upper`` (means, nats per data point), ``bdmc_gap`` (mean of
    upper - lower), ``bdmc_gap_max``, ``bdmc_seconds`` and the settings.

    Raises:
        pyrovamp.errors.ArgumentTypeError, ValueError: a count that is not a positive integer.
    """
    num_points = check_int("num_points", num_points)
    num_chains = check_optional_int("num_chains", num_chains)
    num_steps = check_optional_int("num_steps", num_steps)
    C = num_chains or DEFAULT_NUM_CHAINS
    T = num_steps or DEFAULT_NUM_STEPS
    t0 = time.perf_counter()
    out = bdmc(model, num_points, C, T, seed=seed)
    return {
        "bdmc_lower": float(out["lower"].mean()),
        "bdmc_upper": float(out["upper"].mean()),
        "bdmc_gap": float(out["gap"].mean()),
        "bdmc_gap_max": float(out["gap"].max()),
        "bdmc_num_points": num_points,
        "bdmc_num_chains": C,
        "bdmc_num_steps": T,
        "bdmc_seconds": time.perf_counter() - t0,
    }


def evaluate_estimators(
    model,
    x,
    run_dir,
    method: str | None,
    bdmc_points: int | None,
    *,
    num_samples: int = 5000,
    num_chains: int | None = None,
    num_steps: int | None = None,
    seed: int = 0,
    epochs: int | None = None,
    progress: bool | str = False,
    report: Callable[[str], None] | None = None,
    processes: Processes | None = None,
) -> dict:
    """``pyrovamp evaluate RUN --method M [--bdmc N]``: run :func:`evaluate_method` (if
    ``method``) and :func:`evaluate_bdmc` (if ``bdmc_points``), merge their metrics into
    ``RUN/metrics.json`` (other keys kept) and save the per-point arrays of the method to
    ``RUN/log_likelihood_<method>.npz``. Returns the new metrics. ``epochs``: the epochs the
    evaluated parameters were trained for, recorded as ``<method>_epochs`` / ``bdmc_epochs`` (so
    that a table can tell an estimate of the current state of an unfinished run from a stale
    one). ``progress``: a progress bar for the method. Each estimate's summary line
    (:func:`method_line`, :func:`bdmc_line`) goes to ``report`` (default: this module's logger)
    as soon as it is made. ``processes``: the method's processes (:func:`evaluate_method`).

    Raises:
        pyrovamp.errors.ArgumentTypeError, ValueError: as :func:`evaluate_method`, or a
            ``bdmc_points`` that is not a positive integer (before any work).
    """
    if method is not None:
        check_choice("method", method, METHODS)
    bdmc_points = check_optional_int("bdmc_points", bdmc_points)
    epochs = check_optional_int("epochs", epochs, 0)
    run_dir = Path(run_dir)
    report = report or logger.info
    new: dict[str, Any] = {}
    tag = {} if epochs is None else {"epochs": int(epochs)}
    if method is not None:
        metrics, per = evaluate_method(
            model,
            x,
            method,
            num_samples=num_samples,
            num_chains=num_chains,
            num_steps=num_steps,
            seed=seed,
            progress=progress,
            processes=processes,
            folder=run_dir,
        )
        save_per_point(run_dir / f"log_likelihood_{method}.npz", **per)
        new.update(metrics)
        new.update({f"{method}_{k}": v for k, v in tag.items()})
        report(method_line(metrics, method))
    if bdmc_points is not None:
        b = evaluate_bdmc(model, bdmc_points, num_chains=num_chains, num_steps=num_steps, seed=seed)
        new.update(b)
        new.update({f"bdmc_{k}": v for k, v in tag.items()})
        report(bdmc_line(b))
    merge_metrics(run_dir / "metrics.json", new)
    return new


def result_line(metrics: dict, out) -> str:
    """The summary of a run's test metrics: log-likelihood, ELBO, epochs and training time."""
    return (
        f"test log-likelihood {metrics['test_log_likelihood']:.2f} nats "
        f"(S={metrics['num_samples']}), test ELBO {metrics['test_elbo']:.2f}, "
        f"{metrics['epochs_trained']} epochs in {metrics.get('train_seconds') or 0:.0f} s "
        f"-> {out}"
    )


def method_line(m: dict, method: str) -> str:
    """The summary of one estimator's metrics (:func:`evaluate_method`)."""
    key = "test_log_likelihood" if method == "is" else f"test_log_likelihood_{method}"
    note = f" (error estimate <= {m['exact_error_estimate']:.2g})" if method == "exact" else ""
    return (
        f"{method}: test log-likelihood {m[key]:.3f} nats{note} on "
        f"{m['num_test_points']} points in {m[f'{method}_seconds']:.1f} s"
    )


def bdmc_line(m: dict) -> str:
    """The summary of :func:`evaluate_bdmc`'s metrics."""
    return (
        f"bdmc: {m['bdmc_lower']:.3f} <= log p(x) <= {m['bdmc_upper']:.3f} nats "
        f"(mean gap {m['bdmc_gap']:.3f}, largest {m['bdmc_gap_max']:.3f}) on "
        f"{m['bdmc_num_points']} simulated points in {m['bdmc_seconds']:.1f} s"
    )


def refined_line(m: dict, refine_on: str, num_test_points: int) -> str:
    """The summary of :func:`evaluate_refined`'s metrics."""
    tag = "refined" if refine_on == "train" else "refined_on_test"
    return (
        f"guide refined on the {refine_on} set ({m[f'{tag}_refine_epochs']} epochs of the "
        f"IWAE-{m[f'{tag}_refine_num_samples']} bound on {m[f'{tag}_refine_points']} points, "
        f"{m[f'{tag}_refine_seconds']:.1f} s): test log-likelihood "
        f"{m[f'test_log_likelihood_{tag}']:.3f} nats (S={m[f'{tag}_num_samples']}) on "
        f"{num_test_points} points in {m[f'{tag}_seconds']:.1f} s"
    )
