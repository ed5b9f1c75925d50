"""Seed derivation and random-stream isolation, once for the whole library."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["derive_seed", "fork_rng", "isolated_rng", "seed_forked"]


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream named by ``keys`` under the run's ``seed``: NumPy's
    ``SeedSequence([seed, *keys])`` (well mixed, stable across processes, platforms and Python
    runs), so that streams such as ``(seed, block)`` or ``(seed, purpose, epoch)`` are
    independent and reproducible.

    Args:
        seed: an integer ``>= 0``.
        keys: integers ``>= 0`` naming the stream.

    Returns:
        an integer in ``[0, 2**63)`` (a valid ``torch.manual_seed``).
    """
    state = np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(2, np.uint32)
    return (int(state[0]) | int(state[1]) << 32) & (2**63 - 1)


def fork_rng():
    """``torch.random.fork_rng`` over the CPU and every CUDA device: draws inside leave the
    caller's random streams as they were.

    CUDA's streams are forked only where CUDA is already initialised: reading them would start
    CUDA, which a fork-based launcher (Lightning's ``ddp_notebook``) forbids before it forks. A
    caller that has not touched CUDA has no CUDA stream of its own to keep."""
    devices = list(range(torch.cuda.device_count())) if _cuda_started() else []
    return torch.random.fork_rng(devices=devices)


def _cuda_started() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def seed_forked(seed: int, *, cuda: bool = False) -> None:
    """Seed torch's streams inside :func:`fork_rng`: the CPU's, and CUDA's where CUDA is
    started (then :func:`fork_rng` has forked them too). With CUDA not started, ``cuda=True``
    queues CUDA's seed for when it starts (a block that starts CUDA itself); ``cuda=False``
    leaves CUDA alone, so a caller's later CUDA draws are not touched (``torch.manual_seed``
    would queue the seed for them)."""
    seed = int(seed)  # a NumPy integer too
    if cuda or _cuda_started():
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


@contextlib.contextmanager
def isolated_rng(seed: int | None = None, *, cuda: bool = False) -> Iterator[None]:
    """Run the block on its own random streams and give the caller's back afterwards.

    Pyro draws from torch's global generator (and some code from NumPy's and ``random``'s), so
    a computation that must be reproducible from its own ``seed`` *and* leave the user's streams
    alone forks all three: torch's (CPU, and every CUDA device where CUDA is started), NumPy's
    legacy global state and Python's ``random``. On exit -- normal or by an exception -- they
    hold exactly the states they had on entry.

    Args:
        seed: seed the streams inside the block with it (as ``pyro.set_rng_seed`` does);
            ``None``: keep drawing from copies of the caller's states (their draws inside do not
            advance the caller's streams).
        cuda: the block draws on a CUDA device. With CUDA already started its streams are forked
            and seeded like the CPU's. With CUDA not started, ``cuda=True`` seeds CUDA's streams
            when CUDA starts (the block's fork-based launcher must find it unstarted; the
            caller's CUDA streams, never used, then start from ``seed``), and ``cuda=False``
            seeds the CPU's stream only, so a caller's later CUDA draws are not touched.
            A caller who wants CUDA's streams forked too starts CUDA first
            (``torch.cuda.init()``).
    """
    py_state = random.getstate()
    np_state = np.random.get_state()
    try:
        with fork_rng():
            if seed is not None:
                seed_forked(seed, cuda=cuda)
                np.random.seed(seed % 2**32)
                random.seed(seed)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
