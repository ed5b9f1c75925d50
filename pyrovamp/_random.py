"""Seed derivation and random-stream isolation, once for the whole library."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["derive_seed", "fork_rng"]


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
    caller's random streams as they were."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    return torch.random.fork_rng(devices=devices)
