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
    done = evaluate_run_folder(
        run_dir,
        num_samples=args.num_samples,
        method=args.method,
        num_steps=args.num_steps,
        num_chains=args.num_chains,
        bdmc=args.bdmc,
        refine_guide=args.refine_guide,
        refine_on=args.refine_on,
        refine_num_samples=args.refine_num_samples,
        refine_lr=args.refine_lr,
        refine_batch_size=args.refine_batch_size,
        data_root=args.data_root,
        device=args.device,
        progress=not args.no_progress,
        report=print,
    )
    if done.metrics is not None:
        print(result_line(done.metrics, run_dir))
    return 0
