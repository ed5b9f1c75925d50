"""Training on PyTorch Lightning with a Pyro ELBO as the loss.

The pattern is Pyro's own (``examples/svi_lightning.py``, the tutorial "SVI with PyTorch
Lightning"; scvi-tools trains its Pyro models the same way): a :class:`SVIModule`
(``LightningModule``) whose ``training_step`` returns Pyro's differentiable ELBO loss
(``Trace_ELBO().differentiable_loss(model.model, model.guide, x)``, or
``TraceMeanField_ELBO`` / the IWAE bound), a ``torch.optim`` optimiser over the model's
parameters, and Lightning's ``Trainer`` for the loop, devices, precision, data-parallel
processes, checkpoints, early stopping, time limits, logging and progress. What this module adds
is what the field needs on top:

* KL warm-up (Bowman et al. 2016; the VampPrior paper, sec. 4): the log-densities of the latent
  sites of model and guide are scaled by ``beta = min(1, (epoch + 1) / warmup_epochs)``
  (:class:`ScaleLatents`), the observed site is not;
* early stopping on the validation ELBO (nats per data point; or on the importance-weighted
  bound, ``val_bound="iwae"``) with the best parameters restored, counting patience only after
  the warm-up (:class:`WarmupEarlyStopping`), and an optional learning-rate decay on the same
  score (PyTorch's ``ReduceLROnPlateau``, ``lr_decay``);
* an exponential moving average of the floating-point parameters, buffers untouched
  (:class:`ParameterEMA`, Lightning's ``WeightAveraging``);
* data parallelism in which each process sees its own shard of every epoch, reshuffled from the
  seed (the batch size is the global batch), and dynamic binarisation from the seed and the
  epoch, so a run does not depend on how it was cut into pieces;
* faults: a non-finite loss stops the run with one line naming the epoch and step and the last
  good checkpoint (:class:`NonFiniteLossError`); checkpoints are written atomically and hold the
  random states, so a run killed at any moment and resumed ends with the same parameters as the
  uninterrupted run.

Pyro's global parameter store is not used for optimisation: the optimiser steps
``model.parameters()`` and Pyro only traces the model and guide, so training works with either
value of ``pyro.settings`` ``module_local_params``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import random
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, fields
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import pyro
from pyro.infer import JitTrace_ELBO, JitTraceMeanField_ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.scale_messenger import ScaleMessenger

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, Timer, WeightAveraging
from lightning.pytorch.plugins.io import TorchCheckpointIO

from pyrovamp.errors import CheckpointError, NonFiniteLossError
from pyrovamp.training.config import TrainConfig
from pyrovamp._choices import LEGACY_TRAINING, PRECISIONS
from pyrovamp.infer.importance import IWAELoss, elbo_terms, log_likelihood
from pyrovamp.nn.layers import parameter_chunks

__all__ = ["TrainConfig", "TrainResult", "SVIModule", "fit", "train", "load_model_weights",
           "NonFiniteLossError", "CheckpointError", "ScaleLatents", "WarmupEarlyStopping",
           "ParameterEMA", "AdamNormGrad", "LOSSES", "OPTIMIZERS", "PRECISIONS", "atomic_save",
           "read_checkpoint", "sharded_over_processes", "IWAELoss", "CHECKPOINT", "BEST", "MODEL"]

LOSSES = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO,
          "jit_trace": JitTrace_ELBO, "jit_meanfield": JitTraceMeanField_ELBO,
          "iwae": None}  # IWAELoss, defined below


class AdamNormGrad(torch.optim.Adam):
    """Adam on gradients divided by their L2 norm, tensor by tensor: ``g <- g / (||g||_2 + 1e-7)``
    for every parameter tensor before the Adam update -- the optimiser of the VampPrior paper's
    code (jmtomczak/vae_vampprior ``utils/optimizer.py``, ``AdamNormGrad``), part of its
    protocol. Arguments as :class:`torch.optim.Adam`.

    pyrovamp computes some of the paper's separate layers as one (the two halves of a gated
    layer, the mean and log-variance heads: :func:`pyrovamp.nets.mark_fused`). A parameter group
    may say so with the key ``norm_chunks``: one integer per tensor of its ``params``, the
    number of equal blocks along the tensor's first dimension whose gradients are normalised
    each on its own (:func:`pyrovamp.nets.parameter_chunks` gives them for a model; the
    training loop passes them), as the paper's code normalises each of its tensors. Without the
    key (plain parameters, or a checkpoint written before the key existed) each tensor is
    normalised as a whole.

    Raises:
        ValueError: ``norm_chunks`` does not give, for each tensor, a positive integer that
            divides its first dimension.
    """

    def add_param_group(self, param_group):
        """Add a group (see :meth:`torch.optim.Optimizer.add_param_group`), checking its
        ``norm_chunks`` first."""
        chunks = param_group.get("norm_chunks")
        if chunks is not None:
            params = param_group["params"]
            params = [params] if isinstance(params, torch.Tensor) else list(params)
            param_group["params"] = params
            chunks = list(chunks)
            if len(chunks) != len(params) or any(
                    not isinstance(c, int) or isinstance(c, bool) or c < 1
                    or (p.shape[0] if p.dim() else 1) % c
                    for c, p in zip(chunks, params)):
                raise ValueError("norm_chunks must give, for each of the group's "
                                 f"{len(params)} tensors, a positive integer dividing its first "
                                 f"dimension; got {chunks[:8]}{'...' if len(chunks) > 8 else ''}")
            param_group["norm_chunks"] = chunks
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure=None):
        """One update: run ``closure`` (if given: Lightning's forward and backward passes),
        divide every ``p.grad`` (or each of its ``norm_chunks`` blocks) by its norm in place
        (code reading the gradients after the step sees the normalised ones), then Adam's
        update. Returns the closure's loss (or ``None``).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            chunks = group.get("norm_chunks") or [1] * len(group["params"])
            for p, c in zip(group["params"], chunks):
                if p.grad is not None:  # c blocks along the first dimension (c = 1: whole)
                    blocks = p.grad.reshape(c, -1)  # a view of a contiguous gradient
                    blocks.div_(torch.linalg.vector_norm(blocks, dim=1, keepdim=True) + 1e-7)
                    if blocks.data_ptr() != p.grad.data_ptr():  # it was a copy
                        p.grad.copy_(blocks.view_as(p.grad))
        # Adam's update itself: torch wraps Optimizer.step methods with the step hooks
        # ("hooked"), which already ran around this method -- not twice
        adam_step = torch.optim.Adam.step
        (adam_step.__wrapped__ if getattr(adam_step, "hooked", False) else adam_step)(self)
        return loss


OPTIMIZERS = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax, "adamnormgrad": AdamNormGrad}
CHECKPOINT = "checkpoint.ckpt"   # the last epoch's full training state (resume from it)
BEST = "best.ckpt"               # the parameters with the best validation ELBO so far
MODEL = "model.pt"               # the trained model's parameters (best, averaged or last)
_FORMAT = 2


