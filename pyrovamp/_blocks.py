"""In-cache evaluation on CPUs: how many rows of a wide ``(rows, width)`` tensor one block of a
chain of operations holds, so that the chain's passes run in a core's cache instead of main
memory (importance sampling's ``(S, N, D)`` stacks are tens of megabytes)."""

from __future__ import annotations

import math
import os

import torch

__all__ = ["BLOCK_ELEMENTS", "block_rows", "exp_floor", "l2_cache_bytes"]

_FALLBACK_L2_BYTES = 2**19  # 512 KiB: a block of 2**16 float32 elements (256 KiB)
_MIN_BLOCK, _MAX_BLOCK = 2**14, 2**20


def l2_cache_bytes(sysfs: str = "/sys/devices/system/cpu/cpu0/cache") -> int | None:
    """The size in bytes of one core's level-2 data cache, as Linux reports it in ``sysfs``
    (``index*/level``, ``type``, ``size`` such as ``2048K``); else ``sysconf`` where it knows
    ``SC_LEVEL2_CACHE_SIZE``; ``None`` where neither says (macOS, Windows, some containers)."""
    try:
        for entry in sorted(os.listdir(sysfs)):
            folder = os.path.join(sysfs, entry)
            with open(os.path.join(folder, "level")) as f:
                level = f.read().strip()
            with open(os.path.join(folder, "type")) as f:
                kind = f.read().strip()
            if level != "2" or kind not in ("Data", "Unified"):
                continue
            with open(os.path.join(folder, "size")) as f:
                text = f.read().strip().upper()
            scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
            return int(text.rstrip("KMG")) * scale
    except (OSError, ValueError):
        pass
    try:
        size = os.sysconf("SC_LEVEL2_CACHE_SIZE")
        if isinstance(size, int) and size > 0:
            return size
    except (AttributeError, ValueError, OSError):
        pass
    return None


def _block_elements(l2_bytes: int | None) -> int:
    """Float32 elements of a block that fills half of an L2 cache of ``l2_bytes`` (the other
    half holds the chain's inputs and the code's other data), rounded down to a power of two
    within ``[2**14, 2**20]``; ``2**16`` (256 KiB, half of a 512 KiB L2) when the size is
    unknown."""
    half = (l2_bytes if l2_bytes else _FALLBACK_L2_BYTES) // 2 // 4
    elements = 2 ** max(0, half.bit_length() - 1)
    return min(_MAX_BLOCK, max(_MIN_BLOCK, elements))


BLOCK_ELEMENTS = _block_elements(l2_cache_bytes())
"""Elements of one block of an elementwise chain: half of one core's L2 cache in float32
(:func:`l2_cache_bytes`; 2**18, 1 MiB, with a 2 MiB L2; 2**16 where the size is unknown). On an
Intel Xeon with 2 MiB of L2 (AVX512, one thread), importance sampling of the zoo's VAE +
VampPrior ran at 0.60 of the GEMM rate with 2**18-element blocks, 0.56-0.57 with 2**16, 0.57
with 2**17, 0.58 with 2**19 and 0.55 with 2**20 (``benchmarks/log_likelihood.py``)."""


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
