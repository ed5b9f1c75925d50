"""Importance-sampled log-likelihood and the ELBO, per data point in nats; the IWAE loss.

Importance sampling with the guide as proposal (Burda et al. 2016, eq. 1; VampPrior paper,
sec. 4): for each data point ``x``,

    log p(x) ~= logsumexp_s [ log p(x, h_s) - log q(h_s | x) ] - log S,   h_s ~ q(h | x),

where ``h`` are all latent sites of the model (``z`` for the VAE). The estimator is a stochastic
lower bound that tightens as ``S`` grows and equals the ELBO's expectation at ``S = 1``. The
log-weights come from :func:`pyrovamp.infer.weights.log_weights`: any object with Pyro
``model(x)`` and ``guide(x)`` methods whose sites sit in one ``pyro.plate`` over data points at
``dim=-1`` works. A guide that is not amortised (say, one parameter per data point) cannot score a
slice of the data; it is recognised (it fails on one data point) and gets the whole data set in
one block.

Blocks and seeds. Data points are processed in blocks of :func:`points_per_block` points, each
scored in chunks within the memory budget (:mod:`pyrovamp.infer.planning`). With a ``seed``
block ``b``'s draws come from torch's generator seeded with ``derive_seed(seed, b)``, so a data
set split in shards at block boundaries (``first_block``: the global index of a shard's first
block) gives exactly the values of one call on the whole set.

Data is cast to the model's floating dtype and moved to its device (numpy arrays, integer and
float64 tensors are accepted); results live on the model's device.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from pyrovamp._progress import progress_bar
from pyrovamp._random import derive_seed, seed_forked
from pyrovamp._validate import (
    _is_real,
    check_choice,
    check_int,
    check_optional_int,
    describe,
)
from pyrovamp.errors import ArgumentTypeError
from pyrovamp.infer.ais import ais_log_likelihood
from pyrovamp.infer.context import as_model_data, evaluation_context
from pyrovamp.infer.diagnostics import importance_diagnostics
from pyrovamp.infer.exact import exact_log_likelihood
from pyrovamp.infer.planning import (
    DEFAULT_MEMORY_BUDGET,
    check_budget,
    data_plan,
    evaluation_plan,
    points_per_block,
)
from pyrovamp.infer.weights import dreg_log_weights, log_weights
from pyrovamp.nn import eval_mode

DEFAULT_NUM_SAMPLES = 5000
"""``S`` of :func:`log_likelihood`: the VampPrior paper's test log-likelihood."""
ESTIMATORS: dict[str, Callable] = {"ais": ais_log_likelihood, "exact": exact_log_likelihood}
"""The ``method`` s of :func:`log_likelihood` besides ``"is"`` (its own code), by name."""

__all__ = [
    "log_importance_weights",
    "log_likelihood",
    "elbo",
    "elbo_terms",
    "active_units",
    "IWAELoss",
    "DEFAULT_MEMORY_BUDGET",
    "evaluation_plan",
    "points_per_block",
]


def _check_args(num_samples, memory_budget, batch_size, seed, first_block) -> None:
    check_int("num_samples", num_samples)
    check_budget(memory_budget)
    check_optional_int("batch_size", batch_size)
    check_optional_int("seed", seed, 0)
    check_int("first_block", first_block, 0)


def _blocks(
    model, x, num_samples, memory_budget, batch_size, seed, first_block, split=False
) -> Iterator[Any]:
    """For every block of data points its ``(S, n)`` log-weights (``split``: the pair of its
    observed and latent parts, see :func:`~pyrovamp.infer.weights.log_weights`). Call inside
    :func:`~pyrovamp.infer.context.evaluation_context`."""
    plan = data_plan(model, x, num_samples, memory_budget, batch_size)
    points = plan.points_per_block or x.shape[0]
    tile = plan.points_per_chunk or x.shape[0]
    step = plan.samples_per_chunk
    for j, start in enumerate(range(0, x.shape[0], points)):
        if seed is not None:
            seed_forked(derive_seed(seed, first_block + j))
        xb = x[start : start + points]
        tiles = [
            [
                log_weights(
                    model.model,
                    model.guide,
                    xb[t : t + tile],
                    min(step, num_samples - s),
                    split=split,
                )
                for s in range(0, num_samples, step)
            ]
            for t in range(0, xb.shape[0], tile)
        ]
        if split:
            yield tuple(
                torch.cat([torch.cat([c[i] for c in chunks], 0) for chunks in tiles], 1)
                for i in (0, 1)
            )
        else:
            yield torch.cat([torch.cat(chunks, 0) for chunks in tiles], 1)