@dataclass
class TrainResult:
    """What :func:`fit` returns.

    Attributes:
        history: one dict per epoch: ``epoch, beta, train_loss`` (negative beta-weighted ELBO,
            nats per data point), ``lr`` (the epoch's learning rate), ``val_elbo``,
            ``val_reconstruction``, ``val_kl``, ``val_iwae`` (with ``val_bound="iwae"``; nats
            per data point; with validation data), ``seconds`` (training and validation wall time)
            and, every ``test_every`` epochs, ``test_log_likelihood`` (nats per data point, the
            mean over the test data given to :func:`fit`) and ``test_seconds``.
        epochs: epochs trained so far (over all pieces).
        finished: ``True`` when ``epochs`` were reached or early stopping fired (the model holds
            the final parameters); ``False`` when the time limit stopped this piece.
        stopped_early: early stopping fired.
        best_val_elbo: best validation score (nats per data point): the ELBO, or the IWAE bound
            with ``val_bound="iwae"``; ``None`` without validation data.
        train_seconds: training wall time over all pieces.
        source: which parameters the model holds: ``"best"``, ``"averaged"`` or ``"last"``.
        checkpoint_dir: the folder with ``checkpoint.ckpt``, ``best.ckpt`` and ``model.pt``
            (``None`` when training ran without one).
        trainer: the Lightning ``Trainer`` that ran (its strategy serves the sharded test
            evaluation after data-parallel training).
    """

    history: list
    epochs: int
    finished: bool
    stopped_early: bool
    best_val_elbo: float | None
    train_seconds: float
    source: str
    checkpoint_dir: Path | None
    trainer: object = dataclasses.field(default=None, repr=False)


class ScaleLatents(ScaleMessenger):
    """``poutine.scale`` restricted to latent (unobserved) sample sites: multiplies their
    log-densities by ``scale`` -- in model and guide alike, this scales the KL term of the ELBO
    (KL warm-up) and leaves the reconstruction term alone."""

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.scale * msg["scale"]


def beta_at(epoch: int, warmup_epochs: int) -> float:
    """KL weight of (0-based) ``epoch``: ``min(1, (epoch + 1) / warmup_epochs)`` (1 without
    warm-up)."""
    return 1.0 if warmup_epochs == 0 else min(1.0, (epoch + 1) / warmup_epochs)


