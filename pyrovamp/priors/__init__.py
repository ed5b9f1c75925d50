"""Priors p(z) for VAEs, each a ``torch.nn.Module`` whose call returns a Pyro distribution.

The prior contract: ``prior()`` returns a :class:`pyro.distributions.TorchDistribution` with
``event_shape == (latent_dim,)`` and ``batch_shape == ()``, rebuilt from the module's parameters
on every call so gradients flow (the "lazy distribution" pattern of zuko). Its ``log_prob``
accepts any leading shape ``(..., latent_dim)`` and returns ``(...)`` in nats; ``sample(shape)``
returns ``shape + (latent_dim,)``. Its support is ``constraints.independent(constraints.real, 1)``
(a density on R^L), so ``biject_to``, the autoguides, NUTS/HMC and the init strategies handle it.
Built inside a Pyro model (under any Pyro handler) a prior registers its own parameters
(:mod:`pyrovamp.registration`), so a prior drops into any Pyro model in one line::

    z = pyro.sample("z", prior())

Priors (Tomczak, *Deep Generative Modeling*, sec. 4.4.1; Tomczak & Welling, AISTATS 2018):

=================  =====================================================================
``standard``       N(0, I)                                              (book sec. 4.4.1.1)
``mog``            sum_k w_k N(z | mu_k, diag sigma_k^2)                (eq. 4.47)
``vampprior``      sum_k w_k q(z | u_k), pseudo-inputs u_k, w_k = 1/K   (eq. 4.48 / 4.49)
``gtm``            sum_k w_k N(z | mu_g(u_k), diag sigma_g^2(u_k))      (eq. 4.50-4.52)
``gtm-vampprior``  sum_k w_k q(z | g(u_k)), g maps a grid to data space (eq. 4.53)
``flow``           N(0, I) through a zuko flow: RealNVP (default), NSF, MAF (sec. 4.4.1.6)
=================  =====================================================================

All mixtures are mixtures over whole latent vectors: the log-density sums over latent dimensions
first and takes ``logsumexp`` over components second (the book's listings do it the other way
round, which is a different, factorised density).
"""

from pyrovamp.priors.base import REAL_VECTOR, Prior
from pyrovamp.priors.factory import PRIORS, make_prior
from pyrovamp.priors.flow import FLOWS, FlowPrior
from pyrovamp.priors.mixtures import DiagonalGaussianMixture, GTMPrior, MoGPrior, grid_points
from pyrovamp.priors.standard import StandardPrior
from pyrovamp.priors.vamp import PSEUDO_INPUT_PARAMETERIZATIONS, GTMVampPrior, VampPrior

__all__ = [
    "Prior",
    "StandardPrior",
    "MoGPrior",
    "VampPrior",
    "GTMPrior",
    "GTMVampPrior",
    "FlowPrior",
    "DiagonalGaussianMixture",
    "make_prior",
    "PRIORS",
    "FLOWS",
    "PSEUDO_INPUT_PARAMETERIZATIONS",
    "grid_points",
    "REAL_VECTOR",
]
