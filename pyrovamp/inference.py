"""Training with Pyro's stochastic variational inference (``pyro.infer.SVI``).

:class:`Trainer` runs SVI epochs over mini-batches with KL warm-up (beta from 0 to 1 over
``warmup_epochs``, applied to the latent sites with ``poutine.scale``; Bowman et al. 2016, the
VampPrior paper sec. 4), early stopping on the validation ELBO with the best parameters restored,
and atomic, resumable checkpoints (model, optimiser state, epoch, history, random states).
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import pyro
import pyro.optim
from pyro.infer import (SVI, JitTrace_ELBO, JitTraceMeanField_ELBO, RenyiELBO, Trace_ELBO,
                        TraceMeanField_ELBO)
from pyro.poutine.scale_messenger import ScaleMessenger

from .evaluation import elbo_terms

__all__ = ["TrainConfig", "Trainer", "train", "LOSSES", "OPTIMIZERS", "atomic_save"]

LOSSES = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO,
          "jit_trace": JitTrace_ELBO, "jit_meanfield": JitTraceMeanField_ELBO,
          "iwae": RenyiELBO}
OPTIMIZERS = {"adam": pyro.optim.Adam, "adamax": pyro.optim.Adamax}
_CHECKPOINT_FORMAT = 1


@dataclass
class TrainConfig:
    """Settings of a training run (defaults: the book's Digits protocol).

    Attributes:
        epochs: total number of epochs (a resumed run continues up to it).
        batch_size: data points per SVI step.
        lr: learning rate.
        optimizer: ``"adam"`` or ``"adamax"`` (from ``pyro.optim``).
        loss: ``"trace"`` (``Trace_ELBO``), ``"meanfield"`` (``TraceMeanField_ELBO``, analytic KL
            where one exists), ``"jit_trace"`` or ``"jit_meanfield"`` (their JIT variants), or
            ``"iwae"`` (the importance-weighted bound with ``num_particles`` samples, Burda et al.
            2016, as Pyro's ``RenyiELBO(alpha=0)``).
        num_particles: ELBO samples per data point and step.
        warmup_epochs: KL warm-up length; 0 disables it.
        patience: early-stopping patience in epochs (``None``: no early stopping).
        seed: random seed of parameters' initialisation-independent randomness (batches, samples).
        device: ``"cpu"`` or ``"cuda"``.
        val_num_samples: ELBO samples per validation point.
        max_minutes: stop cleanly (with a checkpoint) once this much time has passed.
        checkpoint_every_s: at most one checkpoint per this many seconds (and always at the end).
        progress: show a tqdm progress bar.
        ema_decay: keep an exponential moving average of the parameters with this decay per step
            (``torch.optim.swa_utils.AveragedModel``); validation, early stopping and the final
            model then use the averaged parameters (Polyak averaging). ``None``: off.
    """

    epochs: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adamax"
    loss: str = "trace"
    num_particles: int = 1
    warmup_epochs: int = 0
    patience: int | None = 20
    seed: int = 0
    device: str = "cpu"
    val_num_samples: int = 1
    max_minutes: float | None = None
    checkpoint_every_s: float = 10.0
    progress: bool = True
    ema_decay: float | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        for name in ("epochs", "batch_size", "num_particles", "val_num_samples"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an integer >= 0, got {self.warmup_epochs!r}")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise ValueError(f"patience must be a positive integer or None, got {self.patience!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {', '.join(LOSSES)}")
        if self.loss == "iwae" and self.num_particles < 2:
            raise ValueError("loss='iwae' needs num_particles >= 2 (the number of importance samples)")
        if self.loss.startswith("jit") and self.warmup_epochs:
            raise ValueError("the JIT losses compile a fixed KL weight: use warmup_epochs=0 with them")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be positive, got {self.max_minutes!r}")
        check_device(self.device)


def check_device(device) -> torch.device:
    """Return ``torch.device(device)``; ``ValueError`` if it is unknown or CUDA is unavailable."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch.cuda.is_available() is False")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return dev


class ScaleLatents(ScaleMessenger):
    """``poutine.scale`` restricted to latent (unobserved) sample sites: multiplies their
    log-densities by ``scale`` -- in model and guide alike, this scales the KL term of the ELBO
    (KL warm-up) and leaves the reconstruction term alone."""

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.scale * msg["scale"]


def atomic_save(obj, path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``: a reader
    (or a run killed mid-write) never sees a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class Trainer:
    """Train a model with Pyro ``model(x)`` / ``guide(x)`` methods by SVI.

    Args:
        model: e.g. :class:`pyrovamp.VAE` (an ``nn.Module`` with ``model``, ``guide`` and a
            ``pyro_name`` under which it registers its parameters).
        config: a :class:`TrainConfig`; keyword arguments override its fields.
        checkpoint_path: where to write checkpoints (``None``: none are written).

    Raises:
        ValueError: a bad setting (see :meth:`TrainConfig.validate`).
    """

    def __init__(self, model, config: TrainConfig | None = None, checkpoint_path=None, **overrides):
        config = dataclasses.replace(config or TrainConfig(), **overrides)
        config.validate()
        self.config = config
        self.device = check_device(config.device)
        self.model = model.to(self.device)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.optim = OPTIMIZERS[config.optimizer]({"lr": config.lr})
        loss_cls = LOSSES[config.loss]
        kw = {"num_particles": config.num_particles, "vectorize_particles": config.num_particles > 1,
              "max_plate_nesting": 1}
        if config.loss.startswith("jit"):
            kw["ignore_jit_warnings"] = True
        if config.loss == "iwae":  # importance-weighted bound (Burda et al. 2016) = Renyi alpha=0
            kw = {"alpha": 0.0, "num_particles": config.num_particles, "max_plate_nesting": 1,
                  "vectorize_particles": True}
        self.beta = 1.0
        self.ema = None
        if config.ema_decay is not None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay),
                                     use_buffers=True)
        self.svi = SVI(self._model, self._guide, self.optim, loss_cls(**kw))
        self.epoch = 0
        self.history: list[dict] = []
        self.best_val = -math.inf
        self.best_state = None
        self.bad_epochs = 0
        self.train_seconds = 0.0
        self.stopped_early = False
        self.finished = False  # epochs reached or stopped early: the model holds the best parameters
        self._last_state = None  # the last (not the best) parameters once finished, to resume from

    # KL warm-up: beta scales the latent sites of model and guide
    def _model(self, x):
        with ScaleLatents(self.beta):
            return self.model.model(x)

    def _guide(self, x):
        with ScaleLatents(self.beta):
            return self.model.guide(x)

    def beta_at(self, epoch: int) -> float:
        """KL weight of (0-based) ``epoch``: ``min(1, (epoch + 1) / warmup_epochs)``."""
        w = self.config.warmup_epochs
        return 1.0 if w == 0 else min(1.0, (epoch + 1) / w)

    def fit(self, train: torch.Tensor, validation: torch.Tensor | None = None,
            resume: bool = False) -> list[dict]:
        """Run SVI epochs until ``config.epochs``, early stopping, or ``max_minutes``.

        Args:
            train: ``(N, D)`` training data (checked against the model before any work), or a
                callable returning a fresh ``(N, D)`` tensor for every epoch (dynamic
                binarisation: ``Dataset.train_sampler``).
            validation: ``(M, D)`` validation data for early stopping (``None``: no early stopping;
                the last parameters are kept).
            resume: continue from ``checkpoint_path`` (which must exist).

        Returns:
            The history: one dict per epoch with ``epoch, beta, train_loss`` (negative
            beta-weighted ELBO, nats per data point), ``val_elbo`` and its two terms
            ``val_reconstruction`` and ``val_kl`` (nats per data point), ``seconds``.

        Raises:
            ValueError: bad data; FileNotFoundError: ``resume`` without a checkpoint.
        """
        cfg = self.config
        sampler = train if callable(train) else None
        if sampler is None:
            train = self._check(train, "train")
        if validation is not None:
            validation = self._check(validation, "validation")
        if resume:
            if self.checkpoint_path is None or not self.checkpoint_path.is_file():
                raise FileNotFoundError(f"cannot resume: no checkpoint at {self.checkpoint_path}")
            self.load_checkpoint(self.checkpoint_path)
        else:
            pyro.set_rng_seed(cfg.seed)
        start = time.perf_counter()
        last_save = time.perf_counter()
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs, initial=self.epoch, disable=not cfg.progress, unit="epoch",
                   desc=type(self.model).__name__, leave=False)
        try:
            if self._last_state is not None:  # continue training from where it stopped
                self.model.load_state_dict(self._last_state)
                self._last_state, self.finished = None, False
            while self.epoch < cfg.epochs and not self.stopped_early:
                t0 = time.perf_counter()
                self.beta = self.beta_at(self.epoch)
                self.model.train()
                if sampler is not None:  # drawn after seeding: the same in one run or in pieces
                    train = self._check(sampler(), "train")
                n = train.shape[0]
                perm = torch.randperm(n).to(self.device)
                total = 0.0
                for i in range(0, n, cfg.batch_size):
                    total += self.svi.step(train[perm[i:i + cfg.batch_size]])
                    if self.ema is not None:
                        self.ema.update_parameters(self.model)
                record = {"epoch": self.epoch + 1, "beta": self.beta, "train_loss": total / n}
                scored = self.ema.module if self.ema is not None else self.model
                if validation is not None:
                    terms = elbo_terms(scored, validation, cfg.val_num_samples)
                    v = float(terms["elbo"].mean())
                    record.update(val_elbo=v, val_reconstruction=float(terms["reconstruction"].mean()),
                                  val_kl=float(terms["kl"].mean()))
                    if not math.isfinite(v):
                        raise FloatingPointError(f"validation ELBO is {v} at epoch {self.epoch + 1}")
                    if v > self.best_val:
                        self.best_val, self.bad_epochs = v, 0
                        self.best_state = {k: t.detach().clone() for k, t in scored.state_dict().items()}
                    elif self.epoch + 1 > cfg.warmup_epochs:
                        self.bad_epochs += 1
                record["seconds"] = time.perf_counter() - t0
                self.train_seconds += record["seconds"]
                self.history.append(record)
                self.epoch += 1
                bar.update(1)
                bar.set_postfix(loss=f"{record['train_loss']:.2f}",
                                val=f"{record.get('val_elbo', float('nan')):.2f}")
                if cfg.patience is not None and validation is not None and self.bad_epochs >= cfg.patience:
                    self.stopped_early = True
                    break
                if cfg.max_minutes is not None and time.perf_counter() - start > 60 * cfg.max_minutes:
                    break
                if self.checkpoint_path and time.perf_counter() - last_save > cfg.checkpoint_every_s:
                    self.save_checkpoint(self.checkpoint_path)
                    last_save = time.perf_counter()
        finally:
            bar.close()
        if (self.stopped_early or self.epoch >= cfg.epochs) and not self.finished:
            self.finished = True
            if self.best_state is not None:
                self._last_state = {k: t.detach().clone() for k, t in self.model.state_dict().items()}
                self.model.load_state_dict(self.best_state)
            elif self.ema is not None:
                self._last_state = {k: t.detach().clone() for k, t in self.model.state_dict().items()}
                self.model.load_state_dict(self.ema.module.state_dict())
        if self.checkpoint_path:
            self.save_checkpoint(self.checkpoint_path)
        return self.history

    def _check(self, x, name):
        from .models import check_data

        if hasattr(self.model, "input_dim") and hasattr(self.model, "likelihood"):
            x = check_data(x, self.model.input_dim, self.model.likelihood, name)
        return x.to(self.device)

    # --- checkpoints ---------------------------------------------------------------------------
    def _optim_state(self):
        prefix = self.model.pyro_name + "$$$"
        return {k[len(prefix):]: v for k, v in self.optim.get_state().items() if k.startswith(prefix)}

    def state_dict(self) -> dict:
        """Everything needed to resume: model and optimiser state, epoch, history, early-stopping
        state and all random number generator states."""
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
               "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"format": _CHECKPOINT_FORMAT, "config": asdict(self.config), "epoch": self.epoch,
                "model": self.model.state_dict(), "optimizer": self._optim_state(),
                "history": self.history, "best_val": self.best_val, "best_state": self.best_state,
                "bad_epochs": self.bad_epochs, "train_seconds": self.train_seconds,
                "finished": self.finished, "stopped_early": self.stopped_early,
                "last_model": self._last_state, "rng": rng,
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved (the model's architecture must match). The model
        gets ``state["model"]`` -- the best parameters once a run has finished; ``fit`` continues
        from the last parameters (``state["last_model"]``) if asked for more epochs."""
        if state.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(f"unsupported checkpoint format {state.get('format')!r}")
        self.model.load_state_dict(state["model"])
        prefix = self.model.pyro_name + "$$$"
        self.optim.set_state({prefix + k: v for k, v in state["optimizer"].items()})
        self.epoch, self.history = state["epoch"], list(state["history"])
        self.best_val, self.best_state = state["best_val"], state["best_state"]
        self.bad_epochs, self.train_seconds = state["bad_epochs"], state["train_seconds"]
        self.finished, self.stopped_early = state["finished"], state["stopped_early"]
        self._last_state = state["last_model"]
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def save_checkpoint(self, path) -> None:
        """Write :meth:`state_dict` atomically (temporary file, then rename) to ``path``."""
        atomic_save(self.state_dict(), path)

    def load_checkpoint(self, path) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint`."""
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=False))


def train(model, train_data, validation_data=None, *, checkpoint_path=None, resume=False,
          **config) -> list[dict]:
    """Train ``model`` by SVI: ``Trainer(model, TrainConfig(**config), checkpoint_path).fit(...)``.

    Returns the per-epoch history (see :meth:`Trainer.fit`). Raises ``ValueError`` on bad
    settings or data before any work.
    """
    names = {f.name for f in fields(TrainConfig)}
    unknown = set(config) - names
    if unknown:
        raise ValueError(f"unknown training option(s) {sorted(unknown)}; expected some of {sorted(names)}")
    trainer = Trainer(model, TrainConfig(**config), checkpoint_path)
    return trainer.fit(train_data, validation_data, resume=resume)
