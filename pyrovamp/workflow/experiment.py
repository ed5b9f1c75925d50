"""The work of ``pyrovamp train`` and ``pyrovamp evaluate`` as library functions: train a model
from a run's settings into a run folder (:func:`train_run`), and recompute a run folder's test
metrics (:func:`evaluate_run_folder`). Every check runs before any work, so that a bad setting
never touches an existing run folder.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from pyrovamp._random import fork_rng, seed_forked
from pyrovamp.data import dataset_stem, spread_subset
from pyrovamp.errors import CheckpointError, TrainingInterrupted
from pyrovamp.pretrained import (
    CONFIG,
    PRETRAINED,
    WEIGHTS,
    _load_weights,
    is_repo_id,
    pretrained_folder,
)
from pyrovamp.training import (
    CHECKPOINT,
    MODEL,
    TrainResult,
    fit,
    load_model_weights,
)
from pyrovamp.training.checkpoint import check_epochs
from pyrovamp.training.config import check_resume
from pyrovamp.training.trackers import finish_loggers, log_run_files
from pyrovamp.workflow.estimates import (
    evaluate_estimators,
    evaluate_refined,
    evaluate_run,
    merge_metrics,
)
from pyrovamp.workflow.parallel import Processes, check_device, resolve_hardware
from pyrovamp.workflow.plots import (
    plot_active_units,
    plot_history,
    plot_latent,
    plot_pseudo_inputs,
    plot_reconstructions,
    plot_samples,
)
from pyrovamp.workflow.runs import (
    atomic_write_text,
    build_model,
    check_folder_option,
    check_required,
    check_resumable,
    check_run_files,
    limit_points,
    load_run,
    make_folder,
    read_json_object,
    record_data,
    resume_point,
    run_dataset,
    save_figure,
    write_history_csv,
)
from pyrovamp.workflow.settings import (
    TEST_POINTS,
    check_method_options,
    check_refine_options,
    new_run_config,
    recorded_config,
    resumed_config,
    train_config,
)

__all__ = [
    "TrainedRun",
    "RunEvaluation",
    "train_run",
    "evaluate_run_folder",
    "write_metrics_and_figures",
    "process_rank",
]

logger = logging.getLogger(__name__)


@dataclass
class TrainedRun:
    """What :func:`train_run` did.

    Attributes:
        out: the run folder.
        result: :func:`pyrovamp.training.fit`'s result.
        metrics: the test metrics written to ``metrics.json`` (a finished run, on the process of
            rank 0); ``None`` for a run stopped by ``max_minutes`` and on the other processes.
    """

    out: Path
    result: TrainResult
    metrics: dict | None


@dataclass
class RunEvaluation:
    """What :func:`evaluate_run_folder` computed (``None``: not asked for).

    Attributes:
        metrics: the full refresh: ``metrics.json`` as written.
        refined: the new metrics of :func:`pyrovamp.workflow.estimates.evaluate_refined`.
        estimators: the new metrics of :func:`pyrovamp.workflow.estimates.evaluate_estimators`.
        num_test_points: test points evaluated.
    """

    metrics: dict | None = None
    refined: dict | None = None
    estimators: dict | None = None
    num_test_points: int = 0


def process_rank(devices: int = 1) -> int:
    """This process's global rank under Lightning's or torchrun's launcher (0 when alone)."""
    if os.environ.get("RANK"):
        return int(os.environ["RANK"])
    return int(os.environ.get("NODE_RANK", 0)) * devices + int(os.environ.get("LOCAL_RANK", 0))


def _init_source(init) -> str:
    """What ``--init-from`` names, as ``config.json`` records it: a run folder (with
    ``model.pt``) or a pretrained folder as its resolved path; a zoo name or a Hugging Face Hub
    repository id as given. A zoo name comes before a pretrained folder of that name, as in
    :func:`pyrovamp.from_pretrained`.

    Raises:
        ValueError: none of these (one line naming the option).
    """
    init = os.fspath(init)
    path = Path(init)
    if (path / MODEL).is_file():
        return str(path.resolve())
    if init in PRETRAINED:
        return init
    if (path / WEIGHTS).is_file() and (path / CONFIG).is_file():  # a pretrained folder
        return str(path.resolve())
    if is_repo_id(init) and not path.parent.is_dir():
        return init
    raise ValueError(
        f"--init-from {init}: neither a finished run folder (no {MODEL} there), a pretrained "
        f"folder (no {WEIGHTS} and {CONFIG}), a model of the zoo ({', '.join(PRETRAINED)}), nor "
        "a Hugging Face Hub repository id"
    )


