"""``pyrovamp train``: :func:`pyrovamp.workflow.experiment.train_run` from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovamp.cli.options import progress_setting
from pyrovamp.workflow.estimates import result_line
from pyrovamp.workflow.experiment import train_run
from pyrovamp.workflow.settings import RUN_DEFAULTS

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    """Train a new run (every option not given: its default or the preset's) or continue one
    (``--resume``: the options given are the changes); print the test metrics of a finished run."""
    options = {k: v for k, v in vars(args).items() if k in RUN_DEFAULTS}
    if isinstance(options.get("logger"), list) and len(options["logger"]) == 1:
        options["logger"] = options["logger"][0]  # one logger: its name, as before
    done = train_run(
        options,
        Path(args.out) if args.out else None,
        resume=args.resume,
        progress=progress_setting(args),
    )
    if done.metrics is not None:
        print(result_line(done.metrics, done.out))
    return 0
