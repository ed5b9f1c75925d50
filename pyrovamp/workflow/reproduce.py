"""``pyrovamp reproduce table1``: the VampPrior paper's table of test log-likelihoods, cell by cell.

Each cell -- data set x model (``vae``, ``hvae``, ``convhvae``, ``pixelhvae``) x prior
(``standard``, ``vampprior``) -- is trained by a recipe (:data:`pyrovamp.workflow.recipes.RECIPES`,
``--recipe``): a sequence of stages, each one ``pyrovamp train`` run in its own folder by the same
code path as the command (:func:`pyrovamp.workflow.experiment.train_run`). The ``paper`` recipe
(the default) is one stage with the paper preset in ``DIR/<dataset>_<model>_<prior>``; ``best``
is two stages in ``DIR/<dataset>_<model>_<prior>.best/1-elbo`` and ``.../2-iwae``. A stage that
holds a checkpoint is resumed; a finished one is skipped; a stage starts when the one before has
finished; so the command can be run again and again, in pieces of ``--max-minutes`` per cell,
until every stage of every cell has finished. After every call ``DIR/table1.md`` is written anew
(:func:`pyrovamp.workflow.table1.write_table`): pyrovamp's number beside the paper's, the recipe,
the epochs, the training time and the hardware of each cell, and whether early stopping has fired.
"""

from __future__ import annotations

import logging
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from pyrovamp._validate import check_int, check_optional_int, check_positive, check_type
from pyrovamp.data import DATASETS, dataset_files
from pyrovamp.errors import CellsFailedError
from pyrovamp.workflow.estimates import result_line
from pyrovamp.workflow.experiment import evaluate_run_folder, train_run
from pyrovamp.workflow.recipes import (
    RECIPES,
    Recipe,
    check_stage_folder,
    read_recipe_file,
    write_recipe_file,
)
from pyrovamp.workflow.runs import make_folder
from pyrovamp.workflow.settings import (
    RESUME_MAY_CHANGE,
    TABLE_MODELS,
    TABLE_PRIORS,
    exit_status,
    option_name,
)
from pyrovamp.workflow.table1 import (
    MAX_FIRST_EPOCH_LEFTOVERS,
    PAPER_SOURCE,
    PAPER_TABLE,
    CellState,
    cell_name,
    preset_differences,
    read_cell,
    record_piece,
    write_table,
)

__all__ = [
    "PAPER_TABLE",
    "PAPER_SOURCE",
    "TABLE_MODELS",
    "TABLE_PRIORS",
    "GPU_MODELS",
    "reproduce_table1",
    "cell_name",
    "read_cell",
    "hardware",
    "write_table",
    "preset_differences",
    "MAX_FIRST_EPOCH_LEFTOVERS",
    "CellState",
    "record_piece",
]

logger = logging.getLogger(__name__)

# too slow for a CPU: listed with their command unless a GPU is there (or a smoke test)
GPU_MODELS = ("convhvae", "pixelhvae")


def hardware(accelerator: str = "cpu", devices: int = 1) -> str:
    """A one-line description of the machine a piece runs on: the CPU model and cores, or the
    GPU name(s)."""
    if accelerator == "gpu":
        names = [
            torch.cuda.get_device_name(i) for i in range(min(devices, torch.cuda.device_count()))
        ]
        uniq = sorted(set(names))
        return ", ".join(f"{names.count(n)} x {n}" for n in uniq) or "GPU"
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpu = cpu or platform.processor() or platform.machine() or "CPU"
    return f"{cpu}, {os.cpu_count()} cores, torch threads: {torch.get_num_threads()}"


def _command(dataset, model, prior, out, data_root=None, recipe="paper") -> str:
    parts = [
        "pyrovamp",
        "reproduce",
        "table1",
        "--out",
        str(out),
        "--datasets",
        dataset,
        "--models",
        model,
        "--priors",
        prior,
        "--accelerator",
        "gpu",
        "--devices",
        "1",
    ]
    if data_root:
        parts += ["--data-root", str(data_root)]
    if recipe != "paper":
        parts += ["--recipe", recipe]
    return " ".join(shlex.quote(p) for p in parts)


