"""``pyrovamp evaluate``: :func:`pyrovamp.workflow.experiment.evaluate_run_folder` from the
command line, with a summary line per estimate."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovamp.cli.train import result_line
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
    )
    if done.refined is not None:
        print(_refined_line(done.refined, args.refine_on or "train", done.num_test_points))
    if done.estimators is not None:
        m = done.estimators
        if args.method is not None:
            print(_method_line(m, args.method))
        if args.bdmc is not None:
            print(
                f"bdmc: {m['bdmc_lower']:.3f} <= log p(x) <= {m['bdmc_upper']:.3f} nats "
                f"(mean gap {m['bdmc_gap']:.3f}, largest {m['bdmc_gap_max']:.3f}) on "
                f"{m['bdmc_num_points']} simulated points in {m['bdmc_seconds']:.1f} s"
            )
    if done.metrics is not None:
        print(result_line(done.metrics, run_dir))
    return 0


def _method_line(m: dict, method: str) -> str:
    key = "test_log_likelihood" if method == "is" else f"test_log_likelihood_{method}"
    note = f" (error estimate <= {m['exact_error_estimate']:.2g})" if method == "exact" else ""
    return (
        f"{method}: test log-likelihood {m[key]:.3f} nats{note} on "
        f"{m['num_test_points']} points in {m[f'{method}_seconds']:.1f} s"
    )


def _refined_line(m: dict, refine_on: str, num_test_points: int) -> str:
    tag = "refined" if refine_on == "train" else "refined_on_test"
    return (
        f"guide refined on the {refine_on} set ({m[f'{tag}_refine_epochs']} epochs of the "
        f"IWAE-{m[f'{tag}_refine_num_samples']} bound on {m[f'{tag}_refine_points']} points, "
        f"{m[f'{tag}_refine_seconds']:.1f} s): test log-likelihood "
        f"{m[f'test_log_likelihood_{tag}']:.3f} nats (S={m[f'{tag}_num_samples']}) on "
        f"{num_test_points} points in {m[f'{tag}_seconds']:.1f} s"
    )
