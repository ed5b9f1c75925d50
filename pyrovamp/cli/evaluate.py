"""``pyrovamp evaluate``: :func:`pyrovamp.workflow.experiment.evaluate_run_folder` for a run
folder, :func:`pyrovamp.workflow.zoo.evaluate_pretrained` for a pretrained model, from the
command line, with a summary line per estimate on stdout as soon as it is made."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovamp.cli.options import progress_setting
from pyrovamp.workflow.estimates import method_line, result_line
from pyrovamp.workflow.experiment import evaluate_run_folder
from pyrovamp.workflow.zoo import evaluate_pretrained, is_pretrained, run_or_pretrained

__all__ = ["run", "keeps_pieces"]

# the options of a run folder's evaluation that a pretrained model's does not take
_RUN_ONLY = ("bdmc",)
_REFINE = ("refine_guide", "refine_on", "refine_num_samples", "refine_lr", "refine_batch_size")


def keeps_pieces(args: argparse.Namespace) -> bool:
    """Whether an interrupted ``pyrovamp evaluate`` kept the pieces of its IS or AIS to continue
    from (:mod:`pyrovamp.workflow.resumable`): in a run folder, or in a pretrained model's
    ``--out`` (``--method exact`` keeps none)."""
    return args.method != "exact" and (args.out is not None or not is_pretrained(args.run_dir))


def run(args: argparse.Namespace) -> int:
    """Add the estimates the options ask for to the run folder ``args.run_dir`` -- or score the
    pretrained model it names -- printing a summary line per estimate; exit status 0.

    ``--devices N [--accelerator cpu|gpu]`` shards the estimators over N processes, the same
    numbers (:mod:`pyrovamp.workflow.parallel`).

    Raises:
        ValueError: options a pretrained model does not take (``--bdmc``), or
            ``--out`` with a run folder (its metrics go into the run folder); as
            :func:`~pyrovamp.workflow.experiment.evaluate_run_folder` and
            :func:`~pyrovamp.workflow.zoo.evaluate_pretrained`.
    """
    run_dir = Path(args.run_dir)
    if run_or_pretrained(args.run_dir):
        given = [f"--{k.replace('_', '-')}" for k in _RUN_ONLY if getattr(args, k) is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: for run folders only, not pretrained models")
        metrics = evaluate_pretrained(
            args.run_dir,
            method=args.method,
            num_samples=args.num_samples,
            num_chains=args.num_chains,
            num_steps=args.num_steps,
            data_root=args.data_root,
            device=args.device,
            out=args.out,
            progress=progress_setting(args),
            devices=args.devices,
            accelerator=args.accelerator,
            **{k: getattr(args, k) for k in _REFINE},
            report=lambda line: print(f"{args.run_dir}: {line}"),
        )
        if args.refine_guide is not None:
            card = metrics.get("card_log_likelihood")
            if card is not None:
                print(f"{args.run_dir}: its card, IS with the trained guide: {card:.2f}")
            return 0
        line = method_line(metrics, args.method or "is")
        card = metrics.get("card_log_likelihood")
        print(f"{args.run_dir}: {line}" + (f" (its card: {card:.2f})" if card else ""))
        return 0
    if args.out is not None:
        raise ValueError("--out is for pretrained models: a run's metrics go into its folder")
    options = ("num_samples", "method", "num_steps", "num_chains", "bdmc", "refine_guide",
               "refine_on", "refine_num_samples", "refine_lr", "refine_batch_size", "data_root",
               "device", "devices", "accelerator")  # fmt: skip
    done = evaluate_run_folder(
        run_dir,
        **{k: getattr(args, k) for k in options},
        progress=progress_setting(args),
        report=print,
    )
    if done.metrics is not None:
        print(result_line(done.metrics, run_dir))
    return 0
