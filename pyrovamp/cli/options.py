"""Options shared by the commands of :mod:`pyrovamp.cli`."""

from __future__ import annotations

import argparse
import math
import re

__all__ = [
    "progress_option",
    "progress_setting",
    "positive",
    "positive_int",
    "positive_float",
    "folder",
    "device",
]


def positive(name: str, kind: type = int):
    """argparse type: a positive ``kind`` (int: at least 1; float: finite), with a one-line error
    naming the option."""
    what = "an integer" if kind is int else "a number"

    def conv(s):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {what}, got {s!r}") from None
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(
                f"{name} must be at least 1, got {v}"
                if kind is int
                else f"{name} must be a finite positive number, got {v}"
            )
        return v

    return conv


def positive_int(name: str):
    """argparse type: an integer >= 1 (:func:`positive`)."""
    return positive(name, int)


def positive_float(name: str):
    """argparse type: a finite number > 0 (:func:`positive`)."""
    return positive(name, float)


def folder(name: str):
    """argparse type: a folder's path, not empty (``--out ""`` would mean the current folder, or
    the default one: refused in one line naming the option)."""

    def conv(s: str) -> str:
        if not s.strip():
            raise argparse.ArgumentTypeError(f"{name} must name a folder, got {s!r}")
        return s

    return conv


def device(name: str = "--device"):
    """argparse type: ``cpu``, ``cuda`` or one GPU ``cuda:i``, with a one-line error naming the
    option (whether the machine has that GPU is checked by the command, before any work)."""

    def conv(s: str) -> str:
        head, colon, index = s.partition(":")
        if s in ("cpu", "cuda") or (head == "cuda" and colon and re.fullmatch("[0-9]+", index)):
            return s
        raise argparse.ArgumentTypeError(f"{name} must be cpu, cuda or cuda:i, got {s!r}")

    return conv


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
