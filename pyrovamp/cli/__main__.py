"""``python -m pyrovamp.cli``."""

import sys

from pyrovamp.cli import main

if __name__ == "__main__":
    sys.exit(main())