_ARGS_DOC = """memory_budget: bytes of tensors per chunk (see :func:`points_per_block`).
        batch_size: data points per block (default: from the memory budget).
        seed: fix the random draws (then block ``b`` draws from a generator seeded by ``(seed, b)``;
            the global random state is left untouched). ``None``: torch's global generator.
        first_block: global index of the block that starts at ``x[0]``, for a shard of a larger
            data set that starts at ``first_block * points_per_block(...)``."""


def log_importance_weights(
    model,
    x,
    num_samples: int,
    *,
    memory_budget: float = DEFAULT_MEMORY_BUDGET,
    batch_size: int | None = None,
    seed: int | None = None,
    first_block: int = 0,
) -> torch.Tensor:
    """Log importance weights ``log p(x, h_s) - log q(h_s|x)`` with ``h_s ~ q(h|x)``, nats.

    Args:
        model: object with Pyro ``model(x)`` / ``guide(x)`` (e.g. :class:`pyrovamp.VAE`).
        x: ``(N, ...)`` data: a tensor or numpy array of any real dtype.
        num_samples: ``S`` importance samples per data point.
        {args}

    Returns:
        ``(S, N)`` tensor of the model's dtype on its device, nats.

    Raises:
        ValueError: bad ``x`` (shape, NaN, support), ``num_samples < 1`` or another bad argument.
    """
    _check_args(num_samples, memory_budget, batch_size, seed, first_block)
    x = as_model_data(model, x)
    with evaluation_context(model, seed, no_grad=True):
        return torch.cat(
            list(_blocks(model, x, num_samples, memory_budget, batch_size, seed, first_block)), 1
        )