def reproduce_table1(
    out,
    datasets=("static_mnist",),
    models=None,
    priors=TABLE_PRIORS,
    *,
    recipe: str | Recipe = "paper",
    max_minutes: float | None = None,
    accelerator: str = "auto",
    devices: int = 1,
    data_roots: dict | None = None,
    max_points: int | None = None,
    num_samples: int | None = None,
    epochs: int | None = None,
    progress: bool | str = False,
    log=None,
    strict: bool = False,
) -> Path:
    """Train (or continue, or skip) every cell of the table with a recipe and write
    ``out/table1.md``.

    A cell is trained by the stages of ``recipe`` (:data:`~pyrovamp.workflow.recipes.RECIPES`),
    one ``pyrovamp train`` run each, in its own folder. With ``recipe="paper"`` (one stage) a cell
    is a ``pyrovamp train --dataset D --model M --prior P --preset paper --out out/D_M_P
    --test-every 25`` run; with ``recipe="best"`` (``vae`` and ``hvae`` only) it is ``1-elbo``
    (the fast preset with dropout 0.1, validated on the IWAE-20 bound) then ``2-iwae``
    (fine-tuning on the IWAE-20 bound from stage 1's parameters, Burda et al. 2016) in
    ``out/D_M_P.best/``. Per stage, as for a cell before recipes: a folder with a checkpoint is
    resumed, a finished training whose test evaluation is missing is evaluated, a finished stage
    (trained and evaluated) is skipped. A stage starts only once the stage before it has finished,
    with ``--init-from`` that stage's folder where the recipe says so. ``max_minutes`` is the
    training time of a cell in one call: a stage that finishes within it leaves the rest (the
    wall time of this call's pieces of the cell, test evaluations included, subtracted) to the
    next stage, which starts in the same call; with nothing left it starts in the next call.
    Every stage folder gets ``recipe.json`` (recipe, version, stage, index and the ``pyrovamp
    train`` command that started it); a folder whose ``recipe.json`` names another recipe,
    version or stage is refused before any work.

    The learning curve of the paper recipe -- the validation ELBO of every epoch and the test
    log-likelihood on :data:`~pyrovamp.workflow.settings.TEST_POINTS` test images spread over the
    test set every 25 epochs (IS, S = :data:`~pyrovamp.workflow.settings.TEST_NUM_SAMPLES`) -- is
    in each cell's ``history.csv`` and ``loss.png`` and listed in ``table1.md``. With one device a
    stage runs in this process (:func:`pyrovamp.workflow.experiment.train_run`); with several it
    runs as ``python -m pyrovamp.cli train ...`` in a child process, so that Lightning's launcher
    starts the data-parallel processes from its command line. On a machine without a GPU, the
    ``convhvae`` and ``pixelhvae`` cells are listed as needing one (with the command that runs
    them) unless ``max_points`` is given (a smoke test on the first ``max_points`` points). A
    cell that fails (bad data, a non-finite loss) is reported in its row; the others go on. The
    table names each cell's recipe; a cell of several stages shows the value of its last finished
    stage, each stage's own value and the training time summed over the stages.

    Args:
        out: the folder of the cells and ``table1.md``.
        datasets: which cells: their data sets.
        models: which cells: their models (``None``: the recipe's, every model of the table for
            ``paper``, ``vae`` and ``hvae`` for ``best``).
        priors: which cells: their priors.
        recipe: a name of :data:`~pyrovamp.workflow.recipes.RECIPES` (``"paper"``, ``"best"``)
            or a :class:`~pyrovamp.workflow.recipes.Recipe`.
        max_minutes: training time per cell and call (``--max-minutes``), shared by the stages
            that run in the call; ``None``: until every stage finishes. The final test
            evaluation of the stage that is training (S=5000) comes on top.
        accelerator: ``"cpu"``, ``"gpu"`` or ``"auto"`` (a GPU when there is one).
        devices: devices (processes) per cell.
        data_roots: data set name -> folder with its files (key ``None``: every data set).
        max_points: a setting of ``pyrovamp train`` (smoke tests: fewer points).
        num_samples: a setting of ``pyrovamp train`` (smoke tests: fewer importance samples).
        epochs: a setting of ``pyrovamp train`` for every stage (smoke tests: fewer epochs than
            the presets' 2000).
        progress: show Lightning's progress bar.
        log: callable taking one line of progress (default: this module's logger, level INFO).
        strict: raise :class:`~pyrovamp.errors.CellsFailedError` after writing the table if a
            piece of a cell failed in this call (``pyrovamp reproduce`` does: exit status 1).

    Returns:
        the path of ``table1.md``.

    Raises:
        pyrovamp.errors.ArgumentTypeError: an argument of the wrong type (``datasets`` a string
            instead of a list, a float ``devices``, ...).
        ValueError: an unknown recipe, data set, model or prior, a model the recipe was not
            designed for (``best`` with ``convhvae`` or ``pixelhvae``), a stage folder of another
            recipe or version, a GPU asked for on a machine without one, a count below 1, a
            missing data folder or one for a data set not in ``datasets`` -- one line, before
            any work.
        FileNotFoundError: a data file that a cell to run needs is missing and cannot be
            downloaded (:func:`pyrovamp.data.dataset_files`, naming it), before the first cell
            trains.
        pyrovamp.errors.CellsFailedError: with ``strict``, cells that failed (after the table
            is written).
    """
    log = log or logger.info
    if isinstance(recipe, Recipe):
        rec = recipe
    elif isinstance(recipe, str) and recipe in RECIPES:
        rec = RECIPES[recipe]
    else:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    if models is None:
        models = tuple(rec.models or TABLE_MODELS)
    devices = check_int("devices", devices)
    max_points = check_optional_int("max_points", max_points)
    num_samples = check_optional_int("num_samples", num_samples)
    epochs = check_optional_int("epochs", epochs)
    if max_minutes is not None:
        check_positive("max_minutes", max_minutes, "a positive number of minutes or None")
    if data_roots is not None:
        check_type("data_roots", data_roots, dict, "a dict {data set or None: folder} or None")
    for name, values, allowed in (
        ("datasets", datasets, DATASETS),
        ("models", models, TABLE_MODELS),
        ("priors", priors, TABLE_PRIORS),
    ):
        check_type(name, values, (list, tuple), f"a list of some of {', '.join(allowed)}")
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise ValueError(f"{name} must be some of {', '.join(allowed)}, got {list(values)}")
    other = [m for m in models if rec.models is not None and m not in rec.models]
    if other:
        raise ValueError(
            f"models: the {rec.name} recipe is for {', '.join(rec.models or ())} only; it was "
            f"not designed for {', '.join(other)}"
        )
    if accelerator not in ("cpu", "gpu", "auto"):
        raise ValueError(f"accelerator must be cpu, gpu or auto, got {accelerator!r}")
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise ValueError("--accelerator gpu was asked for but torch.cuda.is_available() is False")
    gpu = accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())
    acc = "gpu" if gpu else "cpu"
    data_roots = dict(data_roots or {})
    for k, v in data_roots.items():
        if k is not None and k not in datasets:
            raise ValueError(
                f"--data-root {k}={v}: {k} is not among the data sets of the table "
                f"({', '.join(datasets)})"
            )
        if not Path(v).is_dir():
            raise ValueError(f"--data-root {v} is not a folder")
    keys = [(d, m, p) for d in datasets for m in models for p in priors]
    for key in keys:  # a folder of another recipe or version: refused before any work
        for i in range(1, len(rec.stages) + 1):
            check_stage_folder(rec.stage_folder(Path(out) / cell_name(*key), i), rec, i)
    read = {
        key: [
            read_cell(rec.stage_folder(Path(out) / cell_name(*key), i))
            for i in range(1, len(rec.stages) + 1)
        ]
        for key in keys
    }
    finished = {key for key in keys if all(st.state == "finished" for st in read[key])}
    skipped = {key for key in keys if not gpu and key[1] in GPU_MODELS and max_points is None}
    for dataset in dict.fromkeys(d for d, m, p in keys if (d, m, p) not in finished | skipped):
        # the files of every cell to run, before the first one trains (hours, maybe)
        dataset_files(dataset, data_roots.get(dataset, data_roots.get(None)))
    out = make_folder(out)

    cells, needs_gpu, notes, failed = {}, {}, [], []
    for key in keys:
        dataset, model, prior = key
        root = data_roots.get(dataset, data_roots.get(None))
        cell = out / cell_name(*key)
        states = read[key]
        if key in finished:
            log(f"{cell.name}: finished, skipped")
        elif key in skipped:
            needs_gpu[key] = _command(dataset, model, prior, out, root, rec.name)
            log(f"{cell.name}: needs a GPU, not run ({needs_gpu[key]})")
        else:
            settings = {
                "num_samples": num_samples,
                "epochs": epochs,
                "data_root": root,
                "accelerator": acc,
                "devices": devices,
                "strategy": "ddp" if devices > 1 else None,
            }
            states, ok = _run_stages(
                key, cell, rec, states, settings, max_points, max_minutes, progress, log
            )
            if not ok:
                failed.append(cell.name)
        cells[key] = _cell_summary(rec, cell, states, out)
    if max_points is not None:
        notes.append(
            f"Smoke test: cells run with `--max-points {max_points}` (the first "
            f"{max_points} training, validation and test points), not the paper's data."
        )
    path = write_table(out, cells, needs_gpu, notes)  # its path: returned (the CLI prints it)
    if strict and failed:
        raise CellsFailedError(failed, path)
    return path


