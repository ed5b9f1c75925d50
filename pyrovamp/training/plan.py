"""The training plan: a ``LightningModule`` whose loss is a Pyro ELBO (:class:`SVIModule`).

The pattern is Pyro's own (``examples/svi_lightning.py``, the tutorial "SVI with PyTorch
Lightning"; scvi-tools trains its Pyro models the same way): ``training_step`` returns Pyro's
differentiable loss (``Trace_ELBO().differentiable_loss(model.model, model.guide, x)``, or
``TraceMeanField_ELBO`` / the IWAE bound) divided by the batch size, a ``torch.optim`` optimiser
steps the model's parameters, and Lightning's ``Trainer`` runs the loop. Pyro's global parameter
store is not used for optimisation, so training works with either value of ``pyro.settings``
``module_local_params``. On top of that the plan adds KL warm-up (:class:`ScaleLatents`,
:func:`beta_at`), validation at the end of every epoch on the scored (averaged or live)
parameters, the learning-rate decay on that score and the check for non-finite losses.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import JitTrace_ELBO, JitTraceMeanField_ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.scale_messenger import ScaleMessenger

from pyrovamp._random import derive_seed
from pyrovamp.errors import NonFiniteLossError
from pyrovamp.infer.importance import IWAELoss, elbo_terms, log_likelihood
from pyrovamp.nn.layers import parameter_chunks
from pyrovamp.registration import paused
from pyrovamp.training.callbacks import ParameterEMA, WarmupEarlyStopping
from pyrovamp.training.checkpoint import FORMAT, rng_state, set_rng_state
from pyrovamp.training.config import (
    TEST_STREAM,
    VALIDATION_IWAE_STREAM,
    VALIDATION_STREAM,
    TrainConfig,
    optimizer_class,
)
from pyrovamp.training.optim import AdamNormGrad

logger = logging.getLogger("pyrovamp.training")

__all__ = [
    "LOSSES",
    "ScaleLatents",
    "beta_at",
    "make_loss",
    "divergence",
    "SVIModule",
    "epoch_line",
]

LOSSES = {
    "trace": Trace_ELBO,
    "meanfield": TraceMeanField_ELBO,
    "jit_trace": JitTrace_ELBO,
    "jit_meanfield": JitTraceMeanField_ELBO,
    "iwae": IWAELoss,
    "iwae_dreg": IWAELoss,
}
"""The losses by the names of :data:`pyrovamp.training.config.LOSS_NAMES` (build one with
:func:`make_loss`)."""


class ScaleLatents(ScaleMessenger):
    """``poutine.scale`` restricted to latent (unobserved) sample sites: multiplies their
    log-densities by ``scale`` -- in model and guide alike, this scales the KL term of the ELBO
    (KL warm-up) and leaves the reconstruction term alone."""

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.scale * msg["scale"]


def beta_at(epoch: int, warmup_epochs: int) -> float:
    """KL weight of (0-based) ``epoch``: ``min(1, (epoch + 1) / warmup_epochs)`` (1 without
    warm-up; Bowman et al. 2016, the VampPrior paper sec. 4)."""
    return 1.0 if warmup_epochs == 0 else min(1.0, (epoch + 1) / warmup_epochs)


def make_loss(config: TrainConfig):
    """The loss object of ``config.loss``: for a name, a Pyro ELBO (one data plate, vectorised
    particles) or :class:`~pyrovamp.infer.importance.IWAELoss`; an object is returned as given.
    Each has ``differentiable_loss(model, guide, x)`` (nats, summed over the batch)."""
    if not isinstance(config.loss, str):
        return config.loss
    if config.loss in ("iwae", "iwae_dreg"):
        estimator = "dreg" if config.loss == "iwae_dreg" else "iwae"
        return IWAELoss(config.num_particles, estimator=estimator)
    kw = {
        "num_particles": config.num_particles,
        "vectorize_particles": config.num_particles > 1,
        "max_plate_nesting": 1,
    }
    if config.loss.startswith("jit"):
        kw["ignore_jit_warnings"] = True
    return LOSSES[config.loss](**kw)


def _nonfinite_parameter(model: torch.nn.Module) -> str | None:
    """The name of ``model``'s first parameter holding a NaN or an infinity, or ``None``."""
    for name, p in model.named_parameters():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            return name
    return None


