"""In-cache evaluation on CPUs: how many rows of a wide ``(rows, width)`` tensor one block of a
chain of operations holds, so that the chain's passes run in a core's cache instead of main
memory (importance sampling's ``(S, N, D)`` stacks are tens of megabytes)."""

from __future__ import annotations

import math

import torch

__all__ = ["BLOCK_ELEMENTS", "block_rows", "exp_floor"]

BLOCK_ELEMENTS = 2**16
"""Elements of one block of an elementwise chain (256 KiB of float32: in a core's L2 cache)."""


def block_rows(rows: int, width: int, device: torch.device, elements: int = BLOCK_ELEMENTS) -> int:
    """Rows per block of a ``(rows, width)`` tensor: about ``elements / width`` on a CPU (at least
    1, at most ``rows``); all ``rows`` on other devices (a GPU wants few large kernels)."""
    if device.type != "cpu":
        return max(rows, 1)
    return max(1, min(rows, elements // max(width, 1)))


def exp_floor(dtype: torch.dtype) -> float:
    """The smallest ``t`` whose ``exp(t)`` is a normal number of ``dtype``, plus one:
    ``log(tiny) + 1`` (-86.3 for float32). Arguments of ``exp`` clamped from below to it give
    no subnormal results -- which cost CPUs about a hundred times a normal operation -- while a
    sum of ``exp`` that holds a term of size one (a ``logsumexp`` after subtracting its maximum,
    ``log(1 + exp(-|h|))``) does not change in ``dtype``: the clamped terms are below its
    rounding."""
    return math.log(torch.finfo(dtype).tiny) + 1.0
