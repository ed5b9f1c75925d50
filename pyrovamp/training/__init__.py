"""Training on PyTorch Lightning with a Pyro ELBO as the loss."""

from pyrovamp.training.config import PRESETS, resolve_config, saved_config
from pyrovamp.training.trainer import (LOSSES, AdamNormGrad, OPTIMIZERS, CHECKPOINT, BEST, MODEL, TrainConfig, TrainResult, ScaleLatents, beta_at, EpochData, EpochSampler, SVIDataModule, IWAELoss, make_loss, SVIModule, WarmupEarlyStopping, ParameterEMA, PieceTimer, AtomicCheckpointIO, atomic_save, read_checkpoint, load_model_weights, quiet_lightning, fit, sharded_over_processes, RESUMABLE, train, NonFiniteLossError, CheckpointError, PRECISIONS)

__all__ = ['LOSSES', 'AdamNormGrad', 'OPTIMIZERS', 'CHECKPOINT', 'BEST', 'MODEL', 'TrainConfig', 'PRESETS', 'resolve_config', 'saved_config', 'TrainResult', 'ScaleLatents', 'beta_at', 'EpochData', 'EpochSampler', 'SVIDataModule', 'IWAELoss', 'make_loss', 'SVIModule', 'WarmupEarlyStopping', 'ParameterEMA', 'PieceTimer', 'AtomicCheckpointIO', 'atomic_save', 'read_checkpoint', 'load_model_weights', 'quiet_lightning', 'fit', 'sharded_over_processes', 'RESUMABLE', 'train', 'NonFiniteLossError', 'CheckpointError', 'PRECISIONS']