def _nonfinite_site(model: torch.nn.Module, x: torch.Tensor) -> str | None:
    """Run ``model``'s guide and model on ``x`` once more with Pyro's validation off and name
    the first sample site whose value is not finite or whose log-density is NaN (the arguments
    of its distribution are); ``None`` when all are finite or the run fails anyway (then the
    failure is not a divergence)."""
    try:
        model_fn = cast(Callable[..., Any], model.model)
        guide_fn = cast(Callable[..., Any], model.guide)
        with torch.no_grad(), pyro.validation_enabled(False):
            guide = poutine.trace(guide_fn).get_trace(x)
            joint = poutine.trace(poutine.replay(model_fn, trace=guide)).get_trace(x)
            for trace in (guide, joint):
                for name, site in trace.nodes.items():
                    if site["type"] != "sample":
                        continue
                    value, fn = site["value"], cast(Any, site["fn"])
                    if (
                        isinstance(value, torch.Tensor)
                        and value.is_floating_point()
                        and not bool(torch.isfinite(value).all())
                    ):
                        return f"a non-finite value at site {name!r}"
                    if bool(torch.isnan(fn.log_prob(value)).any()):
                        return f"a NaN log-density at site {name!r}"
    except (ValueError, RuntimeError, IndexError, TypeError, AttributeError):
        return None
    return None


def divergence(model: torch.nn.Module, x: torch.Tensor) -> str | None:
    """What a failed training or validation step on ``x`` shows of a divergence: a non-finite
    parameter of ``model``, or a non-finite sample or NaN log-density when its guide and model
    run on ``x`` (a distribution refusing NaN arguments raises Pyro's "Error while computing
    log_prob at site ..." first); ``None`` when nothing is non-finite (the failure is then not
    a divergence and is raised as it is)."""
    name = _nonfinite_parameter(model)
    if name is not None:
        return f"parameter {name} is not finite"
    return _nonfinite_site(model, x)


def epoch_line(record: dict, max_epochs: int | None = None) -> str:
    """One epoch of the history as one line: ``epoch 12/1000: train loss 95.31, val_elbo
    -97.20, 0.4 s`` (the validation and test scores present in ``record``, nats per data
    point; ``beta`` during the KL warm-up)."""
    head = f"epoch {record['epoch']}" + (f"/{max_epochs}" if max_epochs else "")
    parts = [f"train loss {record['train_loss']:.2f}"]
    if record.get("beta", 1.0) < 1.0:
        parts.append(f"beta {record['beta']:.3f}")
    for key in ("val_elbo", "val_iwae", "test_log_likelihood"):
        if key in record:
            parts.append(f"{key} {record[key]:.2f}")
    parts.append(f"{record.get('seconds', 0.0):.1f} s")
    return f"{head}: {', '.join(parts)}"