def _run_stages(key, cell, rec, states, settings, max_points, max_minutes, progress, log):
    """One call's pieces of a cell: its stages in order, from the first one not finished, while
    each finishes and ``max_minutes`` (shared by the stages run in this call) lasts. Returns
    ``(states, ok)``: ``ok`` is ``False`` when a piece failed."""
    t0, ran = time.monotonic(), False
    states = list(states)
    for i, stage in enumerate(rec.stages, 1):
        folder = rec.stage_folder(cell, i)
        st = states[i - 1]
        where = folder.name if rec.in_cell_folder else f"{cell.name} stage {i} ({stage.name})"
        if st.state == "finished":
            continue
        if i > 1 and states[i - 2].state != "finished":  # only after the stage before it
            break
        if st.state == "unreadable":  # a failed cell: reported in its row, the folder kept
            log(f"{where}: {st.note}; left alone")
            return states, False
        minutes = max_minutes
        if max_minutes is not None and ran:
            minutes = max_minutes - (time.monotonic() - t0) / 60.0
            if minutes <= 0:
                log(f"{where}: starts in the next call (this call's --max-minutes is spent)")
                break
        options = {"dataset": key[0], "model": key[1], "prior": key[2], **stage.options}
        if stage.init_from_previous:
            options["init_from"] = str(rec.stage_folder(cell, i - 1))
        st, rc = _run_cell(
            folder,
            st,
            {**settings, "max_minutes": minutes},
            options,
            max_points,
            progress,
            log,
            stamp=(rec, i, where),
        )
        states[i - 1], ran = st, True
        if rc != 0:
            return states, False
    return states, True


