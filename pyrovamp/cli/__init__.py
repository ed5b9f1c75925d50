"""The ``pyrovamp`` command line (``python -m pyrovamp.cli``; console script ``pyrovamp``)."""

from pyrovamp.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