def _load_init(model, init: str) -> None:
    """Load the parameters ``--init-from`` names (:func:`_init_source`) into ``model``.

    Raises:
        ValueError: one line naming the option: weights of another model than the run's (the
            tensors that differ), a damaged file, a folder gone since the run began or a
            repository id neither cached nor downloadable.
    """
    try:
        if (Path(init) / MODEL).is_file():
            load_model_weights(model, Path(init) / MODEL)
        else:
            other = "another model than this run's"
            _load_weights(model, pretrained_folder(init) / WEIGHTS, other)
    except (CheckpointError, FileNotFoundError) as e:
        raise ValueError(f"--init-from: {e}") from None


def train_run(
    options: dict, out=None, *, resume: bool = False, progress: bool | str = "auto"
) -> TrainedRun:
    """``pyrovamp train``: check the settings, train and write the run folder ``out``.

    A new run resolves ``options`` (:func:`pyrovamp.workflow.settings.new_run_config`) and writes
    ``config.json``; a resumed one (``resume=True``) continues ``out`` from its ``checkpoint.ckpt``
    with ``options`` as the changes (:func:`pyrovamp.workflow.settings.resumed_config`), recorded
    for the next piece (``recorded_config``). Training writes ``checkpoint.ckpt``, ``best.ckpt``,
    ``model.pt`` and ``history.csv``; a finished run gets its test metrics and figures
    (:func:`write_metrics_and_figures`), a run stopped by ``max_minutes`` its learning curve so
    far (``loss.png``). With several processes (Lightning's launcher) only rank 0 writes.

    Args:
        options: settings keyed as the options of ``pyrovamp train`` (``None`` values: not given).
        out: the run folder (default for a new run: ``runs/<dataset>_<prior>_<time>``, with
            a path's stem for ``<dataset>``).
        resume: continue the run in ``out``.
        progress: progress bars (rank 0 only).

    Raises:
        ValueError: a bad setting, an unusable ``out``, a missing or damaged checkpoint, a
            changed setting on resume, an ``init_from`` run of another model (one line naming the
            option; nothing is written); ``FileNotFoundError``: a missing data file;
            ``pyrovamp.errors.NonFiniteLossError``: the loss became non-finite;
            ``pyrovamp.errors.TrainingInterrupted``: SIGTERM or SIGINT stopped the training
            (the last epoch's checkpoint is kept) or the test evaluation after it (``stage
            "evaluation"``); ``train_run(..., resume=True)`` continues either.
    """
    options = dict(options)
    rank = process_rank(options.get("devices") or 1)
    check_device(options.get("device") or "cpu")
    check_folder_option(options.get("data_root"), "--data-root")
    checkpoint, saved = None, None
    if resume:
        if out is None:
            raise ValueError("--resume needs --out RUN_DIR")
        out = Path(out)
        checkpoint = resume_point(out)  # a damaged file: one line, before any work
        saved = check_required(read_json_object(out / CONFIG, "cannot resume"), out / CONFIG)
        cfg = resumed_config(saved, options, str(out))
        if checkpoint is not None:
            check_epochs(checkpoint, cfg["epochs"], out / CHECKPOINT)
    else:
        cfg = new_run_config(options)
        out = (
            Path(out)
            if out is not None
            else Path("runs")
            / (f"{dataset_stem(cfg['dataset'])}_{cfg['prior']}_{time.strftime('%Y%m%d-%H%M%S')}")
        )
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} exists and is not a folder")
        if rank == 0 and out.is_dir() and any(out.iterdir()):
            raise ValueError(
                f"--out {out} already exists and is not empty; use --resume to "
                "continue that run or choose another folder"
            )
        if cfg.get("init_from") is not None:
            cfg["init_from"] = _init_source(cfg["init_from"])
    fresh = not resume or checkpoint is None  # a resumed run without a checkpoint starts again
    tcfg = train_config(cfg, progress=progress if rank == 0 else False)
    tcfg.validate()
    if checkpoint is not None:  # a refused piece writes nothing (fit checks it again)
        check_resume(checkpoint["pyrovamp"]["config"], tcfg, out / CHECKPOINT)
    dataset = run_dataset(cfg)
    if not resume:
        record_data(cfg, dataset)
    dataset = limit_points(dataset, cfg.get("max_points"))
    # the run's seed gives the initial parameters; the caller's random streams are left alone
    with fork_rng():
        seed_forked(cfg["seed"])
        model = build_model(cfg, dataset)
        if (
            fresh
            and cfg.get("pseudo_inputs") == "data"
            and hasattr(model.prior, "init_from_data")
            and cfg.get("init_from") is None
        ):
            idx = torch.randperm(dataset.train.shape[0])[: model.prior.num_components]
            model.prior.init_from_data(dataset.train[idx])
    if fresh and cfg.get("init_from") is not None:
        _load_init(model, cfg["init_from"])  # before out is made
    elif checkpoint is not None:
        check_resumable(model, checkpoint, out)

    if rank == 0:
        make_folder(out)
    record = recorded_config(saved, cfg)
    if rank == 0 and record != saved:
        atomic_write_text(out / "config.json", json.dumps(record, indent=2) + "\n")
    if rank == 0:
        logger.info(
            "training %s with the %s prior on %s -> %s",
            cfg["model"],
            cfg["prior"],
            cfg["dataset"],
            out,
        )
    test_data = (
        spread_subset(dataset.test, cfg.get("test_points") or TEST_POINTS)
        if cfg.get("test_every")
        else None
    )
    validation = (
        dataset.validation
        if not cfg.get("val_points")
        else spread_subset(dataset.validation, cfg["val_points"])
    )
    result = fit(
        model,
        dataset.train_sampler or dataset.train,
        validation,
        tcfg,
        checkpoint_dir=out,
        resume=not fresh,
        test_data=test_data,
    )
    metrics, ok = None, False
    loggers = result.trainer.loggers if result.trainer is not None else []
    try:
        if rank == 0:
            write_history_csv(result.history, out / "history.csv")
            if not result.finished:  # the learning curve so far (a finished run draws it below)
                save_figure(plot_history(result.history), out / "loss.png")
        if result.finished:
            metrics = _finish_run(model, dataset, cfg, tcfg, result, out)
            if rank == 0:
                log_run_files(loggers, out, metrics)
        elif rank == 0:
            logger.info(
                "stopped after %d of %d epochs (--max-minutes); the test evaluation runs "
                "when the run finishes: continue with pyrovamp train --resume --out %s",
                result.epochs,
                cfg["epochs"],
                out,
            )
        ok = True
    except KeyboardInterrupt:  # trained and saved; the run folder's last files are not
        stage = "evaluation" if result.finished else "training"
        raise TrainingInterrupted("SIGINT", result.epochs, out / CHECKPOINT, stage=stage) from None
    finally:
        finish_loggers(loggers, failed=not ok)  # the W&B run training left open for the files
        _end_processes(ok)
    return TrainedRun(out, result, metrics)


