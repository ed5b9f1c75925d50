"""The ``pyrovamp`` command line."""

from pyrovamp.cli.app import (UsageError, build_parser, main, TEST_POINTS, TEST_NUM_SAMPLES, RESUME_MAY_CHANGE)

__all__ = ['UsageError', 'build_parser', 'main', 'TEST_POINTS', 'TEST_NUM_SAMPLES', 'RESUME_MAY_CHANGE']
