"""``python -m pyrovamp``: the ``pyrovamp`` command (:func:`pyrovamp.cli.main`)."""

import sys

from pyrovamp.cli import main

if __name__ == "__main__":
    sys.exit(main())
