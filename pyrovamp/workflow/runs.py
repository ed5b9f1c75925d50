"""Run folders: what ``pyrovamp train`` writes and ``pyrovamp evaluate`` reads (the test metrics
written into them: :mod:`pyrovamp.workflow.estimates`).

A run folder holds ``config.json`` (every setting, resolved), ``checkpoint.ckpt`` (the last
epoch's Lightning training state, to resume from), ``best.ckpt`` (the parameters with the best
validation score), ``model.pt`` (the trained model's parameters and the run's history; see
:func:`pyrovamp.training.fit`), ``history.csv``, ``logs/`` (Lightning's logger),
``metrics.json``, per-point estimates (``log_likelihood_<method>.npz``) and figures. Every file
is written atomically (:func:`pyrovamp._io.atomic_write`) and read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from pathlib import Path
from typing import Any

from pyrovamp._io import atomic_write, atomic_write_text
from pyrovamp._validate import check_optional_int, check_type
from pyrovamp.data import DATASETS, Dataset, load_dataset
from pyrovamp.data.datasets import dataset_source
from pyrovamp.models import MODELS
from pyrovamp.nn import he_init_
from pyrovamp.priors import make_prior
from pyrovamp.training import CHECKPOINT, MODEL, load_model_weights, read_checkpoint
from pyrovamp.training.checkpoint import model_state, state_mismatch
from pyrovamp.training.config import (
    CONV_MODELS,
    DEFAULT_PRESET,
    LEGACY_SETTINGS,
    MODEL_KEYS,
    PRESETS,
    PSEUDO_INPUT_INIT,
    WEIGHT_INITS,
    resolve_config,
    saved_config,
)
from pyrovamp.workflow.estimates import (
    evaluate_bdmc,
    evaluate_estimators,
    evaluate_method,
    evaluate_refined,
    evaluate_run,
    merge_metrics,
    save_per_point,
)

__all__ = [
    "check_folder_option",
    "missing_run_file",
    "PRESETS",
    "scored_test_set",
    "DEFAULT_PRESET",
    "resolve_config",
    "build_model",
    "load_run",
    "run_dataset",
    "record_data",
    "evaluate_run",
    "atomic_write_text",
    "save_figure",
    "make_folder",
    "saved_config",
    "LEGACY_SETTINGS",
    "PSEUDO_INPUT_INIT",
    "write_history_csv",
    "MODEL_KEYS",
    "merge_metrics",
    "save_per_point",
    "evaluate_method",
    "evaluate_refined",
    "evaluate_bdmc",
    "evaluate_estimators",
    "limit_points",
    "read_json_object",
    "REQUIRED_SETTINGS",
]

#: The settings a run folder's ``config.json`` must hold to rebuild its model and data.
REQUIRED_SETTINGS = ("dataset", "prior", "latent_dim")


def read_json_object(path, what: str | None = None) -> dict:
    """The JSON object (dict) in the file ``path``.

    Raises:
        ValueError: not valid JSON, or JSON other than an object (one line naming the path,
            after ``what: `` when given).
    """
    path = Path(path)
    prefix = f"{what}: " if what else ""
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{prefix}{path} is not valid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{prefix}{path} is not a text file") from None
    if not isinstance(obj, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(obj), "a number"
        )
        raise ValueError(f"{prefix}{path} must hold a JSON object, got {kind}")
    return obj


def build_model(cfg: dict, dataset: Dataset):
    """The model (``cfg["model"]``: ``vae``, ``hvae``, ``convhvae`` or ``pixelhvae``) a run's
    configuration describes, with fresh parameters; ``cfg["weight_init"] == "he"`` He-initialises
    the linear layers of its encoders and decoders (:func:`pyrovamp.nn.he_init_`; not the prior's
    own networks), as the paper's code, and clamped pseudo-inputs start as the paper's code starts
    them on ``cfg["dataset"]`` (:data:`PSEUDO_INPUT_INIT`).

    Raises:
        ValueError: unknown model name, unknown ``weight_init`` or a bad combination of settings.
    """
    name = cfg.get("model") or "vae"
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    weight_init = cfg.get("weight_init") or "default"
    if weight_init not in WEIGHT_INITS:
        raise ValueError(
            f"unknown weight_init {weight_init!r}; expected one of {', '.join(WEIGHT_INITS)}"
        )
    kw: dict[str, Any] = {k: cfg.get(k) for k in MODEL_KEYS}
    if kw["logvar_bounds"] is not None:
        kw["logvar_bounds"] = tuple(kw["logvar_bounds"])
    if name in ("vae", "hvae"):
        kw["dropout"] = cfg.get("dropout") or 0.0
    elif cfg.get("dropout"):
        raise ValueError(
            f"dropout is for the MLP models (vae, hvae); model {name!r} has none, "
            f"got dropout={cfg['dropout']!r}"
        )
    if name in CONV_MODELS:
        kw.pop("architecture"), kw.pop("num_hidden_layers")
    if kw["prior"] == "flow" and cfg.get("flow"):  # the zuko flow chosen by --flow
        kw["prior"] = make_prior("flow", kw["latent_dim"], flow=cfg["flow"])
    model = MODELS[name](
        dataset.image_shape, likelihood=dataset.likelihood, num_values=dataset.num_values, **kw
    )
    if weight_init == "he":
        he_init_(m for n, m in model.named_children() if n != "prior")
    if getattr(model.prior, "parameterization", None) == "clamp":
        model.prior.init_normal(*PSEUDO_INPUT_INIT.get(str(cfg.get("dataset")), (0.05, 0.01)))
    return model


def make_folder(path, option: str = "--out") -> Path:
    """Create the output folder ``path`` (and its parents) before any work; returns it.

    Raises:
        ValueError: ``path`` exists and is not a folder, or cannot be created (one line naming
            ``option``, the path and the operating system's reason).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{option} {path}: cannot create the folder ({e.strerror or e})") from None
    return check_writable(path, option)


def check_writable(path: Path, option: str = "--out") -> Path:
    """``path``, a folder, if files can be made in it.

    Raises:
        ValueError: one line naming ``option`` and the path (a read-only file system or
            permissions), before any work.
    """
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(
            f"{option} {path}: the folder is not writable (read-only file system or permissions)"
        )
    return path


def check_run_files(run: Path) -> dict:
    """Before any work on the run folder ``run``: it is writable, and the ``metrics.json`` that
    the work would add to (if there is one) is readable.

    Returns:
        That ``metrics.json``'s object (``{}`` when there is none yet).

    Raises:
        ValueError: one line naming the folder or the file.
    """
    check_writable(run, "run folder")
    metrics = run / "metrics.json"
    return read_json_object(metrics) if metrics.is_file() else {}


def scored_test_set(cfg: dict) -> str:
    """The test set a run's settings ``cfg`` (or ``{"dataset": ...}`` of a pretrained model)
    score, in words: the data set as a run records it (a path made absolute) and, with
    ``max_points``, that only its first points are taken. Equal names, equal test sets."""
    try:
        data = dataset_source(cfg["dataset"])
    except (ValueError, FileNotFoundError):  # a path no longer there: as recorded
        data = str(cfg["dataset"])
    n = cfg.get("max_points")
    return data + (f" (its first {n} points)" if n else "")


def save_figure(fig, path) -> Path:
    """Write the matplotlib ``fig`` to ``path`` as PNG (110 dpi, tight), atomically."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))


def write_history_csv(history: list[dict], path) -> None:
    """One row per epoch: ``epoch, beta, lr, train_loss, val_elbo, val_reconstruction, val_kl,
    val_iwae, seconds, test_log_likelihood, test_seconds`` (nats per data point; seconds of wall
    time; the test columns are empty except every ``test_every`` epochs)."""
    buf = io.StringIO()
    keys = [
        "epoch",
        "beta",
        "lr",
        "train_loss",
        "val_elbo",
        "val_reconstruction",
        "val_kl",
        "val_iwae",
        "seconds",
        "test_log_likelihood",
        "test_seconds",
    ]
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in history:
        w.writerow(r)
    atomic_write_text(path, buf.getvalue())


def run_dataset(cfg: dict, data_root=None) -> Dataset:
    """The data of a run's configuration: ``cfg["dataset"]`` from ``data_root`` (default
    ``cfg["data_root"]``), with the ``split``, ``likelihood`` and ``data_seed`` that
    ``config.json`` records for your own data (:func:`pyrovamp.data.load_dataset`), so that a
    resumed or reloaded run gets the very same points.

    Raises:
        ValueError, FileNotFoundError: as :func:`pyrovamp.data.load_dataset`.
    """
    root = data_root or cfg.get("data_root")
    if cfg["dataset"] in DATASETS:
        return load_dataset(cfg["dataset"], root)
    return load_dataset(
        cfg["dataset"],
        root,
        split=cfg.get("split"),
        seed=cfg.get("data_seed") or 0,
        likelihood=cfg.get("likelihood"),
    )


def record_data(cfg: dict, dataset: Dataset) -> dict:
    """``cfg`` with the data settings of your own data resolved from ``dataset`` (the split
    used and the likelihood; a named data set's ``cfg`` as it is), as ``config.json`` records
    them. Returns ``cfg``."""
    if cfg["dataset"] not in DATASETS:
        cfg["split"] = dataset.info.get("split")
        cfg["likelihood"] = dataset.likelihood
        cfg["data_seed"] = cfg.get("data_seed") or 0
    return cfg


def check_required(cfg: dict, path) -> dict:
    """``cfg``, a run's saved settings read from ``path``, if it holds every setting of
    :data:`REQUIRED_SETTINGS`.

    Raises:
        ValueError: one line naming the file and the missing keys.
    """
    missing = [k for k in REQUIRED_SETTINGS if cfg.get(k) is None]
    if missing:
        raise ValueError(
            f"{path} lacks the setting{'s' if len(missing) > 1 else ''} "
            f"{', '.join(map(repr, missing))} (a run folder's config.json as pyrovamp train "
            "writes it)"
        )
    return cfg


def resume_point(out: Path) -> dict | None:
    """What ``pyrovamp train --resume --out RUN`` continues from: the last epoch's checkpoint,
    read (:func:`pyrovamp.training.read_checkpoint`), or ``None`` for a run that has none yet
    -- killed or diverged before its first epoch ended: it starts again from its
    ``config.json``, in the same folder.

    Raises:
        ValueError: no ``config.json``, a run whose training finished without its checkpoint, a
            folder that is not writable or an unreadable ``metrics.json``.
        pyrovamp.errors.CheckpointError: a damaged checkpoint (one line naming it).
    """
    if not (out / "config.json").is_file():
        raise ValueError(f"cannot resume: {out / 'config.json'} is missing")
    check_run_files(out)
    if (out / CHECKPOINT).is_file():
        return read_checkpoint(out / CHECKPOINT)
    if (out / MODEL).is_file():
        raise ValueError(f"cannot resume: {out / CHECKPOINT} is missing")
    return None


def check_resumable(model, checkpoint: dict, out: Path) -> None:
    """Refuse, in one line, a checkpoint whose parameters do not fit ``model`` (built from a
    ``config.json`` edited since, or another run's checkpoint).

    Raises:
        ValueError: naming the missing, unexpected or reshaped tensors.
    """
    mismatch = state_mismatch(model, model_state(checkpoint.get("state_dict")))
    if mismatch:
        raise ValueError(
            f"cannot resume {out}: {out / CHECKPOINT} does not fit the model its config.json "
            f"describes ({mismatch})"
        )


def check_folder_option(path, option: str) -> None:
    """Raise ``ValueError`` (``"{option} {path} is not a folder"``) unless ``path`` is ``None`` or
    an existing folder."""
    if path is not None and not Path(path).is_dir():
        raise ValueError(f"{option} {path} is not a folder")


def missing_run_file(run_dir: Path) -> str | None:
    """Why ``run_dir`` cannot be scored as a run folder (``config.json`` or ``model.pt`` missing;
    a run stopped before it wrote ``model.pt``, with ``checkpoint.ckpt``, is told to resume),
    as one line; ``None`` when both are there."""
    for f in ("config.json", MODEL):
        if not (run_dir / f).is_file():
            if f == MODEL and (run_dir / CHECKPOINT).is_file():
                return (
                    f"{run_dir} has no {MODEL} yet: its training stopped before the end of its "
                    f"first piece; continue it with pyrovamp train --resume --out {run_dir}"
                )
            return f"{run_dir} is not a run folder: {run_dir / f} is missing"
    return None


def load_run(run_dir, device: str = "cpu", data_root=None):
    """Rebuild a trained model from a run folder (``config.json`` and ``model.pt``, read with
    ``torch.load(weights_only=True)``).

    Returns:
        ``(model, config, dataset, meta)`` -- ``meta`` is the ``model.pt`` metadata: ``epochs``,
        ``finished``, ``source`` (best / averaged / last parameters), ``history``, ...

    Raises:
        FileNotFoundError: no ``config.json`` or ``model.pt`` in ``run_dir``;
        ValueError: ``config.json`` is not valid JSON, holds something other than an object or
            lacks a setting of :data:`REQUIRED_SETTINGS` (one line naming the file and the key);
        pyrovamp.errors.CheckpointError: ``model.pt`` is truncated, corrupt or from another
            model.
    """
    check_type("run_dir", run_dir, (str, os.PathLike), "a run folder (str or path)")
    run_dir = Path(run_dir)
    missing = missing_run_file(run_dir)
    if missing:
        raise FileNotFoundError(missing)
    path = run_dir / "config.json"
    cfg = check_required(saved_config(read_json_object(path)), path)
    dataset = run_dataset(cfg, data_root)
    model = build_model(cfg, dataset)
    meta = load_model_weights(model, run_dir / MODEL)
    return model.to(device).eval(), cfg, dataset, meta


def limit_points(dataset: Dataset, n: int | None) -> Dataset:
    """``dataset`` cut to its first ``n`` training, validation and test points (a run's
    ``max_points``; ``None``: all).

    Raises:
        pyrovamp.errors.ArgumentTypeError, ValueError: ``n`` is not a positive integer or None.
    """
    n = check_optional_int("n", n)
    if n is None:
        return dataset
    sampler = dataset.train_sampler
    return dataclasses.replace(
        dataset,
        train=dataset.train[:n],
        validation=dataset.validation[:n],
        test=dataset.test[:n],
        train_sampler=(lambda generator=None: sampler(generator=generator)[:n])
        if sampler
        else None,
    )
