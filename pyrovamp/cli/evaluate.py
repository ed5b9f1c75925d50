"""``pyrovamp evaluate``: :func:`pyrovamp.workflow.experiment.evaluate_run_folder` from the
command line, with a summary line per estimate on stdout as soon as it is made."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovamp.workflow.estimates import result_line
from pyrovamp.workflow.experiment import evaluate_run_folder

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    options = ("num_samples", "method", "num_steps", "num_chains", "bdmc", "refine_guide",
               "refine_on", "refine_num_samples", "refine_lr", "refine_batch_size", "data_root",
               "device")  # fmt: skip
    done = evaluate_run_folder(
        run_dir,
        **{k: getattr(args, k) for k in options},
        progress=not args.no_progress,
        report=print,
    )
    if done.metrics is not None:
        print(result_line(done.metrics, run_dir))
    return 0
