"""The Lightning callbacks of a run: early stopping that waits for the KL warm-up
(:class:`WarmupEarlyStopping`), a moving average of the parameters (:class:`ParameterEMA`) and a
time budget per piece of a run (:class:`PieceTimer`). Each keeps its state in the checkpoint
through the public ``state_dict`` / ``load_state_dict`` of a callback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, Timer
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pyrovamp.training.checkpoint import EMA_STATE_KEY

__all__ = ["WarmupEarlyStopping", "ParameterEMA", "PieceTimer", "RunCheckpoint"]


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` for a run folder that may be copied or moved between
    pieces: a state saved in another folder is read with its paths moved into this one (the same
    file names). Lightning's own keeps the old folder's ``best_model_path`` -- a resumed copy read
    the original's ``best.ckpt`` -- and forgets the best score, so that the next epoch would
    count as the best."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        if old is not None and self.dirpath is not None and old != self.dirpath:
            here = Path(self.dirpath)

            def moved(path):
                return str(here / Path(path).name) if path else path

            state_dict = dict(state_dict, dirpath=self.dirpath)
            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                if key in state_dict:
                    state_dict[key] = moved(state_dict[key])
            if isinstance(state_dict.get("best_k_models"), dict):
                state_dict["best_k_models"] = {
                    moved(k): v for k, v in state_dict["best_k_models"].items()
                }
        super().load_state_dict(state_dict)


class WarmupEarlyStopping(EarlyStopping):
    """Lightning's ``EarlyStopping`` on the validation score, checked at the end of every
    training epoch, that tracks the best value from the first epoch but counts patience only
    after ``warmup_epochs`` (during the KL warm-up the ELBO improves because beta grows, not
    because the model does). Keyword arguments as ``EarlyStopping``'s.

    It is an ``EarlyStopping`` so that Lightning runs it after the LightningModule's
    ``on_train_epoch_end``, where the score is logged; after the warm-up the check is
    Lightning's own (its public ``on_train_epoch_end``).
    """

    def __init__(self, warmup_epochs: int = 0, **kwargs: Any):
        super().__init__(check_on_train_epoch_end=True, **kwargs)
        self.warmup_epochs = warmup_epochs

    @property
    def fired(self) -> bool:
        """Patience ran out: the run stopped early (and stays stopped)."""
        return self.wait_count >= self.patience

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch + 1 > self.warmup_epochs:
            super().on_train_epoch_end(trainer, pl_module)
            return
        current = trainer.callback_metrics.get(self.monitor)
        if current is not None:
            current = current.squeeze()
            if torch.isfinite(current) and self.monitor_op(
                current - self.min_delta, self.best_score.to(current.device)
            ):
                self.best_score = current
        self.wait_count = 0


class ParameterEMA(pl.Callback):
    """Exponential moving average of the model's floating-point parameters, updated after every
    optimiser step with ``decay`` (``torch.optim.swa_utils.AveragedModel`` with
    ``get_ema_multi_avg_fn``; the first step copies the parameters). Buffers are never averaged
    (integer buffers such as a flow's permutation stay what they are; running statistics come
    from the live model). The live model is never overwritten: validation and the choice of the
    final parameters read :meth:`averaged_model`.

    The average lives on the model's device; its parameters and step count are the callback's
    checkpoint state (``callbacks[EMA_STATE_KEY]``: ``parameters``, ``n_averaged``,
    ``latest_update_step``).
    """

    def __init__(self, decay: float):
        self.decay = decay
        self._average: AveragedModel | None = None
        self._pending: dict | None = None  # a checkpoint's state, read before fit started
        self.latest_update_step = 0

    @property
    def state_key(self) -> str:
        return EMA_STATE_KEY

    @property
    def average(self) -> AveragedModel:
        """The ``AveragedModel`` (it exists from the start of ``Trainer.fit``)."""
        if self._average is None:
            raise RuntimeError("ParameterEMA holds no average before Trainer.fit starts")
        return self._average

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Copy the model (on its device by now, and restored when the run resumes)."""
        self._average = AveragedModel(
            _model_of(pl_module), use_buffers=False, multi_avg_fn=get_ema_multi_avg_fn(self.decay)
        )
        if self._pending is not None:
            self._load_average(self._pending)
            self._pending = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if trainer.global_step > self.latest_update_step:  # once per optimiser step
            self.average.update_parameters(_model_of(pl_module))
            self.latest_update_step = trainer.global_step

    def averaged_model(self, pl_module: pl.LightningModule) -> torch.nn.Module:
        """The averaged copy of ``pl_module.model``, holding the live model's buffers."""
        avg = self.average.module
        with torch.no_grad():
            for b_avg, b in zip(avg.buffers(), _model_of(pl_module).buffers(), strict=True):
                b_avg.copy_(b)
        return avg

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"latest_update_step": self.latest_update_step}
        if self._average is not None:
            state["parameters"] = {
                k: v.detach() for k, v in self._average.module.named_parameters()
            }
            state["n_averaged"] = self._average.n_averaged.detach()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.latest_update_step = state_dict["latest_update_step"]
        if "parameters" not in state_dict:
            return
        if self._average is None:
            self._pending = state_dict
        else:
            self._load_average(state_dict)

    @torch.no_grad()
    def _load_average(self, state: dict[str, Any]) -> None:
        for name, p in self.average.module.named_parameters():
            p.copy_(state["parameters"][name])
        self.average.n_averaged.copy_(state["n_averaged"])


def _model_of(pl_module: pl.LightningModule) -> torch.nn.Module:
    """``pl_module.model``: the module whose parameters are averaged."""
    model = getattr(pl_module, "model", None)
    if not isinstance(model, torch.nn.Module):
        raise TypeError("ParameterEMA averages pl_module.model, which must be an nn.Module")
    return model


class PieceTimer(Timer):
    """Lightning's ``Timer`` checked at epoch ends, whose budget is per piece of a run: a resumed
    run gets ``max_minutes`` anew instead of inheriting the elapsed time, and trains at least
    one epoch."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass

    def on_fit_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        pass  # Timer would stop a piece before its first epoch
