"""Estimators of log p(x) for any Pyro model/guide pair, in nats per data point: importance
sampling and the ELBO on one log-weights core (:mod:`~pyrovamp.infer.weights`), AIS, exact
quadrature for 2-D latents, guide refinement and PSIS diagnostics, sized by one memory planner
(:mod:`~pyrovamp.infer.planning`)."""

from pyrovamp.infer.ais import (
    DEFAULT_INITIAL,
    DEFAULT_LEAPFROG_STEPS,
    DEFAULT_NUM_CHAINS,
    DEFAULT_NUM_STEPS,
    DEFAULT_SCHEDULE,
    INITIAL,
    SCHEDULES,
    ais_log_likelihood,
    annealing_schedule,
    bdmc,
    simulate,
)
from pyrovamp.infer.diagnostics import importance_diagnostics, khat_against_truth, khat_threshold
from pyrovamp.infer.exact import MAX_LATENT_DIM, exact_log_likelihood, total_latent_dim
from pyrovamp.infer.importance import (
    IWAELoss,
    active_units,
    elbo,
    elbo_terms,
    log_importance_weights,
    log_likelihood,
)
from pyrovamp.infer.planning import (
    CPU_CHUNK_BYTES,
    DEFAULT_MEMORY_BUDGET,
    Plan,
    evaluation_plan,
    peak_bytes,
    points_per_block,
)
from pyrovamp.infer.refine import refine_guide
from pyrovamp.infer.weights import log_weights, site_log_probs

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "CPU_CHUNK_BYTES",
    "site_log_probs",
    "log_weights",
    "peak_bytes",
    "Plan",
    "evaluation_plan",
    "points_per_block",
    "log_importance_weights",
    "log_likelihood",
    "elbo",
    "elbo_terms",
    "active_units",
    "IWAELoss",
    "SCHEDULES",
    "INITIAL",
    "DEFAULT_NUM_CHAINS",
    "DEFAULT_NUM_STEPS",
    "DEFAULT_LEAPFROG_STEPS",
    "DEFAULT_INITIAL",
    "DEFAULT_SCHEDULE",
    "annealing_schedule",
    "ais_log_likelihood",
    "simulate",
    "bdmc",
    "MAX_LATENT_DIM",
    "total_latent_dim",
    "exact_log_likelihood",
    "refine_guide",
    "khat_threshold",
    "importance_diagnostics",
    "khat_against_truth",
]
