"""The options of ``pyrovamp train`` (:func:`add_train_parser`): light to import (no Lightning),
as :func:`pyrovamp.cli.app.build_parser` builds the whole parser for every command."""

from __future__ import annotations

import argparse

from pyrovamp.cli.options import device, folder, positive_float, positive_int, progress_option
from pyrovamp.data import DATASETS, TORCHVISION_SETS, dataset_source
from pyrovamp.data.sources import LIKELIHOOD_NAMES
from pyrovamp.models import MODELS
from pyrovamp.priors import FLOWS, PRIORS, PSEUDO_INPUT_PARAMETERIZATIONS
from pyrovamp.training.config import (
    LOGGERS,
    LOSS_NAMES,
    OPTIMIZER_NAMES,
    PRECISIONS,
    VAL_BOUNDS,
    WEIGHT_INITS,
)
from pyrovamp.workflow.settings import (
    RESUME_MAY_CHANGE,
    RUN_DEFAULTS,
    TEST_NUM_SAMPLES,
    TEST_POINTS,
    option_name,
)

__all__ = ["add_train_parser"]


def _dataset(value: str) -> str:
    """argparse type of ``--dataset``: a name as it is, a path made absolute; one line naming
    what is wrong (an unknown name with the choices, a path with nothing there)."""
    try:
        return dataset_source(value)
    except (ValueError, FileNotFoundError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_train_parser(sub) -> argparse.ArgumentParser:
    """Add the ``train`` command to ``sub`` (the subparsers of ``pyrovamp``); returns its parser.
    No option has a default here (``None``: not given):
    :data:`pyrovamp.workflow.settings.RUN_DEFAULTS` and the presets fill them, so that a resumed
    run changes only what its command line names."""
    t = sub.add_parser("train", help="train a VAE and write a run folder")
    d = RUN_DEFAULTS
    t.add_argument(
        "--dataset",
        type=_dataset,
        metavar="NAME|PATH",
        help=f"a data set of pyrovamp ({', '.join(DATASETS)}), of torchvision "
        f"({', '.join(TORCHVISION_SETS)}; from --data-root), or your own: a path to an .npy/.npz "
        f"file or a folder of images (default: {d['dataset']})",
    )
    t.add_argument(
        "--split",
        nargs=3,
        type=float,
        metavar=("TRAIN", "VAL", "TEST"),
        help="fractions summing to 1 that split your own data's parts it lacks (default: "
        "0.8 0.1 0.1 for one array or folder; 0.1 of the training part for one missing part)",
    )
    t.add_argument(
        "--data-seed",
        type=int,
        help="the seed of that split (default 0, whatever --seed is)",
    )
    t.add_argument(
        "--likelihood",
        choices=LIKELIHOOD_NAMES,
        help="your own data's likelihood (default: what the values call for: 0/1 bernoulli, "
        "integers up to 32 categorical, 8-bit values discretized_logistic)",
    )
    t.add_argument("--prior", choices=PRIORS, help=f"default: {d['prior']}")
    t.add_argument("--flow", choices=FLOWS, help="the zuko flow of --prior flow (default realnvp)")
    t.add_argument(
        "--model",
        choices=tuple(MODELS),
        help="one-level VAE (default), two-level HVAE, convolutional HVAE or PixelHVAE "
        "(PixelCNN decoder)",
    )
    t.add_argument(
        "--preset",
        choices=("book", "paper", "fast"),
        help="protocol defaults (Digits: book; other data sets: paper); fast: the "
        "paper's model and warm-up with batch 200, lr 1e-3, precision auto (bf16-mixed "
        "where the device computes bfloat16 natively) and parameter EMA 0.999",
    )
    t.add_argument(
        "--max-points",
        type=positive_int("--max-points"),
        help="use at most this many training, validation and test points (quick runs)",
    )
    t.add_argument("--latent-dim", type=positive_int("--latent-dim"))
    t.add_argument(
        "--num-components",
        type=positive_int("--num-components"),
        help="K: mixture components / pseudo-inputs",
    )
    t.add_argument(
        "--grid-side",
        type=positive_int("--grid-side"),
        help="GTM grid side (K = side^2); default sqrt(K)",
    )
    t.add_argument("--hidden-dim", type=positive_int("--hidden-dim"))
    t.add_argument("--num-hidden-layers", type=positive_int("--num-hidden-layers"))
    t.add_argument("--architecture", choices=("mlp", "gated"))
    t.add_argument(
        "--dropout",
        type=float,
        help="dropout in the decoder's hidden layers (vae, hvae; training only)",
    )
    t.add_argument(
        "--learn-weights",
        action=argparse.BooleanOptionalAction,
        help="learn the prior's mixing weights (default: the prior's own choice)",
    )
    t.add_argument(
        "--pseudo-inputs",
        choices=("random", "data"),
        help=f"VampPrior pseudo-input initialisation (default: {d['pseudo_inputs']})",
    )
    t.add_argument(
        "--pseudo-input-parameterization",
        choices=PSEUDO_INPUT_PARAMETERIZATIONS,
        help="VampPrior pseudo-inputs: sigmoid of a parameter, or a parameter clamped "
        "to the data range and started nearly black (clamp, the paper's code); "
        "default: the preset's (paper: clamp)",
    )
    t.add_argument(
        "--weight-init",
        choices=WEIGHT_INITS,
        help="initialisation of the linear layers: PyTorch's default or He (the "
        "paper's code); default: the preset's (paper: he)",
    )
    t.add_argument("--epochs", type=positive_int("--epochs"))
    t.add_argument("--batch-size", type=positive_int("--batch-size"))
    t.add_argument("--lr", type=positive_float("--lr"))
    t.add_argument("--optimizer", choices=OPTIMIZER_NAMES)
    t.add_argument(
        "--loss",
        choices=LOSS_NAMES,
        help="training objective: Pyro's Trace_ELBO (default), TraceMeanField_ELBO "
        "(analytic KL), their JIT variants, or the importance-weighted bound "
        "(iwae, Burda et al. 2016) with --num-particles K; iwae_dreg: the same bound with "
        "the doubly reparameterised gradient for the guide (Tucker et al. 2019)",
    )
    t.add_argument(
        "--num-particles",
        type=positive_int("--num-particles"),
        help="samples per data point and step: of the ELBO, or the K >= 2 of --loss iwae "
        "and iwae_dreg",
    )
    t.add_argument(
        "--init-from",
        metavar="RUN_DIR|PRETRAINED",
        help="start from the trained parameters of the same model instead of a random "
        "initialisation -- a run folder (model.pt), a pretrained folder, a zoo name "
        "(pyrovamp pretrained) or a Hugging Face Hub repo id: fine-tuning, e.g. with "
        "--loss iwae after ELBO training",
    )
    t.add_argument("--warmup-epochs", type=int)
    t.add_argument("--patience", type=positive_int("--patience"))
    t.add_argument(
        "--lr-decay",
        type=float,
        help="multiply the learning rate by this factor in (0, 1) when the validation "
        "score (--val-bound) has not improved for --lr-patience epochs after the "
        "warm-up (default: constant)",
    )
    t.add_argument(
        "--lr-patience",
        type=positive_int("--lr-patience"),
        help="epochs without a better validation score before --lr-decay (default 10)",
    )
    t.add_argument(
        "--ema-decay",
        type=float,
        help="average the parameters with this decay per step (0 < d < 1; 0: off)",
    )
    t.add_argument(
        "--val-bound",
        choices=VAL_BOUNDS,
        help="validation score for early stopping, the best parameters and --lr-decay: "
        "the ELBO (default, the paper's) or the importance-weighted bound with "
        "--val-num-samples samples",
    )
    t.add_argument(
        "--val-points",
        type=positive_int("--val-points"),
        help="validate on this many validation points spread over the validation set "
        "(default: all)",
    )
    t.add_argument(
        "--val-num-samples",
        type=positive_int("--val-num-samples"),
        help="samples per validation point: of the ELBO, or the K of --val-bound iwae",
    )
    t.add_argument(
        "--num-samples",
        type=positive_int("--num-samples"),
        help="importance samples per test point (default 5000)",
    )
    t.add_argument(
        "--data-root",
        type=folder("--data-root"),
        help="folder with the data set's canonical files (torchvision's layout for "
        "the torchvision sets)",
    )

    t.add_argument(
        "--device",
        type=device("--device"),
        metavar="{cpu,cuda,cuda:i}",
        help="shorthand for --accelerator: cpu, cuda or one GPU cuda:i (default: auto)",
    )
    t.add_argument(
        "--accelerator",
        choices=("auto", "cpu", "gpu"),
        help="Lightning accelerator (default: --device's, else auto: the GPU the model is "
        "on, else a GPU when CUDA is available, else the CPU)",
    )
    t.add_argument(
        "--devices",
        type=positive_int("--devices"),
        help="devices (processes) per machine; >1 trains data-parallel",
    )
    t.add_argument(
        "--num-nodes",
        type=positive_int("--num-nodes"),
        help="machines taking part (Lightning's launcher; see the README)",
    )
    t.add_argument(
        "--strategy",
        choices=("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"),
        help="Lightning strategy; ddp for several processes",
    )
    t.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="32, bf16-mixed (autocast to bfloat16), 16-mixed (GPU) or auto (bf16-mixed "
        "where the device computes bfloat16 natively, else 32); default: the preset's (32; "
        "fast: auto)",
    )
    t.add_argument(
        "--logger",
        nargs="+",
        choices=LOGGERS,
        metavar="NAME",
        help="experiment loggers, one or several of csv (RUN/logs; the default), tensorboard, "
        "mlflow (MLFLOW_TRACKING_URI, else MLflow's default local store in this folder; pip "
        "install 'pyrovamp[mlflow]'), "
        "wandb (offline unless logged in; pip install 'pyrovamp[wandb]'), none; history.csv is "
        "always written",
    )
    t.add_argument(
        "--test-every",
        type=positive_int("--test-every"),
        help="a learning curve: every N epochs, the test log-likelihood (IS) on "
        "--test-points test images spread over the test set (history.csv, "
        "loss.png); not counted as training time",
    )
    t.add_argument(
        "--test-points",
        type=positive_int("--test-points"),
        help=f"test images of the --test-every curve (default {TEST_POINTS})",
    )
    t.add_argument(
        "--test-num-samples",
        type=positive_int("--test-num-samples"),
        help="importance samples per test image of the --test-every curve "
        f"(default {TEST_NUM_SAMPLES})",
    )
    t.add_argument("--seed", type=int, help=f"default: {d['seed']}")
    t.add_argument(
        "--max-minutes",
        type=positive_float("--max-minutes"),
        help="stop cleanly with a checkpoint after this long; continue with --resume",
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help=f"continue the run in --out (only "
        f"{', '.join(map(option_name, RESUME_MAY_CHANGE))} may change)",
    )
    progress_option(t)
    t.add_argument(
        "--out",
        type=folder("--out"),
        help="run folder (default: runs/<dataset>_<prior>_<time>, a path's stem as <dataset>)",
    )

    return t
