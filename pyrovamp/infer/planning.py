"""The memory planner of every estimator: how many data points and draws one chunk may hold.

The cost of scoring a chunk is measured, not estimated: the model and guide score a few tiny
probe chunks (:func:`pyrovamp.infer.weights.log_weights`) while a
:class:`torch.overrides.TorchFunctionMode` records, after every tensor operation, the bytes of the
tensor storages allocated inside it that are still alive. That counts every tensor a chunk
allocates -- activations of dense and convolutional layers, the prior's mixture terms, the
likelihood's temporaries. After every operation ``t`` the live bytes are
``fixed_t + point_t * points + pair_t * points * draws``; the probes give the three terms, and a
plan keeps their maximum over ``t`` within the budget.

Importance sampling splits the data points into blocks of :func:`points_per_block` points (the
unit of seeds and shards) and each block into chunks (:func:`evaluation_plan`); AIS and the exact
quadrature size their chunks by the measured bytes per (draw, data point) pair
(:func:`pair_bytes`). The plan depends only on the model (architecture, dtype, device), the
number of draws, the budget and ``batch_size`` -- never on the data or the number of processes.
"""

from __future__ import annotations

import itertools
import math
import weakref
from typing import Any, NamedTuple, cast

import torch
from torch.overrides import TorchFunctionMode

from pyrovamp._random import fork_rng
from pyrovamp._validate import check_int, check_optional_int, check_positive
from pyrovamp.infer.context import as_model_data, evaluation_context
from pyrovamp.infer.weights import log_weights

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "CPU_CHUNK_BYTES",
    "Plan",
    "peak_bytes",
    "evaluation_plan",
    "points_per_block",
    "data_plan",
    "pair_bytes",
    "check_budget",
]

DEFAULT_MEMORY_BUDGET = 512 * 2**20
"""Bytes of tensors one chunk (data points x draws) may allocate."""
CPU_CHUNK_BYTES = 32 * 2**20
"""On a CPU a chunk allocates at most this many bytes (less if the budget is smaller): chunks whose
tensors stay in the processor's caches run faster. The block size does not depend on it."""


class Plan(NamedTuple):
    """How :func:`pyrovamp.log_likelihood` and friends split the work (see
    :func:`evaluation_plan`)."""

    points_per_block: int | None  # None: the whole data set (a guide that is not amortised)
    points_per_chunk: int | None
    samples_per_chunk: int


# --- measured live tensor bytes -------------------------------------------------------------------
def _tensors(obj: Any) -> list[torch.Tensor]:
    """The tensors in ``obj``, a tensor or nested tuples, lists and dict values."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    return []


class _LiveBytes(TorchFunctionMode):
    """Records, after every tensor operation run inside it, the bytes of the tensor storages
    allocated inside it that are still alive (views and in-place results of existing tensors are
    not new storage): ``self.series``."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = 0
        self.series: list[int] = []

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {id(a.untyped_storage()) for a in _tensors((args, kwargs))}
        for t in _tensors(out):
            storage = t.untyped_storage()
            key, size = id(storage), storage.nbytes()
            if key in inputs or key in self.live or size == 0:
                continue
            self.live[key] = size
            self.now += size
            weakref.finalize(storage, self._free, key)
        self.series.append(self.now)
        return out


