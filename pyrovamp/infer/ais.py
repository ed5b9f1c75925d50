"""Annealed importance sampling (AIS) of ``log p(x)`` and bidirectional Monte Carlo (BDMC).

AIS (Neal 2001, "Annealed importance sampling"; for decoder-based models Wu et al. 2017, "On
the quantitative analysis of decoder-based generative models", sec. 2-3): for each data point
``x``, anneal from a normalised initial density ``pi_0(z)`` -- by default the even mixture of
the guide ``q(z|x)`` and a broad Gaussian covering the prior, or the guide alone, or the prior
``p(z)`` as Wu et al. -- to the unnormalised posterior ``p(x, z)`` through the geometric path

    f_t(z) = pi_0(z)^(1 - beta_t) p(x, z)^beta_t,   0 = beta_0 < beta_1 < ... < beta_T = 1,

with one Hamiltonian Monte Carlo (HMC) transition leaving ``f_t`` invariant at every
intermediate temperature, followed by an independence Metropolis-Hastings move proposing from
``pi_0`` (also ``f_t``-invariant; it lets chains jump between posterior modes). Chain ``c``
carries the log-weight

    log w_c = sum_t (beta_t - beta_{t-1}) [log p(x, z_{t-1}) - log pi_0(z_{t-1})],

whose exponential has expectation ``p(x)``, so ``logsumexp_c log w_c - log C`` is a stochastic
lower bound of ``log p(x)`` (in expectation) that tightens as ``T`` grows; ``T = 1`` is
importance sampling with ``C`` draws from ``pi_0``.

BDMC (Grosse, Ghahramani and Adams 2015, "Sandwiching the marginal likelihood using
bidirectional Monte Carlo"): on data simulated from the model, ``(z, x) ~ p(z) p(x|z)``, the
simulated ``z`` is an exact posterior sample; AIS run backwards from it (``beta`` from 1 to 0)
estimates ``1/p(x)`` without bias, which gives a stochastic upper bound of ``log p(x)``. The gap
between the forward and the reverse estimate bounds the error of both.

All latent sites of a model (``z`` of the VAE; ``z2`` and ``z1`` of the HVAE; any Pyro
model/guide pair whose sites sit in one data plate at ``dim=-1``) are annealed jointly as one
concatenated vector. The chains are batched over data points and chains; the HMC integrator is
the velocity Verlet scheme of :func:`pyro.ops.integrator.velocity_verlet`, written here for
batches (a step size and an accept/reject decision per chain; the potential's gradient from
torch autograd), with a diagonal mass matrix from the guide's variances and the step size
adapted per data point toward a target acceptance rate, as in Wu et al.'s code. The independence
move's proposals are scored without gradients; the gradients the next HMC transition needs are
computed only for the proposals accepted (about a quarter), their data points gathered. The
guide's draws and density come from its distribution kept per chunk where it has one latent
site. Log-weights are accumulated in float64. Tensors are created on ``x``'s device (CPU or
CUDA).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pyro import poutine

from pyrovamp._progress import progress_bar
from pyrovamp._random import derive_seed, seed_forked
from pyrovamp._validate import (
    check_choice,
    check_int,
    check_open_unit,
    check_optional_int,
    check_positive,
)
from pyrovamp.infer._ais_target import _Initial, _Target
from pyrovamp.infer.context import as_model_data, check_model, evaluation_context
from pyrovamp.infer.latent import latent_space, probe_latent_space
from pyrovamp.infer.planning import (
    CPU_CHUNK_BYTES,
    DEFAULT_MEMORY_BUDGET,
    check_budget,
    chunk_budget,
    pair_bytes,
)

__all__ = ["ais_log_likelihood", "bdmc", "simulate", "annealing_schedule", "SCHEDULES", "INITIAL"]

SCHEDULES = ("geometric", "sigmoid", "linear")
INITIAL = ("guide", "prior", "gaussian", "prior-gaussian", "mixture")

# the defaults of ais_log_likelihood and bdmc (the CLI's too)
DEFAULT_NUM_CHAINS = 16
DEFAULT_NUM_STEPS = 600
DEFAULT_LEAPFROG_STEPS = 1
DEFAULT_INITIAL = "mixture"
DEFAULT_SCHEDULE = "sigmoid"
_GRAD_FACTOR = 5  # the graph kept for the backward pass, and the backward: about 5 forward peaks
_CPU_CHUNK_BYTES = 2 * CPU_CHUNK_BYTES
"""On a CPU an AIS chunk takes at most this many bytes (less if ``memory_budget`` is smaller).
Chunks that fit run faster per data point: on the zoo's static-MNIST VAE + VampPrior (8 chains,
one thread, AVX-512) 23.4 ms per image for 100 temperatures in chunks of 256 points (the cap: 259),
against 25-27 ms in the 2078-point chunks of the default budget, whose ``(C, n, D)`` tensors
exceed the C library's 32 MiB limit for reusing freed memory, so that every step touches fresh
pages; smaller chunks (128 points: 26 ms) pay the per-call costs of the model more often."""


def annealing_schedule(
    num_steps: int, schedule: str = "sigmoid", *, beta_min: float = 1e-3, sigmoid_delta: float = 4.0
) -> torch.Tensor:
    """Inverse temperatures ``beta_0 = 0 < beta_1 < ... < beta_T = 1``: ``(T + 1,)`` float64.

    Args:
        num_steps: ``T`` (at least 1).
        schedule: ``"sigmoid"`` -- ``sigma(delta (2t/T - 1))`` rescaled to [0, 1], the
            schedule of the BDMC code of Grosse et al. (2015) and Wu et al. (2017);
            ``"geometric"`` -- ``beta_1 .. beta_T`` geometrically spaced from ``beta_min`` to 1
            (Neal 2001); ``"linear"`` -- ``t / T``.
        beta_min: first non-zero temperature of the geometric schedule.
        sigmoid_delta: steepness ``delta`` of the sigmoid schedule.

    Raises:
        ValueError: unknown ``schedule``, ``num_steps < 1``, ``beta_min`` not in (0, 1).
    """
    check_int("num_steps", num_steps)
    check_choice("schedule", schedule, SCHEDULES)
    check_open_unit("beta_min", beta_min)
    check_positive("sigmoid_delta", sigmoid_delta)
    t = torch.arange(num_steps + 1, dtype=torch.float64)
    if schedule == "linear":
        return t / num_steps
    if schedule == "sigmoid":
        s = torch.sigmoid(sigmoid_delta * (2 * t / num_steps - 1))
        return (s - s[0]) / (s[-1] - s[0])
    if num_steps == 1:
        return torch.tensor([0.0, 1.0], dtype=torch.float64)
    b = torch.logspace(math.log10(beta_min), 0.0, num_steps, dtype=torch.float64)
    return torch.cat([torch.zeros(1, dtype=torch.float64), b])


def _betas(num_steps, schedule, beta_min):
    if isinstance(schedule, torch.Tensor):
        b = schedule.detach().to(torch.float64).cpu().flatten()
        if b.numel() < 2 or b[0] != 0 or b[-1] != 1 or bool((b[1:] <= b[:-1]).any()):
            raise ValueError(
                f"schedule as a tensor must increase strictly from 0 to 1, got {b.tolist()[:5]}..."
            )
        return b
    return annealing_schedule(num_steps, schedule, beta_min=beta_min)


def effective_chains(log_weights: torch.Tensor) -> torch.Tensor:
    """AIS's effective number of chains per data point, ``(sum w)^2 / sum w^2``, from the
    ``(C, N)`` log-weights: ``(N,)``, between 1 and ``C``."""
    w = torch.exp(log_weights - log_weights.max(0).values)
    return w.sum(0) ** 2 / (w * w).sum(0)


def _run_chains(
    target,
    u,
    betas,
    num_leapfrog,
    step_size,
    inv_mass,
    target_accept,
    adapt,
    adapt_rate,
    independence,
):
    """Anneal chains ``u`` ``(C, n, d)`` along ``betas`` (increasing for forward AIS, decreasing
    for reverse AIS) with one HMC transition per intermediate temperature.

    Returns ``(log_w (C, n) float64, acceptance (n,), step_size (n,))``.
    """
    C, n, d = u.shape
    lj, li, gj, gi = target(u)
    log_w = torch.zeros(C, n, dtype=torch.float64, device=u.device)
    eps = torch.full((1, n, 1), float(step_size), dtype=u.dtype, device=u.device)
    accepted = torch.zeros(n, dtype=torch.float64, device=u.device)
    jumps = torch.zeros(n, dtype=torch.float64, device=u.device)
    sqrt_inv_mass = inv_mass.sqrt()
    T = betas.numel() - 1
    for t in range(1, T + 1):
        b_prev, b = float(betas[t - 1]), float(betas[t])
        log_w += (b - b_prev) * (lj.double() - li.double())
        if t == T:
            break
        # one HMC transition leaving f_b = pi_0^(1-b) p(x, .)^b invariant
        log_f0 = (1 - b) * li + b * lj
        r = torch.randn_like(u) / sqrt_inv_mass  # momentum ~ N(0, M), M = diag(1 / inv_mass)
        h0 = -log_f0 + 0.5 * (r * r * inv_mass).sum(-1)
        un, rn = u, r
        grad = (1 - b) * gi + b * gj  # gradient of log f_b = -gradient of the potential
        for _ in range(num_leapfrog):  # velocity Verlet
            rn = rn + 0.5 * eps * grad
            un = un + eps * inv_mass * rn
            ljn, lin, gjn, gin = target(un)
            grad = (1 - b) * gin + b * gjn
            rn = rn + 0.5 * eps * grad
        h1 = -((1 - b) * lin + b * ljn) + 0.5 * (rn * rn * inv_mass).sum(-1)
        log_alpha = (h0 - h1).nan_to_num(nan=-math.inf)
        acc = torch.rand_like(log_alpha).log() < log_alpha  # (C, n)
        a3 = acc[..., None]
        u = torch.where(a3, un, u)
        gj, gi = torch.where(a3, gjn, gj), torch.where(a3, gin, gi)
        lj, li = torch.where(acc, ljn, lj), torch.where(acc, lin, li)
        rate = acc.double().mean(0)
        accepted += rate
        if adapt:  # Wu et al.: multiply the step size up or down toward the target acceptance
            eps = eps * torch.exp(adapt_rate * (rate - target_accept)).to(eps.dtype)[None, :, None]
        if independence:
            # independence Metropolis-Hastings from pi_0 (also leaves f_b invariant): global
            # jumps between the modes a local HMC move cannot cross;
            # log alpha = b [(log p - log pi_0)(u') - (log p - log pi_0)(u)]
            # the proposals' densities without gradients, their gradients (for the next HMC
            # transition) only where a proposal is accepted
            un = target.initial.sample(C)
            ljn, lin, _, _ = target(un, grad=False)
            log_alpha = (b * ((ljn - lin) - (lj - li))).nan_to_num(nan=-math.inf)
            acc = torch.rand_like(log_alpha).log() < log_alpha
            gjn, gin = target.gradients_at(un, acc)
            a3 = acc[..., None]
            u = torch.where(a3, un, u)
            gj, gi = torch.where(a3, gjn, gj), torch.where(a3, gin, gi)
            lj, li = torch.where(acc, ljn, lj), torch.where(acc, lin, li)
            jumps += acc.double().mean(0)
    steps = max(1, T - 1)
    return log_w, accepted / steps, eps.reshape(n).double(), jumps / steps


def _check_options(num_chains, num_steps, *, num_leapfrog_steps, step_size, target_accept, initial,
                   memory_budget, batch_size, adapt_rate, **_) -> None:  # fmt: skip
    """Check the AIS options (one line naming a bad one); options it does not know are left to
    their users."""
    check_int("num_chains", num_chains)
    check_int("num_steps", num_steps)
    check_int("num_leapfrog_steps", num_leapfrog_steps)
    check_positive("step_size", step_size)
    check_positive("adapt_rate", adapt_rate)
    check_budget(memory_budget)
    check_open_unit("target_accept", target_accept)
    check_choice("initial", initial, INITIAL)
    check_optional_int("batch_size", batch_size)


def _points_per_chunk(model, x, num_chains, memory_budget, batch_size) -> int:
    """Data points per chunk: ``batch_size``, else as many as fit in ``memory_budget`` -- on a
    CPU in ``min(memory_budget, _CPU_CHUNK_BYTES)`` -- with ``num_chains`` chains each, a chain
    costing the measured bytes of a forward pass per (draw, data point) pair times the
    gradient's factor. It depends on the model, ``x``'s device type and the options, not on the
    data or the number of processes. Call inside the evaluation context."""
    if batch_size is not None:
        return batch_size
    budget = chunk_budget(memory_budget, x.device, _CPU_CHUNK_BYTES)
    pairs = int(budget // (_GRAD_FACTOR * pair_bytes(model, x)))
    return max(1, pairs // num_chains)


def _inverse_mass(space, x, num=64):
    """Diagonal inverse mass matrix per data point: the guide's variances ``(1, n, d)`` (from
    ``num`` draws), so that HMC moves in units of the guide's spread."""
    q = space.sample(x, num, "guide")
    return q.var(0, keepdim=True).clamp_min(1e-8)


