"""The ``pyrovamp`` command line: the parser and the dispatch to one module per command
(:mod:`pyrovamp.cli.train`, :mod:`~pyrovamp.cli.evaluate`, :mod:`~pyrovamp.cli.compare`,
:mod:`~pyrovamp.cli.reproduce`, :mod:`~pyrovamp.cli.pretrained`), which call the library
(:mod:`pyrovamp.workflow`) and print.

``pyrovamp train`` trains a VAE with a chosen prior and writes a run folder; its defaults on
Digits are the book's setup, on the other data sets the VampPrior paper's
(:data:`pyrovamp.training.config.PRESETS`). ``pyrovamp evaluate RUN_DIR`` recomputes the test
metrics from the checkpoint; ``pyrovamp evaluate NAME`` scores a pretrained model of the zoo
(``pyrovamp pretrained`` lists them), a pretrained folder or a Hub repository. ``pyrovamp
compare`` ranks run folders; ``pyrovamp reproduce table1`` trains the paper's table. Bad
arguments give a one-line error and exit status 2, before any work and without touching an
existing run folder; a run that fails (a non-finite loss) exits with status 1; SIGTERM or
SIGINT stops training after the current step, keeps the last epoch's checkpoint, prints how to
resume and exits with status 143 or 130. The library's progress lines (``logging``, level INFO)
go to stderr, the results to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import shlex
import signal
import sys
import threading
import warnings
from pathlib import Path

from pyrovamp._version import __version__
from pyrovamp.cli.options import progress_option
from pyrovamp.data import DATASETS
from pyrovamp.errors import TrainingInterrupted
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
    TABLE_MODELS,
    TABLE_PRIORS,
    TEST_NUM_SAMPLES,
    TEST_POINTS,
    exit_status,
    option_name,
)

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(name: str, kind: type = int):
    """argparse type: a positive ``kind`` (int: at least 1; float: finite), with a one-line error
    naming the option."""
    what = "an integer" if kind is int else "a number"

    def conv(s):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {what}, got {s!r}") from None
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(
                f"{name} must be at least 1, got {v}"
                if kind is int
                else f"{name} must be a finite positive number, got {v}"
            )
        return v

    return conv


def _positive_int(name: str):
    return _positive(name, int)


def _positive_float(name: str):
    return _positive(name, float)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pyrovamp``. The ``train`` options have no defaults here (``None``:
    not given); :data:`pyrovamp.workflow.settings.RUN_DEFAULTS` and the presets fill them, so
    that a resumed run changes only what its command line names."""
    p = _Parser(prog="pyrovamp", description="VAEs with learnable priors in Pyro.")
    p.add_argument("--version", action="version", version=f"pyrovamp {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a VAE and write a run folder")
    d = RUN_DEFAULTS
    t.add_argument("--dataset", choices=DATASETS, help=f"default: {d['dataset']}")
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
        type=_positive_int("--max-points"),
        help="use at most this many training, validation and test points (quick runs)",
    )
    t.add_argument("--latent-dim", type=_positive_int("--latent-dim"))
    t.add_argument(
        "--num-components",
        type=_positive_int("--num-components"),
        help="K: mixture components / pseudo-inputs",
    )
    t.add_argument(
        "--grid-side",
        type=_positive_int("--grid-side"),
        help="GTM grid side (K = side^2); default sqrt(K)",
    )
    t.add_argument("--hidden-dim", type=_positive_int("--hidden-dim"))
    t.add_argument("--num-hidden-layers", type=_positive_int("--num-hidden-layers"))
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
    t.add_argument("--epochs", type=_positive_int("--epochs"))
    t.add_argument("--batch-size", type=_positive_int("--batch-size"))
    t.add_argument("--lr", type=_positive_float("--lr"))
    t.add_argument("--optimizer", choices=OPTIMIZER_NAMES)
    t.add_argument(
        "--loss",
        choices=LOSS_NAMES,
        help="training objective: Pyro's Trace_ELBO (default), TraceMeanField_ELBO "
        "(analytic KL), their JIT variants, or the importance-weighted bound "
        "(iwae, Burda et al. 2016) with --num-particles K",
    )
    t.add_argument(
        "--num-particles",
        type=_positive_int("--num-particles"),
        help="samples per data point and step: of the ELBO, or the K >= 2 of --loss iwae",
    )
    t.add_argument(
        "--init-from",
        metavar="RUN_DIR",
        help="start from the trained parameters (model.pt) of a run of the same model "
        "instead of a random initialisation: fine-tuning, e.g. with --loss iwae "
        "after ELBO training",
    )
    t.add_argument("--warmup-epochs", type=int)
    t.add_argument("--patience", type=_positive_int("--patience"))
    t.add_argument(
        "--lr-decay",
        type=float,
        help="multiply the learning rate by this factor in (0, 1) when the validation "
        "score (--val-bound) has not improved for --lr-patience epochs after the "
        "warm-up (default: constant)",
    )
    t.add_argument(
        "--lr-patience",
        type=_positive_int("--lr-patience"),
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
        type=_positive_int("--val-points"),
        help="validate on this many validation points spread over the validation set "
        "(default: all)",
    )
    t.add_argument(
        "--val-num-samples",
        type=_positive_int("--val-num-samples"),
        help="samples per validation point: of the ELBO, or the K of --val-bound iwae",
    )
    t.add_argument(
        "--num-samples",
        type=_positive_int("--num-samples"),
        help="importance samples per test point (default 5000)",
    )
    t.add_argument("--data-root", help="folder with the data set's canonical files")

    def train_device(s: str) -> str:
        head, _, index = s.partition(":")
        if s in ("cpu", "cuda") or (head == "cuda" and index.isdigit()):
            return s
        raise argparse.ArgumentTypeError(f"--device must be cpu, cuda or cuda:i, got {s!r}")

    t.add_argument(
        "--device",
        type=train_device,
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
        type=_positive_int("--devices"),
        help="devices (processes) per machine; >1 trains data-parallel",
    )
    t.add_argument(
        "--num-nodes",
        type=_positive_int("--num-nodes"),
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
        type=_positive_int("--test-every"),
        help="a learning curve: every N epochs, the test log-likelihood (IS) on "
        "--test-points test images spread over the test set (history.csv, "
        "loss.png); not counted as training time",
    )
    t.add_argument(
        "--test-points",
        type=_positive_int("--test-points"),
        help=f"test images of the --test-every curve (default {TEST_POINTS})",
    )
    t.add_argument(
        "--test-num-samples",
        type=_positive_int("--test-num-samples"),
        help="importance samples per test image of the --test-every curve "
        f"(default {TEST_NUM_SAMPLES})",
    )
    t.add_argument("--seed", type=int, help=f"default: {d['seed']}")
    t.add_argument(
        "--max-minutes",
        type=_positive_float("--max-minutes"),
        help="stop cleanly with a checkpoint after this long; continue with --resume",
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help=f"continue the run in --out (only "
        f"{', '.join(map(option_name, RESUME_MAY_CHANGE))} may change)",
    )
    progress_option(t)
    t.add_argument("--out", help="run folder (default: runs/<dataset>_<prior>_<time>)")

    c = sub.add_parser("compare", help="compare runs on their common test set (ArviZ)")
    c.add_argument("run_dirs", nargs="+")
    c.add_argument(
        "--out", required=True, help="folder for comparison.csv, compare.png, pareto_k.png"
    )
    c.add_argument(
        "--num-samples",
        type=_positive_int("--num-samples"),
        default=1000,
        help="importance samples per test point (default 1000)",
    )
    c.add_argument(
        "--recompute",
        action="store_true",
        help="evaluate every run anew instead of reusing its stored evaluation.nc "
        "(and store the new one)",
    )
    c.add_argument("--device", default="cpu", choices=("cpu", "cuda"))

    r = sub.add_parser(
        "reproduce",
        help="train the cells of the VampPrior paper's table, "
        "resumably, and write table1.md beside the paper's values",
    )
    r.add_argument("table", choices=("table1",))
    r.add_argument("--out", required=True, help="folder of the cells' run folders and table1.md")
    r.add_argument(
        "--datasets", nargs="+", default=["static_mnist"], choices=DATASETS, metavar="DATASET"
    )
    r.add_argument(
        "--models", nargs="+", choices=TABLE_MODELS, metavar="MODEL", help="default: the recipe's"
    )
    r.add_argument(
        "--priors", nargs="+", default=list(TABLE_PRIORS), choices=TABLE_PRIORS, metavar="PRIOR"
    )
    r.add_argument(
        "--recipe",
        choices=("paper", "best"),
        default="paper",
        help="paper (default): one run with the paper preset per cell, in OUT/<cell>; best "
        "(vae, hvae): 1-elbo (--preset fast --dropout 0.1, validated on IWAE-20), then 2-iwae "
        "(IWAE-20 fine-tuning from it), in OUT/<cell>.best/",
    )
    r.add_argument(
        "--max-minutes",
        type=_positive_float("--max-minutes"),
        help="training time per cell and call, shared by its stages; run again to continue",
    )
    r.add_argument("--accelerator", choices=("cpu", "gpu", "auto"), default="auto")
    r.add_argument("--devices", type=_positive_int("--devices"), default=1)
    r.add_argument(
        "--data-root",
        nargs="+",
        metavar="[DATASET=]DIR",
        help="folder with the data files (DATASET=DIR for one data set)",
    )
    r.add_argument(
        "--max-points",
        type=_positive_int("--max-points"),
        help="smoke test: the first N training, validation and test points",
    )
    r.add_argument(
        "--num-samples",
        type=_positive_int("--num-samples"),
        help="importance samples per test image (default: the paper's 5000)",
    )
    r.add_argument(
        "--epochs",
        type=_positive_int("--epochs"),
        help="at most this many epochs per cell (default: the paper's 2000)",
    )
    progress_option(r)

    e = sub.add_parser(
        "evaluate",
        help="recompute a run's test metrics from its checkpoint, or score a pretrained model",
    )
    e.add_argument(
        "run_dir",
        metavar="RUN_OR_MODEL",
        help="a run folder of pyrovamp train, or a pretrained model: a name of the zoo "
        "(pyrovamp pretrained), a pretrained folder or a Hugging Face Hub repository id",
    )
    e.add_argument(
        "--out",
        help="pretrained models: write metrics.json and the per-image values into this folder "
        "(default: print only)",
    )
    e.add_argument("--num-samples", type=_positive_int("--num-samples"))
    e.add_argument(
        "--method",
        choices=("is", "ais", "exact"),
        help="estimate the test log-likelihood with this method only and merge it "
        "into metrics.json (default: recompute all test metrics and figures)",
    )
    e.add_argument(
        "--num-steps",
        type=_positive_int("--num-steps"),
        help="AIS/BDMC intermediate distributions T (default 600)",
    )
    e.add_argument(
        "--num-chains",
        type=_positive_int("--num-chains"),
        help="AIS/BDMC chains per data point (default 16)",
    )
    e.add_argument(
        "--refine-guide",
        type=_positive_int("--refine-guide"),
        metavar="EPOCHS",
        help="refine a copy of the guide on the training set for EPOCHS epochs of the "
        "importance-weighted bound, the model frozen, then estimate the test "
        "log-likelihood by IS with it (test_log_likelihood_refined; "
        "--num-samples sets its S) beside the run's plain IS estimate",
    )
    e.add_argument(
        "--refine-on",
        choices=("train", "test"),
        help="fit the refined guide on the training set (default: a better amortised "
        "guide, test_log_likelihood_refined) or on the test images it then "
        "scores (a proposal adapted to them, as AIS adapts its chains; "
        "test_log_likelihood_refined_on_test)",
    )
    e.add_argument(
        "--refine-num-samples",
        type=_positive_int("--refine-num-samples"),
        metavar="K",
        help="importance samples of the refinement's bound (default 10)",
    )
    e.add_argument(
        "--refine-lr",
        type=_positive_float("--refine-lr"),
        help="Adam's learning rate of the refinement (default 1e-4)",
    )
    e.add_argument(
        "--refine-batch-size",
        type=_positive_int("--refine-batch-size"),
        help="training points per step of the refinement (default 100; smaller uses less memory)",
    )
    e.add_argument(
        "--bdmc",
        type=_positive_int("--bdmc"),
        metavar="N",
        help="also sandwich log p(x) by bidirectional Monte Carlo on N simulated points",
    )
    e.add_argument("--data-root")
    e.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    progress_option(e)

    z = sub.add_parser(
        "pretrained",
        help="list the pretrained models that ship with pyrovamp, with their cards' numbers",
    )
    z.add_argument("--markdown", action="store_true", help="print the zoo as a Markdown table")
    z.add_argument(
        "--update",
        nargs="+",
        metavar="FILE",
        help="write the Markdown table between the <!-- zoo-table --> markers of these files",
    )
    return p


