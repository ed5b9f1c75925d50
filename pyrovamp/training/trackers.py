"""The experiment loggers of a run (``TrainConfig.logger``): Lightning's ``CSVLogger``,
``TensorBoardLogger``, ``MLFlowLogger`` and ``WandbLogger``, several at once.

* MLflow writes where ``MLFLOW_TRACKING_URI`` points, else to MLflow's own default local store
  (``mlflow.get_tracking_uri()``: ``./mlflow.db`` with artifacts in ``./mlruns`` since MLflow 3,
  ``./mlruns`` before), experiment ``pyrovamp``, one MLflow run per run folder.
* W&B writes to ``RUN/wandb`` in offline mode unless the user is logged in (``WANDB_API_KEY``
  or a ``~/.netrc`` entry for the W&B host) or has chosen a mode (``WANDB_MODE``); ``wandb
  sync`` uploads an offline run later. Project ``pyrovamp``. A W&B run the user has open is
  logged into and left open; a run pyrovamp starts stays open after a successful training (so
  that the test metrics and files join it) and ends with the next pyrovamp training, with
  ``wandb.finish()`` or with the process.

A resumed run continues the same MLflow and W&B runs: their ids are kept in
``RUN/trackers.json``. After a run folder is complete, :func:`log_run_files` sends its
``config.json``, ``metrics.json``, ``history.csv`` and figures as artifacts and its test metrics
as metrics. The trackers' process-wide settings (``MLFLOW_TRACKING_URI``, which Lightning's
``MLFlowLogger`` sets, and ``WANDB_MODE``, which its offline ``WandbLogger`` sets) are given back
as they were (:func:`kept_environment`). Importing this module does not load Lightning.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import netrc
import os
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pyrovamp._io import atomic_write_text
from pyrovamp._validate import check_choice, describe
from pyrovamp.errors import ArgumentTypeError

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

__all__ = [
    "LOGGERS",
    "logger_names",
    "make_loggers",
    "finish_loggers",
    "log_run_files",
    "kept_environment",
    "TRACKERS_FILE",
    "ARTIFACTS",
]

LOGGERS = ("csv", "tensorboard", "mlflow", "wandb", "none")
"""The loggers of ``TrainConfig.logger``, several at once."""
TRACKERS_FILE = "trackers.json"
"""The file of a run folder that keeps the MLflow run id and the W&B run id across resumes."""
ARTIFACTS = ("config.json", "metrics.json", "history.csv", "*.png")
"""The files of a run folder :func:`log_run_files` sends to MLflow and W&B."""
# logger -> the packages it can use (one is enough)
_EXTRAS = {
    "mlflow": ("mlflow",),
    "wandb": ("wandb",),
    "tensorboard": ("tensorboard", "tensorboardX"),
}
_ENVIRONMENT = ("MLFLOW_TRACKING_URI", "WANDB_MODE")
_STARTED: set[str] = set()  # the W&B runs pyrovamp started in this process

_log = logging.getLogger(__name__)


def logger_names(logger: Any) -> tuple[str, ...]:
    """The loggers a ``TrainConfig.logger`` names: a name, names joined by commas
    (``"csv,mlflow"``) or a list; ``"none"`` (or an empty list) is the empty tuple.

    Raises:
        ArgumentTypeError: another type than a string or a list of strings.
        ValueError: an unknown name, ``"none"`` beside another, or ``"tensorboard"``,
            ``"mlflow"`` or ``"wandb"`` without its package (one line naming the extra to
            install).
    """
    if isinstance(logger, str):
        names = tuple(n.strip() for n in logger.split(","))
    elif isinstance(logger, (list, tuple)) and all(isinstance(n, str) for n in logger):
        names = tuple(logger)
    else:
        raise ArgumentTypeError(
            f"logger must be a name of {LOGGERS} or a list of them, got {describe(logger)}"
        )
    for n in names:
        check_choice("logger", n, LOGGERS)
    if "none" in names and len(names) > 1:
        raise ValueError(f"logger 'none' cannot go with others, got {list(names)}")
    for n in names:
        if n in _EXTRAS and all(importlib.util.find_spec(m) is None for m in _EXTRAS[n]):
            raise ValueError(
                f"logger {n!r} needs the {_EXTRAS[n][0]} package: pip install 'pyrovamp[{n}]'"
            )
    return tuple(dict.fromkeys(n for n in names if n != "none"))


@contextlib.contextmanager
def kept_environment() -> Iterator[None]:
    """Give back ``MLFLOW_TRACKING_URI`` and ``WANDB_MODE`` (and MLflow's tracking URI) as they
    were: Lightning's loggers set them for the whole process."""
    saved = {k: os.environ.get(k) for k in _ENVIRONMENT}
    try:
        yield
    finally:
        for key, value in saved.items():
            if os.environ.get(key) == value:
                continue
            if key == "MLFLOW_TRACKING_URI" and "mlflow" in sys.modules:
                sys.modules["mlflow"].set_tracking_uri(value)  # its own setting and the variable
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _ids(folder: Path) -> dict:
    try:
        data = json.loads((folder / TRACKERS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _wandb_offline() -> bool:
    """W&B offline unless the user has chosen a mode or is logged in."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return False
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host or "api.wandb.ai") is None
    except (OSError, netrc.NetrcParseError):
        return True


def _mlflow_run(saved: dict) -> tuple[str, str | None]:
    """The tracking URI (``MLFLOW_TRACKING_URI`` first, else the store the run used, else
    MLflow's default) and the run to continue (``None``: a new one, also when the saved run is
    not in that store)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = os.environ.get("MLFLOW_TRACKING_URI") or saved.get("tracking_uri")
    uri = uri or mlflow.get_tracking_uri()
    run_id = saved.get("run_id")
    if run_id:
        try:
            mlflow.tracking.MlflowClient(uri).get_run(run_id)
        except MlflowException:
            _log.warning("MLflow run %s is not in %s: starting a new MLflow run", run_id, uri)
            run_id = None
    return uri, run_id


def make_loggers(
    config: Any, folder: Path, *, resume: bool = False, write: bool = True, temporary: bool = False
) -> list:
    """Lightning loggers for ``config.logger`` writing for the run in ``folder``.

    Args:
        config: the run's :class:`~pyrovamp.training.config.TrainConfig` (``logger``: names,
            :func:`logger_names`).
        folder: the run folder (CSV and TensorBoard logs in ``folder/logs``, W&B in
            ``folder/wandb``, the tracker ids in ``folder/trackers.json``).
        resume: continue the MLflow and W&B runs of ``folder/trackers.json`` (a new run starts
            new ones).
        write: keep the MLflow/W&B run ids in ``folder/trackers.json`` (the process of rank 0).
        temporary: ``folder`` is deleted after training (no run folder): W&B writes to
            ``./wandb`` (its own default) and no ``trackers.json`` is kept.

    Returns:
        The loggers, in the order named (empty for ``"none"``).

    Raises:
        ValueError: see :func:`logger_names`.
    """
    names = logger_names(config.logger)
    ids = _ids(folder) if resume else {}
    loggers: list[Logger] = []
    for name in names:
        if name in ("csv", "tensorboard"):
            from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

            kind = CSVLogger if name == "csv" else TensorBoardLogger
            loggers.append(kind(save_dir=str(folder), name="logs"))
        elif name == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger

            uri, run_id = _mlflow_run(ids.get("mlflow") or {})
            lg = MLFlowLogger(
                experiment_name="pyrovamp", run_name=folder.name, tracking_uri=uri, run_id=run_id
            )
            ids["mlflow"] = {"tracking_uri": uri, "run_id": lg.run_id}
            loggers.append(lg)
        elif name == "wandb":
            import wandb
            from lightning.pytorch.loggers import WandbLogger

            if wandb.run is not None and wandb.run.id in _STARTED:
                wandb.run.finish()  # a run of an earlier pyrovamp training, left open for it
            if wandb.run is not None:  # the user's own run: Lightning logs into it
                run_id = wandb.run.id
            else:
                run_id = (ids.get("wandb") or {}).get("id") or uuid.uuid4().hex[:12]
                _STARTED.add(run_id)
            loggers.append(
                WandbLogger(
                    project="pyrovamp",
                    name=folder.name,
                    save_dir="." if temporary else str(folder),
                    offline=_wandb_offline(),
                    id=run_id,
                    resume="allow",
                )
            )
            ids["wandb"] = {"id": run_id}
    if write and not temporary and ("mlflow" in ids or "wandb" in ids):
        atomic_write_text(folder / TRACKERS_FILE, json.dumps(ids, indent=2) + "\n")
    return loggers


def finish_loggers(loggers: list, failed: bool = False) -> None:
    """End the W&B runs of ``loggers`` that pyrovamp started (``failed``: with exit code 1);
    MLflow's runs are ended by Lightning. A run of the user's stays open."""
    ours = {str(lg.version) for lg in loggers if type(lg).__name__ == "WandbLogger"} & _STARTED
    if ours:
        import wandb

        if wandb.run is not None and wandb.run.id in ours:
            wandb.run.finish(exit_code=1 if failed else 0)


def _scalars(metrics: dict) -> dict[str, float]:
    """The finite numbers of ``metrics`` (nested dicts flattened with ``/``)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update({f"{key}/{k}": v for k, v in _scalars(value).items()})
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                out[str(key)] = float(value)
    return out


def log_run_files(loggers: list, folder: Path, metrics: dict | None) -> None:
    """Send a finished run folder to its MLflow and W&B runs: the files of :data:`ARTIFACTS` as
    artifacts and the finite numbers of ``metrics`` (``metrics.json``: test log-likelihood in
    nats per data point, ELBO, active units, ...) as metrics ``test/<key>``. CSV and TensorBoard
    loggers are left alone (their folder is the run folder). A tracker that fails (a remote
    store out of reach) is reported as a warning: the run folder is complete either way.

    Args:
        loggers: the run's loggers (``trainer.loggers``).
        folder: the run folder.
        metrics: the run's test metrics, or ``None``.
    """
    files = sorted({p for pattern in ARTIFACTS for p in folder.glob(pattern) if p.is_file()})
    numbers = {f"test/{k}": v for k, v in _scalars(metrics or {}).items()}
    for lg in loggers:
        kind = type(lg).__name__
        if kind not in ("MLFlowLogger", "WandbLogger"):
            continue
        try:
            with kept_environment():
                if kind == "MLFlowLogger":
                    for path in files:
                        lg.experiment.log_artifact(lg.run_id, str(path))
                    if numbers:
                        lg.log_metrics(numbers)
                else:
                    import wandb

                    name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"run-{folder.name}")
                    artifact = wandb.Artifact(name, type="run-folder")
                    for path in files:
                        artifact.add_file(str(path))
                    lg.experiment.log_artifact(artifact)
                    if numbers:
                        lg.experiment.summary.update(numbers)
        except Exception as e:  # noqa: BLE001  # the run folder is complete; say what failed
            _log.warning("could not send %s to %s: %s", folder, kind, str(e).splitlines()[0])
            continue
        _log.info(
            "sent %d files and %d metrics of %s to %s", len(files), len(numbers), folder, kind
        )
