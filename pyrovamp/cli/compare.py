"""``pyrovamp compare``: :func:`pyrovamp.workflow.comparison.compare_run_folders` from the command
line, with the table on stdout."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovamp.workflow.comparison import compare_run_folders, khat_threshold

__all__ = ["run"]

COLUMNS = [
    "rank",
    "mean_log_likelihood",
    "mean_log_likelihood_diff",
    "mean_dse",
    "mean_elbo",
    "share_k_above_threshold",
]


def run(args: argparse.Namespace) -> int:
    """Compare the run folders and pretrained models ``args.run_dirs`` into ``args.out`` and print
    the table and the k-hat threshold; exit status 0."""
    table, _ = compare_run_folders(
        args.run_dirs,
        args.out,
        num_samples=args.num_samples,
        device=args.device,
        recompute=args.recompute,
        data_root=args.data_root,
    )
    print(table[COLUMNS].to_string(float_format=lambda v: f"{v:.3f}"))
    print(
        f"k-hat threshold min(1 - 1/log10 S, 0.7) = {khat_threshold(args.num_samples):.2f} "
        f"for S={args.num_samples} (Vehtari et al. 2024)"
    )
    print(f"-> {Path(args.out)}")
    return 0
