"""The likelihood families p(x|z): Bernoulli, categorical, discretised logistic, autoregressive."""

from pyrovamp.distributions.likelihoods import (Likelihood, softplus, BernoulliLikelihood, CategoricalLikelihood, DiscretizedLogistic, DiscretizedLogisticLikelihood, LIKELIHOODS, make_likelihood, AutoregressiveImage)

__all__ = ['Likelihood', 'softplus', 'BernoulliLikelihood', 'CategoricalLikelihood', 'DiscretizedLogistic', 'DiscretizedLogisticLikelihood', 'LIKELIHOODS', 'make_likelihood', 'AutoregressiveImage']
