"""The categorical likelihood of integer data with few levels (Digits: 17 levels; Tomczak,
*Deep Generative Modeling*, ch. 4.3)."""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pyrovamp._precision import full_precision
from pyrovamp._validate import check_int
from pyrovamp.distributions.base import Likelihood, check_levels

__all__ = ["CategoricalLikelihood"]


class CategoricalLikelihood(Likelihood):
    """Categorical likelihood over ``num_values`` integer levels ``0..num_values-1`` per dimension.

    ``p(x|z) = prod_d Cat(x_d | softmax(h_d))`` where the decoder output ``h`` has shape
    ``(..., D * num_values)``. Digits uses ``num_values=17`` (values 0..16), as in the book.
    """

    name = "categorical"

    def __init__(self, input_dim: int, num_values: int):
        super().__init__(input_dim)
        self.num_values = check_int("num_values", num_values, low=2)
        self.params_per_dim = self.num_values
        self.high = float(self.num_values - 1)

    def __call__(self, h):
        h = full_precision(h)
        logits = h.reshape(h.shape[:-1] + (self.input_dim, self.num_values))
        return dist.Categorical(logits=logits, validate_args=False).to_event(1)

    def mean(self, h):
        logits = h.reshape(h.shape[:-1] + (self.input_dim, self.num_values))
        levels = torch.arange(self.num_values, dtype=h.dtype, device=h.device)
        return (logits.softmax(-1) * levels).sum(-1)

    def check_support(self, x, name="x"):
        check_levels(
            x,
            self.num_values,
            name,
            f"integers in 0..{self.num_values - 1} for the "
            f"categorical likelihood with num_values={self.num_values}",
        )

    def __repr__(self):
        return f"CategoricalLikelihood(input_dim={self.input_dim}, num_values={self.num_values})"
