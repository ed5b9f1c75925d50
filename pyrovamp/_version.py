"""The version of pyrovamp: the one source, read by ``pyproject.toml`` (setuptools' dynamic
version), ``pyrovamp.__version__`` and ``pyrovamp --version``."""

__version__ = "0.2.0"
