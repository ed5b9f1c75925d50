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
import shlex
import signal
import sys
import threading
import warnings
from pathlib import Path

from pyrovamp._version import __version__
from pyrovamp.cli.options import device as _device
from pyrovamp.cli.options import folder as _folder
from pyrovamp.cli.options import positive_float as _positive_float
from pyrovamp.cli.options import positive_int as _positive_int
from pyrovamp.cli.options import progress_option
from pyrovamp.cli.train_options import add_train_parser
from pyrovamp.data import DATASETS
from pyrovamp.errors import TrainingInterrupted
from pyrovamp.workflow.settings import (
    TABLE_MODELS,
    TABLE_PRIORS,
    exit_status,
)

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pyrovamp``. The ``train`` options have no defaults here (``None``:
    not given); :data:`pyrovamp.workflow.settings.RUN_DEFAULTS` and the presets fill them, so
    that a resumed run changes only what its command line names."""
    p = _Parser(prog="pyrovamp", description="VAEs with learnable priors in Pyro.")
    p.add_argument("--version", action="version", version=f"pyrovamp {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    add_train_parser(sub)

    c = sub.add_parser(
        "compare", help="compare runs and pretrained models on their common test set (ArviZ)"
    )
    c.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="run folders (pyrovamp train --out) or pretrained models (a name of the zoo, a "
        "pretrained folder or a Hugging Face Hub repository id) to rank on their common test set",
    )
    c.add_argument(
        "--out",
        required=True,
        type=_folder("--out"),
        help="folder for comparison.csv, compare.png, pareto_k.png",
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
    c.add_argument(
        "--device",
        default="cpu",
        type=_device(),
        metavar="{cpu,cuda,cuda:i}",
        help="where the models are evaluated (default: cpu)",
    )
    c.add_argument(
        "--data-root",
        type=_folder("--data-root"),
        help="folder with the pretrained models' data set files (default: the usual place; "
        "a run folder reads its own)",
    )

    r = sub.add_parser(
        "reproduce",
        help="train the cells of the VampPrior paper's table, "
        "resumably, and write table1.md beside the paper's values",
    )
    r.add_argument("table", choices=("table1",))
    r.add_argument(
        "--out",
        required=True,
        type=_folder("--out"),
        help="folder of the cells' run folders and table1.md",
    )
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
        action="extend",
        metavar="[DATASET=]DIR",
        help="folder with the data files (DATASET=DIR for one data set; several, or the option "
        "again)",
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
        type=_folder("--out"),
        help="pretrained models: write metrics.json and the per-image values into this folder "
        "(default: print only)",
    )
    e.add_argument(
        "--num-samples",
        type=_positive_int("--num-samples"),
        help="IS samples S per test point (default: the run's, 5000; a pretrained model: its "
        "card's)",
    )
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
    e.add_argument(
        "--data-root",
        type=_folder("--data-root"),
        help="folder with the data set's files (default: the run's, else the usual place)",
    )
    e.add_argument(
        "--device",
        type=_device(),
        metavar="{cpu,cuda,cuda:i}",
        help="where the model is evaluated; one GPU cuda:i (default: cpu, --accelerator's)",
    )
    e.add_argument(
        "--devices",
        type=_positive_int("--devices"),
        default=1,
        help="shard IS, AIS and the test ELBO over N processes (one per GPU with --accelerator "
        "gpu; on CPUs cores/N threads each): the same numbers as one process (AIS: as one "
        "process of as many threads)",
    )
    e.add_argument("--accelerator", choices=("cpu", "gpu"), help="default: --device's")
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
        resumable = args.command != "evaluate" or evaluate.keeps_pieces(args)
        return _interrupted(args.command, e, "SIGTERM" if signals else "SIGINT", resumable)
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


def _interrupted(command: str, error: KeyboardInterrupt, name: str, resumable: bool) -> int:
    """One line on stderr (from the first process of a data-parallel run only) for a command
    stopped by a signal; the exit status 128 + the signal's number (130 for SIGINT, 143 for
    SIGTERM), as a shell reports a process killed by it. ``resumable``: whether an evaluation
    kept its pieces (a run folder, or ``--out``)."""
    number = signal.SIGTERM if name == "SIGTERM" else signal.SIGINT
    if command == "reproduce":  # the cells resume where they stopped
        line = f"stopped ({name}); run the same pyrovamp reproduce command to continue"
    elif command == "evaluate" and not resumable:
        line = (
            f"stopped ({name}); nothing was kept (IS and AIS keep their pieces in a run folder, "
            "or a pretrained model's --out DIR, and the same command continues where it stopped)"
        )
    elif command == "evaluate":  # pyrovamp.workflow.resumable keeps IS's and AIS's pieces
        line = (
            f"stopped ({name}); the same pyrovamp evaluate command continues importance "
            "sampling or AIS (in one process) where it stopped"
        )
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
