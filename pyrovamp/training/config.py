"""The settings of a training run: :class:`TrainConfig`, the named protocols (:data:`PRESETS`)
that the command line and :func:`resolve_config` fill a run's configuration from, and the
settings a resumed run may change (:data:`RESUMABLE`). Importing it does not load Lightning."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, fields
from typing import Any

import torch

from pyrovamp._progress import resolve_progress
from pyrovamp._validate import (
    check_choice,
    check_int,
    check_open_unit,
    check_optional_int,
    check_positive,
    describe,
)
from pyrovamp.errors import ArgumentTypeError, CheckpointError
from pyrovamp.training.hardware import resolve_accelerator
from pyrovamp.training.optim import OPTIMIZERS
from pyrovamp.training.trackers import LOGGERS, logger_names

__all__ = [
    "LOSS_NAMES",
    "OPTIMIZER_NAMES",
    "VAL_BOUNDS",
    "PRECISIONS",
    "ACCELERATORS",
    "LOGGERS",
    "WEIGHT_INITS",
    "LEGACY_TRAINING",
    "TrainConfig",
    "BOOK_TRAINING",
    "PRESETS",
    "RESUMABLE",
    "LEGACY_SETTINGS",
    "PSEUDO_INPUT_INIT",
    "CONV_MODELS",
    "DEFAULT_PRESET",
    "MODEL_KEYS",
    "resolve_config",
    "preset_training",
    "public_name",
    "optimizer_class",
    "saved_config",
    "check_resume",
]


LOSS_NAMES = ("trace", "meanfield", "jit_trace", "jit_meanfield", "iwae", "iwae_dreg")
"""The losses of ``TrainConfig.loss`` (:data:`pyrovamp.training.plan.LOSSES` maps them to
objects)."""
OPTIMIZER_NAMES = ("adam", "adamax", "adamnormgrad")
"""The optimisers of ``TrainConfig.optimizer`` (:data:`pyrovamp.training.optim.OPTIMIZERS`)."""
VAL_BOUNDS = ("elbo", "iwae")
"""The validation scores of ``TrainConfig.val_bound``."""
PRECISIONS = ("32", "bf16-mixed", "16-mixed", "auto")
"""The precisions that ``TrainConfig.precision`` accepts: Lightning's, and ``"auto"``
(:func:`pyrovamp.training.hardware.resolve_precision`)."""
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
"""The accelerators that ``TrainConfig.accelerator`` accepts (``"cuda"`` is ``"gpu"``;
``"auto"``: :func:`pyrovamp.training.hardware.resolve_accelerator`)."""
WEIGHT_INITS = ("default", "he")
"""The initialisations of a run's networks (:func:`pyrovamp.workflow.runs.build_model`)."""
LEGACY_TRAINING = {"lr_decay": None, "lr_patience": 10, "val_bound": "elbo"}
"""The training settings added after runs were made, as those runs trained (constant rate, ELBO):
read back by :func:`saved_config` and the resume check."""

BOOK_TRAINING: dict[str, Any] = {
    "epochs": 1000,
    "batch_size": 64,
    "lr": 1e-3,
    "optimizer": "adamax",
    "warmup_epochs": 0,
    "patience": 50,
    "val_num_samples": 10,
    "val_bound": "elbo",
    "ema_decay": 0.995,
    "lr_decay": None,
    "lr_patience": 10,
    "precision": "32",
}
"""The training settings of the ``"book"`` preset, with which the README's Digits numbers were
made: the book's protocol (J. M. Tomczak, *Deep Generative Modeling*, ch. 4.4.1, Digits: Adamax
with learning rate 1e-3, batch 64, at most 1000 epochs, early stopping on the validation ELBO)
with a parameter average (decay 0.995 per step) and early stopping with patience 50 on a
10-sample validation ELBO, against over-fitting its 1000 training images. The one place these
numbers are written: the field defaults of :class:`TrainConfig` and the ``"book"`` preset are
read from it, so ``TrainConfig()`` trains as ``preset="book"`` does."""

# the random streams a run derives from its seed (pyrovamp._random.derive_seed(seed, stream, ...));
# internal keys, not part of the API
BINARISATION_STREAM, VALIDATION_STREAM, TEST_STREAM, VALIDATION_IWAE_STREAM = 7, 11, 13, 17