def ais_log_likelihood(
    model,
    x: torch.Tensor,
    num_chains: int = DEFAULT_NUM_CHAINS,
    num_steps: int = DEFAULT_NUM_STEPS,
    *,
    num_leapfrog_steps: int = DEFAULT_LEAPFROG_STEPS,
    schedule=DEFAULT_SCHEDULE,
    beta_min: float = 1e-3,
    initial: str = DEFAULT_INITIAL,
    init_scale: float = 1.0,
    independence_moves: bool = True,
    step_size: float = 0.5,
    target_accept: float = 0.65,
    adapt_step_size: bool = True,
    adapt_rate: float = 0.5,
    memory_budget: float = DEFAULT_MEMORY_BUDGET,
    batch_size: int | None = None,
    seed: int | None = None,
    first_block: int = 0,
    diagnostics: bool = False,
    progress: bool | str = False,
) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """``log p(x)`` per data point by annealed importance sampling with HMC transitions (Neal
    2001; Wu et al. 2017), in nats.

    For any object with Pyro ``model(x)`` / ``guide(x)`` whose latent sites (real, or with a
    ``biject_to``-able support) and observed sites sit in one ``pyro.plate`` over data points at
    ``dim=-1``; all latent sites are annealed jointly. Batched over data points and chains,
    chunked by ``memory_budget``; the model is in eval mode and its priors cached (the
    VampPrior's components are computed once per call).

    Args:
        model: e.g. :class:`pyrovamp.VAE` or :class:`pyrovamp.HVAE`.
        x: ``(N, D)`` data.
        num_chains: ``C`` independent AIS chains per data point.
        num_steps: ``T`` intermediate distributions (``T - 1`` HMC transitions).
        num_leapfrog_steps: leapfrog steps per HMC transition (models with many latent
            dimensions may need more).
        schedule: ``"sigmoid"`` (default), ``"geometric"`` or ``"linear"`` (see
            :func:`annealing_schedule`), or a ``(T + 1,)`` tensor of inverse temperatures from 0
            to 1 (then ``num_steps`` is ignored).
        beta_min: first non-zero inverse temperature of the geometric schedule.
        initial: the normalised initial density ``pi_0`` (:class:`_Initial`): ``"mixture"``
            (default) -- the even mixture of the guide ``q(z|x)`` and a broad diagonal Gaussian
            with the prior's mean and standard deviation, a defensive choice that still finds
            the posterior's mass where the guide misses it; ``"guide"``
            -- ``q(z|x)`` itself; ``"prior"`` -- ``p(z)`` (Wu et al.); ``"gaussian"`` -- a
            diagonal Gaussian with the guide's moments, its scale times ``init_scale``;
            ``"prior-gaussian"`` -- the broad Gaussian alone.
        init_scale: widening factor of the Gaussian components of ``pi_0``.
        independence_moves: after every HMC transition, also propose a fresh draw from
            ``pi_0`` and accept it by Metropolis-Hastings (``log alpha = beta_t [l(u') - l(u)]``
            with ``l = log p(x, .) - log pi_0``); it leaves the intermediate distribution
            invariant and lets chains jump between modes that HMC cannot cross.
        step_size: initial leapfrog step size, in units of the guide's standard deviations.
        target_accept: acceptance rate the step size is adapted toward (Wu et al.: 0.65).
        adapt_step_size: adapt the step size per data point after every transition (a step
            size that depends on the chains' past makes the weights very slightly biased;
            switch it off for exactly unbiased weights).
        adapt_rate: ``log step_size += adapt_rate * (acceptance - target_accept)``.
        memory_budget: bytes of intermediate tensors per chunk of data points (on a CPU at most
            64 MiB, twice :data:`~pyrovamp.infer.planning.CPU_CHUNK_BYTES`; see
            :mod:`pyrovamp.infer.planning`).
        batch_size: data points per chunk (default: from the memory budget). The guide is
            called on chunks and subsets of ``x`` (the initial density and the step sizes come
            from it): AIS needs an amortised guide, one that takes any data points; a guide with
            one latent per point of a fixed set (an ``AutoNormal`` fitted to it) is not
            supported here (IS, the ELBO and the exact estimator take it, on that set).
        seed: fix the random draws: chunk ``b`` draws from a generator seeded by
            ``(seed, first_block + b)``; the caller's random state is left untouched. ``None``:
            torch's global generator.
        first_block: global index of the chunk that starts at ``x[0]``, for a shard of a larger
            data set cut at multiples of ``batch_size``: the shards then give exactly the values
            of one call on the whole set (with the same ``seed`` and ``batch_size``).
        diagnostics: also return a dict of numpy arrays: ``log_weights`` ``(C, N)``,
            ``acceptance_rate`` ``(N,)`` (HMC, mean over transitions and chains),
            ``independence_acceptance`` ``(N,)`` (of the independence moves), ``step_size``
            ``(N,)`` (final), ``ess`` ``(N,)`` (effective number of chains,
            ``(sum w)^2 / sum w^2``).
        progress: progress over the data points, updated after every chunk (the estimate does
            not depend on it): ``True`` a tqdm bar (on stderr, or a widget in
            Jupyter); ``"auto"`` a bar on a terminal or in a notebook, else a log line at most
            once a minute (:func:`pyrovamp._progress.progress_bar`); ``False`` nothing.

    Returns:
        ``(N,)`` float64 tensor on ``x``'s device (nats per data point; ``logsumexp`` over chains
        of the log-weights minus ``log C``); with ``diagnostics=True`` the pair
        ``(log_likelihood, dict)``.

    Raises:
        ValueError: bad ``x`` (shape, NaN, support), a latent site outside the data plate or
            discrete, or a bad option (names it).
    """
    check_model(model)
    options = dict(num_leapfrog_steps=num_leapfrog_steps, step_size=step_size, initial=initial,
                   target_accept=target_accept, memory_budget=memory_budget,
                   batch_size=batch_size, adapt_rate=adapt_rate)  # fmt: skip
    _check_options(num_chains, num_steps, **options)
    check_positive("init_scale", init_scale)
    check_optional_int("seed", seed, 0)
    check_int("first_block", first_block, 0)
    betas = _betas(num_steps, schedule, beta_min)
    x = as_model_data(model, x)
    out, weights, acc, eps, jumps = [], [], [], [], []
    with (
        evaluation_context(model, seed),
        progress_bar(x.shape[0], f"AIS log-likelihood ({num_chains} chains)", progress) as bar,
    ):
        points = _points_per_chunk(model, x, num_chains, memory_budget, batch_size)
        with torch.no_grad():
            space = probe_latent_space(model, x, points)
        for j, i in enumerate(range(0, x.shape[0], points)):
            if seed is not None:
                seed_forked(derive_seed(seed, first_block + j))
            xb = x[i : i + points]
            with torch.no_grad():
                inv_mass = _inverse_mass(space, xb)
                init = _Initial(initial, space, xb, init_scale)
                u0 = init.sample(num_chains)
            lw, a, e, j = _run_chains(
                _Target(space, xb, init),
                u0,
                betas,
                num_leapfrog_steps,
                step_size,
                inv_mass,
                target_accept,
                adapt_step_size,
                adapt_rate,
                independence_moves,
            )
            out.append(torch.logsumexp(lw, 0) - math.log(num_chains))
            weights.append(lw)
            acc.append(a)
            eps.append(e)
            jumps.append(j)
            bar.update(xb.shape[0])
    ll = torch.cat(out)
    if not diagnostics:
        return ll
    lw = torch.cat(weights, 1)
    ess = effective_chains(lw)
    return ll, {
        "log_weights": lw.cpu().numpy(),
        "acceptance_rate": torch.cat(acc).cpu().numpy(),
        "independence_acceptance": torch.cat(jumps).cpu().numpy(),
        "step_size": torch.cat(eps).cpu().numpy(),
        "ess": ess.cpu().numpy(),
    }


