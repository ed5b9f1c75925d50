"""The settings of a training run: :class:`TrainConfig` and the named protocols
(:data:`PRESETS`) that the command line and :func:`resolve_config` fill a run's configuration
from -- the one place where pyrovamp's training defaults are written."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pyrovamp._choices import (LEGACY_TRAINING, LOGGERS, LOSS_NAMES, OPTIMIZER_NAMES, PRECISIONS,
                               VAL_BOUNDS)

__all__ = ["TrainConfig", "PRESETS", "LEGACY_SETTINGS", "PSEUDO_INPUT_INIT", "CONV_MODELS",
           "DEFAULT_PRESET", "MODEL_KEYS", "resolve_config", "saved_config"]


@dataclass
class TrainConfig:
    """Settings of a training run (defaults: the book's Digits protocol).

    Attributes:
        epochs: total number of epochs (a resumed run continues up to it).
        batch_size: data points per optimiser step, summed over all processes (the global batch;
            it must be divisible by the number of processes).
        lr: learning rate.
        optimizer: ``"adam"``, ``"adamax"`` (``torch.optim``) or ``"adamnormgrad"`` (Adam on
            per-tensor normalised gradients, the paper's code: :class:`AdamNormGrad`).
        loss: ``"trace"`` (``Trace_ELBO``), ``"meanfield"`` (``TraceMeanField_ELBO``, analytic KL
            where one exists), ``"jit_trace"`` / ``"jit_meanfield"`` (their JIT variants), or
            ``"iwae"`` (the importance-weighted bound with ``num_particles`` samples, Burda et al.
            2016; :class:`IWAELoss`).
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
            so it ranks parameters as the test log-likelihood does where the ELBO may not
            (static MNIST, HVAE + VampPrior: after a learning-rate decay the ELBO fell while
            the IWAE-20 bound and the test log-likelihood rose; see the README).
        max_minutes: stop cleanly at the end of the epoch after this many minutes of this piece
            of training (a checkpoint is written; continue with ``resume=True``).
        progress: show Lightning's progress bar.
        lr_decay: multiply the learning rate by this factor in (0, 1) when the validation score
            (``val_bound``) has not improved for ``lr_patience`` epochs after the KL warm-up
            (PyTorch's ``ReduceLROnPlateau``; needs validation data). ``None``: a constant
            learning rate (the paper's protocol).
        lr_patience: epochs without a better validation score before ``lr_decay`` applies.
        ema_decay: keep an exponential moving average of the parameters with this decay per step;
            validation, early stopping and the final model use the averaged parameters (Polyak
            averaging). ``None``: off.
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
            parameters on the ``test_data`` given to :func:`fit` (a learning curve in the
            history: ``test_log_likelihood``, nats per data point); ``None``: never. Not
            counted as training time.
        test_num_samples: importance samples per test point for ``test_every`` (IS,
            :func:`pyrovamp.log_likelihood`; the same seed at every epoch, so that the points of the curve
            differ by the parameters only).
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
    val_num_samples: int = 1
    val_bound: str = "elbo"
    max_minutes: float | None = None
    progress: bool = True
    ema_decay: float | None = None
    lr_decay: float | None = None
    lr_patience: int = 10
    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32"
    logger: str = "csv"
    device: str | None = None
    test_every: int | None = None
    test_num_samples: int = 1000

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting (before any work)."""
        for name in ("epochs", "batch_size", "num_particles", "val_num_samples", "num_nodes",
                     "test_num_samples", "lr_patience"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.warmup_epochs, int) or isinstance(self.warmup_epochs, bool) \
                or self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an integer >= 0, got {self.warmup_epochs!r}")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise ValueError(f"patience must be a positive integer or None, got {self.patience!r}")
        if self.test_every is not None and (not isinstance(self.test_every, int)
                                            or isinstance(self.test_every, bool) or self.test_every < 1):
            raise ValueError(f"test_every must be a positive integer or None, got {self.test_every!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.val_bound not in VAL_BOUNDS:
            raise ValueError(f"val_bound must be one of {', '.join(VAL_BOUNDS)}, got {self.val_bound!r}")
        if self.val_bound == "iwae" and self.val_num_samples < 2:
            raise ValueError("val_bound='iwae' needs val_num_samples >= 2 (with one sample the "
                             "bound is the ELBO)")
        if self.optimizer not in OPTIMIZER_NAMES:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZER_NAMES)}")
        if self.loss not in LOSS_NAMES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {', '.join(LOSS_NAMES)}")
        if self.loss == "iwae" and self.num_particles < 2:
            raise ValueError("loss='iwae' needs num_particles >= 2 (the number of importance samples)")
        if self.loss.startswith("jit") and self.warmup_epochs:
            raise ValueError("the JIT losses compile a fixed KL weight: use warmup_epochs=0 with them")
        if self.ema_decay is not None and not (isinstance(self.ema_decay, (int, float))
                                               and 0.0 < self.ema_decay < 1.0):
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay!r}")
        if self.lr_decay is not None and not (isinstance(self.lr_decay, (int, float))
                                              and 0.0 < self.lr_decay < 1.0):
            raise ValueError(f"lr_decay must be in (0, 1) or None, got {self.lr_decay!r}")
        if self.max_minutes is not None and not (isinstance(self.max_minutes, (int, float))
                                                 and self.max_minutes > 0):
            raise ValueError(f"max_minutes must be positive, got {self.max_minutes!r}")
        if str(self.precision) not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.logger not in LOGGERS:
            raise ValueError(f"logger must be one of {', '.join(LOGGERS)}, got {self.logger!r}")
        if self.accelerator not in ("cpu", "gpu", "cuda", "auto"):
            raise ValueError(f"accelerator must be 'cpu', 'gpu' or 'auto', got {self.accelerator!r}")
        if not (self.devices == "auto" or (isinstance(self.devices, int)
                                           and not isinstance(self.devices, bool) and self.devices >= 1)):
            raise ValueError(f"devices must be a positive integer or 'auto', got {self.devices!r}")
        if not isinstance(self.strategy, str) or not self.strategy:
            raise ValueError(f"strategy must be a Lightning strategy name, got {self.strategy!r}")
        accelerator, devices = self.lightning_devices()
        if accelerator == "gpu" and not torch.cuda.is_available():
            raise ValueError("a GPU was asked for (accelerator='gpu' or device='cuda') but "
                             "torch.cuda.is_available() is False")
        world = self.num_nodes * (devices if isinstance(devices, int) else len(devices)
                                  if isinstance(devices, list) else 1)
        if self.batch_size % world:
            raise ValueError(f"batch_size={self.batch_size} (the global batch) must be divisible "
                             f"by the number of processes ({world})")

    @property
    def monitor(self) -> str:
        """The logged key of the validation score: ``"val_elbo"`` or ``"val_iwae"``."""
        return "val_iwae" if self.val_bound == "iwae" else "val_elbo"

    def lightning_devices(self):
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




# Protocols. "book": Tomczak, Deep Generative Modeling ch. 4.4.1 (Digits: L=2, K=16, 2x256
# LeakyReLU, Adamax 1e-3, batch 64) with four measured improvements against over-fitting its 1000
# training images -- dropout 0.2 in the decoder, an exponential moving average of the parameters,
# early stopping on a 10-sample validation ELBO with patience 50 (the book: 1 sample, patience
# 20) -- see the README. "paper": Tomczak & Welling 2018, sec. 4 (K=500, z=40 (z1=z2=40), gated
# dense layers of 300 units, batch 100, Adam 5e-4, KL warm-up 100 epochs, early stopping 50, at
# most 2000 epochs, S=5000 at test). "fast": the paper's model, estimator and KL warm-up (100
# epochs) with a step that is cheaper per epoch on a CPU and averaged parameters (pyrovamp issue
# 11, measured in the README's time-to-quality section): batch 200 with Adam lr 1e-3 (twice the
# paper's batch and learning rate; the VampPrior encodes its 500 pseudo-inputs once per step, so
# half the steps per epoch cost about half as much), bfloat16 autocast for the networks
# (Lightning's "bf16-mixed": the parameters, the optimiser and every reduction stay float32; on
# GPUs with bfloat16 too; on CPUs without native bfloat16 it is slower -- pass --precision 32
# there) and an exponential moving average of the parameters with decay 0.999 per step (Polyak
# averaging, ``ema_decay``: validation, early stopping and the saved model use the average; it
# removes the noise of the larger learning rate -- static MNIST, VAE + VampPrior: validation ELBO
# -89.94 against -91.77 at the best epoch, test log-likelihood -84.95 against -85.63 on the whole
# test set). --ema-decay 0 turns it off. A 10-epoch warm-up was measured and dropped: it
# converged early, to -86.4. The test log-likelihood is always estimated in float32.
PRESETS = {
    "book": dict(model="vae", latent_dim=2, num_components=16, hidden_dim=256,
                 num_hidden_layers=2, architecture="mlp", logvar_bounds=None, optimizer="adamax",
                 lr=1e-3, batch_size=64, epochs=1000, patience=50, warmup_epochs=0, dropout=0.2,
                 val_num_samples=10, ema_decay=0.995, num_samples=5000, precision="32",
                 lr_decay=None, lr_patience=10, val_bound="elbo", val_points=None),
    "paper": dict(model="vae", latent_dim=40, num_components=500, hidden_dim=300,
                  num_hidden_layers=2, architecture="gated", logvar_bounds=[-6.0, 2.0],
                  optimizer="adam", lr=5e-4, batch_size=100, epochs=2000, patience=50,
                  warmup_epochs=100, dropout=0.0, val_num_samples=1, ema_decay=None,
                  num_samples=5000, precision="32", lr_decay=None, lr_patience=10,
                  val_bound="elbo", val_points=None),
}
PRESETS["fast"] = {**PRESETS["paper"], "batch_size": 200, "lr": 1e-3, "precision": "bf16-mixed",
                   "ema_decay": 0.999}
# The paper's code also trains with AdamNormGrad (each parameter tensor's gradient divided by its
# L2 norm before Adam), He-initialised linear layers and pseudo-inputs that are a clamped weight
# started as nearly black images (hardtanh(a, 0, 1), a ~ N(0.05, 0.01)); "paper" follows it.
# "book" and "fast" keep the settings they were measured with: Adam(ax) on raw gradients,
# PyTorch's default initialisation and sigmoid-parameterised pseudo-inputs started uniformly.
PRESETS["paper"].update(optimizer="adamnormgrad", weight_init="he",
                        pseudo_input_parameterization="clamp")
for _name in ("book", "fast"):
    PRESETS[_name].update(weight_init="default", pseudo_input_parameterization="sigmoid")
# what a run whose config.json predates a setting was trained with (see saved_config)
LEGACY_SETTINGS = {"weight_init": "default", "pseudo_input_parameterization": "sigmoid",
                   **LEGACY_TRAINING, "val_points": None, "num_particles": 1, "init_from": None}
# the paper's random initialisation of the pseudo-inputs per data set (load_data.py of
# jmtomczak/vae_vampprior: mean and standard deviation in units of the data range)
PSEUDO_INPUT_INIT = {"caltech101_silhouettes": (0.5, 0.02), "frey_faces": (0.5, 0.02),
                     "histopathology": (0.4, 0.05)}  # every other data set: (0.05, 0.01)
CONV_MODELS = ("convhvae", "pixelhvae")  # no dropout; the preset's applies to the MLP decoders
DEFAULT_PRESET = {"digits": "book"}  # every other data set: "paper"
MODEL_KEYS = ("latent_dim", "prior", "num_components", "grid_side", "hidden_dim",
              "num_hidden_layers", "architecture", "learn_weights", "logvar_bounds",
              "pseudo_input_parameterization")


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


