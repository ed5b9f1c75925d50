"""The settings of a training run: :class:`TrainConfig`, the named protocols (:data:`PRESETS`)
that the command line and :func:`resolve_config` fill a run's configuration from, and the
settings a resumed run may change (:data:`RESUMABLE`). Importing it does not load Lightning."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import torch

from pyrovamp._validate import (
    check_choice,
    check_int,
    check_open_unit,
    check_optional_int,
    check_positive,
)
from pyrovamp.errors import CheckpointError

__all__ = [
    "LOSS_NAMES",
    "OPTIMIZER_NAMES",
    "VAL_BOUNDS",
    "PRECISIONS",
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
    "saved_config",
    "check_resume",
    "BINARISATION_STREAM",
    "VALIDATION_STREAM",
    "TEST_STREAM",
    "VALIDATION_IWAE_STREAM",
]


LOSS_NAMES = ("trace", "meanfield", "jit_trace", "jit_meanfield", "iwae")
"""The losses of ``TrainConfig.loss`` (:data:`pyrovamp.training.plan.LOSSES` maps them to
objects)."""
OPTIMIZER_NAMES = ("adam", "adamax", "adamnormgrad")
"""The optimisers of ``TrainConfig.optimizer`` (:data:`pyrovamp.training.optim.OPTIMIZERS`)."""
VAL_BOUNDS = ("elbo", "iwae")
"""The validation scores of ``TrainConfig.val_bound``."""
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
"""Lightning's precisions that ``TrainConfig.precision`` accepts."""
LOGGERS = ("csv", "tensorboard", "none")
"""The loggers of ``TrainConfig.logger``."""
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
    "patience": 20,
    "val_num_samples": 1,
    "val_bound": "elbo",
    "ema_decay": None,
    "lr_decay": None,
    "lr_patience": 10,
    "precision": "32",
}
"""The training protocol of the book (J. M. Tomczak, *Deep Generative Modeling*, ch. 4.4.1,
Digits): Adamax with learning rate 1e-3, batch 64, at most 1000 epochs, early stopping with
patience 20 on a one-sample validation ELBO. The one place these numbers are written: the field
defaults of :class:`TrainConfig` and the ``"book"`` preset are read from it."""

# the random streams a run derives from its seed (pyrovamp._random.derive_seed(seed, stream, ...))
BINARISATION_STREAM, VALIDATION_STREAM, TEST_STREAM, VALIDATION_IWAE_STREAM = 7, 11, 13, 17