def simulate(
    model, num_points: int, x_like: torch.Tensor | None = None, *, seed: int | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Draw ``(z, x) ~ p(z) p(x|z)`` from ``model.model`` by ancestral sampling (its observed
    sites sampled with ``poutine.uncondition``), the simulated data of BDMC (Grosse et al.
    2015, sec. 4): ``(x (num_points, D), {latent site: value})``.

    ``x_like`` gives the shape of one data point (its values are ignored); default
    ``zeros(num_points, model.input_dim)`` for pyrovamp models.

    Raises:
        ValueError: ``num_points < 1``, no ``x_like`` for a model without ``input_dim``, or a
            model with more than one observed site.
    """
    check_int("num_points", num_points)
    if x_like is None:
        if not hasattr(model, "input_dim"):
            raise ValueError(
                "x_like (a data tensor giving the shape of a data point) is needed "
                "for a model without input_dim"
            )
        dev = next(model.parameters()).device if hasattr(model, "parameters") else None
        x_like = torch.zeros(1, model.input_dim, device=dev)
    x_like = as_model_data(model, x_like, "x_like")
    template = x_like[:1].expand((num_points,) + tuple(x_like.shape[1:])).contiguous()
    with evaluation_context(model, seed), torch.no_grad():
        space = latent_space(model, template[:1])
        if len(space.observed) != 1:
            raise ValueError(
                f"simulate needs exactly one observed site, the model has {sorted(space.observed)}"
            )
        trace = poutine.trace(poutine.uncondition(model.model)).get_trace(template)
    obs = next(iter(space.observed))
    xs = trace.nodes[obs]["value"].reshape(template.shape).to(template.dtype)
    return xs, {name: trace.nodes[name]["value"] for name in space.names}


def bdmc(
    model,
    num_points: int,
    num_chains: int = DEFAULT_NUM_CHAINS,
    num_steps: int = DEFAULT_NUM_STEPS,
    *,
    x_like: torch.Tensor | None = None,
    seed: int | None = 0,
    **ais_options,
) -> dict:
    """Bidirectional Monte Carlo (Grosse et al. 2015, sec. 4): sandwich ``log p(x)`` on
    ``num_points`` data points simulated from the model between forward AIS (a stochastic lower
    bound) and reverse AIS started at the exact posterior sample (a stochastic upper bound).

    Args:
        model: object with Pyro ``model(x)`` / ``guide(x)`` (one observed site).
        num_points: data points to simulate.
        num_chains: AIS chains per point, for both directions.
        num_steps: AIS intermediate distributions, for both directions.
        x_like: a data tensor giving the shape of a data point (default for pyrovamp models:
            ``(1, model.input_dim)``).
        seed: fix the simulation and the chains (the global RNG is left untouched).
        ais_options: further options of :func:`ais_log_likelihood` (``num_leapfrog_steps``,
            ``schedule``, ``initial``, ``step_size``, ...), the same in both directions (the
            reverse chains end in the normalised initial density ``pi_0``).

    Returns:
        dict with ``lower``, ``upper``, ``gap`` (``upper - lower``) as ``(num_points,)`` float64
        tensors in nats per data point, ``x`` the simulated data and ``acceptance_forward``,
        ``acceptance_reverse`` ``(num_points,)``. Both bounds hold in expectation only: with few
        chains and steps a point's ``gap`` can come out negative (each estimate's own noise
        exceeds the true gap), a sign that the settings are too small to judge the estimator by.

    Raises:
        ValueError: bad ``num_points`` or options (as :func:`ais_log_likelihood`).
    """
    opts: dict[str, Any] = dict(
        num_leapfrog_steps=DEFAULT_LEAPFROG_STEPS,
        independence_moves=True,
        initial=DEFAULT_INITIAL,
        init_scale=1.0,
        schedule=DEFAULT_SCHEDULE,
        beta_min=1e-3,
        step_size=0.5,
        target_accept=0.65,
        adapt_step_size=True,
        adapt_rate=0.5,
        memory_budget=DEFAULT_MEMORY_BUDGET,
        batch_size=None,
    )
    unknown = set(ais_options) - set(opts)
    if unknown:
        raise ValueError(f"unknown option(s) for bdmc: {', '.join(sorted(unknown))}")
    opts.update(ais_options)
    _check_options(num_chains, num_steps, **opts)
    check_positive("init_scale", opts["init_scale"])
    betas = _betas(num_steps, opts["schedule"], opts["beta_min"])
    x, z = simulate(model, num_points, x_like, seed=seed)
    lower, acc_f = ais_log_likelihood(
        model,
        x,
        num_chains,
        num_steps,
        seed=None if seed is None else seed + 1,
        diagnostics=True,
        **opts,
    )
    uppers: list[torch.Tensor] = []
    acc_r: list[torch.Tensor] = []
    with evaluation_context(model, None if seed is None else seed + 2):
        with torch.no_grad():
            space = latent_space(model, x[:1])
            u_exact = space.flatten(z)  # (N, d): exact posterior draws
        points = _points_per_chunk(model, x, num_chains, opts["memory_budget"], opts["batch_size"])
        for i in range(0, x.shape[0], points):
            xb = x[i : i + points]
            with torch.no_grad():
                inv_mass = _inverse_mass(space, xb)
                init = _Initial(opts["initial"], space, xb, opts["init_scale"])
            u0 = u_exact[i : i + points].expand(num_chains, -1, -1).clone()
            lw, a, _, _ = _run_chains(
                _Target(space, xb, init),
                u0,
                betas.flip(0),
                opts["num_leapfrog_steps"],
                opts["step_size"],
                inv_mass,
                opts["target_accept"],
                opts["adapt_step_size"],
                opts["adapt_rate"],
                opts["independence_moves"],
            )
            # reverse AIS: E[w] = 1 / p(x), so -log(mean w) is an upper bound in expectation
            uppers.append(-(torch.logsumexp(lw, 0) - math.log(num_chains)))
            acc_r.append(a)
    upper = torch.cat(uppers)
    return {
        "lower": lower,
        "upper": upper,
        "gap": upper - lower,
        "x": x,
        "acceptance_forward": torch.as_tensor(acc_f["acceptance_rate"]),
        "acceptance_reverse": torch.cat(acc_r).cpu(),
    }
