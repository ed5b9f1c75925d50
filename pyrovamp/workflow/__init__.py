"""The Bayesian workflow around trained models: comparison with ArviZ, figures, run folders
and the reproduction of the paper's table."""

from pyrovamp.workflow.comparison import (KHAT_THRESHOLD, EVALUATION_FILE, load_evaluation, to_inference_data, compare, plot_compare, plot_pareto_k, importance_diagnostics, khat_threshold)

__all__ = ['KHAT_THRESHOLD', 'EVALUATION_FILE', 'load_evaluation', 'to_inference_data', 'compare', 'plot_compare', 'plot_pareto_k', 'importance_diagnostics', 'khat_threshold']
