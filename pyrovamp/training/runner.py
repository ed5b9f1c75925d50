"""Running a training: :func:`fit` (and its notebook face :func:`train`) checks the settings and
the data, builds the plan (:class:`~pyrovamp.training.plan.SVIModule`), the data module and the
callbacks, runs Lightning's ``Trainer`` and leaves the model holding the result's parameters.

A run draws from its own random streams, seeded from ``TrainConfig.seed``
(:func:`pyrovamp._random.isolated_rng`): the caller's torch, NumPy and ``random`` states are as
they were when :func:`fit` returns or raises. It writes its checkpoints atomically with the
run's random states in them, so a run killed at any moment and resumed ends with the same
parameters as the uninterrupted run; a divergence stops it with one line naming the epoch, the
step, the symptom and the last good checkpoint. SIGTERM (a scheduler's end of a time slot) and
SIGINT (Ctrl-C) stop it after the current step, through Lightning's own signal handling, with
:class:`~pyrovamp.errors.TrainingInterrupted` naming the last epoch's checkpoint to resume from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import signal
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pyrovamp._io import remove_stale_temporaries
from pyrovamp._progress import resolve_progress
from pyrovamp._random import isolated_rng
from pyrovamp.errors import CheckpointError, NonFiniteLossError, TrainingInterrupted
from pyrovamp.models.vae import check_data
from pyrovamp.training.callbacks import (
    ParameterEMA,
    PieceTimer,
    RunCheckpoint,
    WarmupEarlyStopping,
)
from pyrovamp.training.checkpoint import (
    BEST,
    CHECKPOINT,
    FORMAT,
    MODEL,
    atomic_save,
    check_epochs,
    epochs_done,
    load_model_weights,
    read_checkpoint,
)
from pyrovamp.training.config import TrainConfig, check_resume, preset_training
from pyrovamp.training.data import EpochData, SVIDataModule
from pyrovamp.training.hardware import (
    forks_processes,
    model_device,
    resolve_accelerator,
    resolve_precision,
)
from pyrovamp.training.plan import SVIModule
from pyrovamp.training.trackers import finish_loggers, kept_environment, make_loggers

__all__ = ["TrainResult", "AtomicCheckpointIO", "quiet_lightning", "fit", "train"]


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
        accelerator: where it trained: ``"cpu"`` or ``"gpu"`` (``"auto"`` resolved).
        precision: the precision it trained in (``"auto"`` resolved): ``"32"``,
            ``"bf16-mixed"`` or ``"16-mixed"``.
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
    accelerator: str = "cpu"
    precision: str = "32"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with pyrovamp's files: written atomically
    (:func:`~pyrovamp.training.checkpoint.atomic_save`), read back with ``weights_only=True``
    (:func:`~pyrovamp.training.checkpoint.read_checkpoint`)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return read_checkpoint(path, map_location=map_location)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's known, harmless chatter during :func:`fit` (device banners, tips,
    "checkpoint directory exists" on resume, few-workers hints for in-memory tensors, a
    deprecation inside Lightning) and Pyro's "Encountered NaN/inf" at every step of a diverging
    epoch (:func:`fit` says it once, in the one line of its
    :class:`~pyrovamp.errors.NonFiniteLossError`); warnings and errors of every other kind
    still show."""
    names = (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.pytorch",
        "lightning.fabric.utilities.distributed",
    )
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for msg in (
            ".*does not have many workers.*",
            ".*exists and is not empty.*",
            ".*LeafSpec.*",
            ".*smaller than the logging interval.*",
            ".*litlogger.*",
            # the epoch's metrics are computed identically on every process
            ".*sync_dist=True.*",
            "Encountered (NaN|[+-]inf)",
        ):
            warnings.filterwarnings("ignore", message=msg)
        for lg in loggers:
            lg.setLevel(max(lg.level, logging.WARNING))
        try:
            yield
        finally:
            for lg, lv in zip(loggers, levels, strict=True):
                lg.setLevel(lv)


