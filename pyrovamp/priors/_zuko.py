"""zuko, imported without its global side effect: importing zuko switches torch's distribution
argument validation off for every program (``Distribution.set_default_validate_args(False)``);
pyrovamp changes no global setting, so the setting is put back as it was. The setting is read
through public behaviour: a distribution built with an invalid argument raises only when
validation is on."""

from __future__ import annotations

import torch
from torch.distributions import Distribution, Normal

__all__ = ["zuko"]


def validation_enabled() -> bool:
    """Whether torch validates distribution arguments by default (public behaviour only)."""
    try:
        Normal(torch.zeros(()), -torch.ones(()))
    except ValueError:
        return True
    return False


_before = validation_enabled()
import zuko  # noqa: E402  (after reading the setting it changes)

Distribution.set_default_validate_args(_before)
