"""The experiment loggers of a run (``TrainConfig.logger``): Lightning's ``CSVLogger``,
``TensorBoardLogger``, ``MLFlowLogger`` and ``WandbLogger``, several at once.

* MLflow writes where ``MLFLOW_TRACKING_URI`` points, else to MLflow's own default local store
  (``mlflow.get_tracking_uri()``: ``./mlflow.db`` with artifacts in ``./mlruns`` since MLflow 3,
  ``./mlruns`` before), experiment ``pyrovamp``, one MLflow run per run folder.
* W&B writes to ``RUN/wandb`` in offline mode unless the user is logged in (``WANDB_API_KEY``
  or a ``.netrc`` entry for the W&B host) or has chosen a mode (``WANDB_MODE``); ``wandb sync``
  uploads an offline run later. Project ``pyrovamp``.

A resumed run continues the same MLflow and W&B runs: their ids are kept in
``RUN/trackers.json``. After a run folder is complete, :func:`log_run_files` sends its
``config.json``, ``metrics.json``, ``history.csv`` and figures as artifacts and its test metrics
as metrics.
"""

from __future__ import annotations

import json
import logging
import math
import netrc
import os
import re
import uuid
from pathlib import Path
from urllib.parse import urlparse

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from pyrovamp._io import atomic_write_text
from pyrovamp.training.config import TrainConfig, logger_names

__all__ = ["make_loggers", "finish_loggers", "log_run_files", "TRACKERS_FILE", "ARTIFACTS"]

TRACKERS_FILE = "trackers.json"
"""The file of a run folder that keeps the MLflow run id and the W&B run id across resumes."""
ARTIFACTS = ("config.json", "metrics.json", "history.csv", "*.png")
"""The files of a run folder :func:`log_run_files` sends to MLflow and W&B."""

_log = logging.getLogger(__name__)


def _ids(folder: Path) -> dict:
    try:
        data = json.loads((folder / TRACKERS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _need(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(
            f"logger {extra!r} needs the {module} package: pip install 'pyrovamp[{extra}]'"
        )


def _wandb_offline() -> bool:
    """W&B offline unless the user has chosen a mode or is logged in."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return False
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host or "api.wandb.ai") is None
    except (OSError, netrc.NetrcParseError):
        return True


def make_loggers(config: TrainConfig, folder: Path, *, write: bool = True) -> list[Logger]:
    """Lightning loggers for ``config.logger`` writing for the run in ``folder``.

    Args:
        config: the run's settings (``logger``: names, see :func:`logger_names`).
        folder: the run folder (CSV and TensorBoard logs in ``folder/logs``, W&B in
            ``folder/wandb``, the tracker ids in ``folder/trackers.json``).
        write: keep the MLflow/W&B run ids in ``folder/trackers.json`` (the process of rank 0
            of a run that keeps its folder).

    Returns:
        The loggers, in the order named (empty for ``"none"``).

    Raises:
        ModuleNotFoundError: ``mlflow`` or ``wandb`` named but not installed (one line naming
            the extra to install).
    """
    names = logger_names(config.logger)
    for name, module in (("mlflow", "mlflow"), ("wandb", "wandb")):
        if name in names:
            _need(module, name)
    ids = _ids(folder)
    loggers: list[Logger] = []
    for name in names:
        if name == "csv":
            loggers.append(CSVLogger(save_dir=str(folder), name="logs"))
        elif name == "tensorboard":
            loggers.append(TensorBoardLogger(save_dir=str(folder), name="logs"))
        elif name == "mlflow":
            import mlflow
            from lightning.pytorch.loggers import MLFlowLogger

            saved = ids.get("mlflow") or {}
            uri = saved.get("tracking_uri") or mlflow.get_tracking_uri()
            lg = MLFlowLogger(
                experiment_name="pyrovamp",
                run_name=folder.name,
                tracking_uri=uri,
                run_id=saved.get("run_id"),
            )
            ids["mlflow"] = {"tracking_uri": uri, "run_id": lg.run_id}
            loggers.append(lg)
        elif name == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            run_id = (ids.get("wandb") or {}).get("id") or uuid.uuid4().hex[:12]
            loggers.append(
                WandbLogger(
                    project="pyrovamp",
                    name=folder.name,
                    save_dir=str(folder),
                    offline=_wandb_offline(),
                    id=run_id,
                    resume="allow",
                )
            )
            ids["wandb"] = {"id": run_id}
    if write and ("mlflow" in ids or "wandb" in ids):
        atomic_write_text(folder / TRACKERS_FILE, json.dumps(ids, indent=2) + "\n")
    return loggers


def finish_loggers(loggers: list[Logger]) -> None:
    """End the W&B runs of ``loggers`` (Lightning leaves a W&B run open after ``fit``, and the
    next ``WandbLogger`` of the process would log into it); MLflow's runs are ended by
    Lightning."""
    wandb_ids = {str(lg.version) for lg in loggers if type(lg).__name__ == "WandbLogger"}
    if wandb_ids:
        import wandb

        if wandb.run is not None and wandb.run.id in wandb_ids:
            wandb.run.finish()


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


def log_run_files(loggers: list[Logger], folder: Path, metrics: dict | None) -> None:
    """Send a finished run folder to its MLflow and W&B runs: the files of :data:`ARTIFACTS` as
    artifacts and the finite numbers of ``metrics`` (``metrics.json``: test log-likelihood in
    nats per data point, ELBO, active units, ...) as metrics. CSV and TensorBoard loggers are
    left alone (their folder is the run folder).

    Args:
        loggers: the run's loggers (``trainer.loggers``).
        folder: the run folder.
        metrics: the run's test metrics, or ``None``.
    """
    files = sorted({p for pattern in ARTIFACTS for p in folder.glob(pattern) if p.is_file()})
    numbers = _scalars(metrics or {})
    for lg in loggers:
        kind = type(lg).__name__
        if kind == "MLFlowLogger":
            run_id = lg.run_id  # type: ignore[attr-defined]
            for path in files:
                lg.experiment.log_artifact(run_id, str(path))
            if numbers:
                lg.log_metrics({f"test/{k}": v for k, v in numbers.items()})
        elif kind == "WandbLogger":
            import wandb

            # training ended the run (finish_loggers): continue it by its id
            run = wandb.init(
                project="pyrovamp",
                id=str(lg.version),
                name=folder.name,
                dir=str(folder),
                resume="allow",
                mode="offline" if _wandb_offline() else None,
            )
            name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"run-{folder.name}")
            artifact = wandb.Artifact(name, type="run-folder")
            for path in files:
                artifact.add_file(str(path))
            run.log_artifact(artifact)
            if numbers:
                run.summary.update({f"test/{k}": v for k, v in numbers.items()})
            run.finish()
        else:
            continue
        _log.info(
            "sent %d files and %d metrics of %s to %s", len(files), len(numbers), folder, kind
        )