def _checked(model: torch.nn.Module, x, name: str):
    """``x`` checked against ``model`` (:func:`pyrovamp.check_data` for pyrovamp's models; a
    tensor for any other model), or ``None``."""
    if x is None:
        return None
    input_dim, likelihood = getattr(model, "input_dim", None), getattr(model, "likelihood", None)
    if input_dim is not None and likelihood is not None:
        return check_data(x, input_dim, likelihood, name)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _callbacks(config: TrainConfig, folder: Path, validated: bool):
    """The run's callbacks: ``(callbacks, best, early, ema)``, the last three ``None`` where
    off."""
    callbacks: list[pl.Callback] = []
    best = early = None
    if validated:
        best = RunCheckpoint(
            dirpath=folder,
            filename=Path(BEST).stem,
            monitor=config.monitor,
            mode="max",
            save_top_k=1,
            save_weights_only=True,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )
        callbacks.append(best)
        if config.patience is not None:
            early = WarmupEarlyStopping(
                config.warmup_epochs,
                monitor=config.monitor,
                mode="max",
                patience=config.patience,
                check_finite=True,
            )
            callbacks.append(early)
    # after the best-parameters checkpoint, so the last checkpoint holds its updated state
    callbacks.append(
        RunCheckpoint(
            dirpath=folder,
            filename=Path(CHECKPOINT).stem,
            save_top_k=1,
            monitor=None,
            every_n_epochs=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )
    )
    ema = ParameterEMA(config.ema_decay) if config.ema_decay is not None else None
    if ema is not None:
        callbacks.append(ema)
    # always present (without a budget when max_minutes is None), so that a run made in pieces
    # resumes without Lightning's warning about a callback missing from the checkpoint
    callbacks.append(
        PieceTimer(
            duration=None if config.max_minutes is None else timedelta(minutes=config.max_minutes),
            interval="epoch",
            verbose=False,
        )
    )
    return callbacks, best, early, ema


def _choose_parameters(model, trainer, module, best, ema) -> str:
    """Load the result's parameters into ``model``: the best validated ones, else the average,
    else the last; chosen by the process of rank 0 and sent to the others (no shared file
    system needed). Returns ``"best"``, ``"averaged"`` or ``"last"``."""
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
    return source


def _interruption(error: BaseException, trainer) -> str | None:
    """The signal that stopped Lightning's ``fit``: ``"SIGTERM"`` (Lightning's
    ``SIGTERMException`` after the step, or a SIGTERM turned into ``KeyboardInterrupt`` by a
    handler of the caller's), ``"SIGINT"`` (Lightning's graceful shutdown on
    ``KeyboardInterrupt`` ends in ``SystemExit(1)``), else ``None``."""
    sigterm = trainer is not None and bool(trainer.received_sigterm)
    if isinstance(error, SIGTERMException):
        return "SIGTERM"
    # Lightning's shutdown on Ctrl-C ends in SystemExit(1) -- or, in a thread other than the
    # main one, in the ValueError of its signal.signal call; whatever its teardown raises while
    # handling the interrupt (a logger's file cut short) has the KeyboardInterrupt as context
    context: BaseException | None = error
    for _ in range(20):  # a chain of contexts, not a cycle
        if context is None:
            break
        if isinstance(context, KeyboardInterrupt):
            return "SIGTERM" if sigterm else "SIGINT"
        context = context.__context__
    return None


def _checkpoint_epochs(path: Path) -> int:
    """The epochs completed in the checkpoint ``path`` (0 when there is none)."""
    if not path.is_file():
        return 0
    return epochs_done(read_checkpoint(path, map_location="cpu"))


def _back_home(model: torch.nn.Module, home: torch.device | None) -> None:
    """Put ``model`` back on the device it was given on (Lightning's teardown leaves it on the
    CPU)."""
    if home is not None and model_device(model) != home:
        model.to(home)


