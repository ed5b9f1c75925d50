"""The likelihood contract p(x|z): :class:`Likelihood` turns the decoder network's raw output
``h`` (``(..., D * params_per_dim)``) into a Pyro distribution with ``event_shape == (D,)`` and
batch shape ``h.shape[:-1]``; it knows its support (to check data before any work) and how to
rescale data-space values to ``[0, 1]`` for the encoder's input."""

from __future__ import annotations

import abc

import pyro.distributions as dist
import torch

from pyrovamp._validate import check_int

__all__ = ["Likelihood", "check_levels"]


class Likelihood(abc.ABC):
    """Base class of the likelihood families.

    Attributes:
        input_dim: number of observed dimensions ``D`` (pixels).
        params_per_dim: how many decoder outputs each dimension needs.
        low, high: the data range, ``low <= x <= high``.
        output_blocks: how many parameter-major blocks the decoder output ``h`` stacks, each an
            output layer of its own in the VampPrior paper's code (the discretised logistic's
            locations and log-scales: 2; one otherwise). The decoder's output layer is marked
            with it (:func:`pyrovamp.nn.mark_fused`).
    """

    name = "likelihood"
    params_per_dim = 1
    output_blocks = 1
    low = 0.0
    high = 1.0

    def __init__(self, input_dim: int):
        self.input_dim = check_int("input_dim", input_dim)

    @property
    def output_dim(self) -> int:
        """Size of the decoder output this likelihood consumes: ``D * params_per_dim``."""
        return self.input_dim * self.params_per_dim

    @abc.abstractmethod
    def __call__(self, h: torch.Tensor) -> dist.TorchDistribution:
        """The distribution p(x|z) for decoder output ``h`` of shape ``(..., output_dim)``."""

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map data-space values ``x`` (any shape) to ``[0, 1]`` for the encoder's input."""
        return (x - self.low) / (self.high - self.low)

    @abc.abstractmethod
    def mean(self, h: torch.Tensor) -> torch.Tensor:
        """Expected value E[x|z] in data space, shape ``(..., D)``."""

    @abc.abstractmethod
    def check_support(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise ``ValueError`` naming ``name`` if ``x`` has values outside the support."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(input_dim={self.input_dim})"


def check_levels(x: torch.Tensor, num_values: int, name: str, what: str) -> None:
    """Raise ``ValueError`` (naming ``name`` and ``what`` it must hold) unless every value of ``x``
    is an integer in ``0..num_values - 1``."""
    ok = (x == x.round()) & (x >= 0) & (x <= num_values - 1)
    if not bool(ok.all()):
        bad = x[~ok].flatten()[:3].tolist()
        raise ValueError(f"{name} must hold {what}; found values such as {bad}.")
