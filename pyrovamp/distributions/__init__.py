"""The likelihood families p(x|z): the decoder's output distribution over one data point.

A likelihood turns the decoder network's raw output ``h`` (shape ``(..., D * params_per_dim)``)
into a Pyro distribution with ``event_shape == (D,)`` and batch shape ``h.shape[:-1]``. It also
knows its support (to check data before any work starts) and how to rescale data-space values to
``[0, 1]`` for the encoder's input.

Families:

* :class:`BernoulliLikelihood` -- binary data (static / dynamic MNIST), VampPrior paper sec. 4.
* :class:`CategoricalLikelihood` -- integer data with ``num_values`` levels (Digits: 17 levels
  0..16), as in Tomczak, *Deep Generative Modeling*, ch. 4.3.
* :class:`DiscretizedLogisticLikelihood` -- grey images with 256 levels (Frey Faces,
  Histopathology), the VampPrior paper's likelihood for them (sec. 4; Kingma et al. 2016).
"""

from pyrovamp.distributions.autoregressive import AutoregressiveImage
from pyrovamp.distributions.base import Likelihood
from pyrovamp.distributions.bernoulli import BernoulliLikelihood, softplus
from pyrovamp.distributions.categorical import CategoricalLikelihood
from pyrovamp.distributions.likelihoods import LIKELIHOODS, make_likelihood
from pyrovamp.distributions.logistic import DiscretizedLogistic, DiscretizedLogisticLikelihood

__all__ = [
    "Likelihood",
    "BernoulliLikelihood",
    "CategoricalLikelihood",
    "DiscretizedLogisticLikelihood",
    "DiscretizedLogistic",
    "make_likelihood",
    "LIKELIHOODS",
    "AutoregressiveImage",
    "softplus",
]
