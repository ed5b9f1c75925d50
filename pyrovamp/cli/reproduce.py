"""``pyrovamp reproduce table1``: :func:`pyrovamp.workflow.reproduce.reproduce_table1` from the
command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovamp.cli.options import progress_setting
from pyrovamp.data import DATASETS
from pyrovamp.workflow.reproduce import reproduce_table1

__all__ = ["run"]


def data_roots(items) -> dict:
    """``--data-root [DATASET=]DIR ...`` as ``{dataset or None: folder}`` (``None``: every data
    set without its own).

    Raises:
        ValueError: ``NAME=DIR`` with a ``NAME`` that is not a data set, where no folder is
            called ``NAME=DIR`` either.
    """
    roots = {}
    for item in items or ():
        name, sep, folder = item.partition("=")
        if sep and name in DATASETS:
            roots[name] = folder
        elif sep and not Path(item).exists():
            raise ValueError(
                f"--data-root {item}: unknown data set {name!r}; expected one of "
                f"{', '.join(DATASETS)} (or a folder alone, for every data set)"
            )
        else:
            roots[None] = item
    return roots


def run(args: argparse.Namespace) -> int:
    """Train, continue or skip every stage of every cell of the table with ``args.recipe`` and
    write ``table1.md`` in ``args.out`` (its path on stdout); exit status 0, or 1 (raised as
    :class:`pyrovamp.errors.CellsFailedError`) when a cell failed."""
    path = reproduce_table1(
        args.out,
        args.datasets,
        args.models,
        args.priors,
        recipe=args.recipe,
        max_minutes=args.max_minutes,
        accelerator=args.accelerator,
        devices=args.devices,
        data_roots=data_roots(args.data_root),
        max_points=args.max_points,
        num_samples=args.num_samples,
        epochs=args.epochs,
        progress=progress_setting(args),
        strict=True,
    )
    print(f"table -> {path}")
    return 0