def _end_processes(ok: bool) -> None:
    """After data-parallel training: wait for every process (when all went well) and end the
    process group, so that gloo's and NCCL's threads stop before the interpreter does."""
    if dist.is_available() and dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()


def _finish_run(model, dataset, cfg, tcfg, result, out) -> dict | None:
    """The test metrics and figures of a finished run (sharded over the processes of a
    data-parallel run)."""
    trainer = result.trainer
    device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
    meta = {
        "epochs_trained": result.epochs,
        "train_seconds": result.train_seconds,
        "finished": result.finished,
        "stopped_early": result.stopped_early,
        "best_val_elbo": result.best_val_elbo,
        "val_bound": tcfg.val_bound,
        "parameters": result.source,
        "processes": trainer.world_size if trainer is not None else 1,
        "precision": result.precision,  # what it trained in ("auto" resolved)
        "precision_requested": str(tcfg.precision),
        "accelerator": result.accelerator,
    }
    parallel = trainer is not None and trainer.world_size > 1
    return write_metrics_and_figures(
        model,
        dataset,
        cfg,
        meta,
        result.history,
        out,
        cfg["num_samples"],
        device,
        trainer=trainer if parallel else None,
        progress=tcfg.progress,
    )


def write_metrics_and_figures(
    model,
    dataset,
    cfg: dict,
    meta: dict,
    history: list[dict],
    out,
    num_samples: int,
    device,
    trainer=None,
    progress: bool | str = False,
    processes: Processes | None = None,
) -> dict | None:
    """Merge a run's test metrics (:func:`pyrovamp.workflow.runs.evaluate_run`, with ``meta`` and
    the run's identity) into ``out/metrics.json`` (the per-point IS values into
    ``out/log_likelihood_is.npz``) (other keys kept, e.g. those of
    ``pyrovamp evaluate --method ais``; :func:`pyrovamp.workflow.estimates.merge_metrics`, under
    its lock) and write its figures (``latent.png``, ``samples.png``, ``reconstructions.png``,
    ``loss.png``, ``active_units.png``, ``pseudo_inputs.png``).

    With ``trainer`` (several processes) the evaluation is sharded over them and the process of
    rank 0 writes; with ``processes`` (``pyrovamp evaluate RUN --devices N``) the importance
    sampling and the ELBO run in that many new processes and this one writes (the same numbers).
    ``progress``: a progress bar over the test points.

    Returns:
        ``metrics.json`` as written (``None`` on the other processes).

    Raises:
        FloatingPointError: a non-finite metric (``metrics.json`` is not written; the command
            line exits with status 1).
    """
    out = Path(out)
    t0 = time.perf_counter()
    model = model.to(device)
    rank0 = trainer is None or trainer.is_global_zero
    metrics = evaluate_run(
        model,
        dataset,
        num_samples,
        device=device,
        trainer=trainer,
        progress=progress,
        per_point_file=out / "log_likelihood_is.npz" if rank0 else None,
        processes=processes,
    )
    if trainer is not None and not trainer.is_global_zero:
        return None
    metrics.update(
        eval_seconds=time.perf_counter() - t0,
        **meta,
        dataset=cfg["dataset"],
        model=cfg.get("model", "vae"),
        prior=cfg["prior"],
        latent_dim=cfg["latent_dim"],
        device=str(device),
    )
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise FloatingPointError(
            f"non-finite test metrics {bad}: {out / 'metrics.json'} not written "
            "(the trained parameters give NaN or infinite estimates)"
        )
    merged = merge_metrics(out / "metrics.json", metrics)
    x = dataset.test.to(device)
    save_figure(plot_latent(model, x), out / "latent.png")
    save_figure(plot_samples(model), out / "samples.png")
    save_figure(plot_reconstructions(model, x), out / "reconstructions.png")
    save_figure(plot_history(history), out / "loss.png")
    if x.shape[0] > 1:
        save_figure(plot_active_units(model, x), out / "active_units.png")
    if hasattr(model.prior, "pseudo_inputs"):
        save_figure(plot_pseudo_inputs(model), out / "pseudo_inputs.png")
    return merged


