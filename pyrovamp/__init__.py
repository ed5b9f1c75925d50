"""pyrovamp: variational auto-encoders with learnable priors in Pyro.

Priors (:mod:`pyrovamp.priors`): standard Gaussian, mixture of Gaussians, VampPrior, GTM,
GTM-VampPrior and a RealNVP flow prior, each an ``nn.Module`` whose call returns a Pyro
distribution. Models (:mod:`pyrovamp.models`): :class:`VAE` with Pyro ``model``/``guide``.
Training (:mod:`pyrovamp.inference`), importance-sampled log-likelihood
(:mod:`pyrovamp.evaluation`), data sets (:mod:`pyrovamp.data`), figures (:mod:`pyrovamp.plots`).
"""

from .ais import ais_log_likelihood, bdmc
from .data import Dataset, load_dataset
from .evaluation import active_units, elbo, log_importance_weights, log_likelihood
from .exact import exact_log_likelihood
from .inference import Trainer, TrainConfig, train
from .models import HVAE, VAE, ConvHVAE
from .priors import (FlowPrior, GTMPrior, GTMVampPrior, MoGPrior, Prior, StandardPrior, VampPrior,
                     make_prior)

__version__ = "0.1.0"

__all__ = [
    "Dataset", "load_dataset", "active_units", "HVAE", "ConvHVAE", "elbo", "log_importance_weights", "log_likelihood", "Trainer",
    "TrainConfig", "train", "VAE", "Prior", "StandardPrior", "MoGPrior", "VampPrior", "GTMPrior",
    "GTMVampPrior", "FlowPrior", "make_prior", "ais_log_likelihood", "bdmc",
    "exact_log_likelihood",
]