def _mix(*ints) -> int:
    """A 63-bit seed from integers (stable across processes and Python runs)."""
    h = 0x9E3779B97F4A7C15
    for v in ints:
        h = (h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


# --- data ------------------------------------------------------------------------------------
class EpochData(torch.utils.data.Dataset):
    """Training data for one epoch: a fixed ``(N, D)`` tensor, or a fresh binarisation of grey
    images per epoch drawn from ``sampler(generator=...)`` with a generator seeded from the
    run's seed and the epoch (so every process and every piece of a run draws the same one).
    Batches are gathered by one tensor index (``__getitems__``), not item by item."""

    def __init__(self, data: torch.Tensor, sampler=None, seed: int = 0, check=None):
        self.data, self.sampler, self.seed, self.check = data, sampler, seed, check
        self.epoch = None

    def set_epoch(self, epoch: int) -> None:
        if self.sampler is not None and epoch != self.epoch:
            g = torch.Generator().manual_seed(_mix(self.seed, 7, epoch))
            x = self.sampler(generator=g)
            self.data = self.check(x) if self.check is not None else x
        self.epoch = epoch

    def __len__(self):
        return self.data.shape[0]

    def __getitem__(self, i):
        return self.data[i]

    def __getitems__(self, idx):
        return self.data[torch.as_tensor(idx, dtype=torch.long)]


class EpochSampler(torch.utils.data.DistributedSampler):
    """``DistributedSampler`` (each process its own shard, reshuffled every epoch from the seed)
    that also tells the :class:`EpochData` which epoch it is. With one process it is a seeded
    random permutation per epoch."""

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.dataset.set_epoch(epoch)


def _identity(batch):
    return batch


class SVIDataModule(pl.LightningDataModule):
    """Training data (:class:`EpochData`) and the validation tensor of a run; the per-process
    batch is ``batch_size // world_size``."""

    def __init__(self, train: EpochData, validation: torch.Tensor | None, batch_size: int, seed: int):
        super().__init__()
        self.train_data, self.validation = train, validation
        self.batch_size, self.seed = batch_size, seed

    def train_dataloader(self):
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = EpochSampler(self.train_data, num_replicas=world, rank=rank, shuffle=True,
                               seed=self.seed, drop_last=False)
        self.train_data.set_epoch(0)
        return torch.utils.data.DataLoader(
            self.train_data, batch_size=self.batch_size // world, sampler=sampler,
            collate_fn=_identity, generator=torch.Generator().manual_seed(self.seed))


# --- the LightningModule ----------------------------------------------------------------------
def make_loss(config: TrainConfig):
    """The loss object of ``config.loss``: a Pyro ELBO (one data plate, vectorised particles)
    or :class:`IWAELoss`; each has ``differentiable_loss(model, guide, x)``."""
    if config.loss == "iwae":
        return IWAELoss(config.num_particles)
    kw = {"num_particles": config.num_particles, "vectorize_particles": config.num_particles > 1,
          "max_plate_nesting": 1}
    if config.loss.startswith("jit"):
        kw["ignore_jit_warnings"] = True
    return LOSSES[config.loss](**kw)


class SVIModule(pl.LightningModule):
    """A ``LightningModule`` around any model with Pyro ``model(x)`` / ``guide(x)`` methods whose
    loss is a Pyro ELBO (``differentiable_loss``), divided by the batch size: nats per data point.

    Args:
        model: e.g. :class:`pyrovamp.VAE` (an ``nn.Module`` with ``model`` and ``guide``).
        config: a :class:`TrainConfig`.
        test_data: ``(M, D)`` test points for ``config.test_every`` (or ``None``).

    Logged per epoch (Lightning's logger): ``train_loss``, ``beta``, ``lr``, ``val_elbo``,
    ``val_reconstruction``, ``val_kl``, ``val_iwae`` (``val_bound="iwae"``) and, every
    ``test_every`` epochs, ``test_log_likelihood`` (nats per data point).
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, test_data=None):
        super().__init__()
        self.model = model
        self.config = config
        self.test_data = test_data
        self.loss_fn = make_loss(config)
        self.beta = 1.0
        self.history: list[dict] = []
        self.train_seconds = 0.0
        self.checkpoint_path: Path | None = None
        self._reset_epoch_stats()

    def _reset_epoch_stats(self):
        self._loss_sum = None
        self._count = 0
        self._bad_step = None
        self._t0 = time.perf_counter()

    # the model's Pyro functions under the KL weight of this epoch
    def _model(self, x):
        with ScaleLatents(self.beta):
            return self.model.model(x)

    def _guide(self, x):
        with ScaleLatents(self.beta):
            return self.model.guide(x)

    def configure_optimizers(self):
        params = list(self.model.parameters())
        if self.config.optimizer == "adamnormgrad":  # the paper's tensors, block by block
            params = [{"params": params, "norm_chunks": parameter_chunks(self.model)}]
        optimizer = OPTIMIZERS[self.config.optimizer](params, lr=self.config.lr)
        if self.config.lr_decay is None:
            return optimizer
        # threshold 0 in absolute units: any better validation score counts, as for early
        # stopping (the default relative threshold misjudges a negative score)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=self.config.lr_decay, patience=self.config.lr_patience,
            threshold=0.0, threshold_mode="abs")
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": plateau, "monitor": self.config.monitor,
                                 "interval": "epoch", "frequency": 1}}

    def lr_scheduler_step(self, scheduler, metric):
        """Nothing: the decay steps in :meth:`on_train_epoch_end` (Lightning would step it after
        the epoch's checkpoints are written, so a resumed run would miss one step)."""

    def _decay_lr(self, score: float) -> None:
        """Step the learning-rate decay on the validation score, after the KL warm-up only (during
        it the ELBO moves with beta, as for :class:`WarmupEarlyStopping`)."""
        if self.config.lr_decay is not None and self.current_epoch + 1 > self.config.warmup_epochs:
            self.lr_schedulers().step(score)

    def on_train_epoch_start(self):
        self.beta = beta_at(self.current_epoch, self.config.warmup_epochs)
        self._reset_epoch_stats()

    def training_step(self, batch, batch_idx):
        x = batch
        try:
            loss = self.loss_fn.differentiable_loss(self._model, self._guide, x) / x.shape[0]
        except (ValueError, RuntimeError, IndexError) as e:
            if not _all_finite(self.model.parameters()):
                raise NonFiniteLossError(self._nonfinite_message(self.global_step)) from e
            raise
        d = loss.detach().double() * x.shape[0]
        # no host synchronisation per step: accumulate on the device, check at the epoch's end
        step = torch.tensor(self.global_step, device=d.device)
        bad = ~torch.isfinite(d)
        if self._loss_sum is None:
            self._loss_sum, self._bad_step = d, torch.where(bad, step, torch.full_like(step, -1))
        else:
            self._loss_sum = self._loss_sum + d
            self._bad_step = torch.where(bad & (self._bad_step < 0), step, self._bad_step)
        self._count += x.shape[0]
        return loss

    def _nonfinite_message(self, step) -> str:
        where = f"the last good checkpoint is {self.checkpoint_path}" if (
            self.checkpoint_path is not None and self.checkpoint_path.is_file()) else \
            "no checkpoint was written yet"
        return (f"non-finite loss at epoch {self.current_epoch + 1}, step {int(step) + 1}: training "
                f"stopped; {where} (nothing non-finite was saved; try a smaller lr)")

    def on_train_epoch_end(self):
        total = self._loss_sum if self._loss_sum is not None else torch.zeros((), dtype=torch.float64,
                                                                                device=self.device)
        stats = torch.stack([total, torch.tensor(float(self._count), dtype=torch.float64,
                                                 device=total.device)])
        stats = self.trainer.strategy.reduce(stats, reduce_op="sum")
        bad = self._bad_step is not None and int(self._bad_step) >= 0
        if bad or not torch.isfinite(stats[0]) or not _all_finite(self.model.parameters()):
            step = int(self._bad_step) if bad else self.global_step - 1
            raise NonFiniteLossError(self._nonfinite_message(step))
        record = {"epoch": self.current_epoch + 1, "beta": self.beta,
                  "train_loss": float(stats[0] / stats[1]),
                  "lr": float(self.trainer.optimizers[0].param_groups[0]["lr"])}
        dm = self.trainer.datamodule
        if dm is not None and dm.validation is not None:
            scored = self._scored_model()
            iwae = self.config.val_bound == "iwae"
            seed = _mix(self.config.seed, 11, self.current_epoch)
            terms = elbo_terms(scored, dm.validation, 1 if iwae else self.config.val_num_samples,
                               seed=seed)
            record.update(val_elbo=float(terms["elbo"].mean()),
                          val_reconstruction=float(terms["reconstruction"].mean()),
                          val_kl=float(terms["kl"].mean()))
            if iwae:
                record["val_iwae"] = float(log_likelihood(scored, dm.validation,
                                                          self.config.val_num_samples,
                                                          seed=_mix(seed, 17)).mean())
            # one score for all processes, so that every process decays its optimiser alike
            v = float(self.trainer.strategy.broadcast(record[self.config.monitor], src=0))
            record[self.config.monitor] = v
            if not math.isfinite(v):
                raise NonFiniteLossError(
                    f"non-finite {self.config.monitor} at epoch {self.current_epoch + 1}: training "
                    f"stopped; the last good checkpoint is {self.checkpoint_path}")
            self._decay_lr(v)  # before this epoch's checkpoints, which hold its state
            self.model.train()
            if scored is not self.model:
                scored.train()
        record["seconds"] = time.perf_counter() - self._t0
        self.train_seconds += record["seconds"]
        every = self.config.test_every
        if every and self.test_data is not None and (self.current_epoch + 1) % every == 0:
            t0 = time.perf_counter()
            scored = self._scored_model()
            ll = log_likelihood(scored, self.test_data.to(self.device),
                                self.config.test_num_samples, seed=_mix(self.config.seed, 13))
            self.model.train()
            if scored is not self.model:
                scored.train()
            record.update(test_log_likelihood=float(ll.mean()),
                          test_seconds=time.perf_counter() - t0)
        self.history.append(record)
        self.log_dict({k: float(v) for k, v in record.items()
                       if k not in ("epoch", "seconds", "test_seconds")},
                      on_epoch=True, on_step=False, rank_zero_only=True)

    def _scored_model(self):
        """The model that validation scores: the parameter average when EMA is on."""
        for cb in self.trainer.callbacks:
            if isinstance(cb, ParameterEMA):
                return cb.averaged_model(self)
        return self.model

    # --- checkpoint contents: the run's own state, all weights-only safe --------------------
    def on_save_checkpoint(self, checkpoint):
        scored = self._scored_model()
        checkpoint["pyrovamp"] = {
            "format": _FORMAT, "config": asdict(self.config), "history": self.history,
            "train_seconds": self.train_seconds, "model_class": type(self.model).__name__,
            "scored_state": {k: v.detach().clone() for k, v in scored.state_dict().items()},
            "scored": "averaged" if scored is not self.model else "last",
            "rng": _rng_state(),
            "stopped_early": any(isinstance(cb, EarlyStopping) and cb.wait_count >= cb.patience
                                 for cb in self.trainer.callbacks),
        }

    def on_load_checkpoint(self, checkpoint):
        state = checkpoint["pyrovamp"]
        self.history = list(state["history"])
        self.train_seconds = float(state["train_seconds"])
        _set_rng_state(state["rng"])


def _all_finite(tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def _rng_state() -> dict:
    """All random states as tensors and plain numbers (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    ver, internal, gnext = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": {"version": ver, "state": list(internal), "gauss_next": gnext}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- callbacks --------------------------------------------------------------------------------
class WarmupEarlyStopping(EarlyStopping):
    """Lightning's ``EarlyStopping`` on the validation ELBO that tracks the best value from the
    first epoch but counts patience only after ``warmup_epochs`` (during the KL warm-up the
    ELBO improves because beta grows, not because the model does)."""

    def __init__(self, warmup_epochs: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.warmup_epochs = warmup_epochs

    def _run_early_stopping_check(self, trainer):
        if trainer.current_epoch + 1 > self.warmup_epochs:
            return super()._run_early_stopping_check(trainer)
        logs = trainer.callback_metrics
        if self.monitor in logs:
            self._evaluate_stopping_criteria(logs[self.monitor].squeeze())
            self.wait_count = 0


class ParameterEMA(WeightAveraging):
    """Exponential moving average of the floating-point parameters (decay per optimiser step;
    ``torch.optim.swa_utils`` EMA through Lightning's ``WeightAveraging``). Buffers are never
    averaged (integer buffers such as a flow's permutation stay what they are; running
    statistics come from the live model). The choice of final parameters is :func:`fit`'s, so
    training's end does not copy the average over the live model."""

    def __init__(self, decay: float):
        from torch.optim.swa_utils import get_ema_multi_avg_fn

        super().__init__(use_buffers=False, multi_avg_fn=get_ema_multi_avg_fn(decay))
        self.decay = decay

    def averaged_model(self, pl_module):
        """The averaged copy of ``pl_module.model`` with the live model's buffers."""
        avg = self._average_model.module
        for b_avg, b in zip(avg.buffers(), pl_module.buffers()):
            b_avg.data.copy_(b.data)
        return avg.model

    def on_train_end(self, trainer, pl_module):
        pass

    def _swap_models(self, pl_module):  # parameters only; buffers stay the live model's
        for p_avg, p in zip(self._average_model.module.parameters(), pl_module.parameters()):
            tmp = p_avg.data.clone()
            p_avg.data.copy_(p.data)
            p.data.copy_(tmp)

    def _copy_average_to_current(self, pl_module):
        for p_avg, p in zip(self._average_model.module.parameters(), pl_module.parameters()):
            p.data.copy_(p_avg.data)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.averaged_model(pl_module)
        super().on_save_checkpoint(trainer, pl_module, checkpoint)


class PieceTimer(Timer):
    """Lightning's ``Timer`` checked at epoch ends, whose budget is per piece of a run: a resumed
    run gets ``max_minutes`` anew instead of inheriting the elapsed time, and trains at least
    one epoch."""

    def load_state_dict(self, state_dict):
        pass

    def on_fit_start(self, trainer, *args, **kwargs):  # every piece trains at least one epoch
        pass


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file, flushed and renamed over the target (a reader,
    or a run killed mid-write, never sees half a file); read back with ``weights_only=True``."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return read_checkpoint(path, map_location=map_location)


def atomic_save(obj, path) -> None:
    """``torch.save`` to a temporary file in the same folder, ``fsync``, then rename over
    ``path``: a reader (or a run killed mid-write) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_checkpoint(path, map_location=None) -> dict:
    """Load a pyrovamp checkpoint or model file with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: the file is missing, truncated, corrupt, unsafe to unpickle or not a
            pyrovamp file -- one line naming the file and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 -- every failure to read becomes one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} cannot be read as a pyrovamp checkpoint (truncated, "
                              f"corrupt or unsafe): {type(e).__name__}: {first[:200]}") from None
    if not isinstance(obj, dict) or "pyrovamp" not in obj:
        raise CheckpointError(f"{path} is not a pyrovamp checkpoint (no 'pyrovamp' entry)")
    fmt = obj["pyrovamp"].get("format") if isinstance(obj["pyrovamp"], dict) else None
    if fmt != _FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {fmt!r}; this pyrovamp reads format {_FORMAT}")
    return obj


def load_model_weights(model: torch.nn.Module, path) -> dict:
    """Load a ``model.pt`` (or ``best.ckpt`` / ``checkpoint.ckpt``) written by :func:`fit` into
    ``model``; returns the file's ``pyrovamp`` metadata.

    Raises:
        CheckpointError: unreadable file, or one written for another model (class or shapes).
    """
    obj = read_checkpoint(path, map_location="cpu")
    meta = obj["pyrovamp"]
    state = meta.get("scored_state")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no model parameters ('scored_state')")
    if meta.get("model_class") not in (None, type(model).__name__):
        raise CheckpointError(f"{path} holds a {meta.get('model_class')}, not a {type(model).__name__}")
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} does not fit this model: "
                              f"{_state_mismatch(model, state) or str(e).strip().splitlines()[0][:200]}"
                              ) from None
    return meta


def _state_mismatch(model: torch.nn.Module, state: dict) -> str:
    """One line naming how ``state`` differs from ``model.state_dict()``: missing and unexpected
    keys and shape mismatches (the first three of each); empty if no key or shape differs."""
    own = model.state_dict()
    parts = []
    for what, keys in (("missing", [k for k in own if k not in state]),
                       ("unexpected", [k for k in state if k not in own]),
                       ("shape differs for", [k for k in own if k in state and hasattr(
                           state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)])):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            parts.append(f"{what} {', '.join(keys[:3])}{more}")
    return "; ".join(parts)


@contextlib.contextmanager
def quiet_lightning():
    """Silence Lightning's known, harmless chatter during :func:`fit` (device banners, tips,
    "checkpoint directory exists" on resume, few-workers hints for in-memory tensors, a
    deprecation inside Lightning); warnings and errors of every other kind still show."""
    names = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
             "lightning.pytorch.accelerators.cuda", "lightning.pytorch",
             "lightning.fabric.utilities.distributed")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for msg in (".*does not have many workers.*", ".*exists and is not empty.*",
                    ".*LeafSpec.*", ".*smaller than the logging interval.*",
                    ".*Found current_model_state.*", ".*litlogger.*",
                    ".*on_save_checkpoint.*outside the 'fit' stage.*",
                    # the epoch's metrics are computed identically on every process
                    ".*sync_dist=True.*"):
            warnings.filterwarnings("ignore", message=msg)
        for lg in loggers:
            lg.setLevel(max(lg.level, logging.WARNING))
        try:
            yield
        finally:
            for lg, lv in zip(loggers, levels):
                lg.setLevel(lv)