def _live_bytes(model, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Live bytes after every tensor operation of scoring ``x`` with ``num_samples`` draws."""
    with _LiveBytes() as mode:
        out = log_weights(model.model, model.guide, x, num_samples)
        del out
    return torch.tensor(mode.series, dtype=torch.float64)


def peak_bytes(model, x, num_samples: int) -> int:
    """Measured peak of live tensor bytes while one chunk -- ``x`` (all in one block) with
    ``num_samples`` draws -- is scored (what the memory budget bounds). Runs in evaluation mode.

    Raises:
        ValueError: bad ``x`` or ``num_samples``.
    """
    check_int("num_samples", num_samples)
    x = as_model_data(model, x)
    with evaluation_context(model, 0, no_grad=True):  # seeded: a fixed draw
        log_weights(model.model, model.guide, x, 1)  # warm-up: lazily built caches are not costs
        return int(_live_bytes(model, x, num_samples).max())


# --- costs: fixed, per data point, per (draw, data point) pair ------------------------------------
class _Costs(NamedTuple):
    """Live bytes after each operation ``t``: ``fixed + point * n + pair * n * draws`` for ``n``
    data points (one value per operation, or the peaks where the operations depend on the
    sizes). ``points``: ``None`` for an amortised guide, else the number of data points the guide
    needs at once (then ``point`` is 0). ``pair_max``: the largest per-pair term of any operation
    (from the probes of one point)."""

    fixed: torch.Tensor
    point: torch.Tensor
    pair: torch.Tensor
    points: int | None
    pair_max: float


def _example(model, x=None) -> torch.Tensor:
    """One data point for probing the memory cost: a valid constant point for pyrovamp's models
    (so the cost never depends on the data), else ``x[:1]``."""
    if hasattr(model, "input_dim") and hasattr(model, "likelihood"):
        low = torch.full((1, model.input_dim), float(model.likelihood.low))
        return as_model_data(model, low, "example")
    if x is None:
        raise ValueError(
            "points_per_block needs example= (one data point, e.g. x[:1]) for a model "
            "without input_dim and likelihood attributes"
        )
    return as_model_data(model, x[:1], "example")


def _measure(model, example: torch.Tensor, whole: torch.Tensor | None, draws: int) -> _Costs:
    """The costs from three tiny probe chunks of ``example`` with ``draws`` draws per point (call
    inside :func:`~pyrovamp.infer.context.evaluation_context`). ``whole``: the data set, probed
    when the guide fails on the one-point ``example`` or on two copies of it (it is not
    amortised), or None."""
    with fork_rng(), torch.no_grad():
        try:
            log_weights(model.model, model.guide, example, 1)  # warm-up: lazily built caches
        except Exception:
            if whole is None or whole.shape[0] == example.shape[0]:
                raise
            # not amortised: the guide needs the whole data set; its errors (if any) are real
            return _whole_costs(model, whole)
        two = example.expand(2, *example.shape[1:]).contiguous()
        l1, l2 = _live_bytes(model, example, draws), _live_bytes(model, example, 2 * draws)
        try:
            l3 = _live_bytes(model, two, draws)
        except ValueError:  # a guide of the one point it was fitted on: not amortised either
            if whole is None or whole.shape[0] != example.shape[0]:
                raise
            return _whole_costs(model, whole)
    pair_max = float(
        ((l2 - l1) / draws).max() if l1.shape == l2.shape else (l2.max() - l1.max()) / draws
    )
    if not l1.shape == l2.shape == l3.shape:  # the operations depend on the sizes: use the peaks
        l1, l2, l3 = (t.max().reshape(1) for t in (l1, l2, l3))
    pair = (l2 - l1) / draws  # bytes per (draw, data point)
    point = l3 - l1 - draws * pair  # bytes per data point (encoder of x, checks)
    return _Costs(l1 - point - draws * pair, point, pair, None, pair_max)


def _whole_costs(model, whole: torch.Tensor) -> _Costs:
    """The costs of a guide that is not amortised, probed on the whole data set ``whole`` with
    one and two draws (its errors, if any, are real)."""
    log_weights(model.model, model.guide, whole, 1)
    l1, l2 = _live_bytes(model, whole, 1), _live_bytes(model, whole, 2)
    if l1.shape != l2.shape:  # the operations depend on the sizes: use the peaks
        l1, l2 = l1.max().reshape(1), l2.max().reshape(1)
    n = whole.shape[0]
    pair = (l2 - l1) / n
    return _Costs(2 * l1 - l2, torch.zeros_like(l1), pair, n, float(pair.max()))


_COSTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signature(model) -> tuple:
    """What the costs depend on besides the probe: the model's tensors' names, shapes, dtypes and
    devices (a new prior or a move to another device gives new costs)."""
    if not hasattr(model, "named_parameters"):
        return ()
    buffers = model.named_buffers() if hasattr(model, "named_buffers") else ()
    return tuple(
        (n, tuple(t.shape), t.dtype, str(t.device))
        for n, t in itertools.chain(model.named_parameters(), buffers)
    )


def _costs(model, example: torch.Tensor, whole: torch.Tensor | None, draws: int) -> _Costs:
    """:func:`_measure`, remembered per model (the probes cost a few forward passes). A guide that
    is not amortised has costs per data-set size."""
    key = (draws, tuple(example.shape), example.dtype, str(example.device), _signature(model))
    try:
        cache = _COSTS.setdefault(model, {})
    except TypeError:  # not weakly referable: no memory
        cache = {}
    costs = cache.get(key)
    if costs is not None and costs.points is not None:
        costs = cache.get((key, whole.shape[0])) if whole is not None else None
    if costs is None:
        costs = _measure(model, example, whole, draws)
        cache[key] = costs
        if costs.points is not None:
            cache[(key, costs.points)] = costs
    return costs


# --- plans ----------------------------------------------------------------------------------------
def check_budget(memory_budget: Any) -> None:
    """Raise ``ValueError`` unless ``memory_budget`` is a positive number of bytes."""
    check_positive("memory_budget", memory_budget, "a positive number of bytes")


def _largest(fixed: torch.Tensor, slope: torch.Tensor, budget: float) -> float:
    """The largest ``n`` with ``fixed + slope * n <= budget`` at every operation (inf if none
    binds); ``fixed``, ``slope``: one value per operation."""
    bind = slope > 0
    if not bool(bind.any()):
        return math.inf
    return float(((budget - fixed[bind]) / slope[bind]).min())


def _count(n: float, cap: int) -> int:
    return cap if n >= cap else max(1, int(n))


def chunk_budget(memory_budget: float, device: torch.device, cpu_bytes: float | None = None):
    """The bytes one chunk may allocate: ``memory_budget``, on a CPU at most ``cpu_bytes``
    (default: :data:`CPU_CHUNK_BYTES`, read at the call; chunks whose tensors stay in the caches,
    and under the C library's limit for reusing freed memory, run faster)."""
    cap = CPU_CHUNK_BYTES if cpu_bytes is None else cpu_bytes
    return memory_budget if device.type != "cpu" else min(memory_budget, cap)


def _plan(
    costs: _Costs,
    num_samples: int,
    memory_budget: float,
    batch_size: int | None,
    device: torch.device,
) -> Plan:
    """The plan: blocks within the budget, chunks within it too -- on a CPU within
    :data:`CPU_CHUNK_BYTES`."""
    budget = float(memory_budget)
    chunk = chunk_budget(budget, device)
    fixed, point, pair = costs.fixed, costs.point, costs.pair
    if costs.points is not None:  # not amortised: all points in one chunk, samples split
        return Plan(None, None, _count(_largest(fixed, pair * costs.points, chunk), num_samples))
    per_point = point + num_samples * pair
    block = batch_size or _count(_largest(fixed, per_point, budget), 2**31)
    chunk_points = min(block, _count(_largest(fixed, per_point, chunk), block))
    samples = num_samples
    if _largest(fixed, per_point, chunk) < 1:  # one point with all samples is too much
        samples = _count(_largest(fixed + point, pair, chunk), num_samples)
    return Plan(block, chunk_points, samples)


def _draws(num_samples: int) -> int:
    """Draws per probe point: the code paths of real chunks (a mixture prior may change its path
    at 16 draws per point)."""
    return 16 if num_samples >= 16 else max(1, num_samples // 2)


def data_plan(
    model, x: torch.Tensor, num_samples: int, memory_budget: float, batch_size: int | None
) -> Plan:
    """The plan for scoring the data ``x`` (converted, inside
    :func:`~pyrovamp.infer.context.evaluation_context`); a guide that fails on one data point
    gets all of ``x`` in one block."""
    costs = _costs(model, _example(model, x), x, _draws(num_samples))
    return _plan(costs, num_samples, memory_budget, batch_size, x.device)


def evaluation_plan(
    model,
    num_samples: int,
    memory_budget: float = DEFAULT_MEMORY_BUDGET,
    batch_size: int | None = None,
    *,
    example=None,
) -> Plan:
    """How the importance-sampling functions split ``num_samples`` samples for every data point.

    Data points go in blocks of ``points_per_block`` (``batch_size`` if given, else as many as
    ``memory_budget`` bytes allow with all samples at once; at least 1); each block is scored in
    chunks of ``points_per_chunk`` points and ``samples_per_chunk`` samples that allocate at most
    ``memory_budget`` bytes -- on a CPU at most ``min(memory_budget, CPU_CHUNK_BYTES)``. The bytes
    are measured (see the module docstring).

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
    check_int("num_samples", num_samples)
    check_budget(memory_budget)
    check_optional_int("batch_size", batch_size)
    ex = _example(model, example)
    with evaluation_context(model, None, no_grad=True):
        try:
            costs = _costs(model, ex, None, _draws(num_samples))
        except Exception as e:
            raise ValueError(
                f"the guide cannot score one data point ({type(e).__name__}: {e}); a "
                "guide that is not amortised is scored on the whole data set in one "
                "block"
            ) from e
    return _plan(costs, num_samples, memory_budget, batch_size, ex.device)


def points_per_block(
    model,
    num_samples: int,
    memory_budget: float = DEFAULT_MEMORY_BUDGET,
    batch_size: int | None = None,
    *,
    example=None,
) -> int:
    """Data points per block of :func:`pyrovamp.log_likelihood`,
    :func:`pyrovamp.log_importance_weights`, :func:`pyrovamp.elbo` and :func:`pyrovamp.elbo_terms`
    with ``num_samples`` samples: ``batch_size`` if given, else as many as ``memory_budget`` bytes
    allow with all samples in one chunk (at least 1).

    It depends only on the model, ``num_samples``, ``memory_budget`` and ``batch_size`` -- not on
    the data or the number of processes: a shard ``x[k * B:]`` of a data set scored with
    ``first_block=k`` (``B = points_per_block(...)``) gives exactly the values of one call on the
    whole set with the same ``seed``. Details: :func:`evaluation_plan` (same arguments).

    Returns:
        The block size ``B >= 1``.

    Raises:
        ValueError: as :func:`evaluation_plan`.
    """
    plan = evaluation_plan(model, num_samples, memory_budget, batch_size, example=example)
    # evaluation_plan refuses a guide that is not amortised, the one case without a block size
    return cast(int, plan.points_per_block)


def pair_bytes(model, x: torch.Tensor) -> int:
    """Measured bytes per (draw, data point) pair of scoring ``p(x, h)`` and ``q(h|x)`` without
    a gradient: the largest per-pair term over the operations (the unit of AIS's and the exact
    quadrature's chunks). Call inside :func:`~pyrovamp.infer.context.evaluation_context` with
    ``x`` converted; ``x[:1]`` is the probe for a model without ``input_dim`` and
    ``likelihood``, all of ``x`` for a guide that is not amortised."""
    costs = _costs(model, _example(model, x), x, _draws(16))
    return max(1, math.ceil(costs.pair_max))