def main(argv=None) -> int:
    """Entry point of the ``pyrovamp`` command. Returns the exit status (2: bad input, 1: a run
    that failed, e.g. a non-finite loss; 130 / 143: stopped by SIGINT / SIGTERM, with one line
    saying how to resume)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    # the commands import Lightning, ArviZ and matplotlib: only when one runs
    from pyrovamp.cli import compare, evaluate, pretrained, reproduce, train

    command = {
        "train": train,
        "evaluate": evaluate,
        "compare": compare,
        "reproduce": reproduce,
        "pretrained": pretrained,
    }[args.command]
    signals: list[str] = []
    try:
        with _quiet(), _log_to_stderr(), _sigterm_as_interrupt(signals):
            _file_backend()
            return command.run(args)
    except KeyboardInterrupt as e:  # SIGINT (Ctrl-C), or SIGTERM through _sigterm_as_interrupt
        return _interrupted(args.command, e, "SIGTERM" if signals else "SIGINT")
    except Exception as e:
        status = exit_status(e)
        if status is None:
            raise
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        # one line: a failed run's whole message (what failed and what to do), else the first
        msg = (" ".join(lines) if status == 1 else lines[0]) if lines else type(e).__name__
        print(f"pyrovamp {args.command}: error: {msg}", file=sys.stderr)
        return status


@contextlib.contextmanager
def _sigterm_as_interrupt(received: list[str]):
    """SIGTERM (what a scheduler or ``kill`` sends) handled as Ctrl-C: a ``KeyboardInterrupt``
    after noting it in ``received``. During training Lightning's own handler is installed (it
    calls this one too, which then only notes the signal): the run stops cleanly after the
    current step (:class:`pyrovamp.errors.TrainingInterrupted`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        received.append("SIGTERM")
        if signal.getsignal(signal.SIGTERM) is handler:  # else Lightning's handler called this
            raise KeyboardInterrupt  # one and stops the training cleanly after the step

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(command: str, error: KeyboardInterrupt, name: str) -> int:
    """One line on stderr (from the first process of a data-parallel run only) for a command
    stopped by a signal; the exit status 128 + the signal's number (130 for SIGINT, 143 for
    SIGTERM), as a shell reports a process killed by it."""
    number = signal.SIGTERM if name == "SIGTERM" else signal.SIGINT
    if command == "reproduce":  # the cells resume where they stopped
        line = f"stopped ({name}); run the same pyrovamp reproduce command to continue"
    elif isinstance(error, TrainingInterrupted) and error.checkpoint is not None:
        run = Path(error.checkpoint).parent
        what = (
            f"stopped at epoch {error.epoch}"
            if error.stage == "training"
            else f"stopped during the test evaluation (training finished at epoch {error.epoch})"
        )
        resume = f"pyrovamp train --resume --out {shlex.quote(str(run))}"
        line = f"{what} ({name}); resume with: {resume}"
    elif isinstance(error, TrainingInterrupted):
        line = f"stopped ({name}) before the first epoch ended: no checkpoint to resume from"
    else:
        line = f"stopped ({name})"
    from pyrovamp.workflow.experiment import process_rank  # deferred: the parser stays light

    if process_rank() == 0:
        print(f"pyrovamp {command}: {line}", file=sys.stderr)
    return 128 + int(number)


def _file_backend() -> None:
    """The commands write their figures to files: matplotlib's Agg backend (no window, on a
    machine with or without a display), chosen by the program, never by the library."""
    import matplotlib  # deferred: only a running command needs it

    matplotlib.use("Agg")


@contextlib.contextmanager
def _quiet():
    """Known, harmless library warnings are not shown in the commands' output (never errors)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        warnings.filterwarnings("ignore", message=".*arviz.*refactor.*")
        warnings.filterwarnings("ignore", message=".*torch.jit.trace.*is deprecated.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        yield


@contextlib.contextmanager
def _log_to_stderr():
    """pyrovamp's log records of level INFO and above as plain lines on stderr, not passed on
    to the root logger (no line twice)."""
    log = logging.getLogger("pyrovamp")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level, propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate
