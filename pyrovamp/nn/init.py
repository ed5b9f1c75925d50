"""Initialisation of the networks' weights."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["he_init_"]


@torch.no_grad()
def he_init_(modules: Iterable[nn.Module]) -> int:
    """He initialisation of every ``nn.Linear`` in ``modules`` (an iterable of modules, each
    visited with its submodules, each layer once): weights ``~ N(0, 2 / fan_in)``, biases left as
    they are -- the initialisation of the VampPrior paper's code (jmtomczak/vae_vampprior
    ``utils/nn.py``, ``he_init``, applied to every linear layer of its models). Returns the
    number of layers initialised.
    """
    seen = set()
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Linear) and id(m) not in seen:
                seen.add(id(m))
                m.weight.normal_(0.0, (2.0 / m.in_features) ** 0.5)
    return len(seen)
