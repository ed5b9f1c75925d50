"""Learnable priors: each an ``nn.Module`` whose call returns a Pyro distribution over one
latent vector (``pyro.sample("z", prior())`` in any model)."""

from pyrovamp.priors.base import (PRIORS, PSEUDO_INPUT_PARAMETERIZATIONS, REAL_VECTOR, DiagonalGaussianMixture, Prior, StandardPrior, MoGPrior, VampPrior, grid_points, GTMPrior, GTMVampPrior, FLOWS, FlowPrior, make_prior)

__all__ = ['PRIORS', 'PSEUDO_INPUT_PARAMETERIZATIONS', 'REAL_VECTOR', 'DiagonalGaussianMixture', 'Prior', 'StandardPrior', 'MoGPrior', 'VampPrior', 'grid_points', 'GTMPrior', 'GTMVampPrior', 'FLOWS', 'FlowPrior', 'make_prior']
