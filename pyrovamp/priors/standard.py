"""The standard Gaussian prior (book sec. 4.4.1.1)."""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pyrovamp.priors.base import Prior

__all__ = ["StandardPrior"]


class StandardPrior(Prior):
    """Standard Gaussian prior ``p(z) = N(z | 0, I)`` (book sec. 4.4.1.1, listing 4.6).

    Args:
        latent_dim: latent size ``L``.
    """

    def __init__(self, latent_dim: int = 2):
        super().__init__(latent_dim)
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def distribution(self):
        return dist.Normal(self.loc, self.scale, validate_args=False).to_event(1)