def evaluate_run_folder(
    run_dir,
    *,
    num_samples: int | None = None,
    method: str | None = None,
    num_steps: int | None = None,
    num_chains: int | None = None,
    bdmc: int | None = None,
    refine_guide: int | None = None,
    refine_on: str | None = None,
    refine_num_samples: int | None = None,
    refine_lr: float | None = None,
    refine_batch_size: int | None = None,
    data_root=None,
    device: str | None = None,
    progress: bool | str = "auto",
    report: Callable[[str], None] | None = None,
    devices: int = 1,
    accelerator: str | None = None,
) -> RunEvaluation:
    """``pyrovamp evaluate``: recompute a run folder's test metrics from its ``model.pt``.

    Without ``method``, ``bdmc`` and ``refine_guide``: every test metric and figure anew
    (:func:`write_metrics_and_figures`; other keys of ``metrics.json`` kept). ``method``
    (``"is"``, ``"ais"``, ``"exact"``) and ``bdmc`` (simulated points):
    :func:`pyrovamp.workflow.estimates.evaluate_estimators`. ``refine_guide`` (epochs):
    :func:`pyrovamp.workflow.estimates.evaluate_refined` (defaults: ``refine_on="train"``,
    ``refine_num_samples=10``, ``refine_lr=1e-4``, ``refine_batch_size=100``), then ``bdmc`` if
    given. ``num_samples``: importance samples per test point (default: the run's).
    ``report``: receives each estimate's summary line as soon as it is made (default: this
    module's logger); the metrics of a whole evaluation come back in :class:`RunEvaluation`.

    ``devices`` (``pyrovamp evaluate RUN --devices N``): shard the importance sampling and the
    test ELBO (the whole evaluation), or ``method`` ``"is"`` / ``"ais"``, over N new processes
    (:mod:`pyrovamp.workflow.parallel`) on ``accelerator`` (``"cpu"``, or ``"gpu"``: one GPU
    each; default: ``device``'s; ``device`` defaults to the accelerator's, else ``"cpu"``): the
    same numbers as one process, written by this one; the active units, figures and the exact
    quadrature stay here. Default 1: one process, as before.

    Raises:
        ValueError: options that do not go together (``devices`` > 1 with ``refine_guide``,
            ``bdmc`` or ``method="exact"``; an ``accelerator`` and a ``device`` of different
            kinds), ``devices < 1``, ``accelerator="gpu"`` without enough CUDA devices, a
            missing ``data_root``, ``refine_guide`` on a run without a test evaluation (one line
            naming the option); ``FileNotFoundError``: not a run folder; as the estimators.
    """
    devices, accelerator, device = resolve_hardware(devices, accelerator, device)
    run = Path(run_dir)
    check_folder_option(data_root, "--data-root")
    check_refine_options(
        refine_guide, refine_on, refine_num_samples, refine_lr, refine_batch_size, method, devices
    )
    exact = method == "exact" or None
    for option, given in (("--bdmc", bdmc), ("--method exact (quadrature)", exact)):
        if devices > 1 and given is not None:
            raise ValueError(
                f"--devices {devices} shards IS, AIS and the test ELBO; {option} runs in one "
                "process: leave out --devices"
            )
    check_method_options(method, num_samples, num_steps, num_chains, bdmc)
    scored = check_run_files(run) if run.is_dir() else {}
    if refine_guide is not None and run.is_dir() and "test_log_likelihood" not in scored:
        raise ValueError(
            f"{run} has no test evaluation yet (metrics.json without "
            f"test_log_likelihood): run pyrovamp evaluate {run} first, then "
            "--refine-guide to set the refined estimate beside it"
        )
    model, cfg, dataset, meta = load_run(run, device, data_root)
    dataset = limit_points(dataset, cfg.get("max_points"))
    num_samples = num_samples or cfg.get("num_samples", 5000)
    done = RunEvaluation(num_test_points=int(dataset.test.shape[0]))
    processes = None
    if devices > 1:  # each process loads the model of the run folder itself
        root = None if data_root is None else str(Path(data_root).resolve())
        load = functools.partial(_run_model, str(run.resolve()), root)
        processes = Processes(devices, accelerator, load)
    if refine_guide is not None:
        done.refined = evaluate_refined(
            model,
            dataset,
            run,
            epochs=refine_guide,
            refine_num_samples=refine_num_samples,
            lr=refine_lr,
            batch_size=refine_batch_size,
            num_samples=num_samples,
            device=device,
            refine_on=refine_on,
            trained_epochs=meta.get("epochs"),
            progress=progress,
            report=report,
        )
        if bdmc is None:
            return done
    if method is not None or bdmc is not None:
        done.estimators = evaluate_estimators(
            model,
            dataset.test.to(device),
            run,
            method,
            bdmc,
            num_samples=num_samples,
            num_chains=num_chains,
            num_steps=num_steps,
            epochs=meta.get("epochs"),
            progress=progress,
            report=report,
            processes=processes,
        )
        return done
    info = {
        "epochs_trained": meta.get("epochs"),
        "train_seconds": meta.get("train_seconds"),
        "finished": meta.get("finished"),
        "stopped_early": meta.get("stopped_early"),
        "best_val_elbo": meta.get("best_val_elbo"),
        "val_bound": cfg.get("val_bound") or "elbo",
        "parameters": meta.get("source"),
    }
    # merged into metrics.json under its lock: the keys of other evaluations (e.g. AIS) are
    # kept, also those written by one that finishes while this one runs
    done.metrics = write_metrics_and_figures(
        model,
        dataset,
        cfg,
        info,
        meta.get("history", []),
        run,
        num_samples,
        device,
        progress=progress,
        processes=processes,
    )
    return done


def _run_model(run_dir: str, data_root: str | None, device: str):
    """The trained model of the run folder ``run_dir`` on ``device``, as
    :func:`evaluate_run_folder` loads it (what a process of ``--devices N`` calls)."""
    return load_run(run_dir, device, data_root)[0]