# --- the entry points -------------------------------------------------------------------------
def _check(model, x, name):
    from pyrovamp.models.vae import check_data

    if x is None:
        return None
    if hasattr(model, "input_dim") and hasattr(model, "likelihood"):
        return check_data(x, model.input_dim, model.likelihood, name)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _loggers(config: TrainConfig, folder: Path):
    if config.logger == "none":
        return False
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    if config.logger == "tensorboard":
        return TensorBoardLogger(save_dir=str(folder), name="logs")
    return CSVLogger(save_dir=str(folder), name="logs")


def fit(model: torch.nn.Module, train_data, validation_data=None, config: TrainConfig | None = None,
        *, checkpoint_dir=None, resume: bool = False, test_data=None, **overrides) -> TrainResult:
    """Train ``model`` with a Pyro ELBO on Lightning; the model is returned in evaluation mode
    holding the best (or averaged, or last) parameters.

    Args:
        model: an ``nn.Module`` with Pyro ``model(x)`` and ``guide(x)`` (``VAE``, ``HVAE``, ...).
        train_data: ``(N, D)`` training data (tensor, numpy array; checked against the model
            before any work), or a callable ``sampler(generator=None) -> (N, D)`` drawing a fresh
            binarisation per epoch (``Dataset.train_sampler``).
        validation_data: ``(M, D)`` data for early stopping and the choice of the best
            parameters (``None``: the last or averaged parameters are kept).
        config: a :class:`TrainConfig`; keyword ``overrides`` replace its fields.
        checkpoint_dir: folder for ``checkpoint.ckpt`` (the last epoch's full state),
            ``best.ckpt``, ``model.pt`` (the result's parameters) and the logs; ``None``: a
            temporary folder, removed afterwards.
        resume: continue from ``checkpoint_dir/checkpoint.ckpt``; only ``epochs``,
            ``max_minutes``, ``progress``, the device settings and ``test_every`` /
            ``test_num_samples`` may differ from the run's.
        test_data: ``(M, D)`` test points whose log-likelihood is estimated every
            ``config.test_every`` epochs (a fixed subset: e.g.
            :func:`pyrovamp.data.spread_subset` of the test set); never used for training or
            for the choice of parameters.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: a bad setting or bad data (before any work); ``CheckpointError`` (a
            ``ValueError``): resuming from a missing, corrupt or foreign checkpoint, or with a
            changed setting; ``NonFiniteLossError``: the loss became NaN/inf (the model then
            holds the last good checkpoint's parameters).
    """
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    config.validate()
    sampler = train_data if callable(train_data) and not isinstance(train_data, torch.Tensor) else None
    check = (lambda x: _check(model, x, "train")) if sampler is not None else None
    if sampler is None:
        train_data = _check(model, train_data, "train")
        first = train_data
    else:
        first = check(sampler(generator=torch.Generator().manual_seed(config.seed)))
    validation_data = _check(model, validation_data, "validation")
    test_data = _check(model, test_data, "test")
    if config.test_every is not None and test_data is None:
        raise ValueError("test_every needs test_data (the test points of the learning curve)")
    if config.lr_decay is not None and validation_data is None:
        raise ValueError("lr_decay needs validation_data (it decays on the validation score)")
    if first.shape[0] < 1:
        raise ValueError("train must hold at least one data point")

    tmp = None
    if checkpoint_dir is None:
        if resume:
            raise ValueError("resume=True needs checkpoint_dir (the run's folder)")
        tmp = tempfile.TemporaryDirectory(prefix="pyrovamp-")
        folder = Path(tmp.name)
    else:
        folder = Path(checkpoint_dir)
    ckpt_path = folder / CHECKPOINT
    max_epochs = config.epochs
    if resume:
        state = read_checkpoint(ckpt_path, map_location="cpu")
        _check_resume_config(state["pyrovamp"]["config"], config, ckpt_path)
        if state["pyrovamp"].get("stopped_early"):  # a finished run stays finished
            max_epochs = min(max_epochs, int(state["epoch"]) + 1)
    else:
        if ckpt_path.exists() or (folder / BEST).exists():
            raise CheckpointError(f"{folder} already holds a run's checkpoint; pass resume=True to "
                                  "continue it, or choose another checkpoint_dir")
        pyro.set_rng_seed(config.seed)

    module = SVIModule(model, config, test_data)
    module.checkpoint_path = ckpt_path
    data = SVIDataModule(EpochData(first, sampler, config.seed, check),
                         validation_data, config.batch_size, config.seed)
    callbacks = []
    best = early = None
    if validation_data is not None:
        best = ModelCheckpoint(dirpath=folder, filename=Path(BEST).stem, monitor=config.monitor,
                               mode="max", save_top_k=1, save_weights_only=True,
                               save_on_train_epoch_end=True, enable_version_counter=False)
        callbacks.append(best)
        if config.patience is not None:
            early = WarmupEarlyStopping(config.warmup_epochs, monitor=config.monitor, mode="max",
                                        patience=config.patience, check_on_train_epoch_end=True,
                                        check_finite=True)
            callbacks.append(early)
    # after the best-parameters checkpoint, so the last checkpoint holds its updated state
    last = ModelCheckpoint(dirpath=folder, filename=Path(CHECKPOINT).stem, save_top_k=1,
                           monitor=None, every_n_epochs=1, save_on_train_epoch_end=True,
                           enable_version_counter=False)
    callbacks.append(last)
    ema = ParameterEMA(config.ema_decay) if config.ema_decay is not None else None
    if ema is not None:
        callbacks.append(ema)
    # always present (without a budget when max_minutes is None), so that a run made in pieces
    # resumes without Lightning's warning about a callback missing from the checkpoint
    callbacks.append(PieceTimer(duration=None if config.max_minutes is None
                                else timedelta(minutes=config.max_minutes),
                                interval="epoch", verbose=False))
    model.train()
    try:
        with quiet_lightning():
            accelerator, devices = config.lightning_devices()
            trainer = pl.Trainer(
                accelerator=accelerator, devices=devices, num_nodes=config.num_nodes,
                strategy=config.strategy, precision=config.precision, max_epochs=max_epochs,
                logger=_loggers(config, folder), callbacks=callbacks,
                enable_progress_bar=config.progress, enable_model_summary=False,
                num_sanity_val_steps=0, limit_val_batches=0, use_distributed_sampler=False,
                default_root_dir=str(folder), log_every_n_steps=1, gradient_clip_val=None,
                deterministic=False, plugins=[AtomicCheckpointIO()])
            trainer.fit(module, datamodule=data, ckpt_path=ckpt_path if resume else None,
                        weights_only=True)
    except NonFiniteLossError:
        if ckpt_path.is_file():  # leave the model at the last good parameters
            load_model_weights(model, ckpt_path)
        model.eval()
        if tmp is not None:
            tmp.cleanup()
        raise
    stopped_early = early is not None and early.wait_count >= early.patience
    finished = stopped_early or trainer.current_epoch >= max_epochs
    best_val = None
    if best is not None and best.best_model_score is not None:
        best_val = float(best.best_model_score)
    # the result's parameters: the best validated ones, else the average, else the last;
    # chosen by the process of rank 0 and sent to the others (no shared file system needed)
    source = "last"
    if trainer.is_global_zero:
        if best is not None and Path(best.best_model_path or "").is_file():
            load_model_weights(model, best.best_model_path)
            source = "best"
        elif ema is not None:
            model.load_state_dict(ema.averaged_model(module).state_dict())
            source = "averaged"
    if trainer.world_size > 1:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        source, state = trainer.strategy.broadcast((source, state), src=0)
        model.load_state_dict(state)
    model.eval()
    result = TrainResult(history=list(module.history), epochs=trainer.current_epoch,
                         finished=bool(finished), stopped_early=bool(stopped_early),
                         best_val_elbo=best_val, train_seconds=module.train_seconds, source=source,
                         checkpoint_dir=None if tmp is not None else folder)
    if trainer.is_global_zero and tmp is None:
        atomic_save({"pyrovamp": {"format": _FORMAT, "model_class": type(model).__name__,
                                  "scored_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                                  "source": source, "epochs": result.epochs,
                                  "finished": result.finished, "stopped_early": result.stopped_early,
                                  "best_val_elbo": best_val, "history": result.history,
                                  "train_seconds": result.train_seconds,
                                  "config": asdict(config)}}, folder / MODEL)
    result.trainer = trainer
    if tmp is not None:
        tmp.cleanup()
    return result