def _argv(options: dict) -> list[str]:
    """The command-line options of ``options`` (``None``: left out; ``True``: a flag)."""
    argv = []
    for k, v in options.items():
        if v is True:
            argv.append(option_name(k))
        elif v is not None and v is not False:
            argv += [option_name(k), str(v)]
    return argv


def _run_cell(
    folder: Path,
    st: CellState,
    settings: dict,
    stage_options: dict,
    max_points,
    progress,
    log,
    *,
    stamp: tuple,
) -> tuple[CellState, int]:
    """One piece of a stage: evaluate a trained stage, resume an unfinished one or start it;
    its ``recipe.json`` is written once the folder exists (``stamp``: recipe, index, name).
    Returns the stage's state after the piece and the piece's exit status."""
    rec, index, where = stamp
    device = "cuda" if settings["accelerator"] == "gpu" else "cpu"
    given = {k: v for k, v in settings.items() if v is not None}
    start = {**stage_options, **given, "max_points": max_points}
    command = " ".join(
        shlex.quote(a)
        for a in ["pyrovamp", "train", "--out", str(folder)]
        + _argv({k: v for k, v in start.items() if k != "max_minutes"})
    )
    if st.state == "trained":
        options = {
            "num_samples": settings["num_samples"],
            "data_root": settings["data_root"],
            "device": device,
        }
        argv = ["evaluate", str(folder)] + _argv(options)
        what = "test evaluation of the finished training"
    elif st.state == "unfinished":
        resumable = {k: v for k, v in stage_options.items() if k in RESUME_MAY_CHANGE}
        options = {**settings, **resumable}
        argv = ["train", "--resume", "--out", str(folder)] + _argv(options)
        what = f"resumed after {st.epochs} epochs"
    else:
        if st.state == "leftovers":  # killed in its first epoch: nothing to continue from
            shutil.rmtree(folder)
        options = start
        argv = ["train", "--out", str(folder)] + _argv(options)
        what = "started"
    if not progress:
        argv.append("--no-progress")
    log(f"{where}: {what}: pyrovamp {' '.join(shlex.quote(a) for a in argv)}")
    t0 = time.time()
    try:
        rc = _run_piece(folder, argv, options, st, settings["devices"], progress, log)
    finally:  # also when stopped: the folder of a stage names its recipe from its first piece on
        if (folder / "config.json").is_file() and read_recipe_file(folder) is None:
            write_recipe_file(folder, rec, index, command)
    piece = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t0)),
        "seconds": round(time.time() - t0, 1),
        "command": argv[0],
        "exit_status": rc,
        "hardware": hardware(settings["accelerator"], settings["devices"]),
        "accelerator": settings["accelerator"],
        "devices": settings["devices"],
    }
    record_piece(folder, piece)
    new = read_cell(folder)
    if rc != 0:
        new.note = f"the last piece failed (exit status {rc}; see its message above)"
        log(f"{where}: failed with exit status {rc}")
    return new, rc


