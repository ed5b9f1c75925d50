"""Evaluation: importance-sampled log-likelihood, the ELBO, per data point in nats.

Importance sampling with the guide as proposal (Burda et al. 2016, eq. 1; VampPrior paper,
sec. 4): for each data point ``x``,

    log p(x) ~= logsumexp_s [ log p(x, h_s) - log q(h_s | x) ] - log S,   h_s ~ q(h | x),

where ``h`` are all latent sites of the model (``z`` for the VAE). The estimator is a stochastic
lower bound that tightens as ``S`` grows and equals the ELBO's expectation at ``S = 1``.

Works for any object with Pyro ``model(x)`` and ``guide(x)`` methods whose latent and observed
sites sit in one ``pyro.plate`` over data points at ``dim=-1``: the samples are drawn in a
vectorised ``pyro.plate("importance_samples", S, dim=-2)`` around both, so an amortised guide
encodes each data point once, never ``S`` copies of it. A guide that is not amortised (say, one
parameter per data point) cannot score a slice of the data; it is recognised (it fails on one data
point) and gets the whole data set in one block.

Blocks, memory and seeds. Data points are processed in blocks of
:func:`points_per_block` points (``batch_size`` if given, else as many as the memory budget
allows with all ``S`` samples at once, else one point with the samples in sub-chunks). The
budget counts every tensor a chunk allocates -- activations of dense and convolutional layers,
the prior's mixture terms, the likelihood's temporaries: the model and guide are run once on a
few tiny probe chunks while a ``TorchDispatchMode`` tracks the peak of live tensor bytes, and the
cost is extrapolated linearly in points and samples. The block size depends only on the model,
``S``, the budget and ``batch_size`` -- never on the data or the number of processes -- and with a
``seed`` block ``b``'s draws come from torch's generator seeded with a hash of ``(seed, b)``, so a
data set split in shards at block boundaries (``first_block``: the global index of a shard's first
block) gives exactly the values of one call on the whole set.

Data is cast to the model's floating dtype and moved to its device (numpy arrays, integer and
float64 tensors are accepted); results live on the model's device.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import weakref
from typing import NamedTuple

import numpy as np
import torch
import pyro
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from pyrovamp.infer.latent import evaluation_context, fork_rng, progress_bar
from pyrovamp.models.vae import _float_tensor, check_data

__all__ = ["log_importance_weights", "log_likelihood", "elbo", "elbo_terms", "active_units",
           "points_per_block", "evaluation_plan", "Plan", "peak_bytes", "DEFAULT_MEMORY_BUDGET",
           "CPU_CHUNK_BYTES", "IWAELoss"]

DEFAULT_MEMORY_BUDGET = 512 * 2**20
"""Bytes of tensors one chunk (block of data points x sub-chunk of samples) may allocate."""
CPU_CHUNK_BYTES = 32 * 2**20
"""On a CPU a chunk allocates at most this many bytes (less if the budget is smaller): chunks whose
tensors stay in the processor's caches run faster (measured with benchmarks/log_likelihood.py).
A block is split into chunks of fewer points (then, if one point with all samples is still too
much, of fewer samples); the block size does not depend on it."""


# --- data, device, dtype --------------------------------------------------------------------------
def _data(model, x, name="x") -> torch.Tensor:
    """``x`` as a tensor of the model's floating dtype on its device; checked by the model's own
    :func:`~pyrovamp.models.check_data` when it has ``input_dim`` and ``likelihood``. For a model
    without parameters or buffers, numpy arrays and integer tensors become torch's default
    dtype and floating tensors keep theirs."""
    ref = _float_tensor(model)
    dtype = None if ref is None else ref.dtype
    device = None if ref is None else ref.device
    if hasattr(model, "input_dim") and hasattr(model, "likelihood"):
        return check_data(x, model.input_dim, model.likelihood, name, dtype=dtype, device=device)
    from_numpy = isinstance(x, np.ndarray)
    if from_numpy:
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array of shape (N, ...), "
                         f"got {type(x).__name__}")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one data point along dim 0, got shape "
                         f"{tuple(x.shape)}")
    if x.is_complex():
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if dtype is None:  # a model without tensors: keep a floating tensor's dtype
        keep = x.is_floating_point() and not from_numpy
        dtype = x.dtype if keep else torch.get_default_dtype()
    return x.to(device=device if device is not None else x.device, dtype=dtype)


def _example(model, x=None) -> torch.Tensor:
    """One data point for probing the memory cost: a valid constant point for pyrovamp's models
    (so the cost never depends on the data), else ``x[:1]``."""
    if hasattr(model, "input_dim") and hasattr(model, "likelihood"):
        ref = _float_tensor(model)
        kw = {} if ref is None else {"dtype": ref.dtype, "device": ref.device}
        return torch.full((1, model.input_dim), float(model.likelihood.low), **kw)
    if x is None:
        raise ValueError("points_per_block needs example= (one data point, e.g. x[:1]) for a model "
                         "without input_dim and likelihood attributes")
    return _data(model, x[:1], "example")


def _check_int(name, value, low):
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        what = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {what}, got {value!r}")


def _check_args(num_samples, memory_budget, batch_size, seed, first_block):
    _check_int("num_samples", num_samples, 1)
    if not isinstance(memory_budget, (int, float)) or isinstance(memory_budget, bool) \
            or not memory_budget > 0:
        raise ValueError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
    if batch_size is not None:
        _check_int("batch_size", batch_size, 1)
    if seed is not None:
        _check_int("seed", seed, 0)
    _check_int("first_block", first_block, 0)


# --- evaluation mode, random streams --------------------------------------------------------------
def _block_seed(seed: int, block: int) -> int:
    """The seed of block ``block``'s draws: a hash of ``(seed, block)`` (63 bits)."""
    digest = hashlib.sha256(f"pyrovamp.evaluation:{seed}:{block}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


# --- one chunk ----------------------------------------------------------------------------------
def site_log_probs(trace, x) -> tuple:
    """``(observed, latent)``: the sums of ``log_prob`` over the observed and over the latent
    sample sites of a Pyro ``trace`` run on data ``x`` (``(S, N)``-broadcastable tensors, or 0.0
    where there is no such site), nats.

    Raises:
        ValueError: a site whose ``log_prob`` is not in the data plate at ``dim=-1``.
    """
    observed, latent = 0.0, 0.0
    trace.compute_log_prob()
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        lp = site["log_prob"]
        if lp.dim() > 2 or (lp.dim() == 2 and lp.shape[-1] not in (1, x.shape[0])):
            raise ValueError(f"site {name!r} has log_prob shape {tuple(lp.shape)}: every site "
                             "must sit in the data plate at dim=-1")
        if site["is_observed"]:
            observed = observed + lp
        else:
            latent = latent + lp
    return observed, latent


def _log_weights_chunk(model, x, num_samples, split=False):
    """``log p(x, h) - log q(h|x)`` for ``num_samples`` draws: ``(S, N)``; with ``split=True``
    the pair ``(observed-site log-likelihood, latent log q - log p)`` instead."""
    with pyro.plate("importance_samples", num_samples, dim=-2):
        guide_trace = poutine.trace(model.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x)
    observed, log_p_latent = site_log_probs(model_trace, x)
    observed_q, log_q = site_log_probs(guide_trace, x)
    observed, latent = observed + observed_q, log_p_latent - log_q
    shape = (num_samples, x.shape[0])
    if split:
        return torch.as_tensor(observed).expand(shape), (-torch.as_tensor(latent)).expand(shape)
    return torch.as_tensor(observed + latent).expand(shape)


# --- memory: measured live tensor bytes ----------------------------------------------------------
class _LiveBytes(TorchDispatchMode):
    """Records, after every tensor operation run inside it, the bytes of the tensor storages
    allocated inside it that are still alive (views and in-place results of existing tensors are
    not new storage): ``self.series``."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = 0
        self.series: list[int] = []

    def _free(self, key):
        self.now -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(a.untyped_storage()) for a in tree_leaves((args, kwargs or {}))
                  if isinstance(a, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = id(storage)
            if key in inputs or key in self.live or storage.nbytes() == 0:
                continue
            self.live[key] = storage.nbytes()
            self.now += storage.nbytes()
            weakref.finalize(storage, self._free, key)
        self.series.append(self.now)
        return out


def _live_bytes(model, x, num_samples) -> torch.Tensor:
    """Live bytes after every tensor operation of scoring ``x`` with ``num_samples`` draws."""
    with _LiveBytes() as mode:
        out = _log_weights_chunk(model, x, num_samples)
        del out
    return torch.tensor(mode.series, dtype=torch.float64)


def peak_bytes(model, x, num_samples: int) -> int:
    """Measured peak of live tensor bytes while one chunk -- ``x`` (all in one block) with
    ``num_samples`` draws -- is scored (what the memory budget bounds). Runs in evaluation mode.

    Raises:
        ValueError: bad ``x`` or ``num_samples``.
    """
    _check_int("num_samples", num_samples, 1)
    x = _data(model, x)
    with evaluation_context(model, 0, no_grad=True):  # seeded: a fixed draw
        _log_weights_chunk(model, x, 1)  # warm-up: lazily built caches are not costs
        return int(_live_bytes(model, x, num_samples).max())


class Plan(NamedTuple):
    """How :func:`log_likelihood` and friends split the work (see :func:`evaluation_plan`)."""

    points_per_block: int | None  # None: the whole data set (a guide that is not amortised)
    points_per_chunk: int | None
    samples_per_chunk: int


def _largest(fixed, slope, budget) -> float:
    """The largest ``n`` with ``fixed + slope * n <= budget`` at every operation (inf if none
    binds); ``fixed``, ``slope``: one value per operation."""
    bind = slope > 0
    if not bool(bind.any()):
        return math.inf
    return float(((budget - fixed[bind]) / slope[bind]).min())


def _count(n: float, cap: int) -> int:
    return cap if n >= cap else max(1, int(n))


def _plan(model, example, whole, num_samples, memory_budget, batch_size) -> Plan:
    """The plan from the measured live bytes of three tiny probe chunks (inside
    :func:`pyrovamp._latent.evaluation_context`): after every operation ``t`` the live bytes are
    ``a_t + b_t * points + c_t * points * samples``; the plan keeps their maximum over ``t``
    within the budget (blocks) and within ``min(budget, CPU_CHUNK_BYTES)`` on a CPU (chunks).
    ``whole``: the data set, used when the guide fails on the one-point ``example`` (not
    amortised), or None."""
    budget = float(memory_budget)
    chunk = budget if example.device.type != "cpu" else min(budget, CPU_CHUNK_BYTES)
    with fork_rng():
        try:
            _log_weights_chunk(model, example, 1)  # warm-up: lazily built caches are not costs
        except Exception:
            if whole is None or whole.shape[0] == example.shape[0]:
                raise
            # not amortised: the guide needs the whole data set; its errors (if any) are real
            _log_weights_chunk(model, whole, 1)
            l1, l2 = _live_bytes(model, whole, 1), _live_bytes(model, whole, 2)
            if l1.shape != l2.shape:  # the operations depend on the sizes: use the peaks
                l1, l2 = l1.max().reshape(1), l2.max().reshape(1)
            return Plan(None, None, _count(_largest(2 * l1 - l2, l2 - l1, chunk), num_samples))
        # draws per probe point: the code paths of real chunks (the mixture prior changes its
        # path at 16 draws per point)
        s = 16 if num_samples >= 16 else max(1, num_samples // 2)
        two = example.expand(2, *example.shape[1:]).contiguous()
        l1, l2, l3 = (_live_bytes(model, example, s), _live_bytes(model, example, 2 * s),
                      _live_bytes(model, two, s))
    if not l1.shape == l2.shape == l3.shape:  # the operations depend on the sizes: use the peaks
        l1, l2, l3 = (t.max().reshape(1) for t in (l1, l2, l3))
    pair = (l2 - l1) / s                  # bytes per (sample, data point)
    point = l3 - l1 - s * pair            # bytes per data point (encoder of x, checks)
    fixed = l1 - point - s * pair         # bytes per chunk
    per_point = point + num_samples * pair
    block = batch_size or _count(_largest(fixed, per_point, budget), 2**31)
    chunk_points = min(block, _count(_largest(fixed, per_point, chunk), block))
    samples = num_samples
    if _largest(fixed, per_point, chunk) < 1:  # one point with all samples is too much
        samples = _count(_largest(fixed + point, pair, chunk), num_samples)
    return Plan(block, chunk_points, samples)


_PLANS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _signature(model):
    """What the plan depends on besides the arguments: the model's tensors' names, shapes,
    dtypes and devices (a new prior or a move to another device gives a new plan)."""
    if not hasattr(model, "named_parameters"):
        return ()
    buffers = model.named_buffers() if hasattr(model, "named_buffers") else ()
    return tuple((n, tuple(t.shape), t.dtype, str(t.device))
                 for n, t in itertools.chain(model.named_parameters(), buffers))


def _cached_plan(model, example, whole, num_samples, memory_budget, batch_size) -> Plan:
    """:func:`_plan`, remembered per model (the probes cost a few forward passes). A guide that
    is not amortised has a plan per data-set size."""
    key = (num_samples, float(memory_budget), batch_size, tuple(example.shape), example.dtype,
           str(example.device), CPU_CHUNK_BYTES, _signature(model))
    try:
        plans = _PLANS.setdefault(model, {})
    except TypeError:  # not weakly referable: no memory
        plans = {}
    plan = plans.get(key)
    if plan is not None and plan.points_per_block is None and whole is not None:
        plan = plans.get((key, whole.shape[0]))
    if plan is None or plan.points_per_block is None:
        plan = _plan(model, example, whole, num_samples, memory_budget, batch_size)
        plans[key] = plan
        if plan.points_per_block is None:
            plans[(key, whole.shape[0])] = plan
    return plan


def evaluation_plan(model, num_samples: int, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                    batch_size: int | None = None, *, example=None) -> Plan:
    """How the evaluation functions split ``num_samples`` samples for every data point.

    Data points go in blocks of ``points_per_block`` (``batch_size`` if given, else as many as
    ``memory_budget`` bytes allow with all samples at once; at least 1); each block is scored in
    chunks of ``points_per_chunk`` points and ``samples_per_chunk`` samples that allocate at most
    ``memory_budget`` bytes -- on a CPU at most ``min(memory_budget, CPU_CHUNK_BYTES)``, as chunks
    that stay in the processor's caches run faster. The bytes are measured: the model and guide
    score three tiny probe chunks while the live tensor bytes are recorded after every
    operation, and the maximum over operations is extrapolated linearly in points and samples.

    The plan depends only on the model (architecture, dtype, device), ``num_samples``,
    ``memory_budget`` and ``batch_size`` -- not on the data or the number of processes -- so
    shards of a data set that start at multiples of ``points_per_block`` can be scored apart
    (``first_block = start // points_per_block``) and give exactly the values of one call on the
    whole set with the same ``seed``.

    Args:
        model: object with Pyro ``model(x)`` / ``guide(x)`` and an amortised guide.
        num_samples: ``S``.
        memory_budget: bytes of tensors per chunk.
        batch_size: a fixed block size.
        example: one data point ``(1, ...)`` to probe with; needed only for models without
            ``input_dim`` and ``likelihood`` attributes (pyrovamp's models have them).

    Returns:
        A :class:`Plan` ``(points_per_block, points_per_chunk, samples_per_chunk)``.

    Raises:
        ValueError: bad arguments; no ``example`` for a model that needs one; the guide cannot
            score one data point (it is not amortised: it needs the whole data set at once).
    """
    _check_args(num_samples, memory_budget, batch_size, None, 0)
    ex = _example(model, example)
    with evaluation_context(model, None, no_grad=True):
        try:
            return _cached_plan(model, ex, None, num_samples, memory_budget, batch_size)
        except Exception as e:
            raise ValueError(f"the guide cannot score one data point ({type(e).__name__}: {e}); a "
                             "guide that is not amortised is scored on the whole data set in one "
                             "block") from e


def points_per_block(model, num_samples: int, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                     batch_size: int | None = None, *, example=None) -> int:
    """Data points per block of :func:`log_likelihood`, :func:`log_importance_weights`,
    :func:`elbo` and :func:`elbo_terms` with ``num_samples`` samples: ``batch_size`` if given,
    else as many as ``memory_budget`` bytes allow with all samples in one chunk (at least 1).

    It depends only on the model, ``num_samples``, ``memory_budget`` and ``batch_size`` -- not on
    the data or the number of processes: a shard ``x[k * B:]`` of a data set scored with
    ``first_block=k`` (``B = points_per_block(...)``) gives exactly the values of one call on the
    whole set with the same ``seed``. Details: :func:`evaluation_plan` (same arguments).

    Returns:
        The block size ``B >= 1``.

    Raises:
        ValueError: as :func:`evaluation_plan`.
    """
    return evaluation_plan(model, num_samples, memory_budget, batch_size,
                           example=example).points_per_block


def _blocks(model, x, num_samples, memory_budget, batch_size, seed, first_block, split=False):
    """For every block of data points its ``(S, n)`` log-weights (``split``: the pair of its
    observed and latent parts, see :func:`_log_weights_chunk`). Call inside
    :func:`pyrovamp._latent.evaluation_context`."""
    plan = _cached_plan(model, _example(model, x), x, num_samples, memory_budget, batch_size)
    points = plan.points_per_block or x.shape[0]
    tile = plan.points_per_chunk or x.shape[0]
    step = plan.samples_per_chunk
    for j, start in enumerate(range(0, x.shape[0], points)):
        if seed is not None:
            torch.manual_seed(_block_seed(seed, first_block + j))
        xb = x[start:start + points]
        tiles = [[_log_weights_chunk(model, xb[t:t + tile], min(step, num_samples - s), split)
                  for s in range(0, num_samples, step)] for t in range(0, xb.shape[0], tile)]
        if split:
            yield tuple(torch.cat([torch.cat([c[i] for c in chunks], 0) for chunks in tiles], 1)
                        for i in (0, 1))
        else:
            yield torch.cat([torch.cat(chunks, 0) for chunks in tiles], 1)


_ARGS_DOC = """memory_budget: bytes of tensors per chunk (see :func:`points_per_block`).
        batch_size: data points per block (default: from the memory budget).
        seed: fix the random draws (then block ``b`` draws from a generator seeded by ``(seed, b)``;
            the global random state is left untouched). ``None``: torch's global generator.
        first_block: global index of the block that starts at ``x[0]``, for a shard of a larger
            data set that starts at ``first_block * points_per_block(...)``."""


def log_importance_weights(model, x, num_samples: int, *,
                           memory_budget: int = DEFAULT_MEMORY_BUDGET,
                           batch_size: int | None = None, seed: int | None = None,
                           first_block: int = 0) -> torch.Tensor:
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
    x = _data(model, x)
    with evaluation_context(model, seed, no_grad=True):
        return torch.cat(list(_blocks(model, x, num_samples, memory_budget, batch_size, seed,
                                      first_block)), 1)


def log_likelihood(model, x, num_samples: int = 5000, *,
                   memory_budget: int = DEFAULT_MEMORY_BUDGET, batch_size: int | None = None,
                   seed: int | None = None, diagnostics: bool = False, first_block: int = 0,
                   method: str = "is", progress: bool = False, **options):
    """Importance-sampled ``log p(x)`` per data point, in nats (Burda et al. 2016, eq. 1; the
    VampPrior paper's test log-likelihood with ``S = 5000``).

    Vectorised over samples and data points, in blocks within ``memory_budget``; the prior's
    components (e.g. the encoder on all pseudo-inputs) are computed once per call; the
    ``logsumexp`` over samples is taken in float64.

    Args:
        model: object with Pyro ``model(x)`` / ``guide(x)``; the guide is the proposal.
        x: ``(N, ...)`` data: a tensor or numpy array of any real dtype.
        num_samples: ``S``.
        {args}
        diagnostics: also return the Pareto-smoothed importance sampling diagnostics of every
            data point's weights (:func:`pyrovamp.diagnostics.importance_diagnostics`).
        progress: show a tqdm progress bar over the data points (on stderr, or a widget in
            Jupyter), updated after every block; the estimate does not depend on it.

    Returns:
        ``(N,)`` float64 tensor of log-likelihoods on the model's device (nats per data point;
        higher is better); with ``diagnostics=True`` the pair ``(log_likelihood, dict)`` whose
        dict holds ``(N,)`` numpy arrays ``log_likelihood_psis``, ``pareto_k`` and ``ess``.

    With ``method="ais"`` the estimate is annealed importance sampling
    (:func:`pyrovamp.ais.ais_log_likelihood`; ``options``: ``num_chains``, ``num_steps``, ...;
    ``num_samples`` is not used), with ``method="exact"`` quadrature for models with at most two
    latent dimensions (:func:`pyrovamp.exact.exact_log_likelihood`; ``options``: ``tol``, ...;
    with ``diagnostics=True`` its dict holds ``error_estimate``).

    Raises:
        ValueError: bad ``x``, ``num_samples`` or another bad argument, unknown ``method`` or
            options.
    """
    if method == "ais":
        from pyrovamp.infer.ais import ais_log_likelihood

        return ais_log_likelihood(model, x, memory_budget=memory_budget, batch_size=batch_size,
                                  seed=seed, diagnostics=diagnostics, progress=progress, **options)
    if method == "exact":
        from pyrovamp.infer.exact import exact_log_likelihood

        ll, err, info = exact_log_likelihood(model, x, memory_budget=memory_budget,
                                             diagnostics=True, **options)
        return (ll, {**info, "error_estimate": err.cpu().numpy()}) if diagnostics else ll
    if method != "is":
        raise ValueError(f"method must be 'is', 'ais' or 'exact', got {method!r}")
    if options:
        raise ValueError(f"unexpected option(s) for method='is': {', '.join(sorted(options))}")
    _check_args(num_samples, memory_budget, batch_size, seed, first_block)
    x = _data(model, x)
    out, diag = [], {"log_likelihood_psis": [], "pareto_k": [], "ess": []}
    if diagnostics:
        from pyrovamp.infer.diagnostics import importance_diagnostics
    with evaluation_context(model, seed, no_grad=True), \
            progress_bar(x.shape[0], f"IS log-likelihood (S={num_samples})", progress) as bar:
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


def elbo(model, x, num_samples: int = 1, *, memory_budget: int = DEFAULT_MEMORY_BUDGET,
         batch_size: int | None = None, seed: int | None = None,
         first_block: int = 0) -> torch.Tensor:
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
    x = _data(model, x)
    with evaluation_context(model, seed, no_grad=True):
        return torch.cat([lw.double().mean(0) for lw in _blocks(
            model, x, num_samples, memory_budget, batch_size, seed, first_block)])


def elbo_terms(model, x, num_samples: int = 1, *, memory_budget: int = DEFAULT_MEMORY_BUDGET,
               batch_size: int | None = None, seed: int | None = None,
               first_block: int = 0) -> dict:
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
    x = _data(model, x)
    rec, kl = [], []
    with evaluation_context(model, seed, no_grad=True):
        for r, k in _blocks(model, x, num_samples, memory_budget, batch_size, seed, first_block,
                            split=True):
            rec.append(r.double().mean(0))
            kl.append(k.double().mean(0))
    rec, kl = torch.cat(rec), torch.cat(kl)
    return {"reconstruction": rec, "kl": kl, "elbo": rec - kl}


for _f in (log_importance_weights, log_likelihood, elbo_terms):
    _f.__doc__ = _f.__doc__.replace("{args}", _ARGS_DOC)
del _f


def active_units(model, x: torch.Tensor, threshold: float = 0.01, num_samples: int = 10,
                 batch_size: int = 1000) -> dict:
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
        ValueError: fewer than 2 data points, or a model without ``posterior_means``.
    """
    if not hasattr(model, "posterior_means"):
        raise ValueError("active_units needs a model with posterior_means(x) (VAE or HVAE)")
    x = _data(model, x)
    if x.shape[0] < 2:
        raise ValueError(f"active_units needs at least 2 data points, got {x.shape[0]}")
    was_training = model.training
    model.eval()
    try:
        parts = [model.posterior_means(x[i:i + batch_size], num_samples)
                 for i in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was_training)
    out = {}
    for site in parts[0]:
        means = torch.cat([p[site] for p in parts]).double()
        out[site] = int((means.var(0) > threshold).sum())
    return out


class IWAELoss:
    """The importance-weighted bound of Burda et al. (2016, eq. 8) with ``K`` samples as a
    differentiable loss -- Pyro's ``RenyiELBO(alpha=0)`` has no ``differentiable_loss``:

        -sum_n [ logsumexp_k (log p(x_n, h_k) - log q(h_k | x_n)) - log K ],   h_k ~ q(h | x_n).

    The ``K`` draws are one vectorised ``pyro.plate("particles", K, dim=-2)`` around model and
    guide (every site must sit in one data plate at ``dim=-1``); gradients flow through
    reparameterised draws, so every latent site of the guide must have ``rsample``.

    Args:
        num_particles: ``K >= 2``.
    """

    def __init__(self, num_particles: int):
        self.num_particles = num_particles

    def differentiable_loss(self, model, guide, x):
        """The negative bound summed over the data points of ``x`` (nats), a 0-dim tensor."""
        with pyro.plate("particles", self.num_particles, dim=-2):
            guide_trace = poutine.trace(guide).get_trace(x)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
        lw = 0.0
        for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
            trace.compute_log_prob()
            for name, site in trace.nodes.items():
                if site["type"] != "sample" or site_is_subsample(site):  # skip the plates
                    continue
                if sign < 0 and not site["is_observed"] and not getattr(site["fn"], "has_rsample", False):
                    raise ValueError(f"loss='iwae' needs reparameterised guide sites; {name!r} has no rsample")
                lw = lw + sign * site["log_prob"]
        lw = torch.as_tensor(lw).expand(self.num_particles, x.shape[0])
        return -(torch.logsumexp(lw, dim=0) - math.log(self.num_particles)).sum()
