"""One set of argument checks, used by every public function: each raises ``ValueError`` with
one line naming the argument and what was expected, before any work."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

__all__ = ["check_int", "check_positive", "check_open_unit", "check_choice", "check_optional_int"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: Any, low: int = 1) -> int:
    """``value`` if it is an integer ``>= low`` (``bool`` is not an integer here).

    Raises:
        ValueError: ``"{name} must be a positive integer, got ..."`` (``low == 1``) or
            ``"{name} must be an integer >= {low}, got ..."``.
    """
    if not _is_int(value) or value < low:
        what = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def check_optional_int(name: str, value: Any, low: int = 1) -> int | None:
    """``None``, or ``value`` checked by :func:`check_int` (the message adds "or None")."""
    if value is not None and (not _is_int(value) or value < low):
        what = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {what} or None, got {value!r}")
    return value


def check_positive(name: str, value: Any, what: str = "a positive number") -> float:
    """``value`` if it is a finite real number ``> 0`` (``bool`` is not a number here).

    Raises:
        ValueError: ``"{name} must be {what}, got ..."``.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def check_open_unit(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """``value`` if it is a number in the open interval ``(0, 1)`` (a decay, a probability),
    or ``None`` where ``allow_none``.

    Raises:
        ValueError: ``"{name} must be in (0, 1)[ or None], got ..."``.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(
            f"{name} must be in (0, 1){' or None' if allow_none else ''}, got {value!r}"
        )
    return value


def check_choice(name: str, value: Any, choices: Collection[Any], what: str = "one of") -> Any:
    """``value`` if it is one of ``choices``.

    Raises:
        ValueError: ``"{name} must be one of a, b, c, got ..."``.
    """
    if value not in choices:
        raise ValueError(f"{name} must be {what} {', '.join(map(str, choices))}, got {value!r}")
    return value