def sharded_over_processes(fn, x: torch.Tensor, block: int, trainer) -> dict:
    """Evaluate ``fn`` on this process's share of ``x`` and gather the results of all processes.

    ``x`` is cut into blocks of ``block`` points; process ``r`` of ``W`` takes a contiguous run
    of blocks starting at global block index ``b0`` and calls ``fn(x_part, b0, block)``, which
    returns a dict of ``(n_part, ...)`` tensors (per data point); the parts are gathered in
    order, so the result equals one process evaluating all blocks when ``fn`` seeds each block
    from its global index (as :func:`pyrovamp.log_likelihood` does with ``first_block``).

    Returns:
        dict of ``(N, ...)`` CPU tensors.
    """
    import torch.distributed as dist

    world, rank = trainer.world_size, trainer.global_rank
    n = x.shape[0]
    nblocks = -(-n // block)
    per = -(-nblocks // world)
    b0, b1 = min(rank * per, nblocks), min((rank + 1) * per, nblocks)
    part = x[b0 * block: b1 * block]
    mine = {k: v.detach().cpu() for k, v in fn(part, b0, block).items()} if part.shape[0] else None
    parts = [None] * world
    dist.all_gather_object(parts, mine)
    parts = [p for p in parts if p is not None]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


RESUMABLE = ("epochs", "max_minutes", "progress", "accelerator", "devices", "num_nodes",
             "strategy", "device", "logger", "test_every", "test_num_samples")


def _check_resume_config(saved: dict, config: TrainConfig, path) -> None:
    """Refuse to resume with a setting that changes the run (one line naming it); a setting that
    the run's pyrovamp predates counts as what it trained with (``LEGACY_TRAINING``)."""
    saved = {**LEGACY_TRAINING, **saved}
    now = asdict(config)
    for k, v in saved.items():
        if k in RESUMABLE or k not in now:
            continue
        if now[k] != v and not (isinstance(v, (int, float)) and isinstance(now[k], (int, float))
                                and float(v) == float(now[k])):
            raise CheckpointError(f"cannot resume {path}: {k} was {v!r} in this run and is now "
                                  f"{now[k]!r}; only {', '.join(RESUMABLE)} may change")


def train(model, train_data, validation_data=None, *, checkpoint_dir=None, resume: bool = False,
          test_data=None, **options) -> list[dict]:
    """Train ``model`` on Lightning with a Pyro ELBO (the notebook face of :func:`fit`).

    ``options`` are :class:`TrainConfig` fields -- the same settings as ``pyrovamp train``
    (``epochs``, ``batch_size``, ``lr``, ``optimizer``, ``loss``, ``warmup_epochs``,
    ``patience``, ``ema_decay``, ``lr_decay``, ``lr_patience``, ``val_bound``,
    ``val_num_samples``, ``accelerator``, ``devices``, ``strategy``, ``precision``, ``logger``,
    ``max_minutes``, ``test_every``, ...). The model comes back in evaluation mode
    with the best (validated), averaged or last parameters. With ``test_every=N`` and
    ``test_data``, the history holds the test log-likelihood every N epochs (a learning curve).

    Returns:
        The per-epoch history (see :class:`TrainResult`).

    Raises:
        ValueError: an unknown option, a bad setting or bad data, before any work; see
        :func:`fit` for the rest.
    """
    names = {f.name for f in fields(TrainConfig)}
    unknown = set(options) - names
    if unknown:
        raise ValueError(f"unknown training option(s) {sorted(unknown)}; expected some of {sorted(names)}")
    return fit(model, train_data, validation_data, TrainConfig(**options),
               checkpoint_dir=checkpoint_dir, resume=resume, test_data=test_data).history
