"""One set of argument checks, used by every public function: each raises one line naming the
argument and what was expected, before any work -- :class:`~pyrovamp.errors.ArgumentTypeError`
(a ``TypeError``) for a value of the wrong type, ``ValueError`` for a wrong value.

Integers are any ``numbers.Integral`` but ``bool`` (so NumPy and 0-d integer tensors' ``.item()``
pass), reals any ``numbers.Real`` but ``bool``."""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Collection
from typing import Any

from pyrovamp.errors import ArgumentTypeError, CheckpointError

__all__ = [
    "check_int",
    "check_positive",
    "check_open_unit",
    "check_choice",
    "check_optional_int",
    "check_type",
    "describe",
]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = 4


def _short(value: Any) -> str:
    """``repr(value)`` on one line of at most about 60 characters (a large list or array named,
    not printed)."""
    text = " ".join(_REPR.repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def describe(value: Any) -> str:
    """``value`` for an error message: its short repr and its type, ``[1, 2] (list)``."""
    return f"{_short(value)} ({type(value).__name__})"


def check_type(name: str, value: Any, types: type | tuple[type, ...], what: str) -> Any:
    """``value`` if it is an instance of ``types``.

    Raises:
        ArgumentTypeError: ``"{name} must be {what}, got ... (type)"``.
    """
    if not isinstance(value, types):
        raise ArgumentTypeError(f"{name} must be {what}, got {describe(value)}")
    return value


def check_int(name: str, value: Any, low: int = 1) -> int:
    """``int(value)`` if it is an integer ``>= low`` (``bool`` is not an integer here).

    Raises:
        ArgumentTypeError: not an integer (e.g. ``2.5``, ``"3"``, ``True``).
        ValueError: ``"{name} must be a positive integer, got ..."`` (``low == 1``) or
            ``"{name} must be an integer >= {low}, got ..."``.
    """
    what = "a positive integer" if low == 1 else f"an integer >= {low}"
    if not _is_int(value):
        raise ArgumentTypeError(f"{name} must be {what}, got {describe(value)}")
    if value < low:
        raise ValueError(f"{name} must be {what}, got {_short(value)}")
    return int(value)


def check_optional_int(name: str, value: Any, low: int = 1) -> int | None:
    """``None``, or ``value`` checked by :func:`check_int` (the message adds "or None")."""
    if value is None:
        return None
    what = ("a positive integer" if low == 1 else f"an integer >= {low}") + " or None"
    if not _is_int(value):
        raise ArgumentTypeError(f"{name} must be {what}, got {describe(value)}")
    if value < low:
        raise ValueError(f"{name} must be {what}, got {_short(value)}")
    return int(value)


def check_positive(name: str, value: Any, what: str = "a positive number") -> float:
    """``value`` if it is a finite real number ``> 0`` (``bool`` is not a number here).

    Raises:
        ArgumentTypeError: not a real number.
        ValueError: ``"{name} must be {what}, got ..."``.
    """
    if not _is_real(value):
        raise ArgumentTypeError(f"{name} must be {what}, got {describe(value)}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be {what}, got {_short(value)}")
    return value


def check_open_unit(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """``value`` if it is a number in the open interval ``(0, 1)`` (a decay, a probability),
    or ``None`` where ``allow_none``.

    Raises:
        ValueError: ``"{name} must be in (0, 1)[ or None], got ..."``.
    """
    if value is None and allow_none:
        return None
    if not _is_real(value):
        raise ArgumentTypeError(
            f"{name} must be in (0, 1){' or None' if allow_none else ''}, got {describe(value)}"
        )
    if not 0.0 < value < 1.0:
        raise ValueError(
            f"{name} must be in (0, 1){' or None' if allow_none else ''}, got {_short(value)}"
        )
    return value


def check_choice(name: str, value: Any, choices: Collection[Any], what: str = "one of") -> Any:
    """``value`` if it is one of ``choices``.

    Raises:
        ValueError: ``"{name} must be one of a, b, c, got ..."``.
    """
    if value not in choices:
        raise ValueError(
            f"{name} must be {what} {', '.join(map(str, choices))}, got {_short(value)}"
        )
    return value


def check_finite_weights(path, tensors: dict) -> None:
    """Refuse weights read from ``path`` (name -> tensor) of which a floating-point tensor holds a
    NaN or an infinite value: pyrovamp never writes one, so the file is damaged.

    Raises:
        pyrovamp.errors.CheckpointError: one line naming ``path`` and the first such tensor.
    """
    import torch

    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(t.isfinite().all()):
            raise CheckpointError(
                f"{path}: tensor {str(name)!r} holds NaN or infinite values (a damaged file: "
                "pyrovamp never writes one)"
            )