def _run_piece(folder, argv, options, st, devices, progress, log) -> int:
    """Run one piece (``pyrovamp train`` or ``evaluate``); its exit status."""
    if devices > 1:
        proc = subprocess.Popen([sys.executable, "-m", "pyrovamp.cli", *argv])
        try:
            return proc.wait()
        except KeyboardInterrupt:  # the cell's processes stop after their step, with a checkpoint
            proc.send_signal(signal.SIGTERM)
            proc.wait()
            raise
    try:
        if argv[0] == "evaluate":
            metrics = evaluate_run_folder(folder, **options, progress=progress).metrics
        else:
            resume = st.state == "unfinished"
            metrics = train_run(options, folder, resume=resume, progress=progress).metrics
        if metrics is not None:
            log(result_line(metrics, folder))
    except Exception as e:  # a failed cell is reported in its row; the others go on
        status = exit_status(e)
        if status is None:
            raise
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        log(f"pyrovamp {argv[0]}: error: {first}")
        return status
    return 0


def _cell_summary(rec: Recipe, cell: Path, states: list, out: Path) -> CellState:
    """The table's view of a cell: its one stage's state, or for several stages the last
    finished stage's metrics with every stage listed and the training time summed."""
    stages = []
    for i, (stage, st) in enumerate(zip(rec.stages, states, strict=True), 1):
        folder = rec.stage_folder(cell, i)
        try:
            recorded = read_recipe_file(folder) or {}
        except ValueError:
            recorded = {}
        m = st.metrics if st.state == "finished" else {}
        stages.append(
            {
                "index": i,
                "name": stage.name,
                "folder": folder.relative_to(out).as_posix(),
                "state": st.state,
                "epochs": st.epochs,
                "seconds": st.train_seconds,
                "eval_seconds": m.get("eval_seconds"),
                "value": m.get("test_log_likelihood"),
                "command": recorded.get("command"),
            }
        )
    if len(states) == 1:
        one = states[0]
        one.recipe, one.stages = rec.label, stages
        return one
    done = [i for i, st in enumerate(states) if st.state == "finished"]
    now = next((i for i, st in enumerate(states) if st.state != "finished"), None)
    shown_at = done[-1] if done else 0  # the stage whose metrics stand for the cell
    shown, stage = states[shown_at], rec.stages[shown_at]
    current = states[-1] if now is None else states[now]
    differ = None
    if shown.config and shown.state not in ("not started", "leftovers"):
        preset = shown.config.get("preset") or stage.options.get("preset") or "paper"
        differ = preset_differences(
            shown.config,
            preset,
            overrides=stage.options,
            label=f"{rec.name} v{rec.version} stage {stage.name}",
        )
    return CellState(
        "finished" if now is None else current.state,
        epochs=sum(st.epochs for st in states),
        train_seconds=sum(st.train_seconds for st in states),
        stopped_early=current.stopped_early,
        metrics=shown.metrics if shown.state == "finished" else {},
        config=shown.config,
        pieces=[p for st in states for p in st.pieces],
        note=current.note,
        partial={} if done else current.partial,
        recipe=rec.label,
        stages=stages,
        differences=differ,
    )