def log_likelihood(
    model,
    x,
    num_samples: int | None = None,
    *,
    memory_budget: float = DEFAULT_MEMORY_BUDGET,
    batch_size: int | None = None,
    seed: int | None = None,
    diagnostics: bool = False,
    first_block: int = 0,
    method: str = "is",
    progress: bool | str = False,
    **options,
) -> Any:
    """Importance-sampled ``log p(x)`` per data point, in nats (Burda et al. 2016, eq. 1; the
    VampPrior paper's test log-likelihood with ``S = 5000``).

    Vectorised over samples and data points, in blocks within ``memory_budget``; the prior's
    components (e.g. the encoder on all pseudo-inputs) are computed once per call; the
    ``logsumexp`` over samples is taken in float64.

    Args:
        model: object with Pyro ``model(x)`` / ``guide(x)``; the guide is the proposal.
        x: ``(N, ...)`` data: a tensor or numpy array of any real dtype.
        num_samples: ``S`` importance samples per data point (method ``"is"`` only; default
            5000, the paper's).
        {args}
        diagnostics: also return the estimator's diagnostics: for ``"is"`` the Pareto-smoothed
            importance sampling diagnostics of every data point's weights
            (:func:`pyrovamp.importance_diagnostics`); for ``"ais"`` and ``"exact"`` theirs.
        method: ``"is"`` (importance sampling), ``"ais"`` (annealed importance sampling,
            :func:`pyrovamp.ais_log_likelihood`; ``options``: ``num_chains``, ``num_steps``, ...)
            or ``"exact"`` (quadrature for models with at most two latent dimensions,
            :func:`pyrovamp.exact_log_likelihood`; ``options``: ``tol``, ...; its diagnostics
            hold ``error_estimate``). ``memory_budget``, ``batch_size``, ``seed``,
            ``first_block`` and ``progress`` mean the same for all three (a block of AIS or of
            the quadrature is ``batch_size`` points); ``seed=None`` leaves the method's own
            default (``exact_log_likelihood``'s fixed box seed).
        progress: progress over the data points, updated after every block (the estimate does
            not depend on it): ``True`` a tqdm bar (on stderr, or a widget in
            Jupyter); ``"auto"`` a bar on a terminal or in a notebook, else a log line at most
            once a minute (:func:`pyrovamp._progress.progress_bar`); ``False`` nothing.

    Returns:
        ``(N,)`` float64 tensor of log-likelihoods on the model's device (nats per data point;
        higher is better); with ``diagnostics=True`` the pair ``(log_likelihood, dict)`` whose
        dict holds ``(N,)`` numpy arrays ``log_likelihood_psis``, ``pareto_k`` and ``ess``.

    Raises:
        ValueError: bad ``x``, ``num_samples`` or another bad argument (one line naming it),
            unknown ``method``, an option the method does not take (``num_samples`` for
            ``"ais"``/``"exact"``, ``options`` for ``"is"``).
        ArgumentTypeError: an argument of the wrong type (a ``TypeError``).
    """
    check_choice("method", method, ("is", *ESTIMATORS))
    if method != "is":
        estimator = ESTIMATORS[method]
        if num_samples is not None:
            raise ValueError(
                f"num_samples is the number of importance samples of method='is'; method="
                f"{method!r} does not take it"
                + (" (its importance samples are num_chains)" if method == "ais" else "")
            )
        known = set(inspect.signature(estimator).parameters) - {"model", "x"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"unexpected option(s) for method={method!r}: {', '.join(unknown)} "
                f"(it takes {', '.join(sorted(known))})"
            )
        if seed is not None:  # else the estimator's own default
            options["seed"] = seed
        return estimator(
            model,
            x,
            memory_budget=memory_budget,
            batch_size=batch_size,
            first_block=first_block,
            diagnostics=diagnostics,
            progress=progress,
            **options,
        )
    if options:
        raise ValueError(f"unexpected option(s) for method='is': {', '.join(sorted(options))}")
    num_samples = DEFAULT_NUM_SAMPLES if num_samples is None else num_samples
    _check_args(num_samples, memory_budget, batch_size, seed, first_block)
    x = as_model_data(model, x)
    out: list[torch.Tensor] = []
    diag: dict[str, list] = {"log_likelihood_psis": [], "pareto_k": [], "ess": []}
    with (
        evaluation_context(model, seed, no_grad=True),
        progress_bar(x.shape[0], f"IS log-likelihood (S={num_samples})", progress) as bar,
    ):
        for lw in _blocks(model, x, num_samples, memory_budget, batch_size, seed, first_block):
            out.append(torch.logsumexp(lw.double(), dim=0) - math.log(num_samples))
            if diagnostics:
                d = importance_diagnostics(lw)
                for k in diag:
                    diag[k].append(d[k])
            bar.update(lw.shape[1])
    ll = torch.cat(out)
    if not diagnostics:
        return ll
    return ll, {k: np.concatenate(v) for k, v in diag.items()}


def elbo(
    model,
    x,
    num_samples: int = 1,
    *,
    memory_budget: float = DEFAULT_MEMORY_BUDGET,
    batch_size: int | None = None,
    seed: int | None = None,
    first_block: int = 0,
) -> torch.Tensor:
    """Monte Carlo ELBO ``E_q[log p(x, h) - log q(h|x)]`` per data point, in nats, averaged over
    ``num_samples`` draws from the guide (Kingma & Welling 2014, eq. 3): the ``elbo`` entry of
    :func:`elbo_terms` (same arguments, same draws), without the split into its two terms.

    Returns:
        ``(N,)`` float64 tensor on the model's device (nats per data point; a lower bound of
        ``log p(x)``).

    Raises:
        ValueError: bad ``x``, ``num_samples`` or another bad argument.
    """
    _check_args(num_samples, memory_budget, batch_size, seed, first_block)
    x = as_model_data(model, x)
    with evaluation_context(model, seed, no_grad=True):
        return torch.cat(
            [
                lw.double().mean(0)
                for lw in _blocks(
                    model, x, num_samples, memory_budget, batch_size, seed, first_block
                )
            ]
        )


