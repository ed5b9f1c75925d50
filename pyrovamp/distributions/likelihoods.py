"""The likelihood families by name: :func:`make_likelihood` and :data:`LIKELIHOODS`."""

from __future__ import annotations

from pyrovamp.distributions.base import Likelihood
from pyrovamp.distributions.bernoulli import BernoulliLikelihood
from pyrovamp.distributions.categorical import CategoricalLikelihood
from pyrovamp.distributions.logistic import DiscretizedLogisticLikelihood

__all__ = ["make_likelihood", "LIKELIHOODS"]

LIKELIHOODS = ("bernoulli", "categorical", "discretized_logistic")
"""The names :func:`make_likelihood` knows."""


def make_likelihood(name: str, input_dim: int, num_values: int | None = None) -> Likelihood:
    """Build a likelihood by name (``"bernoulli"``, ``"categorical"`` or
    ``"discretized_logistic"``; ``num_values`` is the number of levels, 256 by default for the
    latter).

    Raises:
        ValueError: unknown ``name``, ``num_values`` missing for ``"categorical"`` or given for
            ``"bernoulli"`` (two levels).
    """
    if isinstance(name, Likelihood):
        return name
    if name == "bernoulli":
        if num_values is not None:
            raise ValueError(
                f"num_values applies to the categorical and discretized_logistic likelihoods; "
                f"likelihood='bernoulli' has two levels, got num_values={num_values}"
            )
        return BernoulliLikelihood(input_dim)
    if name == "categorical":
        if num_values is None:
            raise ValueError("likelihood='categorical' needs num_values (e.g. 17 for Digits)")
        return CategoricalLikelihood(input_dim, num_values)
    if name == "discretized_logistic":
        return DiscretizedLogisticLikelihood(input_dim, num_values or 256)
    raise ValueError(f"unknown likelihood {name!r}; expected one of {', '.join(LIKELIHOODS)}")