@dataclass
class TrainConfig:
    """Settings of a training run (defaults: the ``"book"`` preset's, :data:`BOOK_TRAINING`).

    Attributes:
        epochs: total number of epochs (a resumed run continues up to it).
        batch_size: data points per optimiser step, summed over all processes (the global batch;
            it must be divisible by the number of processes).
        lr: learning rate.
        optimizer: ``"adam"``, ``"adamax"`` (``torch.optim``) or ``"adamnormgrad"`` (Adam on
            per-tensor normalised gradients, the paper's code:
            :class:`pyrovamp.training.AdamNormGrad`); or a ``torch.optim.Optimizer`` subclass
            (e.g. ``torch.optim.AdamW``), built as ``optimizer(params, lr=lr,
            **optimizer_kwargs)``.
        optimizer_kwargs: keyword arguments of the optimiser besides ``lr`` (e.g.
            ``{"weight_decay": 1e-2}``), or ``None``.
        loss: ``"trace"`` (``Trace_ELBO``), ``"meanfield"`` (``TraceMeanField_ELBO``, analytic KL
            where one exists), ``"jit_trace"`` / ``"jit_meanfield"`` (their JIT variants), or
            ``"iwae"`` (the importance-weighted bound with ``num_particles`` samples, Burda et al.
            2016; :class:`pyrovamp.infer.importance.IWAELoss`), or ``"iwae_dreg"`` (the same bound
            with the doubly reparameterised gradient for the guide, Tucker et al. 2019); or any
            object with
            ``differentiable_loss(model, guide, *args)`` -- a Pyro ELBO instance such as
            ``pyro.infer.TraceMeanField_ELBO(max_plate_nesting=1)`` -- used as given (its own
            settings, e.g. its particles, apply; ``num_particles`` does not). A run's files
            record an object by its class (``"pyro.infer.TraceMeanField_ELBO"``): resuming such
            a run needs an object of the same class.
        num_particles: ELBO samples per data point and step (the named losses).
        warmup_epochs: KL warm-up length in epochs; 0 disables it.
        patience: early-stopping patience in epochs after the warm-up (``None``: no early
            stopping).
        seed: random seed of the run (initial shuffles, ELBO samples, binarisations).
        val_num_samples: samples per validation point: ELBO samples averaged (``val_bound
            "elbo"``) or the ``K`` of the importance-weighted bound (``"iwae"``).
        val_bound: the validation score that early stopping, the best parameters and
            ``lr_decay`` follow: ``"elbo"`` (the paper's protocol; logged ``val_elbo``) or
            ``"iwae"``, the importance-weighted bound ``log (1/K) sum_k w_k`` with ``K =
            val_num_samples`` (Burda et al. 2016, eq. 8; logged ``val_iwae``; the ``val_elbo``
            curve then uses one sample). The bound tightens towards ``log p(x)`` as ``K`` grows,
            so it ranks parameters as the test log-likelihood does where the ELBO may not.
        max_minutes: stop cleanly at the end of the epoch after this many minutes of this piece
            of training (a checkpoint is written; continue with ``resume=True``).
        progress: ``True``: Lightning's progress bar; ``False``: nothing; ``"auto"``: the bar on
            a terminal or in a notebook, else one log line per epoch (logger
            ``pyrovamp.training``, level INFO: epoch, train loss, validation score, seconds;
            :func:`pyrovamp._progress.resolve_progress`).
        ema_decay: keep an exponential moving average of the parameters with this decay per step;
            validation, early stopping and the final model use the averaged parameters (Polyak
            averaging). ``None``: off.
        lr_decay: multiply the learning rate by this factor in (0, 1) when the validation score
            (``val_bound``) has not improved for ``lr_patience`` epochs after the KL warm-up
            (PyTorch's ``ReduceLROnPlateau``; needs validation data). ``None``: a constant
            learning rate (the paper's protocol).
        lr_patience: epochs without a better validation score before ``lr_decay`` applies.
        accelerator: ``"auto"`` (follow the model and the machine: the GPU the model's
            parameters are on, else a GPU when CUDA is available, else the CPU;
            :func:`pyrovamp.training.hardware.resolve_accelerator`), ``"cpu"`` or ``"gpu"``.
        devices: number of devices (processes) per machine, or ``"auto"``.
        num_nodes: number of machines.
        strategy: ``"auto"``, ``"ddp"``, ``"ddp_spawn"``, ``"ddp_notebook"`` (Lightning's).
        precision: ``"32"``, ``"bf16-mixed"`` (autocast to bfloat16; AVX-512 BF16 or AMX CPUs
            and recent GPUs; on a CPU without them it is about 10 times slower than float32 and
            warns), ``"16-mixed"`` (float16 autocast with loss scaling on GPUs; Lightning falls
            back to bf16 on the CPU) or ``"auto"``: ``"bf16-mixed"`` where the device computes
            bfloat16 natively, else ``"32"``
            (:func:`pyrovamp.training.hardware.resolve_precision`; the run's files keep
            ``"auto"``).
        logger: one or several (a list, or joined by commas) of ``"csv"`` (in
            ``checkpoint_dir/logs``), ``"tensorboard"``, ``"mlflow"``, ``"wandb"``, ``"none"``
            (:mod:`pyrovamp.training.trackers`).
        device: shorthand for ``accelerator``: ``"cpu"``, ``"cuda"`` or ``"cuda:i"`` (the
            ``--device`` of the command line); ``None`` to use ``accelerator``/``devices``.
        test_every: every this many epochs, estimate the test log-likelihood of the scored
            parameters on the ``test_data`` given to :func:`pyrovamp.training.fit` (a learning
            curve in the history: ``test_log_likelihood``, nats per data point); ``None``:
            never. Not counted as training time.
        test_num_samples: importance samples per test point for ``test_every`` (IS,
            :func:`pyrovamp.log_likelihood`; the same seed at every epoch, so that the points of
            the curve differ by the parameters only).
    """

    epochs: int = BOOK_TRAINING["epochs"]
    batch_size: int = BOOK_TRAINING["batch_size"]
    lr: float = BOOK_TRAINING["lr"]
    optimizer: Any = BOOK_TRAINING["optimizer"]
    loss: Any = "trace"
    num_particles: int = 1
    warmup_epochs: int = BOOK_TRAINING["warmup_epochs"]
    patience: int | None = BOOK_TRAINING["patience"]
    seed: int = 0
    val_num_samples: int = BOOK_TRAINING["val_num_samples"]
    val_bound: str = BOOK_TRAINING["val_bound"]
    max_minutes: float | None = None
    progress: bool | str = "auto"
    ema_decay: float | None = BOOK_TRAINING["ema_decay"]
    lr_decay: float | None = BOOK_TRAINING["lr_decay"]
    lr_patience: int = BOOK_TRAINING["lr_patience"]
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = BOOK_TRAINING["precision"]
    logger: str | tuple[str, ...] | list[str] = "csv"
    device: str | None = None
    test_every: int | None = None
    test_num_samples: int = 1000
    optimizer_kwargs: dict | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` (``ArgumentTypeError``, a ``TypeError`` too, for a value of the
        wrong type) naming the first bad setting, before any work."""
        for name in (
            "epochs",
            "batch_size",
            "num_particles",
            "val_num_samples",
            "num_nodes",
            "test_num_samples",
            "lr_patience",
        ):
            check_int(name, getattr(self, name))
        check_int("warmup_epochs", self.warmup_epochs, low=0)
        check_int("seed", self.seed, low=0)
        check_optional_int("patience", self.patience)
        check_optional_int("test_every", self.test_every)
        check_positive("lr", self.lr)
        check_choice("val_bound", self.val_bound, VAL_BOUNDS)
        if self.val_bound == "iwae" and self.val_num_samples < 2:
            raise ValueError(
                "val_bound='iwae' needs val_num_samples >= 2 (with one sample the "
                "bound is the ELBO)"
            )
        self._validate_loss()
        self._validate_optimizer()
        check_open_unit("ema_decay", self.ema_decay, allow_none=True)
        check_open_unit("lr_decay", self.lr_decay, allow_none=True)
        if self.max_minutes is not None:
            check_positive("max_minutes", self.max_minutes, "positive")
        check_choice("precision", str(self.precision), PRECISIONS)
        logger_names(self.logger)
        resolve_progress(self.progress)
        check_choice("accelerator", self.accelerator, ACCELERATORS)
        if self.devices != "auto" and (
            isinstance(self.devices, bool) or not isinstance(self.devices, int) or self.devices < 1
        ):
            raise ValueError(f"devices must be a positive integer or 'auto', got {self.devices!r}")
        if not isinstance(self.strategy, str) or not self.strategy:
            raise ValueError(f"strategy must be a Lightning strategy name, got {self.strategy!r}")
        accelerator, devices = resolve_accelerator(self, log=False)
        if accelerator == "gpu" and not torch.cuda.is_available():
            raise ValueError(
                "a GPU was asked for (accelerator='gpu' or device='cuda') but "
                "torch.cuda.is_available() is False"
            )
        world = self.num_nodes * (
            devices
            if isinstance(devices, int)
            else len(devices)
            if isinstance(devices, list)
            else 1
        )
        if self.batch_size % world:
            raise ValueError(
                f"batch_size={self.batch_size} (the global batch) must be divisible "
                f"by the number of processes ({world})"
            )

    @property
    def monitor(self) -> str:
        """The logged key of the validation score: ``"val_elbo"`` or ``"val_iwae"``."""
        return "val_iwae" if self.val_bound == "iwae" else "val_elbo"

    def lightning_devices(
        self, model: torch.nn.Module | None = None
    ) -> tuple[str, int | str | list[int]]:
        """``(accelerator, devices)`` for Lightning's ``Trainer``, ``device`` and ``"auto"``
        resolved for ``model`` (:func:`pyrovamp.training.hardware.resolve_accelerator`, without
        its log line)."""
        return resolve_accelerator(self, model, log=False)

    def _validate_loss(self) -> None:
        loss = self.loss
        if isinstance(loss, str):
            if loss not in LOSS_NAMES:
                raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(LOSS_NAMES)}")
            if loss in ("iwae", "iwae_dreg") and self.num_particles < 2:
                raise ValueError(
                    f"loss={loss!r} needs num_particles >= 2 (the number of importance samples)"
                )
        elif isinstance(loss, type) or not callable(getattr(loss, "differentiable_loss", None)):
            hint = f"; call it: {loss.__name__}(...)" if isinstance(loss, type) else ""
            raise ArgumentTypeError(
                f"loss must be one of {', '.join(LOSS_NAMES)} or an object with "
                "differentiable_loss(model, guide, *args) such as a Pyro ELBO instance, got "
                f"{describe(loss)}{hint}"
            )
        if self.warmup_epochs and public_name(loss).split(".")[-1].lower().startswith("jit"):
            raise ValueError(
                "the JIT losses compile a fixed KL weight: use warmup_epochs=0 with them"
            )

    def _validate_optimizer(self) -> None:
        opt, kwargs = self.optimizer, self.optimizer_kwargs
        if isinstance(opt, str):
            if opt not in OPTIMIZER_NAMES:
                raise ValueError(
                    f"unknown optimizer {opt!r}; expected one of {', '.join(OPTIMIZER_NAMES)}"
                )
        elif not (isinstance(opt, type) and issubclass(opt, torch.optim.Optimizer)):
            hint = (
                "; pass the class, e.g. torch.optim.AdamW, and its settings as optimizer_kwargs"
                if isinstance(opt, torch.optim.Optimizer)
                else ""
            )
            raise ArgumentTypeError(
                f"optimizer must be one of {', '.join(OPTIMIZER_NAMES)} or a "
                f"torch.optim.Optimizer subclass (e.g. torch.optim.AdamW), got {describe(opt)}"
                f"{hint}"
            )
        if kwargs is None:
            return
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise ArgumentTypeError(
                "optimizer_kwargs must be a dict of keyword arguments or None, got "
                f"{describe(kwargs)}"
            )
        for k in ("lr", "params"):
            if k in kwargs:
                raise ValueError(
                    f"optimizer_kwargs must not hold {k!r} (the learning rate is lr=, the "
                    "parameters are the model's)"
                )
        cls = optimizer_class(opt)
        try:  # the optimiser's own check of its arguments, on a stand-in parameter
            cls([torch.zeros(1, requires_grad=True)], lr=self.lr, **kwargs)
        except (TypeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            error = ArgumentTypeError if isinstance(e, TypeError) else ValueError
            raise error(
                f"optimizer_kwargs {kwargs!r} are refused by {public_name(cls)}: {first}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values, as a run's files store them: a loss object becomes its
        class's public name (``"pyro.infer.TraceMeanField_ELBO"``), an optimiser class its name
        (``"torch.optim.AdamW"``), tuples lists. Loadable with ``torch.load(weights_only=True)``
        and writable as JSON."""
        d = {f.name: _plain(getattr(self, f.name)) for f in fields(self)}
        d["loss"] = self.loss if isinstance(self.loss, str) else public_name(self.loss)
        d["optimizer"] = (
            self.optimizer if isinstance(self.optimizer, str) else public_name(self.optimizer)
        )
        return d


def optimizer_class(optimizer: str | type) -> type:
    """The optimiser class of ``TrainConfig.optimizer``: a named one
    (:data:`pyrovamp.training.optim.OPTIMIZERS`) or the class given."""
    if isinstance(optimizer, str):
        return OPTIMIZERS[optimizer]
    return optimizer


def public_name(obj: Any) -> str:
    """The shortest importable dotted name of ``obj``'s class (of ``obj`` itself for a class):
    ``"torch.optim.AdamW"`` rather than ``"torch.optim.adamw.AdamW"``; a string stays as it
    is."""
    if isinstance(obj, str):
        return obj
    cls = obj if isinstance(obj, type) else type(obj)
    parts = cls.__module__.split(".")
    for i in range(1, len(parts) + 1):
        module = sys.modules.get(".".join(parts[:i]))
        if module is not None and getattr(module, cls.__qualname__, None) is cls:
            return f"{'.'.join(parts[:i])}.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists, recursively (as JSON and a resume comparison see it)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


RESUMABLE = (
    "epochs",
    "max_minutes",
    "device",
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "logger",
    "progress",
    "test_every",
    "test_num_samples",
)
"""The :class:`TrainConfig` fields a resumed run may change; every other one must be what the
run was trained with (:func:`check_resume`)."""


def check_resume(saved: dict, config: TrainConfig, path: str | os.PathLike) -> None:
    """Refuse to resume with a setting that changes the run.

    Settings are compared as the run's files store them (:meth:`TrainConfig.to_dict`): a loss
    object or an optimiser class by its class's name, so a run trained with
    ``loss=pyro.infer.TraceMeanField_ELBO(...)`` resumes with an object of that class (whose own
    settings are not checked), not with a loss name.

    Args:
        saved: the run's ``TrainConfig`` as a dict (from its checkpoint); a setting that the
            run's pyrovamp predates counts as what it trained with (``LEGACY_TRAINING``).
        config: the settings of the resumed piece.
        path: the checkpoint, for the message.

    Raises:
        CheckpointError: one line naming the first changed setting outside :data:`RESUMABLE`.
    """
    saved = {**LEGACY_TRAINING, **saved}
    now = config.to_dict()
    for k, v in saved.items():
        if k in RESUMABLE or k not in now:
            continue
        if now[k] != v and not (
            isinstance(v, (int, float))
            and isinstance(now[k], (int, float))
            and float(v) == float(now[k])
        ):
            raise CheckpointError(
                f"cannot resume {path}: {k} was {v!r} in this run and is now "
                f"{now[k]!r}; only {', '.join(RESUMABLE)} may change"
            )


# The named protocols, each the whole set of a run's settings.
# "book": the book's Digits model (L=2, K=16, two LeakyReLU layers of 256) with dropout 0.2 in
#   the decoder, trained as BOOK_TRAINING says (TrainConfig's defaults).
# "paper": Tomczak & Welling 2018, sec. 4 and its code (jmtomczak/vae_vampprior): K=500, z=40
#   (z1=z2=40), gated dense layers of 300 units, batch 100, AdamNormGrad lr 5e-4, KL warm-up 100
#   epochs, early stopping 50, at most 2000 epochs, S=5000 at test, He-initialised linear layers,
#   pseudo-inputs a clamped weight started as nearly black images.
# "fast": the paper's model, estimator and warm-up with a step that is cheaper per epoch: batch
#   200 with Adam lr 1e-3 (the VampPrior encodes its pseudo-inputs once per step), bfloat16
#   autocast for the networks where the device computes it natively (precision "auto";
#   parameters, optimiser and reductions stay float32) and a parameter average with
#   decay 0.999 per step against the noise of the larger learning rate; Adam on raw gradients,
#   PyTorch's default initialisation and sigmoid-parameterised pseudo-inputs.
_PAPER = dict(
    model="vae",
    latent_dim=40,
    num_components=500,
    hidden_dim=300,
    num_hidden_layers=2,
    architecture="gated",
    logvar_bounds=[-6.0, 2.0],
    optimizer="adamnormgrad",
    lr=5e-4,
    batch_size=100,
    epochs=2000,
    patience=50,
    warmup_epochs=100,
    dropout=0.0,
    val_num_samples=1,
    ema_decay=None,
    num_samples=5000,
    precision="32",
    lr_decay=None,
    lr_patience=10,
    val_bound="elbo",
    val_points=None,
    weight_init="he",
    pseudo_input_parameterization="clamp",
)
PRESETS = {
    "book": {
        "model": "vae",
        "latent_dim": 2,
        "num_components": 16,
        "hidden_dim": 256,
        "num_hidden_layers": 2,
        "architecture": "mlp",
        "logvar_bounds": None,
        **BOOK_TRAINING,
        "dropout": 0.2,
        "num_samples": 5000,
        "val_points": None,
        "weight_init": "default",
        "pseudo_input_parameterization": "sigmoid",
    },
    "paper": _PAPER,
    "fast": {
        **_PAPER,
        "batch_size": 200,
        "lr": 1e-3,
        "precision": "auto",
        "ema_decay": 0.999,
        "optimizer": "adam",
        "weight_init": "default",
        "pseudo_input_parameterization": "sigmoid",
    },
}
# what a run whose config.json predates a setting was trained with (see saved_config)
LEGACY_SETTINGS = {
    "weight_init": "default",
    "pseudo_input_parameterization": "sigmoid",
    **LEGACY_TRAINING,
    "val_points": None,
    "num_particles": 1,
    "init_from": None,
}
# the paper's random initialisation of the pseudo-inputs per data set (load_data.py of
# jmtomczak/vae_vampprior: mean and standard deviation in units of the data range)
PSEUDO_INPUT_INIT = {
    "caltech101_silhouettes": (0.5, 0.02),
    "frey_faces": (0.5, 0.02),
    "histopathology": (0.4, 0.05),
}  # every other data set: (0.05, 0.01)
CONV_MODELS = ("convhvae", "pixelhvae")  # no dropout; the preset's applies to the MLP decoders
DEFAULT_PRESET = {"digits": "book"}  # every other data set: "paper"
MODEL_KEYS = (
    "latent_dim",
    "prior",
    "num_components",
    "grid_side",
    "hidden_dim",
    "num_hidden_layers",
    "architecture",
    "learn_weights",
    "logvar_bounds",
    "pseudo_input_parameterization",
)


def resolve_config(args: dict) -> dict:
    """Fill missing or ``None`` settings from the preset (``cfg["preset"]``, by default "book"
    for Digits and "paper" for the other data sets); returns a new dict.

    Raises:
        ValueError: unknown preset.
    """
    cfg = dict(args)
    preset = cfg.get("preset") or DEFAULT_PRESET.get(cfg["dataset"], "paper")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    cfg["preset"] = preset
    for k, v in PRESETS[preset].items():
        if cfg.get(k) is None:
            cfg[k] = 0.0 if k == "dropout" and cfg.get("model") in CONV_MODELS else v
    return cfg


def preset_training(preset: str) -> dict[str, Any]:
    """The :class:`TrainConfig` settings of the named preset (``"book"``, ``"paper"``,
    ``"fast"``); its other settings (the model's: ``latent_dim``, ...; the test evaluation's)
    are not training settings.

    Raises:
        ValueError: unknown preset.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    names = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in PRESETS[preset].items() if k in names}


def saved_config(cfg: dict) -> dict:
    """A run's ``config.json`` as read back: settings added to pyrovamp after the run was made
    (absent from its file) are set to what it was trained with (:data:`LEGACY_SETTINGS`), so
    that loading or resuming it never picks up a newer preset's value; the convolutional models'
    runs made before their dropout was refused recorded the book preset's 0.2, which they never
    applied, and read back as 0. Returns a new dict."""
    cfg = {**LEGACY_SETTINGS, **cfg}
    if cfg.get("model") in CONV_MODELS:
        cfg["dropout"] = 0.0
    return cfg
