"""The ``pyrovamp`` command line (``python -m pyrovamp.cli``; console script ``pyrovamp``)."""

from pyrovamp.cli.app import build_parser, main
from pyrovamp.workflow.settings import RESUME_MAY_CHANGE, TEST_NUM_SAMPLES, TEST_POINTS

__all__ = ["build_parser", "main", "RESUME_MAY_CHANGE", "TEST_NUM_SAMPLES", "TEST_POINTS"]
