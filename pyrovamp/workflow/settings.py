"""The settings of the run commands: a ``pyrovamp train`` run's defaults beyond the presets, the
checks of a new run's settings, what a resumed run may change and the :class:`TrainConfig` they
give; the cells of ``pyrovamp reproduce table1``; the exit status of a failed command.

A run's settings are a dict keyed by the options of ``pyrovamp train`` (``--latent-dim`` is
``latent_dim``); ``config.json`` in the run folder holds them resolved. Errors name the option
(``--lr-decay``), so that the command line reports them as they are. Importable without
Lightning: the command line's parser reads its defaults and choices here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pyrovamp._validate import check_int, check_open_unit
from pyrovamp.data import DATASETS, dataset_source
from pyrovamp.data.sources import LIKELIHOOD_NAMES, check_split
from pyrovamp.errors import CellsFailedError
from pyrovamp.training.config import (
    CONV_MODELS,
    RESUMABLE,
    TrainConfig,
    resolve_config,
    saved_config,
)

__all__ = [
    "TEST_POINTS",
    "TEST_NUM_SAMPLES",
    "RUN_DEFAULTS",
    "RESUME_MAY_CHANGE",
    "RESUME_RECORDED",
    "DATA_SETTINGS",
    "TABLE_MODELS",
    "TABLE_PRIORS",
    "option_name",
    "new_run_config",
    "resumed_config",
    "recorded_config",
    "train_config",
    "check_method_options",
    "check_refine_options",
    "exit_status",
]

#: Test images (spread over the test set) of the ``test_every`` learning curve.
TEST_POINTS = 1000
#: Importance samples per test image of the ``test_every`` learning curve.
TEST_NUM_SAMPLES = TrainConfig.test_num_samples

#: Every setting of a new run, with the value it takes when not given; ``None``: the preset's
#: (:data:`pyrovamp.training.config.PRESETS`) or none.
RUN_DEFAULTS = {
    "dataset": "digits",
    "split": None,
    "likelihood": None,
    "data_seed": None,
    "prior": "vampprior",
    "flow": None,
    "model": None,
    "preset": None,
    "max_points": None,
    "latent_dim": None,
    "num_components": None,
    "grid_side": None,
    "hidden_dim": None,
    "num_hidden_layers": None,
    "architecture": None,
    "dropout": None,
    "learn_weights": None,
    "pseudo_inputs": "random",
    "pseudo_input_parameterization": None,
    "weight_init": None,
    "epochs": None,
    "batch_size": None,
    "lr": None,
    "optimizer": None,
    "loss": TrainConfig.loss,
    "num_particles": TrainConfig.num_particles,
    "init_from": None,
    "warmup_epochs": None,
    "patience": None,
    "lr_decay": None,
    "lr_patience": None,
    "ema_decay": None,
    "val_bound": None,
    "val_points": None,
    "val_num_samples": None,
    "num_samples": None,
    "data_root": None,
    "device": None,
    "accelerator": None,
    "devices": TrainConfig.devices,
    "num_nodes": TrainConfig.num_nodes,
    "strategy": TrainConfig.strategy,
    "precision": None,
    "logger": TrainConfig.logger,
    "test_every": None,
    "test_points": TEST_POINTS,
    "test_num_samples": TEST_NUM_SAMPLES,
    "seed": TrainConfig.seed,
    "max_minutes": None,
}

#: The settings of a run's data beyond ``dataset`` and ``data_root``, for array files, image
#: folders and torchvision data sets only (:func:`pyrovamp.data.load_dataset`'s ``split``,
#: ``likelihood`` and ``seed``); a run's ``config.json`` records them resolved.
DATA_SETTINGS = ("split", "likelihood", "data_seed")

#: The settings a resumed run may change: the training settings that leave the run as it is
#: (:data:`pyrovamp.training.config.RESUMABLE`; ``progress`` is the command line's
#: ``--no-progress``, no setting of a run folder),
#: the test evaluation's and where the data are. Every other one must equal ``config.json``.
RESUME_MAY_CHANGE = (
    *(k if k != "progress" else "no_progress" for k in RESUMABLE),
    "num_samples",
    "data_root",
    "test_points",
)

#: What a resumed piece changed that its ``config.json`` records for the next piece: the run's own
#: settings, not this machine's options (``device``, ``devices``, ...) or this piece's time.
RESUME_RECORDED = ("epochs", "num_samples", "data_root", "test_every", "test_points",
                   "test_num_samples")  # fmt: skip

#: The models and priors of the VampPrior paper's table (``pyrovamp reproduce table1``).
TABLE_MODELS = ("vae", "hvae", "convhvae", "pixelhvae")
TABLE_PRIORS = ("standard", "vampprior")


def option_name(key: str) -> str:
    """The command-line option of a setting: ``"lr_decay"`` -> ``"--lr-decay"``."""
    return "--" + key.replace("_", "-")


def _check_keys(options: dict) -> None:
    unknown = sorted(set(options) - set(RUN_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown settings {unknown}; expected some of {', '.join(RUN_DEFAULTS)}")


def _data_settings(o: dict) -> None:
    """``o``'s data settings checked and normalised in place: ``dataset`` as a run records it
    (:func:`pyrovamp.data.dataset_source`), ``data_root`` an absolute path, ``split`` a list
    of three floats."""
    if o.get("dataset") is not None:
        o["dataset"] = dataset_source(o["dataset"])
    if o.get("data_root") is not None:  # read back from any working directory
        o["data_root"] = str(Path(o["data_root"]).expanduser().resolve())
    if o.get("split") is not None:
        o["split"] = list(check_split(o["split"], "--split") or ())
    if o.get("likelihood") is not None and o["likelihood"] not in LIKELIHOOD_NAMES:
        raise ValueError(
            f"--likelihood must be one of {', '.join(LIKELIHOOD_NAMES)}, got {o['likelihood']!r}"
        )
    if o.get("data_seed") is not None:
        check_int("--data-seed", o["data_seed"], 0)


def new_run_config(options: dict) -> dict:
    """The resolved configuration (``config.json``) of a new run from the settings given.

    Missing or ``None`` settings come from :data:`RUN_DEFAULTS`, then from the preset
    (:func:`pyrovamp.training.config.resolve_config`); ``--flow`` defaults to ``realnvp`` for the
    flow prior and ``--ema-decay 0`` means off (``None``). ``init_from`` is checked by
    :func:`pyrovamp.workflow.experiment.train_run`, which has the run folders. ``dataset`` is
    recorded as a name or an absolute path (:func:`pyrovamp.data.dataset_source`); your own
    data get :data:`DATA_SETTINGS` (``data_seed`` 0 unless given; ``split`` and
    ``likelihood`` resolved by :func:`pyrovamp.workflow.experiment.train_run` once the data are
    read), the named data sets none.

    Raises:
        ValueError: an unknown setting, or settings that do not go together (one line naming the
            option); an unknown data set, a bad ``--split`` or ``--likelihood``, a data setting
            for a named data set; ``FileNotFoundError``: a ``dataset`` path with nothing there.
    """
    _check_keys(options)
    o = {**RUN_DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    _data_settings(o)
    given = [option_name(k) for k in DATA_SETTINGS if o[k] is not None]
    if o["dataset"] in DATASETS and given:
        raise ValueError(
            f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to array files, image "
            f"folders and torchvision data sets, not --dataset {o['dataset']}"
        )
    w = o["warmup_epochs"]
    if w is not None and (isinstance(w, bool) or not isinstance(w, int)):
        raise ValueError(f"--warmup-epochs must be an integer >= 0, got {w!r}")
    if w is not None and w < 0:
        raise ValueError(f"--warmup-epochs must be >= 0, got {w}")
    check_int("--seed", o["seed"], 0)
    if o["dropout"] and o["model"] in CONV_MODELS:
        raise ValueError(f"--dropout applies to --model vae and hvae, not --model {o['model']}")
    if o["lr_decay"] is not None:
        check_open_unit("--lr-decay", o["lr_decay"])
    if o["lr_patience"] is not None and o["lr_decay"] is None:
        raise ValueError("--lr-patience applies with --lr-decay F")
    if o["flow"] is not None and o["prior"] != "flow":
        raise ValueError(f"--flow applies to --prior flow, not --prior {o['prior']}")
    if o["grid_side"] is not None and o["prior"] not in ("gtm", "gtm-vampprior"):
        raise ValueError(
            f"--grid-side applies to --prior gtm and gtm-vampprior, not --prior {o['prior']}"
        )
    if (
        o["grid_side"] is not None
        and o["num_components"] is not None
        and o["num_components"] != o["grid_side"] ** 2
    ):
        raise ValueError(
            f"--num-components {o['num_components']} and --grid-side {o['grid_side']} disagree "
            f"(K = grid_side**2 = {o['grid_side'] ** 2}): give one of them"
        )
    if o["pseudo_inputs"] == "data" and o["prior"] != "vampprior":
        raise ValueError(
            f"--pseudo-inputs data applies to --prior vampprior, not --prior {o['prior']}"
        )
    if o["pseudo_input_parameterization"] is not None and o["prior"] != "vampprior":
        raise ValueError(
            "--pseudo-input-parameterization applies to --prior vampprior, not "
            f"--prior {o['prior']}"
        )
    cfg = resolve_config(o)
    for k in DATA_SETTINGS:  # the named data sets have none
        if cfg["dataset"] in DATASETS:
            cfg.pop(k)
    if cfg["dataset"] not in DATASETS and cfg["data_seed"] is None:
        cfg["data_seed"] = 0
    if cfg["prior"] == "flow":
        cfg["flow"] = cfg.get("flow") or "realnvp"
    if cfg["ema_decay"] == 0:
        cfg["ema_decay"] = None
    if cfg["loss"] in ("iwae", "iwae_dreg") and cfg["num_particles"] < 2:
        raise ValueError(
            f"--loss {cfg['loss']} needs --num-particles K >= 2, got {cfg['num_particles']}"
        )
    if cfg["val_bound"] == "iwae" and cfg["val_num_samples"] < 2:
        raise ValueError(
            f"--val-bound iwae needs --val-num-samples K >= 2 (the {cfg['preset']} "
            f"preset has {cfg['val_num_samples']})"
        )
    return cfg


def resumed_config(saved: dict, changes: dict, run: str = "the run") -> dict:
    """The configuration of a resumed run: ``saved`` (its ``config.json`` as stored, read back
    with :func:`pyrovamp.training.config.saved_config`) with the ``changes`` that
    :data:`RESUME_MAY_CHANGE` allows; ``max_minutes`` is ``None`` unless given (each piece has its
    own time budget). A change that equals the saved value is no change (``init_from`` compared
    as resolved paths, ``--ema-decay 0`` equal to ``None``).

    Raises:
        ValueError: an unknown setting, or one that differs from ``saved`` and may not change
            (one line naming the option, both values and ``run``).
    """
    _check_keys(changes)
    changes = dict(changes)
    _data_settings(changes)
    cfg = resolve_config(saved_config(saved))
    # a saved None of these is "off" (--ema-decay 0, no early stopping, ...), not the preset's value
    cfg.update({k: None for k in _NONE_IS_OFF if k in saved and saved[k] is None})
    cfg["max_minutes"] = None
    for k, v in changes.items():
        if v is None:
            continue
        if k in RESUME_MAY_CHANGE:
            cfg[k] = v
        elif k == "init_from" and cfg.get(k) in (v, str(Path(v).resolve())):
            continue
        elif cfg.get(k) != v and not (k == "ema_decay" and v == 0 and cfg.get(k) is None):
            raise ValueError(
                f"cannot resume {run}: {option_name(k)} {v} differs from the run's "
                f"{k}={cfg.get(k)!r} (config.json); only "
                f"{', '.join(map(option_name, RESUME_MAY_CHANGE))} may change"
            )
    return cfg


def recorded_config(saved: dict | None, cfg: dict) -> dict:
    """The ``config.json`` a run writes: a new run's ``cfg``; a resumed run's file as it was
    (``saved``, in its order) with the settings of :data:`RESUME_RECORDED` from ``cfg``."""
    if saved is None:
        return cfg
    return {**saved, **{k: cfg[k] for k in RESUME_RECORDED if k in cfg}}


def check_method_options(method, num_samples=None, num_steps=None, num_chains=None, bdmc=None):
    """Refuse an estimator's option given for another method (``pyrovamp evaluate``), before any
    work: ``num_samples`` is IS's (``method`` ``"is"`` or ``None``, the default IS),
    ``num_steps``/``num_chains`` AIS's (also BDMC's, ``bdmc``).

    Raises:
        ValueError: one line naming the option and the method it applies to.
    """
    if num_samples is not None and method not in (None, "is"):
        raise ValueError("--num-samples applies to --method is")
    if (num_steps or num_chains) and method != "ais" and bdmc is None:
        raise ValueError("--num-steps and --num-chains apply to --method ais and --bdmc")


def check_refine_options(
    refine_guide=None,
    refine_on=None,
    refine_num_samples=None,
    refine_lr=None,
    refine_batch_size=None,
    method=None,
    devices: int = 1,
) -> None:
    """Refuse ``pyrovamp evaluate``'s ``--refine-*`` options where they do not apply, before any
    work: the settings of the refinement without ``--refine-guide``, ``--refine-guide`` with
    ``--method`` (an estimate of its own) or with ``--devices`` > 1 (it runs in one process).

    Raises:
        ValueError: one line naming the options.
    """
    if refine_guide is None:
        if refine_on or refine_num_samples or refine_lr or refine_batch_size:
            raise ValueError(
                "--refine-on, --refine-num-samples, --refine-lr and --refine-batch-size "
                "need --refine-guide"
            )
        return
    if method is not None:
        raise ValueError(
            f"--refine-guide is an estimate of its own (IS with the refined guide); "
            f"run --method {method} separately"
        )
    if devices > 1:
        raise ValueError(
            f"--devices {devices} shards IS, AIS and the test ELBO; --refine-guide runs in one "
            "process: leave out --devices"
        )


# the training settings whose None is a value ("off"), not "not given"
_NONE_IS_OFF = ("patience", "ema_decay", "lr_decay", "max_minutes", "test_every")


def train_config(cfg: dict, progress: bool | str = "auto") -> TrainConfig:
    """The :class:`TrainConfig` of a run's resolved configuration: its training settings, the
    rest :class:`TrainConfig`'s defaults. ``accelerator`` wins over ``device`` (``cpu``,
    ``cuda``, ``cuda:i``); with neither, ``"auto"``: the GPU when there is one."""
    names = {f.name for f in dataclasses.fields(TrainConfig)} - {
        "accelerator",
        "device",
        "progress",
    }
    given = {k: cfg[k] for k in names if cfg.get(k) is not None or (k in _NONE_IS_OFF and k in cfg)}
    if "precision" in given:
        given["precision"] = str(given["precision"])
    accelerator, device = cfg.get("accelerator"), cfg.get("device")
    return TrainConfig(
        **given,
        accelerator=accelerator or "auto",
        device=device if accelerator is None else None,
        progress=progress,
    )


def exit_status(error: BaseException) -> int | None:
    """The exit status of a run command that raised ``error``: 1 for a run that failed
    (:class:`~pyrovamp.errors.NonFiniteLossError` or any other ``FloatingPointError``: NaN or
    infinite numbers; :class:`~pyrovamp.errors.CellsFailedError`: cells of the table that
    failed), 2 for bad settings or input (``ValueError``, which includes
    :class:`~pyrovamp.errors.ArgumentTypeError`, and ``FileNotFoundError``), ``None`` for
    anything else (a bug, to be raised)."""
    if isinstance(error, (FloatingPointError, CellsFailedError)):  # NonFiniteLossError included
        return 1
    if isinstance(error, (ValueError, FileNotFoundError)):
        return 2
    return None
