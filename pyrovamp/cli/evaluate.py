"""``pyrovamp evaluate``: :func:`pyrovamp.workflow.experiment.evaluate_run_folder` from the
command line, with a summary line per estimate on stdout as soon as it is made."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovamp.cli.options import progress_setting
from pyrovamp.workflow.estimates import result_line
from pyrovamp.workflow.experiment import evaluate_run_folder

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    """Add the estimates the options ask for to the run folder ``args.run_dir``, printing a
    summary line per estimate; exit status 0."""
    run_dir = Path(args.run_dir)
    options = ("num_samples", "method", "num_steps", "num_chains", "bdmc", "refine_guide",
               "refine_on", "refine_num_samples", "refine_lr", "refine_batch_size", "data_root",
               "device")  # fmt: skip
    done = evaluate_run_folder(
        run_dir,
        **{k: getattr(args, k) for k in options},
        progress=progress_setting(args),
        report=print,
    )
    if done.metrics is not None:
        print(result_line(done.metrics, run_dir))
    return 0
