"""``pyrovamp reproduce table1``: the VampPrior paper's table of test log-likelihoods, cell by cell.

Each cell -- data set x model (``vae``, ``hvae``, ``convhvae``, ``pixelhvae``) x prior
(``standard``, ``vampprior``) -- is one run folder ``DIR/<dataset>_<model>_<prior>`` trained with
the paper preset by the same code path as ``pyrovamp train``
(:func:`pyrovamp.workflow.experiment.train_run`). A cell that holds a checkpoint is resumed; a
finished one is skipped; so the command can be run again and again, in pieces of
``--max-minutes`` per cell, until every cell has finished. After every call ``DIR/table1.md`` is
written anew (:func:`pyrovamp.workflow.table1.write_table`): pyrovamp's number beside the
paper's, the epochs, the training time and the hardware of each cell, and whether early stopping
has fired.
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
from pyrovamp.data import DATASETS
from pyrovamp.workflow.estimates import result_line
from pyrovamp.workflow.experiment import evaluate_run_folder, train_run
from pyrovamp.workflow.runs import make_folder
from pyrovamp.workflow.settings import TABLE_MODELS, TABLE_PRIORS, exit_status, option_name
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
# each cell's learning curve: the test log-likelihood (IS) on a fixed, spread test subset every
# TEST_EVERY epochs (pyrovamp train --test-every; not counted as training time)
TEST_EVERY = 25


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


def _command(dataset, model, prior, out, data_root=None) -> str:
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
    return " ".join(shlex.quote(p) for p in parts)


def reproduce_table1(
    out,
    datasets=("static_mnist",),
    models=TABLE_MODELS,
    priors=TABLE_PRIORS,
    *,
    max_minutes: float | None = None,
    accelerator: str = "auto",
    devices: int = 1,
    data_roots: dict | None = None,
    max_points: int | None = None,
    num_samples: int | None = None,
    epochs: int | None = None,
    progress: bool | str = False,
    log=None,
) -> Path:
    """Train (or continue, or skip) every cell of the table and write ``out/table1.md``.

    Each cell is a ``pyrovamp train --dataset D --model M --prior P --preset paper --out
    out/D_M_P --test-every 25`` run (resumed when the folder holds a checkpoint; a finished cell
    is skipped; a finished training whose test evaluation is missing is evaluated). The learning
    curve -- the validation ELBO of every epoch and the test log-likelihood on
    :data:`~pyrovamp.workflow.settings.TEST_POINTS` test images spread over the test set every 25
    epochs (IS, S = :data:`~pyrovamp.workflow.settings.TEST_NUM_SAMPLES`) -- is in each cell's
    ``history.csv`` and ``loss.png`` and listed in ``table1.md``. With one device a cell runs in
    this process (:func:`pyrovamp.workflow.experiment.train_run`); with several it runs as
    ``python -m pyrovamp.cli train ...`` in a child process, so that Lightning's launcher starts
    the data-parallel processes from its command line. On a machine without a GPU, the
    ``convhvae`` and ``pixelhvae`` cells are listed as needing one (with the command that runs
    them) unless ``max_points`` is given (a smoke test on the first ``max_points`` points). A
    cell that fails (bad data, a non-finite loss) is reported in its row; the others go on.

    Args:
        out: the folder of the cells and ``table1.md``.
        datasets: which cells: their data sets.
        models: which cells: their models.
        priors: which cells: their priors.
        max_minutes: training time per cell and call (``--max-minutes``); ``None``: until the
            cell finishes. The final test evaluation (S=5000) comes on top.
        accelerator: ``"cpu"``, ``"gpu"`` or ``"auto"`` (a GPU when there is one).
        devices: devices (processes) per cell.
        data_roots: data set name -> folder with its files (key ``None``: every data set).
        max_points: a setting of ``pyrovamp train`` (smoke tests: fewer points).
        num_samples: a setting of ``pyrovamp train`` (smoke tests: fewer importance samples).
        epochs: a setting of ``pyrovamp train`` (smoke tests: fewer epochs than the paper's
            2000).
        progress: show Lightning's progress bar.
        log: callable taking one line of progress (default: this module's logger, level INFO).

    Returns:
        the path of ``table1.md``.

    Raises:
        pyrovamp.errors.ArgumentTypeError: an argument of the wrong type (``datasets`` a string
            instead of a list, a float ``devices``, ...).
        ValueError: an unknown data set, model or prior, a GPU asked for on a machine without
            one, a count below 1, or a missing data folder -- before any work.
    """
    log = log or logger.info
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
    if accelerator not in ("cpu", "gpu", "auto"):
        raise ValueError(f"accelerator must be cpu, gpu or auto, got {accelerator!r}")
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise ValueError("--accelerator gpu was asked for but torch.cuda.is_available() is False")
    gpu = accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())
    acc = "gpu" if gpu else "cpu"
    data_roots = dict(data_roots or {})
    for v in data_roots.values():
        if not Path(v).is_dir():
            raise ValueError(f"--data-root {v} is not a folder")
    out = make_folder(out)

    cells, needs_gpu, notes = {}, {}, []
    for dataset in datasets:
        root = data_roots.get(dataset, data_roots.get(None))
        for model in models:
            for prior in priors:
                key = (dataset, model, prior)
                folder = out / cell_name(*key)
                st = read_cell(folder)
                if st.state == "finished":
                    log(f"{folder.name}: finished, skipped")
                elif not gpu and model in GPU_MODELS and max_points is None:
                    needs_gpu[key] = _command(dataset, model, prior, out, root)
                    log(f"{folder.name}: needs a GPU, not run ({needs_gpu[key]})")
                elif st.state == "unreadable":
                    log(f"{folder.name}: {st.note}; left alone")
                else:
                    settings = {
                        "max_minutes": max_minutes,
                        "num_samples": num_samples,
                        "epochs": epochs,
                        "data_root": root,
                        "accelerator": acc,
                        "devices": devices,
                        "test_every": TEST_EVERY,
                        "strategy": "ddp" if devices > 1 else None,
                    }
                    st = _run_cell(key, folder, st, settings, max_points, progress, log)
                cells[key] = read_cell(folder) if folder.is_dir() else st
                if st.note:
                    cells[key].note = st.note
    if max_points is not None:
        notes.append(
            f"Smoke test: cells run with `--max-points {max_points}` (the first "
            f"{max_points} training, validation and test points), not the paper's data."
        )
    path = write_table(out, cells, needs_gpu, notes)
    log(f"table -> {path}")
    return path


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
    key, folder: Path, st: CellState, settings: dict, max_points, progress, log
) -> CellState:
    """One piece of a cell: evaluate a trained cell, resume an unfinished one or start it."""
    dataset, model, prior = key
    device = "cuda" if settings["accelerator"] == "gpu" else "cpu"
    if st.state == "trained":
        options = {
            "num_samples": settings["num_samples"],
            "data_root": settings["data_root"],
            "device": device,
        }
        argv = ["evaluate", str(folder)] + _argv(options)
        what = "test evaluation of the finished training"
    elif st.state == "unfinished":
        options = dict(settings)
        argv = ["train", "--resume", "--out", str(folder)] + _argv(options)
        what = f"resumed after {st.epochs} epochs"
    else:
        if st.state == "leftovers":  # killed in its first epoch: nothing to continue from
            shutil.rmtree(folder)
        options = {
            "dataset": dataset,
            "model": model,
            "prior": prior,
            "preset": "paper",
            **settings,
            "max_points": max_points,
        }
        argv = ["train", "--out", str(folder)] + _argv(options)
        what = "started"
    if not progress:
        argv.append("--no-progress")
    log(f"{folder.name}: {what}: pyrovamp {' '.join(shlex.quote(a) for a in argv)}")
    t0 = time.time()
    if settings["devices"] > 1:
        proc = subprocess.Popen([sys.executable, "-m", "pyrovamp.cli", *argv])
        try:
            rc = proc.wait()
        except KeyboardInterrupt:  # the cell's processes stop after their step, with a checkpoint
            proc.send_signal(signal.SIGTERM)
            proc.wait()
            raise
    else:
        rc = 0
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
            rc = status
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            log(f"pyrovamp {argv[0]}: error: {first}")
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
        log(f"{folder.name}: failed with exit status {rc}")
    return new