@dataclass
class TrainConfig:
    """Settings of a training run (defaults: the book's Digits protocol, :data:`BOOK_TRAINING`).

    Attributes:
        epochs: total number of epochs (a resumed run continues up to it).
        batch_size: data points per optimiser step, summed over all processes (the global batch;
            it must be divisible by the number of processes).
        lr: learning rate.
        optimizer: ``"adam"``, ``"adamax"`` (``torch.optim``) or ``"adamnormgrad"`` (Adam on
            per-tensor normalised gradients, the paper's code:
            :class:`pyrovamp.training.AdamNormGrad`).
        loss: ``"trace"`` (``Trace_ELBO``), ``"meanfield"`` (``TraceMeanField_ELBO``, analytic KL
            where one exists), ``"jit_trace"`` / ``"jit_meanfield"`` (their JIT variants), or
            ``"iwae"`` (the importance-weighted bound with ``num_particles`` samples, Burda et al.
            2016; :class:`pyrovamp.infer.importance.IWAELoss`).
        num_particles: ELBO samples per data point and step.
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
        progress: show Lightning's progress bar.
        ema_decay: keep an exponential moving average of the parameters with this decay per step;
            validation, early stopping and the final model use the averaged parameters (Polyak
            averaging). ``None``: off.
        lr_decay: multiply the learning rate by this factor in (0, 1) when the validation score
            (``val_bound``) has not improved for ``lr_patience`` epochs after the KL warm-up
            (PyTorch's ``ReduceLROnPlateau``; needs validation data). ``None``: a constant
            learning rate (the paper's protocol).
        lr_patience: epochs without a better validation score before ``lr_decay`` applies.
        accelerator: ``"cpu"``, ``"gpu"`` or ``"auto"`` (Lightning's accelerator).
        devices: number of devices (processes) per machine, or ``"auto"``.
        num_nodes: number of machines.
        strategy: ``"auto"``, ``"ddp"``, ``"ddp_spawn"``, ``"ddp_notebook"`` (Lightning's).
        precision: ``"32"``, ``"bf16-mixed"`` (autocast to bfloat16; AVX-512 BF16 CPUs and
            recent GPUs) or ``"16-mixed"`` (float16 autocast with loss scaling on GPUs; Lightning
            falls back to bf16 on the CPU).
        logger: ``"csv"`` (Lightning's ``CSVLogger``), ``"tensorboard"`` or ``"none"``.
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
    optimizer: str = BOOK_TRAINING["optimizer"]
    loss: str = "trace"
    num_particles: int = 1
    warmup_epochs: int = BOOK_TRAINING["warmup_epochs"]
    patience: int | None = BOOK_TRAINING["patience"]
    seed: int = 0
    val_num_samples: int = BOOK_TRAINING["val_num_samples"]
    val_bound: str = BOOK_TRAINING["val_bound"]
    max_minutes: float | None = None
    progress: bool = True
    ema_decay: float | None = BOOK_TRAINING["ema_decay"]
    lr_decay: float | None = BOOK_TRAINING["lr_decay"]
    lr_patience: int = BOOK_TRAINING["lr_patience"]
    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = BOOK_TRAINING["precision"]
    logger: str = "csv"
    device: str | None = None
    test_every: int | None = None
    test_num_samples: int = 1000

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting (before any work)."""
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
        check_optional_int("patience", self.patience)
        check_optional_int("test_every", self.test_every)
        check_positive("lr", self.lr)
        check_choice("val_bound", self.val_bound, VAL_BOUNDS)
        if self.val_bound == "iwae" and self.val_num_samples < 2:
            raise ValueError(
                "val_bound='iwae' needs val_num_samples >= 2 (with one sample the "
                "bound is the ELBO)"
            )
        for name, value, known in (
            ("optimizer", self.optimizer, OPTIMIZER_NAMES),
            ("loss", self.loss, LOSS_NAMES),
        ):
            if value not in known:
                raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(known)}")
        if self.loss == "iwae" and self.num_particles < 2:
            raise ValueError(
                "loss='iwae' needs num_particles >= 2 (the number of importance samples)"
            )
        if self.loss.startswith("jit") and self.warmup_epochs:
            raise ValueError(
                "the JIT losses compile a fixed KL weight: use warmup_epochs=0 with them"
            )
        check_open_unit("ema_decay", self.ema_decay, allow_none=True)
        check_open_unit("lr_decay", self.lr_decay, allow_none=True)
        if self.max_minutes is not None:
            check_positive("max_minutes", self.max_minutes, "positive")
        check_choice("precision", str(self.precision), PRECISIONS)
        check_choice("logger", self.logger, LOGGERS)
        if self.accelerator not in ("cpu", "gpu", "cuda", "auto"):
            raise ValueError(
                f"accelerator must be 'cpu', 'gpu' or 'auto', got {self.accelerator!r}"
            )
        if self.devices != "auto" and (
            isinstance(self.devices, bool) or not isinstance(self.devices, int) or self.devices < 1
        ):
            raise ValueError(f"devices must be a positive integer or 'auto', got {self.devices!r}")
        if not isinstance(self.strategy, str) or not self.strategy:
            raise ValueError(f"strategy must be a Lightning strategy name, got {self.strategy!r}")
        accelerator, devices = self.lightning_devices()
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

    def lightning_devices(self) -> tuple[str, int | str | list[int]]:
        """``(accelerator, devices)`` for Lightning's ``Trainer``, ``device`` resolved."""
        if self.device is None:
            acc = "gpu" if self.accelerator == "cuda" else self.accelerator
            return acc, self.devices
        try:
            dev = torch.device(self.device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}") from e
        if dev.type == "cpu":
            return "cpu", self.devices
        if dev.type == "cuda":
            return "gpu", [dev.index] if dev.index is not None else self.devices
        raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")


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

    Args:
        saved: the run's ``TrainConfig`` as a dict (from its checkpoint); a setting that the
            run's pyrovamp predates counts as what it trained with (``LEGACY_TRAINING``).
        config: the settings of the resumed piece.
        path: the checkpoint, for the message.

    Raises:
        CheckpointError: one line naming the first changed setting outside :data:`RESUMABLE`.
    """
    saved = {**LEGACY_TRAINING, **saved}
    now = asdict(config)
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
# "book": the book's Digits protocol (BOOK_TRAINING; L=2, K=16, two LeakyReLU layers of 256)
#   with dropout 0.2 in the decoder, a parameter average and early stopping on a 10-sample
#   validation ELBO with patience 50, against over-fitting its 1000 training images.
# "paper": Tomczak & Welling 2018, sec. 4 and its code (jmtomczak/vae_vampprior): K=500, z=40
#   (z1=z2=40), gated dense layers of 300 units, batch 100, AdamNormGrad lr 5e-4, KL warm-up 100
#   epochs, early stopping 50, at most 2000 epochs, S=5000 at test, He-initialised linear layers,
#   pseudo-inputs a clamped weight started as nearly black images.
# "fast": the paper's model, estimator and warm-up with a step that is cheaper per epoch: batch
#   200 with Adam lr 1e-3 (the VampPrior encodes its pseudo-inputs once per step), bfloat16
#   autocast for the networks (parameters, optimiser and reductions stay float32; on CPUs
#   without native bfloat16 it is slower: use precision "32" there) and a parameter average with
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
        "patience": 50,
        "val_num_samples": 10,
        "ema_decay": 0.995,
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
        "precision": "bf16-mixed",
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
