"""Options shared by the commands of :mod:`pyrovamp.cli`."""

from __future__ import annotations

import argparse

__all__ = ["progress_option", "progress_setting"]


def progress_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--progress`` / ``--no-progress`` to ``parser`` (default: neither, ``None``)."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="progress bars (default: on a terminal; elsewhere, e.g. output to a file, one "
        "line per epoch and a line a minute during the evaluation); --no-progress: none",
    )


def progress_setting(args: argparse.Namespace) -> bool | str:
    """``--progress`` / ``--no-progress`` as the library's ``progress``: ``True``, ``False``, or
    ``"auto"`` when neither is given."""
    return "auto" if args.progress is None else bool(args.progress)
