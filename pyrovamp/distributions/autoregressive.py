"""Autoregressive images: pixel conditionals of any likelihood family computed by a masked
network (the PixelHVAE's PixelCNN decoder)."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.distributions import constraints

from pyrovamp.distributions.base import Likelihood
from pyrovamp.distributions.likelihoods import make_likelihood

__all__ = ["AutoregressiveImage"]


class AutoregressiveImage(dist.TorchDistribution):
    """``p(x | c) = prod_i p(x_i | x_<i, c)`` over whole images, for an autoregressive decoder
    such as the PixelHVAE's PixelCNN (Tomczak & Welling 2018, sec. 4; van den Oord et al. 2016):
    the pixel conditionals are one of the likelihood families above, whose parameters a masked
    network computes from the earlier pixels and the context ``c`` (the latent variables).

    ``log_prob(x)`` runs the network once on the observed ``x`` (teacher forcing: every pixel's
    conditional from one pass) and sums the pixels' log-probabilities, nats per image; so Pyro's
    ELBOs, importance sampling and AIS use it like any other likelihood. ``sample()`` draws
    pixel after pixel (``net.sample``). Not reparameterisable; ``mean`` is not available in
    closed form (see :meth:`sample_with_means`).

    Args:
        net: a module with ``net(x01, *context) -> (..., output_dim)`` (``x01``: the image
            scaled to ``[0, 1]``) and ``net.sample(*context, pixel_likelihood, normalize)``
            (e.g. :class:`pyrovamp.nn.PixelCNNDecoder`).
        likelihood: the pixels' family (:class:`BernoulliLikelihood`,
            :class:`DiscretizedLogisticLikelihood`, :class:`CategoricalLikelihood`).
        context: tensors ``(..., d_k)`` whose broadcast leading shape is the batch shape.

    Shapes: ``batch_shape`` = the context's leading shape, ``event_shape = (D,)``.
    """

    arg_constraints = {}
    has_rsample = False

    def __init__(self, net, likelihood: Likelihood, *context: torch.Tensor, validate_args=False):
        self.net, self.likelihood, self.context = net, likelihood, tuple(context)
        batch_shape = torch.broadcast_shapes(*(c.shape[:-1] for c in self.context))
        super().__init__(
            batch_shape, torch.Size([likelihood.input_dim]), validate_args=validate_args
        )

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        """The pixels' support over the whole image (``independent(..., 1)``)."""
        return self.likelihood(torch.zeros(self.likelihood.output_dim)).support

    def expand(self, batch_shape, _instance=None):
        """The same distribution with the context expanded to ``batch_shape``."""
        batch_shape = torch.Size(batch_shape)
        context = [c.expand(batch_shape + c.shape[-1:]) for c in self.context]
        return AutoregressiveImage(
            self.net, self.likelihood, *context, validate_args=self._validate_args
        )

    def log_prob(self, value):
        """``sum_i log p(x_i | x_<i, c)``: shape ``broadcast(value.shape[:-1], batch_shape)``."""
        h = self.net(self.likelihood.normalize(value), *self.context)
        return self.likelihood(h).log_prob(value)

    def sample_with_means(self, sample_shape=torch.Size()):
        """Draw images and record each pixel's conditional mean ``E[x_i | x_<i, c]`` at the
        moment it was drawn. Returns ``(values, means)``, each ``sample_shape + batch_shape +
        (D,)`` in data space."""
        shape = torch.Size(sample_shape) + self.batch_shape
        context = [c.expand(shape + c.shape[-1:]).reshape(-1, c.shape[-1]) for c in self.context]
        pixel = make_likelihood(
            self.likelihood.name, 1, getattr(self.likelihood, "num_values", None)
        )
        values, means = self.net.sample(
            *context, pixel_likelihood=pixel, normalize=self.likelihood.normalize
        )
        return values.reshape(shape + self.event_shape), means.reshape(shape + self.event_shape)

    def sample(self, sample_shape=torch.Size()):
        """Images drawn pixel by pixel: ``sample_shape + batch_shape + (D,)``."""
        return self.sample_with_means(sample_shape)[0]
