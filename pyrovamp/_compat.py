"""The module paths of pyrovamp 0.1 (flat modules), kept importable after the move into
subpackages: ``import pyrovamp.evaluation`` gives :mod:`pyrovamp.infer` with a
``DeprecationWarning`` naming the new path. Only ``pyrovamp.<old name>`` imports are affected."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "pyrovamp.evaluation": "pyrovamp.infer",
    "pyrovamp.ais": "pyrovamp.infer.ais",
    "pyrovamp.exact": "pyrovamp.infer.exact",
    "pyrovamp.refine": "pyrovamp.infer.refine",
    "pyrovamp.diagnostics": "pyrovamp.infer.diagnostics",
    "pyrovamp.likelihoods": "pyrovamp.distributions",
    "pyrovamp.nets": "pyrovamp.nn",
    "pyrovamp.runs": "pyrovamp.workflow.runs",
    "pyrovamp.plots": "pyrovamp.workflow.plots",
    "pyrovamp.reproduce": "pyrovamp.workflow.reproduce",
    "pyrovamp._choices": "pyrovamp.training.config",
}
"""Old module path -> the module that holds its names now."""


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths of :data:`MOVED` and loads them as the new modules (the same module
    objects: patching ``pyrovamp.runs.x`` patches ``pyrovamp.workflow.runs.x``)."""

    def __init__(self) -> None:
        self.specs: dict = {}

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}; import it from there (or from pyrovamp)",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        self.specs[new] = module.__spec__
        return module

    def exec_module(self, module):
        """Nothing to run (the module was imported under its new path); the import system has
        put the old path's spec on it, which is undone here."""
        module.__spec__ = self.specs[module.__name__]


def install() -> None:
    """Add the finder once (idempotent)."""
    if not any(isinstance(f, MovedModules) for f in sys.meta_path):
        sys.meta_path.append(MovedModules())
