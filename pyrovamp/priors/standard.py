"""The standard Gaussian prior (book sec. 4.4.1.1)."""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pyrovamp.priors.base import Prior, check_latent

__all__ = ["StandardPrior"]


class _StandardNormal(dist.Independent):
    """``Normal(0, 1).to_event(1)`` whose ``log_prob`` checks its value
    (:func:`pyrovamp.priors.base.check_latent`): a ``(..., 1)`` value would broadcast against
    ``(L,)`` and score as if it were ``L`` copies of itself."""

    def log_prob(self, value):
        value = check_latent(value, self.event_shape[0], self.base_dist.loc.dtype)
        return super().log_prob(value)


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
        normal = dist.Normal(self.loc, self.scale, validate_args=False)
        return _StandardNormal(normal, 1, validate_args=False)