def elbo_terms(
    model,
    x,
    num_samples: int = 1,
    *,
    memory_budget: float = DEFAULT_MEMORY_BUDGET,
    batch_size: int | None = None,
    seed: int | None = None,
    first_block: int = 0,
) -> dict[str, torch.Tensor]:
    """The ELBO's two terms per data point, in nats, averaged over ``num_samples`` draws of the
    guide: ``reconstruction = E_q[log p(x|h)]`` (the observed sites) and
    ``kl = E_q[log q(h|x) - log p(h)]`` (the latent sites; a Monte Carlo KL); ``elbo`` is
    ``reconstruction - kl`` (Kingma & Welling 2014, eq. 7).

    Args:
        model: object with Pyro ``model(x)`` / ``guide(x)``.
        x: ``(N, ...)`` data: a tensor or numpy array of any real dtype.
        num_samples: draws per data point.
        {args}

    Returns:
        dict of ``(N,)`` float64 tensors ``reconstruction``, ``kl``, ``elbo``.

    Raises:
        ValueError: bad ``x``, ``num_samples`` or another bad argument.
    """
    _check_args(num_samples, memory_budget, batch_size, seed, first_block)
    x = as_model_data(model, x)
    rec, kl = [], []
    with evaluation_context(model, seed, no_grad=True):
        for r, k in _blocks(
            model, x, num_samples, memory_budget, batch_size, seed, first_block, split=True
        ):
            rec.append(r.double().mean(0))
            kl.append(k.double().mean(0))
    reconstruction, divergence = torch.cat(rec), torch.cat(kl)
    return {"reconstruction": reconstruction, "kl": divergence, "elbo": reconstruction - divergence}


for _f in (log_importance_weights, log_likelihood, elbo_terms):
    _f.__doc__ = _f.__doc__.replace("{args}", _ARGS_DOC)  # type: ignore[union-attr]
del _f


def active_units(
    model, x: torch.Tensor, threshold: float = 0.01, num_samples: int = 10, batch_size: int = 1000
) -> dict[str, int]:
    """Number of active stochastic units per latent layer (Burda et al. 2016, sec. 5.2): unit
    ``i`` is active when ``Cov_x(E_q[z_i | x]) > threshold``, the variance over data points of
    its posterior mean.

    Args:
        model: a model with ``posterior_means(x, num_samples) -> {site: (N, L)}`` (:class:`VAE`:
            ``z``; :class:`HVAE`: ``z1`` and ``z2``, ``E[z1|x]`` by Monte Carlo over ``z2``).
        x: ``(N, D)`` data (N >= 2): a tensor or numpy array of any real dtype.
        threshold: activity threshold (Burda et al.: 0.01).
        num_samples: Monte Carlo draws for the lower layer's posterior mean.
        batch_size: data points per forward pass.

    Returns:
        ``{site: number of active units}``.

    Raises:
        ArgumentTypeError: a model without ``posterior_means`` (a ``TypeError``, also a
            ``ValueError``), a count or threshold of the wrong type.
        ValueError: fewer than 2 data points; ``threshold`` negative or not finite,
            ``num_samples`` or ``batch_size`` not positive.
    """
    if not hasattr(model, "posterior_means"):
        raise ArgumentTypeError(
            f"active_units needs a model with posterior_means(x) (VAE or HVAE), got "
            f"{describe(model)}"
        )
    if not _is_real(threshold) or not (math.isfinite(threshold) and threshold >= 0):
        raise (ValueError if _is_real(threshold) else ArgumentTypeError)(
            f"threshold must be a number >= 0, got {describe(threshold)}"
        )
    check_int("num_samples", num_samples)
    check_int("batch_size", batch_size)
    x = as_model_data(model, x)
    if x.shape[0] < 2:
        raise ValueError(f"active_units needs at least 2 data points, got {x.shape[0]}")
    with eval_mode(model):
        parts = [
            model.posterior_means(x[i : i + batch_size], num_samples)
            for i in range(0, x.shape[0], batch_size)
        ]
    out = {}
    for site in parts[0]:
        means = torch.cat([p[site] for p in parts]).double()
        out[site] = int((means.var(0) > threshold).sum())
    return out


