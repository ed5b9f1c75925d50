"""Where and in which precision a run trains: the ``"auto"`` choices of
:class:`~pyrovamp.training.config.TrainConfig` resolved against the model and the machine
(:func:`resolve_accelerator`, :func:`resolve_precision`), and whether a CPU computes bfloat16
natively (:func:`cpu_has_native_bf16`). Each decision taken for the user is said in one log line.
Importing it does not load Lightning."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Protocol

import torch

__all__ = [
    "cpu_has_native_bf16",
    "forks_processes",
    "model_device",
    "resolve_accelerator",
    "resolve_precision",
]

logger = logging.getLogger(__name__)


class Placement(Protocol):
    """What :func:`resolve_accelerator` reads of a
    :class:`~pyrovamp.training.config.TrainConfig`."""

    accelerator: str
    devices: int | str
    device: str | None


# x86 features with bfloat16 arithmetic in hardware: AVX-512 BF16 (Cooper Lake, Zen 4 and later)
# and AMX (Sapphire Rapids and later)
_BF16_FEATURES = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX-BF16).

    Read from ``torch.cpu.get_capabilities()`` where this torch has it, else from the flags of
    ``/proc/cpuinfo`` (Linux); ``False`` where neither says. Without these instructions,
    bfloat16 autocast on the CPU is emulated and about ten times slower than float32.
    """
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        try:
            caps = get()
        except (RuntimeError, OSError):
            caps = None
        if caps is not None:
            return any(bool(caps.get(f, False)) for f in _BF16_FEATURES)
    if not sys.platform.startswith("linux"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return any(f in line.split() for f in _BF16_FEATURES)
    return False


def model_device(model: torch.nn.Module | None) -> torch.device | None:
    """The device of ``model``'s first parameter (or buffer); ``None`` for a model without
    tensors or no model."""
    if model is None:
        return None
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return None


def resolve_accelerator(
    config: Placement, model: torch.nn.Module | None = None, *, log: bool = True
) -> tuple[str, int | str | list[int]]:
    """``(accelerator, devices)`` for Lightning's ``Trainer``.

    ``config.device`` (``"cpu"``, ``"cuda"``, ``"cuda:i"``) wins, then an explicit
    ``config.accelerator`` (``"cpu"``, ``"gpu"``/``"cuda"``). ``"auto"`` follows the model and
    the machine: a model whose parameters are on ``cuda:i`` trains on that GPU (with one
    process); otherwise on a GPU when ``torch.cuda.is_available()`` (Lightning moves the
    model there), else on the CPU. The ``"auto"`` decision is logged in one line (``log``).

    Raises:
        ValueError: ``config.device`` is not a CPU or CUDA device.
    """
    devices: int | str | list[int] = config.devices
    if config.device is not None:
        try:
            dev = torch.device(config.device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(
                f"device must be 'cpu', 'cuda' or 'cuda:i', got {config.device!r}"
            ) from e
        if dev.type == "cpu":
            return "cpu", devices
        if dev.type == "cuda":
            return "gpu", [dev.index] if dev.index is not None else devices
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:i', got {config.device!r}")
    if config.accelerator != "auto":
        return ("gpu" if config.accelerator == "cuda" else config.accelerator), devices
    on = model_device(model)
    if on is not None and on.type == "cuda":
        index = on.index if on.index is not None else 0
        accelerator, devices = "gpu", [index] if devices in (1, "auto") else devices
        why = f"the model's parameters are on cuda:{index}"
    elif torch.cuda.is_available():
        accelerator, why = "gpu", "CUDA is available (Lightning moves the model there)"
    else:
        accelerator, why = "cpu", "there is no CUDA device"
    if log:
        logger.info("accelerator auto: training on %s, since %s", accelerator, why)
    return accelerator, devices


def _cuda_index(devices: int | str | list[int]) -> int | None:
    return devices[0] if isinstance(devices, list) and devices else None


def forks_processes(strategy: str) -> bool:
    """Whether Lightning's ``strategy`` forks its processes (``ddp_notebook``, ``ddp_fork``):
    CUDA must then not be started before the fork."""
    return "fork" in strategy or "notebook" in strategy


def _cuda_has_native_bf16(index: int | None, strategy: str = "auto") -> bool:
    """Whether CUDA device ``index`` (``None``: the current one) computes bfloat16 in hardware
    (not emulated). Under a fork-based strategy with CUDA not yet started, the query (which
    would start it) is not made and the answer is ``False``."""
    if not torch.cuda.is_available():
        return False
    if forks_processes(strategy) and not torch.cuda.is_initialized():
        return False
    if index is None:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    with torch.cuda.device(index):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(
    precision: str,
    accelerator: str,
    devices: int | str | list[int] = 1,
    *,
    log: bool = True,
    strategy: str = "auto",
) -> str:
    """The Lightning precision that a run with ``precision`` trains in on ``accelerator``.

    ``"auto"`` is ``"bf16-mixed"`` where the device computes bfloat16 natively (a CUDA GPU with
    ``torch.cuda.is_bf16_supported()``; a CPU with AVX-512 BF16 or AMX:
    :func:`cpu_has_native_bf16`), else ``"32"``; the decision is logged in one line. An
    explicit ``"bf16-mixed"`` on a CPU without native bfloat16 is kept, with one warning
    (``UserWarning``). ``log=False``: neither line nor warning (e.g. on the processes of a
    data-parallel run other than the first).

    Returns:
        ``"32"``, ``"bf16-mixed"`` or ``"16-mixed"``.
    """
    if accelerator == "gpu":
        if precision != "auto":
            return precision
        native = _cuda_has_native_bf16(_cuda_index(devices), strategy)
        what = (
            "this GPU computes bfloat16 natively"
            if native
            else "this GPU has no native bfloat16"
            + (
                " (or, with a fork-based strategy, cannot be asked before the fork)"
                if forks_processes(strategy)
                else ""
            )
        )
    else:
        native = cpu_has_native_bf16()
        if precision in ("bf16-mixed", "16-mixed") and not native and log:
            warnings.warn(
                f"precision={precision!r} on a CPU without native bfloat16 (no AVX-512 BF16 or "
                "AMX; Lightning autocasts to bfloat16 on the CPU): it runs emulated, about 10 "
                "times slower than precision='32' (use 'auto' to choose by the hardware)",
                UserWarning,
                stacklevel=3,
            )
        if precision != "auto":
            return precision
        what = (
            "this CPU computes bfloat16 natively (AVX-512 BF16 or AMX)"
            if native
            else "this CPU has no native bfloat16 (no AVX-512 BF16 or AMX)"
        )
    chosen = "bf16-mixed" if native else "32"
    if log:
        logger.info("precision auto: %s, since %s", chosen, what)
    return chosen