class SVIModule(pl.LightningModule):
    """A ``LightningModule`` around any model with Pyro ``model(x)`` / ``guide(x)`` methods whose
    loss is a Pyro ELBO (``differentiable_loss``), divided by the batch size: nats per data point.

    Args:
        model: e.g. :class:`pyrovamp.VAE` (an ``nn.Module`` with ``model`` and ``guide``).
        config: a :class:`~pyrovamp.training.config.TrainConfig`.
        test_data: ``(M, D)`` test points for ``config.test_every`` (or ``None``).

    Logged per epoch (Lightning's logger) and appended to ``history``: ``train_loss``, ``beta``,
    ``lr``, ``val_elbo``, ``val_reconstruction``, ``val_kl``, ``val_iwae`` (``val_bound="iwae"``)
    and, every ``test_every`` epochs, ``test_log_likelihood`` (nats per data point). With
    ``epoch_lines`` set (:func:`~pyrovamp.training.fit` does where no progress bar is shown) each
    epoch also gives one log line (logger ``pyrovamp.training``, level INFO): :func:`epoch_line`.

    Raises (during ``Trainer.fit``):
        NonFiniteLossError: training diverged -- the loss, a parameter or the validation score
            became NaN/inf, or a distribution refused non-finite arguments (a ``ValueError`` of
            Pyro's validation, turned into this error only when something is non-finite); one
            line naming the epoch, the step, the symptom and the last good checkpoint.
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, test_data=None):
        super().__init__()
        self.model = model
        self.config = config
        self.test_data = test_data
        self.epoch_lines = False
        self.loss_fn = make_loss(config)
        # Pyro's own ELBOs and the IWAE bound read no parameter statements (the optimiser holds
        # the module's tensors): skip issuing them on every step. A JIT ELBO, or a loss object
        # of the user's, may read them from the trace, so they keep them. Pyro's argument and
        # shape checks (host synchronisations on a GPU) run on a run's first step only: after
        # it, what they would catch is a divergence, which the finite checks of the loss and
        # the parameters report.
        self._statements = type(self.loss_fn) not in (Trace_ELBO, TraceMeanField_ELBO, IWAELoss)
        self.beta = 1.0
        self.history: list[dict] = []
        self.train_seconds = 0.0
        self.checkpoint_path: Path | None = None
        self.precision_resolved: str | None = None  # set by fit: config.precision resolved
        self._reset_epoch_stats()

    def _reset_epoch_stats(self):
        self._loss_sum = None
        self._count = 0
        self._bad_step = None
        self._t0 = time.perf_counter()

    # the model's Pyro functions under the KL weight of this epoch (no handler at weight 1)
    def _model(self, x):
        if self.beta == 1.0:
            return self.model.model(x)
        with ScaleLatents(self.beta):
            return self.model.model(x)

    def _guide(self, x):
        if self.beta == 1.0:
            return self.model.guide(x)
        with ScaleLatents(self.beta):
            return self.model.guide(x)

    def configure_optimizers(self):
        params = list(self.model.parameters())
        cls = optimizer_class(self.config.optimizer)
        if issubclass(cls, AdamNormGrad):  # the paper's tensors, block by block
            params = [{"params": params, "norm_chunks": parameter_chunks(self.model)}]
        optimizer = cls(params, lr=self.config.lr, **(self.config.optimizer_kwargs or {}))
        if self.config.lr_decay is None:
            return optimizer
        # threshold 0 in absolute units: any better validation score counts, as for early
        # stopping (the default relative threshold misjudges a negative score)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",
            factor=self.config.lr_decay,
            patience=self.config.lr_patience,
            threshold=0.0,
            threshold_mode="abs",
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": plateau,
                "monitor": self.config.monitor,
                "interval": "epoch",
                "frequency": 1,
            },
        }

    def lr_scheduler_step(self, scheduler, metric):
        """Nothing: the decay steps in :meth:`on_train_epoch_end` (Lightning would step it after
        the epoch's checkpoints are written, so a resumed run would miss one step)."""

    def _decay_lr(self, score: float) -> None:
        """Step the learning-rate decay on the validation score, after the KL warm-up only (during
        it the ELBO moves with beta, as for :class:`WarmupEarlyStopping`)."""
        if self.config.lr_decay is not None and self.current_epoch + 1 > self.config.warmup_epochs:
            plateau = self.lr_schedulers()
            assert isinstance(plateau, torch.optim.lr_scheduler.ReduceLROnPlateau)
            plateau.step(score)

    def on_train_epoch_start(self):
        self.beta = beta_at(self.current_epoch, self.config.warmup_epochs)
        self._reset_epoch_stats()

    def training_step(self, batch, batch_idx):
        x = batch
        try:
            with contextlib.ExitStack() as stack:
                if not self._statements:
                    stack.enter_context(paused())
                if self.global_step > 0:  # the first step ran Pyro's checks of the model
                    stack.enter_context(pyro.validation_enabled(False))
                loss = self.loss_fn.differentiable_loss(self._model, self._guide, x) / x.shape[0]
        except (ValueError, RuntimeError, IndexError) as e:
            symptom = divergence(self.model, x)
            if symptom is None:
                raise
            raise NonFiniteLossError(self._diverged(self.global_step, symptom)) from e
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

    def _diverged(self, step: int, symptom: str) -> str:
        """The one line of a divergence at (0-based) global optimiser ``step`` (counted over the
        whole run, not within the epoch)."""
        where = (
            f"the last good checkpoint is {self.checkpoint_path}"
            if (self.checkpoint_path is not None and self.checkpoint_path.is_file())
            else "no checkpoint was written yet"
        )
        return (
            f"training diverged at epoch {self.current_epoch + 1}, step {int(step) + 1} "
            f"({symptom}); {where}; try a lower learning rate"
        )

    def on_train_epoch_end(self):
        total = (
            self._loss_sum
            if self._loss_sum is not None
            else torch.zeros((), dtype=torch.float64, device=self.device)
        )
        stats = torch.stack(
            [total, torch.tensor(float(self._count), dtype=torch.float64, device=total.device)]
        )
        stats = self.trainer.strategy.reduce(stats, reduce_op="sum")
        bad = self._bad_step is not None and int(self._bad_step) >= 0
        if bad or not torch.isfinite(stats[0]):
            step = int(self._bad_step) if bad else self.global_step - 1
            raise NonFiniteLossError(self._diverged(step, "the loss is not finite"))
        name = _nonfinite_parameter(self.model)
        if name is not None:
            raise NonFiniteLossError(
                self._diverged(self.global_step - 1, f"parameter {name} is not finite")
            )
        record = {
            "epoch": self.current_epoch + 1,
            "beta": self.beta,
            "train_loss": float(stats[0] / stats[1]),
            "lr": float(self.trainer.optimizers[0].param_groups[0]["lr"]),
        }
        dm = self.trainer.datamodule
        if dm is not None and dm.validation is not None:
            try:
                self._validate(dm.validation, record)
            except (ValueError, RuntimeError, IndexError) as e:
                symptom = divergence(self._scored_model(), dm.validation)
                if symptom is None:
                    raise
                raise NonFiniteLossError(
                    self._diverged(self.global_step - 1, f"validation: {symptom}")
                ) from e
        record["seconds"] = time.perf_counter() - self._t0
        self.train_seconds += record["seconds"]
        every = self.config.test_every
        if every and self.test_data is not None and (self.current_epoch + 1) % every == 0:
            t0 = time.perf_counter()
            scored = self._scored_model()
            ll = log_likelihood(
                scored,
                self.test_data.to(self.device),
                self.config.test_num_samples,
                seed=derive_seed(self.config.seed, TEST_STREAM),
            )
            self._back_to_training(scored)
            record.update(
                test_log_likelihood=float(ll.mean()), test_seconds=time.perf_counter() - t0
            )
        self.history.append(record)
        if self.epoch_lines:
            logger.info("%s", epoch_line(record, self.trainer.max_epochs))
        self.log_dict(
            {
                k: float(v)
                for k, v in record.items()
                if k not in ("epoch", "seconds", "test_seconds")
            },
            on_epoch=True,
            on_step=False,
            rank_zero_only=True,
        )

    def _validate(self, validation: torch.Tensor, record: dict) -> None:
        """Score the scored parameters on the validation data into ``record``, then step the
        learning-rate decay on the score (before this epoch's checkpoints, which hold its
        state)."""
        scored = self._scored_model()
        iwae = self.config.val_bound == "iwae"
        seed, epoch = self.config.seed, self.current_epoch
        terms = elbo_terms(
            scored,
            validation,
            1 if iwae else self.config.val_num_samples,
            seed=derive_seed(seed, VALIDATION_STREAM, epoch),
        )
        record.update(
            val_elbo=float(terms["elbo"].mean()),
            val_reconstruction=float(terms["reconstruction"].mean()),
            val_kl=float(terms["kl"].mean()),
        )
        if iwae:
            record["val_iwae"] = float(
                log_likelihood(
                    scored,
                    validation,
                    self.config.val_num_samples,
                    seed=derive_seed(seed, VALIDATION_IWAE_STREAM, epoch),
                ).mean()
            )
        # one score for all processes, so that every process decays its optimiser alike
        v = float(self.trainer.strategy.broadcast(record[self.config.monitor], src=0))
        record[self.config.monitor] = v
        if not math.isfinite(v):
            raise NonFiniteLossError(
                self._diverged(
                    self.global_step - 1, f"the validation {self.config.monitor} is not finite"
                )
            )
        self._decay_lr(v)
        self._back_to_training(scored)

    def _back_to_training(self, scored: torch.nn.Module) -> None:
        self.model.train()
        if scored is not self.model:
            scored.train()

    def _scored_model(self) -> torch.nn.Module:
        """The model that validation scores: the parameter average when EMA is on."""
        callbacks = self.trainer.callbacks  # type: ignore[attr-defined]  # set at Trainer init
        for cb in callbacks:
            if isinstance(cb, ParameterEMA):
                return cb.averaged_model(self)
        return self.model

    # --- checkpoint contents: the run's own state, all weights-only safe --------------------
    def on_save_checkpoint(self, checkpoint):
        scored = self._scored_model()
        checkpoint["pyrovamp"] = {
            "format": FORMAT,
            "config": self.config.to_dict(),
            "history": self.history,
            "train_seconds": self.train_seconds,
            "model_class": type(self.model).__name__,
            "scored_state": {k: v.detach().clone() for k, v in scored.state_dict().items()},
            "scored": "averaged" if scored is not self.model else "last",
            "rng": rng_state(),
            "precision": self.precision_resolved,  # what it trains in ("auto" resolved)
            "stopped_early": any(
                isinstance(cb, WarmupEarlyStopping) and cb.fired
                for cb in self.trainer.early_stopping_callbacks
            ),
        }

    def on_load_checkpoint(self, checkpoint):
        state = checkpoint["pyrovamp"]
        self.history = list(state["history"])
        self.train_seconds = float(state["train_seconds"])
        set_rng_state(state["rng"])