class IWAELoss:
    """The importance-weighted bound of Burda et al. (2016, eq. 8) with ``K`` samples as a
    differentiable loss (Pyro's ``RenyiELBO(alpha=0)`` has no ``differentiable_loss``):

        -sum_n [ logsumexp_k (log p(x_n, h_k) - log q(h_k | x_n)) - log K ],   h_k ~ q(h | x_n).

    The ``K`` draws are one vectorised plate at ``dim=-2`` around model and guide
    (:func:`~pyrovamp.infer.weights.log_weights`; every site must sit in one data plate at
    ``dim=-1``); gradients flow through reparameterised draws, so every latent site of the guide
    must have ``rsample``.

    Two gradient estimators of the same bound (the loss's value is the same with either):

    - ``"iwae"``: the gradient of the bound as written (Burda et al.). Its signal-to-noise ratio
      for the guide's parameters falls as ``1/sqrt(K)`` (Rainforth et al. 2018, "Tighter
      variational bounds are not necessarily better").
    - ``"dreg"``: the doubly reparameterised gradient (Tucker, Lawson, Gu & Maddison 2019, eq.
      7; :func:`~pyrovamp.infer.weights.dreg_log_weights`): the same gradient for the model's
      parameters, and for the guide's the score term replaced by its reparameterised form
      (weights ``w~_k^2`` instead of ``w~_k``), unbiased, with a signal-to-noise ratio that does
      not fall with ``K``. A parameter in both (the VampPrior's pseudo-inputs go through the
      encoder) gets both parts. It costs two more passes of the guide (not of the decoder).

    Scales, as in Pyro's ELBOs: a subsampled data plate (``pyro.plate(..., subsample_size=B)``,
    scale ``c = size / B``) or a ``poutine.scale`` around the model multiplies each point's bound
    by ``c``; a latent site scaled by a further ``beta`` (KL warm-up,
    :class:`pyrovamp.training.ScaleLatents`) enters the log-weights multiplied by ``beta``:
    ``log w = log p(x|h) + beta (log p(h) - log q(h|x))``. The scales are applied to each point's
    bound, never inside the ``logsumexp`` (which would not be the bound of any model).

    Args:
        num_particles: ``K >= 2``.
        estimator: ``"iwae"`` (default) or ``"dreg"``.

    Raises:
        ValueError: ``num_particles`` not an integer >= 2, or an unknown ``estimator`` (one line
            naming the argument).
    """

    ESTIMATORS = ("iwae", "dreg")

    def __init__(self, num_particles: int, estimator: str = "iwae"):
        self.num_particles = check_int("num_particles", num_particles, 2)
        self.estimator = check_choice("estimator", estimator, self.ESTIMATORS)

    def __repr__(self) -> str:
        return f"IWAELoss(num_particles={self.num_particles}, estimator={self.estimator!r})"

    def differentiable_loss(
        self, model: Callable, guide: Callable, x: torch.Tensor
    ) -> torch.Tensor:
        """The negative bound summed over the data points of ``x`` (nats), a 0-dim tensor.

        Raises:
            ValueError: a latent guide site without ``rsample``, a site outside the data
                plate at ``dim=-1``, or observed sites of different scales; with ``"dreg"``,
                latent sites of different KL scales.
        """
        if self.estimator == "dreg":
            lw, scale = dreg_log_weights(
                model, guide, x, self.num_particles, require_rsample="loss='iwae_dreg'"
            )
        else:
            lw, scale = log_weights(
                model, guide, x, self.num_particles, require_rsample="loss='iwae'", with_scale=True
            )
        bound = torch.logsumexp(lw, dim=0) - math.log(self.num_particles)
        return -(scale * bound).sum()
