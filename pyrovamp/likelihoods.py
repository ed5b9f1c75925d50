"""Likelihoods p(x|z): the decoder's output distribution over one data point.

A likelihood turns the decoder network's raw output ``h`` (shape ``(..., D * params_per_dim)``)
into a Pyro distribution with ``event_shape == (D,)`` and batch shape ``h.shape[:-1]``. It also
knows its support (to check data before any work starts) and how to rescale data-space values to
``[0, 1]`` for the encoder's input.

Families:

* :class:`BernoulliLikelihood` -- binary data (static / dynamic MNIST), VampPrior paper sec. 4.
* :class:`CategoricalLikelihood` -- integer data with ``num_values`` levels (Digits: 17 levels
  0..16), as in Tomczak, *Deep Generative Modeling*, ch. 4.3.
"""

from __future__ import annotations

import abc

import torch
import pyro.distributions as dist

__all__ = ["Likelihood", "BernoulliLikelihood", "CategoricalLikelihood", "make_likelihood",
           "LIKELIHOODS"]


class Likelihood(abc.ABC):
    """Base class of the likelihood families.

    Attributes:
        input_dim: number of observed dimensions ``D`` (pixels).
        params_per_dim: how many decoder outputs each dimension needs.
        low, high: the data range, ``low <= x <= high``.
    """

    name = "likelihood"
    params_per_dim = 1
    low = 0.0
    high = 1.0

    def __init__(self, input_dim: int):
        if int(input_dim) < 1:
            raise ValueError(f"input_dim must be a positive integer, got {input_dim!r}")
        self.input_dim = int(input_dim)

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


class _Bernoulli(dist.Bernoulli):
    """``Bernoulli(logits)`` whose ``log_prob`` is ``x * logits - softplus(logits)``: the same
    values as ``binary_cross_entropy_with_logits``, without materialising the broadcast target
    (importance sampling evaluates ``S`` decoder outputs against one data point)."""

    def log_prob(self, value):
        return value * self.logits - torch.nn.functional.softplus(self.logits)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(_Bernoulli, _instance)
        return super().expand(batch_shape, _instance=new)


class BernoulliLikelihood(Likelihood):
    """Bernoulli likelihood for binary data: ``p(x|z) = prod_d Bern(x_d | sigmoid(h_d))``.

    The decoder output ``h`` (shape ``(..., D)``) holds logits. Support: ``{0, 1}``.
    """

    name = "bernoulli"

    def __call__(self, h):
        return _Bernoulli(logits=h, validate_args=False).to_event(1)

    def mean(self, h):
        return torch.sigmoid(h)

    def check_support(self, x, name="x"):
        if not bool(((x == 0) | (x == 1)).all()):
            bad = x[(x != 0) & (x != 1)].flatten()[:3].tolist()
            raise ValueError(
                f"{name} must be binary (0 or 1) for the Bernoulli likelihood; found values such "
                f"as {bad}. Binarise the data or choose another likelihood."
            )


class CategoricalLikelihood(Likelihood):
    """Categorical likelihood over ``num_values`` integer levels ``0..num_values-1`` per dimension.

    ``p(x|z) = prod_d Cat(x_d | softmax(h_d))`` where the decoder output ``h`` has shape
    ``(..., D * num_values)``. Digits uses ``num_values=17`` (values 0..16), as in the book.
    """

    name = "categorical"

    def __init__(self, input_dim: int, num_values: int):
        super().__init__(input_dim)
        if num_values is None or int(num_values) < 2:
            raise ValueError(
                f"num_values must be an integer >= 2 for the categorical likelihood, got {num_values!r}"
            )
        self.num_values = int(num_values)
        self.params_per_dim = self.num_values
        self.high = float(self.num_values - 1)

    def __call__(self, h):
        logits = h.reshape(h.shape[:-1] + (self.input_dim, self.num_values))
        return dist.Categorical(logits=logits, validate_args=False).to_event(1)

    def mean(self, h):
        logits = h.reshape(h.shape[:-1] + (self.input_dim, self.num_values))
        levels = torch.arange(self.num_values, dtype=h.dtype, device=h.device)
        return (logits.softmax(-1) * levels).sum(-1)

    def check_support(self, x, name="x"):
        ok = (x == x.round()) & (x >= 0) & (x <= self.num_values - 1)
        if not bool(ok.all()):
            bad = x[~ok].flatten()[:3].tolist()
            raise ValueError(
                f"{name} must hold integers in 0..{self.num_values - 1} for the categorical "
                f"likelihood with num_values={self.num_values}; found values such as {bad}."
            )

    def __repr__(self):
        return f"CategoricalLikelihood(input_dim={self.input_dim}, num_values={self.num_values})"


LIKELIHOODS = ("bernoulli", "categorical")


def make_likelihood(name: str, input_dim: int, num_values: int | None = None) -> Likelihood:
    """Build a likelihood by name (``"bernoulli"`` or ``"categorical"``).

    Raises:
        ValueError: unknown ``name``, or ``num_values`` missing for ``"categorical"``.
    """
    if isinstance(name, Likelihood):
        return name
    if name == "bernoulli":
        return BernoulliLikelihood(input_dim)
    if name == "categorical":
        if num_values is None:
            raise ValueError("likelihood='categorical' needs num_values (e.g. 17 for Digits)")
        return CategoricalLikelihood(input_dim, num_values)
    raise ValueError(f"unknown likelihood {name!r}; expected one of {', '.join(LIKELIHOODS)}")