def fit(
    model: torch.nn.Module,
    train_data,
    validation_data=None,
    config: TrainConfig | None = None,
    *,
    checkpoint_dir=None,
    resume: bool = False,
    test_data=None,
    **overrides,
) -> TrainResult:
    """Train ``model`` with a Pyro ELBO on Lightning; the model is returned in evaluation mode
    holding the best (or averaged, or last) parameters.

    Args:
        model: an ``nn.Module`` with Pyro ``model(x)`` and ``guide(x)`` (``VAE``, ``HVAE``, ...).
        train_data: ``(N, D)`` training data (tensor, numpy array; checked against the model
            before any work), or a callable ``sampler(generator=None) -> (N, D)`` drawing a fresh
            binarisation per epoch (``Dataset.train_sampler``).
        validation_data: ``(M, D)`` data for early stopping and the choice of the best
            parameters (``None``: the last or averaged parameters are kept).
        config: a :class:`~pyrovamp.training.config.TrainConfig`; keyword ``overrides`` replace
            its fields.
        checkpoint_dir: folder for ``checkpoint.ckpt`` (the last epoch's full state),
            ``best.ckpt``, ``model.pt`` (the result's parameters) and the logs; ``None``: a
            temporary folder, removed afterwards.
        resume: continue from ``checkpoint_dir/checkpoint.ckpt``; only the settings of
            :data:`~pyrovamp.training.config.RESUMABLE` may differ from the run's.
        test_data: ``(M, D)`` test points whose log-likelihood is estimated every
            ``config.test_every`` epochs (a fixed subset: e.g.
            :func:`pyrovamp.data.spread_subset` of the test set); never used for training or
            for the choice of parameters.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: a bad setting or bad data (before any work); ``CheckpointError`` (a
            ``ValueError``): resuming from a missing, corrupt or foreign checkpoint, or with a
            changed setting; ``ArgumentTypeError`` (a ``TypeError`` and ``ValueError``): a
            setting of the wrong type (e.g. ``optimizer=42``); ``NonFiniteLossError``: training
            diverged (a non-finite loss, parameter or validation score, or a distribution
            refusing non-finite arguments); the model then holds the last good checkpoint's
            parameters (a new run without one: its initial parameters);
            ``TrainingInterrupted`` (a ``KeyboardInterrupt``): SIGTERM or SIGINT stopped the run
            after the step (``.epoch``, ``.checkpoint``: the last epoch's checkpoint, which
            ``resume=True`` continues; the model holds its parameters).
    """
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    config.validate()
    sampler = (
        train_data if callable(train_data) and not isinstance(train_data, torch.Tensor) else None
    )
    check = None
    if sampler is None:
        first = train_data = _checked(model, train_data, "train")
    else:
        check = functools.partial(_checked, model, name="train")
        first = check(sampler(generator=torch.Generator().manual_seed(config.seed)))
    validation_data = _checked(model, validation_data, "validation")
    test_data = _checked(model, test_data, "test")
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
        remove_stale_temporaries(folder)  # of a run killed while writing a checkpoint
    ckpt_path = folder / CHECKPOINT
    max_epochs = config.epochs
    if resume:
        state = read_checkpoint(ckpt_path, map_location="cpu")
        check_resume(state["pyrovamp"]["config"], config, ckpt_path)
        check_epochs(state, config.epochs, ckpt_path)
        if state["pyrovamp"].get("stopped_early"):  # a finished run stays finished
            max_epochs = min(max_epochs, int(state["epoch"]) + 1)
    else:
        if ckpt_path.exists() or (folder / BEST).exists():
            raise CheckpointError(
                f"{folder} already holds a run's checkpoint; pass resume=True to "
                "continue it, or choose another checkpoint_dir"
            )

    # a new run that diverges before its first checkpoint goes back to these
    initial = (
        None
        if resume
        else {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    )
    # the decisions taken for the user are said once, by the first process
    talk = getattr(rank_zero_only, "rank", 0) == 0
    accelerator, devices = resolve_accelerator(config, model, log=talk)
    strategy = str(config.strategy)
    precision = resolve_precision(
        str(config.precision), accelerator, devices, log=talk, strategy=strategy
    )
    trained_in = state["pyrovamp"].get("precision") if resume else None
    if trained_in is not None and trained_in != precision and talk:
        warnings.warn(
            f"resuming {ckpt_path} in precision {precision!r}; it trained in {trained_in!r} "
            "before (precision 'auto' on other hardware): the run will not be bit-identical "
            "to an uninterrupted one",
            UserWarning,
            stacklevel=2,
        )
    on_gpu = accelerator == "gpu"
    if on_gpu and not forks_processes(strategy):
        torch.cuda.init()  # so that the caller's CUDA streams are saved and given back
    home = model_device(model)  # Lightning's teardown moves the module to the CPU
    module = SVIModule(model, config, test_data)
    module.checkpoint_path = ckpt_path
    module.precision_resolved = precision
    data = SVIDataModule(
        EpochData(first, sampler, config.seed, check),
        validation_data,
        config.batch_size,
        config.seed,
    )
    callbacks, best, early, ema = _callbacks(config, folder, validation_data is not None)
    # a bar where someone watches (Lightning's bar writes to stdout), else one log line per
    # epoch (SVIModule.epoch_lines)
    shown = resolve_progress(config.progress, stream=sys.stdout) if talk else False
    module.epoch_lines = shown == "lines"
    main_thread = threading.current_thread() is threading.main_thread()
    sigint = signal.getsignal(signal.SIGINT) if main_thread else None
    trainer = None
    loggers: list = []
    model.train()
    try:
        # the run's own random streams: a new run seeds them from config.seed, a resumed one
        # restores the checkpoint's (SVIModule.on_load_checkpoint); the caller's come back after
        with isolated_rng(config.seed, cuda=on_gpu), quiet_lightning(), kept_environment():
            loggers = make_loggers(
                config, folder, resume=resume, write=talk, temporary=tmp is not None
            )
            if not resume:
                for lg in loggers:
                    lg.log_hyperparams(config.to_dict())
            trainer = pl.Trainer(
                accelerator=accelerator,
                devices=devices,
                num_nodes=config.num_nodes,
                strategy=config.strategy,
                precision=precision,  # type: ignore[arg-type]  # one of PRECISIONS
                max_epochs=max_epochs,
                logger=loggers or False,
                callbacks=callbacks,
                enable_progress_bar=shown is True,
                enable_model_summary=False,
                num_sanity_val_steps=0,
                limit_val_batches=0,
                use_distributed_sampler=False,
                default_root_dir=str(folder),
                log_every_n_steps=1,
                gradient_clip_val=None,
                deterministic=False,
                plugins=[AtomicCheckpointIO()],
            )
            trainer.fit(
                module, datamodule=data, ckpt_path=ckpt_path if resume else None, weights_only=True
            )
            if trainer.received_sigterm:  # after Lightning's last check: stop here all the same
                raise SIGTERMException
    except BaseException as e:  # the tracker runs end as failed, whatever stopped the run
        diverged = isinstance(e, NonFiniteLossError)
        stopped_by = None if diverged else _interruption(e, trainer)
        finish_loggers(loggers, failed=True)
        if stopped_by is None and not diverged:
            if tmp is not None:
                tmp.cleanup()
            raise
        if ckpt_path.is_file():  # leave the model at the last good (or last saved) parameters
            load_model_weights(model, ckpt_path)
        elif initial is not None:
            model.load_state_dict(initial)
        _back_home(model, home)
        model.eval()
        epochs = _checkpoint_epochs(ckpt_path)
        if tmp is not None:
            tmp.cleanup()
        if stopped_by is None:
            raise
        raise TrainingInterrupted(
            stopped_by, epochs, ckpt_path if tmp is None and epochs else None
        ) from None
    finally:
        if sigint is not None:  # Lightning ignores SIGINT while it shuts down
            signal.signal(signal.SIGINT, sigint)
    stopped_early = early is not None and early.fired
    finished = stopped_early or trainer.current_epoch >= max_epochs
    best_val = None
    if best is not None and best.best_model_score is not None:
        best_val = float(best.best_model_score)
    source = _choose_parameters(model, trainer, module, best, ema)
    _back_home(model, home)
    model.eval()
    result = TrainResult(
        history=list(module.history),
        epochs=trainer.current_epoch,
        finished=bool(finished),
        stopped_early=bool(stopped_early),
        best_val_elbo=best_val,
        train_seconds=module.train_seconds,
        source=source,
        checkpoint_dir=None if tmp is not None else folder,
        accelerator=accelerator,
        precision=precision,
    )
    if trainer.is_global_zero and tmp is None:
        atomic_save(
            {
                "pyrovamp": {
                    "format": FORMAT,
                    "model_class": type(model).__name__,
                    "scored_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "source": source,
                    "epochs": result.epochs,
                    "finished": result.finished,
                    "stopped_early": result.stopped_early,
                    "best_val_elbo": best_val,
                    "history": result.history,
                    "train_seconds": result.train_seconds,
                    "config": config.to_dict(),
                }
            },
            folder / MODEL,
        )
    result.trainer = trainer
    if tmp is not None:  # no run folder to add files to: the tracker runs end here
        finish_loggers(trainer.loggers)
        tmp.cleanup()
    return result


def train(
    model: torch.nn.Module,
    train_data,
    validation_data=None,
    *,
    checkpoint_dir=None,
    resume: bool = False,
    test_data=None,
    preset: str | None = None,
    **options,
) -> list[dict]:
    """Train ``model`` on Lightning with a Pyro ELBO (the notebook face of :func:`fit`).

    ``options`` are :class:`~pyrovamp.training.config.TrainConfig` fields -- the same settings
    as ``pyrovamp train`` (``epochs``, ``batch_size``, ``lr``, ``optimizer`` (a name or a
    ``torch.optim.Optimizer`` subclass, with ``optimizer_kwargs``), ``loss`` (a name or an
    object with ``differentiable_loss``, e.g. ``pyro.infer.TraceMeanField_ELBO(...)``),
    ``warmup_epochs``, ``patience``, ``ema_decay``, ``lr_decay``, ``lr_patience``,
    ``val_bound``, ``val_num_samples``, ``accelerator``, ``devices``, ``strategy``,
    ``precision``, ``logger``, ``max_minutes``, ``test_every``, ...). Their defaults are the
    ``"book"`` preset's; ``preset="paper"`` or ``"fast"`` starts from that preset's training
    settings instead (:func:`pyrovamp.training.config.preset_training`; the preset's model
    settings describe the model to build and are not applied), and the ``options`` given
    override it. The model comes back in evaluation mode with the best (validated), averaged or
    last parameters. With ``test_every=N`` and ``test_data``, the history holds the test
    log-likelihood every N epochs (a learning curve).

    Returns:
        The per-epoch history (see :class:`TrainResult`).

    Raises:
        ValueError: an unknown option or preset, a bad setting or bad data, before any work;
            see :func:`fit` for the rest.
    """
    names = {f.name for f in fields(TrainConfig)}
    unknown = set(options) - names
    if unknown:
        raise ValueError(
            f"unknown training option(s) {sorted(unknown)}; expected some of {sorted(names)}"
        )
    settings = {} if preset is None else preset_training(preset)
    return fit(
        model,
        train_data,
        validation_data,
        TrainConfig(**{**settings, **options}),
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        test_data=test_data,
    ).history
