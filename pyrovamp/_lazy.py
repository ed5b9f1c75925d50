"""Names of a package imported on first use (:pep:`562`), for the packages whose modules load a
heavy optional dependency (Lightning, ArviZ, matplotlib) that ``import pyrovamp`` should not."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    namespace: dict[str, Any], names: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of a package whose names ``names``
    (name -> submodule, relative to the package) are imported when first read, then kept in the
    package's ``namespace`` (its ``globals()``).

    Usage, at the end of a package's ``__init__.py``::

        __getattr__, __dir__ = lazy_attributes(globals(), {"fit": "training.runner"})

    Raises (from ``__getattr__``):
        AttributeError: a name the package does not have.
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(f".{names[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())) | set(names))

    return __getattr__, __dir__
