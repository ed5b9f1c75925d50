"""The Bayesian workflow around trained models: comparison with ArviZ, figures, run folders,
the work of the ``pyrovamp`` commands and the reproduction of the paper's table with its training
recipes (:data:`pyrovamp.workflow.recipes.RECIPES`).

The names below are imported on first use (:pep:`562`), so that a submodule such as
:mod:`pyrovamp.workflow.settings` is imported without Lightning and ArviZ.
"""

from pyrovamp._lazy import lazy_attributes

_NAMES = {
    "KHAT_THRESHOLD": "comparison",
    "EVALUATION_FILE": "comparison",
    "load_evaluation": "comparison",
    "to_inference_data": "comparison",
    "compare": "comparison",
    "compare_run_folders": "comparison",
    "plot_compare": "comparison",
    "plot_pareto_k": "comparison",
    "importance_diagnostics": "comparison",
    "khat_threshold": "comparison",
    "RECIPES": "recipes",
    "Recipe": "recipes",
    "Stage": "recipes",
}

__all__ = list(_NAMES)

__getattr__, __dir__ = lazy_attributes(globals(), _NAMES)
