"""Training on PyTorch Lightning with a Pyro ELBO as the loss.

One concept per module, along a run:

* :mod:`~pyrovamp.training.config`: :class:`TrainConfig`, the presets and the settings a
  resume may change (no Lightning);
* :mod:`~pyrovamp.training.optim`: the optimisers, among them the paper's :class:`AdamNormGrad`;
* :mod:`~pyrovamp.training.hardware`: the ``"auto"`` accelerator and precision, resolved for
  the model and the machine (no Lightning);
* :mod:`~pyrovamp.training.checkpoint`: the files of a run and how they are read (no
  Lightning);
* :mod:`~pyrovamp.training.data`: each epoch's data and each process's shard of it;
* :mod:`~pyrovamp.training.plan`: the ``LightningModule`` (:class:`SVIModule`), KL warm-up and
  the losses;
* :mod:`~pyrovamp.training.callbacks`: early stopping after the warm-up, the parameter average,
  the time budget of a piece;
* :mod:`~pyrovamp.training.runner`: :func:`fit` and :func:`train`;
* :mod:`~pyrovamp.training.sharding`: evaluation shared out over the processes of a
  data-parallel run (no Lightning).

The names of the modules that load Lightning are imported on first use (PEP 562), so that the
command line's parser and ``import pyrovamp`` stay fast.
"""

from pyrovamp._lazy import lazy_attributes
from pyrovamp.errors import CheckpointError, NonFiniteLossError
from pyrovamp.infer.importance import IWAELoss
from pyrovamp.training.checkpoint import (
    BEST,
    CHECKPOINT,
    MODEL,
    atomic_save,
    load_model_weights,
    read_checkpoint,
)
from pyrovamp.training.config import (
    PRECISIONS,
    PRESETS,
    RESUMABLE,
    TrainConfig,
    preset_training,
    resolve_config,
    saved_config,
)
from pyrovamp.training.hardware import cpu_has_native_bf16, resolve_accelerator, resolve_precision
from pyrovamp.training.optim import OPTIMIZERS, AdamNormGrad
from pyrovamp.training.sharding import sharded_over_processes

_LAZY = {
    "LOSSES": "plan",
    "ScaleLatents": "plan",
    "beta_at": "plan",
    "make_loss": "plan",
    "SVIModule": "plan",
    "EpochData": "data",
    "EpochSampler": "data",
    "SVIDataModule": "data",
    "WarmupEarlyStopping": "callbacks",
    "ParameterEMA": "callbacks",
    "PieceTimer": "callbacks",
    "TrainResult": "runner",
    "AtomicCheckpointIO": "runner",
    "quiet_lightning": "runner",
    "fit": "runner",
    "train": "runner",
}

__all__ = [
    "LOSSES",
    "AdamNormGrad",
    "OPTIMIZERS",
    "CHECKPOINT",
    "BEST",
    "MODEL",
    "TrainConfig",
    "PRESETS",
    "resolve_config",
    "saved_config",
    "TrainResult",
    "ScaleLatents",
    "beta_at",
    "EpochData",
    "EpochSampler",
    "SVIDataModule",
    "IWAELoss",
    "make_loss",
    "SVIModule",
    "WarmupEarlyStopping",
    "ParameterEMA",
    "PieceTimer",
    "AtomicCheckpointIO",
    "atomic_save",
    "read_checkpoint",
    "load_model_weights",
    "quiet_lightning",
    "fit",
    "sharded_over_processes",
    "RESUMABLE",
    "train",
    "NonFiniteLossError",
    "CheckpointError",
    "PRECISIONS",
    "preset_training",
    "cpu_has_native_bf16",
    "resolve_accelerator",
    "resolve_precision",
]

__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)
