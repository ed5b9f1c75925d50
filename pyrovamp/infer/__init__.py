"""Estimators of log p(x) for any Pyro model/guide pair: importance sampling, the ELBO,
AIS, exact quadrature for 2-D latents, guide refinement and PSIS diagnostics (nats per data point)."""

from pyrovamp.infer.importance import (DEFAULT_MEMORY_BUDGET, CPU_CHUNK_BYTES, site_log_probs, peak_bytes, Plan, evaluation_plan, points_per_block, log_importance_weights, log_likelihood, elbo, elbo_terms, active_units)
from pyrovamp.infer.ais import (SCHEDULES, INITIAL, DEFAULT_NUM_CHAINS, DEFAULT_NUM_STEPS, DEFAULT_LEAPFROG_STEPS, DEFAULT_INITIAL, DEFAULT_SCHEDULE, annealing_schedule, ais_log_likelihood, simulate, bdmc)
from pyrovamp.infer.exact import (MAX_LATENT_DIM, total_latent_dim, exact_log_likelihood)
from pyrovamp.infer.refine import (refine_guide)
from pyrovamp.infer.diagnostics import (khat_threshold, importance_diagnostics, khat_against_truth)

__all__ = ['DEFAULT_MEMORY_BUDGET', 'CPU_CHUNK_BYTES', 'site_log_probs', 'peak_bytes', 'Plan', 'evaluation_plan', 'points_per_block', 'log_importance_weights', 'log_likelihood', 'elbo', 'elbo_terms', 'active_units', 'SCHEDULES', 'INITIAL', 'DEFAULT_NUM_CHAINS', 'DEFAULT_NUM_STEPS', 'DEFAULT_LEAPFROG_STEPS', 'DEFAULT_INITIAL', 'DEFAULT_SCHEDULE', 'annealing_schedule', 'ais_log_likelihood', 'simulate', 'bdmc', 'MAX_LATENT_DIM', 'total_latent_dim', 'exact_log_likelihood', 'refine_guide', 'khat_threshold', 'importance_diagnostics', 'khat_against_truth']
