"""VAE with a learnable prior as a Pyro model / guide pair.

Generative model (Kingma & Welling 2014; Tomczak, *Deep Generative Modeling*, ch. 4):
``z ~ p_lambda(z)`` (any prior of :mod:`pyrovamp.priors`), ``x ~ p_theta(x|z)`` (a likelihood of
:mod:`pyrovamp.likelihoods`); guide ``q_phi(z|x) = N(z | mu(x), diag sigma^2(x))``.
Every data point sits in one ``pyro.plate("data")``; the latent site is ``"z"``, the observed
site ``"x"``. ELBO and log-likelihood values are nats per data point.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import nn
import pyro
import pyro.distributions as dist

from pyrovamp.distributions.likelihoods import AutoregressiveImage, make_likelihood
from pyrovamp.nn.layers import (MLP, ConditionalGaussian, ConvConditionalEncoder, ConvDecoder,
                   ConvGaussianEncoder, GaussianEncoder, JointNet, PixelCNNDecoder,
                   mark_fused)
from pyrovamp.priors.base import Prior, make_prior
from pyrovamp.registration import RegisteredModule

__all__ = ["VAE", "HVAE", "ConvHVAE", "PixelHVAE", "check_data", "MODELS"]


def check_data(x, input_dim: int, likelihood, name: str = "x", *, dtype=None,
               device=None) -> torch.Tensor:
    """Check a batch of data before any work; return it as a ``(N, D)`` floating tensor.

    Accepts a ``torch.Tensor`` or a numpy array of shape ``(N, D)`` or ``(N, *image_shape)``
    with ``prod(image_shape) == D``, of any real dtype (float64, integer and boolean data are
    cast: the values are checked against the likelihood's support, so nothing is lost).

    Args:
        x: the data.
        input_dim: ``D``.
        likelihood: a :class:`~pyrovamp.likelihoods.Likelihood` (its support is checked).
        name: the argument's name in error messages.
        dtype: floating dtype of the result (default: ``x``'s if floating, else torch's default).
        device: device of the result (default: ``x``'s).

    Raises:
        ValueError: not a tensor or array, wrong shape, empty, complex, NaN/inf, or values outside
            the likelihood's support -- the message names ``name`` and what was expected.
    """
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise ValueError(f"{name} must hold real numbers, got a numpy array of dtype {x.dtype}")
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array of shape (N, {input_dim}), "
                         f"got {type(x).__name__}")
    if x.is_complex():
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.dim() < 2 or math.prod(x.shape[1:]) != input_dim:
        raise ValueError(f"{name} must have shape (N, {input_dim}) (N data points of {input_dim} "
                         f"values), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if x.dim() > 2:
        x = x.reshape(x.shape[0], input_dim)
    if dtype is None:
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    x = x.to(device=device if device is not None else x.device, dtype=dtype)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    likelihood.check_support(x, name)
    return x


def _float_tensor(obj):
    """The first floating parameter or buffer of ``obj`` (the dtype and device of a model), or
    None -- also for an object without ``parameters()``."""
    params = obj.parameters() if hasattr(obj, "parameters") else ()
    buffers = obj.buffers() if hasattr(obj, "buffers") else ()
    for t in itertools.chain(params, buffers):
        if torch.is_tensor(t) and t.is_floating_point():
            return t
    return None


class VAE(RegisteredModule):
    """Variational auto-encoder with a learnable prior, written as a Pyro ``model``/``guide``.

    Its parameters, the prior's included, are local to the module (:mod:`pyrovamp.registration`):
    two models never share parameters, and ``copy.deepcopy``/``pickle`` give independent models.
    Data of any real dtype (float64, integers, numpy arrays) is cast to the model's dtype and moved
    to its device.

    Args:
        input_shape: shape of one data point, e.g. ``(8, 8)`` or ``(784,)``; ``D = prod``.
        latent_dim: ``L``, size of ``z``.

    Keyword-only options:
        prior: a prior name (``standard, mog, vampprior, gtm, gtm-vampprior, flow``) or a
            :class:`~pyrovamp.priors.Prior` module. ``vae.prior`` is that module; assigning
            ``vae.prior = ...`` later goes through the same checks. A VampPrior or GTM-VampPrior
            module must be built on the model's own encoder (``VampPrior(vae.encoder, ...)``, so
            it can only be assigned after construction; ``prior="vampprior"`` does it for you).
        likelihood: ``"bernoulli"`` (binary data), ``"categorical"`` (integer levels) or
            ``"discretized_logistic"`` (grey levels).
        num_values: levels of the categorical likelihood (Digits: 17).
        hidden_dim: units per hidden layer of encoder and decoder (the book: 256).
        num_hidden_layers: hidden layers of encoder and decoder (the book: 2).
        architecture: ``"mlp"`` (Linear + LeakyReLU, the book) or ``"gated"`` (gated dense
            layers, the VampPrior paper).
        num_components: ``K`` for the mixture priors (pseudo-inputs for the VampPrior).
        grid_side: grid side of the GTM priors (``K = grid_side**2``; default ``sqrt(K)``).
        prior_hidden_dims: hidden sizes of the GTM / flow networks inside the prior.
        learn_weights: learn the prior's mixing weights (``None``: the prior's default).
        logvar_bounds: clamp of the encoder's log-variance, e.g. ``(-6, 2)`` as the paper.
        num_flows: coupling layers of the flow prior.
        pseudo_input_parameterization: the VampPrior's pseudo-inputs, ``"sigmoid"`` or ``"clamp"`` (the paper's
            code; see :class:`pyrovamp.priors.VampPrior`); ``None``: its default.
        dropout: dropout probability after every hidden layer of the decoder (a regulariser
            against the decoder over-fitting small data sets; off in evaluation, which runs in
            ``eval()`` mode). The encoder has none, so the VampPrior's components stay
            deterministic functions of the pseudo-inputs.

    Raises:
        ValueError: unknown prior or likelihood name, latent size below 1, bad sizes, a prior
            whose latent size differs, or a VampPrior on another encoder than the model's.
    """

    def __init__(self, input_shape, latent_dim: int = 2, *, prior="vampprior",
                 likelihood: str = "bernoulli", num_values: int | None = None,
                 hidden_dim: int = 256, num_hidden_layers: int = 2, architecture: str = "mlp",
                 num_components: int = 16, grid_side: int | None = None,
                 prior_hidden_dims=(64, 64), learn_weights: bool | None = None,
                 logvar_bounds=None, num_flows: int = 4, dropout: float = 0.0,
                 pseudo_input_parameterization: str | None = None):
        super().__init__()
        if isinstance(input_shape, int):
            input_shape = (input_shape,)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.input_dim = math.prod(self.input_shape)
        if not isinstance(latent_dim, int) or isinstance(latent_dim, bool) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        self.latent_dim = latent_dim
        self.likelihood = make_likelihood(likelihood, self.input_dim, num_values)
        hidden = [hidden_dim] * num_hidden_layers
        self.encoder = GaussianEncoder(self.input_dim, latent_dim, hidden, architecture,
                                       normalize=self.likelihood.normalize,
                                       logvar_bounds=logvar_bounds)
        self.decoder = MLP(latent_dim, hidden, self.likelihood.output_dim, architecture, dropout)
        mark_fused(self.decoder[-1], self.likelihood.output_blocks)
        self._set_prior(prior, num_components=num_components, grid_side=grid_side,
                        hidden_dims=prior_hidden_dims, learn_weights=learn_weights,
                        num_flows=num_flows, pseudo_input_parameterization=pseudo_input_parameterization)

    def _set_prior(self, prior, **kw):
        """``self.prior`` from a name (built around ``self.encoder``) or a Prior module."""
        if isinstance(prior, str):
            prior = make_prior(prior, self.latent_dim, encoder=self.encoder,
                               input_dim=self.input_dim,
                               data_range=(self.likelihood.low, self.likelihood.high), **kw)
        self.prior = prior

    def _check_prior(self, prior) -> Prior:
        """The checks of ``vae.prior = prior``: a Prior of the model's latent size; one whose
        components go through an encoder (VampPrior, GTM-VampPrior) uses the model's own."""
        if not isinstance(prior, Prior):
            raise ValueError(f"prior must be a prior name or a pyrovamp.priors.Prior, got {prior!r}")
        if prior.latent_dim != self.latent_dim:
            raise ValueError(f"prior.latent_dim={prior.latent_dim} differs from the model's "
                             f"latent_dim={self.latent_dim}")
        encoder = getattr(prior, "encoder", None)
        if encoder is not None and encoder is not self.encoder:
            raise ValueError(
                f"the {type(prior).__name__}'s components must be the model's own posterior "
                "q(z|u_k) at the pseudo-inputs (Tomczak & Welling 2018, eq. 9; book eq. 4.48), but "
                "its encoder is another module: build it on vae.encoder after constructing the "
                f"model (e.g. {type(prior).__name__}(vae.encoder, ...)) or pass the prior by name")
        input_dim = getattr(prior, "input_dim", None)
        if input_dim is not None and input_dim != self.input_dim:
            raise ValueError(f"prior.input_dim={input_dim} (pseudo-inputs) differs from the "
                             f"model's input_dim={self.input_dim}")
        return prior

    def __setattr__(self, name, value):
        if name == "prior":
            value = self._check_prior(value)
        elif name == "encoder" and "prior" in self._modules:
            encoder = getattr(self._modules["prior"], "encoder", None)
            if encoder is not None and encoder is not value:
                raise ValueError("the prior's components use the model's encoder: replacing "
                                 "vae.encoder would leave the prior on the old one; assign a new "
                                 "prior built on the new encoder afterwards instead")
        super().__setattr__(name, value)

    def _data(self, x, name: str = "x") -> torch.Tensor:
        """``x`` checked (:func:`check_data`), as a ``(N, D)`` tensor of the model's dtype on its
        device."""
        t = _float_tensor(self)
        return check_data(x, self.input_dim, self.likelihood, name,
                          dtype=None if t is None else t.dtype,
                          device=None if t is None else t.device)

    # --- Pyro model and guide -------------------------------------------------------------
    def model(self, x: torch.Tensor) -> torch.Tensor:
        """Generative model ``p(x, z) = p(z) p(x|z)``; sites ``z`` (latent) and ``x`` (observed).

        Args:
            x: ``(N, D)`` data (or ``(N, *input_shape)``).

        Raises:
            ValueError: wrong shape, NaN, or values outside the likelihood's support.
        """
        x = self._data(x)
        self.register_parameters()
        prior = self.prior(register=False)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", prior)
            pyro.sample("x", self.decode(z), obs=x)
        return z

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        """Amortised variational posterior ``q(z|x)``; site ``z``. Same input checks as ``model``."""
        x = self._data(x)
        self.register_parameters()
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample("z", self.encode(x))

    # --- networks as distributions -----------------------------------------------------------
    def encode(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z|x): ``Normal(loc, scale).to_event(1)`` with batch shape ``x.shape[:-1]``."""
        loc, scale = self.encoder(x)
        return dist.Normal(loc, scale, validate_args=False).to_event(1)

    def decode(self, z: torch.Tensor) -> dist.TorchDistribution:
        """p(x|z): the likelihood's distribution, batch shape ``z.shape[:-1]``, event ``(D,)``."""
        return self.likelihood(self.decoder(z))

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = False) -> torch.Tensor:
        """Draw ``z ~ p(z)`` then ``x ~ p(x|z)`` (or ``E[x|z]`` with ``mean=True``): ``(n, D)``."""
        z = self.prior(register=False).sample((num_samples,))
        h = self.decoder(z)
        return self.likelihood.mean(h) if mean else self.likelihood(h).sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``E[x | z = mean of q(z|x)]`` in data space, ``(N, D)``."""
        x = self._data(x)
        loc, _ = self.encoder(x)
        return self.likelihood.mean(self.decoder(loc))

    @torch.no_grad()
    def posterior_means(self, x: torch.Tensor, num_samples: int = 1) -> dict:
        """``E_q[z|x]`` per latent site: ``{"z": (N, L)}`` (for active units)."""
        x = self._data(x)
        return {"z": self.encoder(x)[0]}

    @property
    def input_shape_2d(self) -> tuple:
        """``(H, W)`` for showing a data point as an image (square if ``input_shape`` is flat)."""
        if len(self.input_shape) >= 2:
            return (math.prod(self.input_shape[:-1]), self.input_shape[-1])
        side = math.isqrt(self.input_dim)
        return (side, side) if side * side == self.input_dim else (1, self.input_dim)

    def extra_repr(self):
        return (f"input_shape={self.input_shape}, latent_dim={self.latent_dim}, "
                f"likelihood={self.likelihood!r}")


class HVAE(VAE):
    """Two-level hierarchical VAE of the VampPrior paper (Tomczak & Welling 2018, sec. 3.2).

    Generative model ``p(z2) p(z1|z2) p(x|z1, z2)`` with any prior of :mod:`pyrovamp.priors` on
    ``z2`` (the VampPrior's components are ``q(z2|u_k)``, through the same encoder the guide uses)
    and Gaussian ``p(z1|z2)``; guide ``q(z2|x) q(z1|x, z2)``. Sites ``z2``, ``z1`` (latent) and
    ``x`` (observed), in one ``pyro.plate("data")``. Networks as in the paper's code: two hidden
    layers everywhere; the conditionals on two variables give each input a layer of its own
    before a joint layer.

    Args:
        input_shape, prior, likelihood, num_values, hidden_dim, architecture, num_components,
        grid_side, prior_hidden_dims, learn_weights, logvar_bounds, num_flows,
        pseudo_input_parameterization: as :class:`VAE`
            (the defaults here are the paper's: gated dense layers of 300 units, K=500,
            log-variances clamped to ``(-6, 2)``).
        latent_dim: size of ``z2`` (the prior's variable); the paper uses 40.
        z1_dim: size of ``z1`` (default: ``latent_dim``).
        num_hidden_layers: hidden layers of ``q(z2|x)`` (the paper: 2).
        dropout: dropout probability after every hidden layer of the decoder ``p(x|z1, z2)``
            (a regulariser against over-fitting, not in the paper; active in training only, so
            the ELBO and log-likelihood estimates use the whole network).

    Raises:
        ValueError: as :class:`VAE`.
    """

    latent_sites = ("z2", "z1")

    def __init__(self, input_shape, latent_dim: int = 40, *, prior="vampprior",
                 likelihood: str = "bernoulli", num_values: int | None = None,
                 hidden_dim: int = 300, architecture: str = "gated", num_components: int = 500,
                 grid_side: int | None = None, prior_hidden_dims=(64, 64),
                 learn_weights: bool | None = None, logvar_bounds=(-6.0, 2.0), num_flows: int = 4,
                 z1_dim: int | None = None, num_hidden_layers: int = 2,
                 pseudo_input_parameterization: str | None = None, dropout: float = 0.0):
        super().__init__(input_shape, latent_dim, prior=prior, likelihood=likelihood,
                         num_values=num_values, hidden_dim=hidden_dim,
                         num_hidden_layers=num_hidden_layers, architecture=architecture,
                         num_components=num_components, grid_side=grid_side,
                         prior_hidden_dims=prior_hidden_dims, learn_weights=learn_weights,
                         logvar_bounds=logvar_bounds, num_flows=num_flows,
                         pseudo_input_parameterization=pseudo_input_parameterization)
        z1_dim = latent_dim if z1_dim is None else z1_dim
        if not isinstance(z1_dim, int) or z1_dim < 1:
            raise ValueError(f"z1_dim must be a positive integer, got {z1_dim!r}")
        self.z1_dim = z1_dim
        D, H, L2 = self.input_dim, hidden_dim, latent_dim
        # q(z2|x) is self.encoder (built by VAE.__init__, shared with the VampPrior)
        self.encoder_z1 = ConditionalGaussian([D, L2], H, z1_dim, architecture, 1,
                                              [self.likelihood.normalize, None], logvar_bounds)
        self.p_z1 = ConditionalGaussian([L2], H, z1_dim, architecture, 1, None, logvar_bounds)
        self.decoder = JointNet([z1_dim, L2], H, self.likelihood.output_dim, architecture, 1,
                                dropout=dropout)
        mark_fused(self.decoder.joint[-1], self.likelihood.output_blocks)

    def model(self, x: torch.Tensor) -> torch.Tensor:
        """``p(z2) p(z1|z2) p(x|z1, z2)``; sites ``z2``, ``z1``, ``x``. Raises ``ValueError``
        on bad ``x`` (shape, NaN, support)."""
        x = self._data(x)
        self.register_parameters()
        prior = self.prior(register=False)
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", prior)
            loc, scale = self.p_z1(z2)
            z1 = pyro.sample("z1", dist.Normal(loc, scale, validate_args=False).to_event(1))
            pyro.sample("x", self.decode(z1, z2), obs=x)
        return z1, z2

    def guide(self, x: torch.Tensor):
        """``q(z2|x) q(z1|x, z2)``; sites ``z2``, ``z1``. Same input checks as ``model``."""
        x = self._data(x)
        self.register_parameters()
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", self.encode(x))
            z1 = pyro.sample("z1", self.encode_z1(x, z2))
        return z1, z2

    def encode_z1(self, x: torch.Tensor, z2: torch.Tensor) -> dist.TorchDistribution:
        """``q(z1|x, z2)``: ``Normal(loc, scale).to_event(1)``, batch shape broadcast of
        ``x.shape[:-1]`` and ``z2.shape[:-1]``."""
        loc, scale = self.encoder_z1(x, z2)
        return dist.Normal(loc, scale, validate_args=False).to_event(1)

    def decode(self, z1: torch.Tensor, z2: torch.Tensor) -> dist.TorchDistribution:
        """``p(x|z1, z2)``: the likelihood's distribution, event ``(D,)``."""
        return self.likelihood(self.decoder(z1, z2))

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = False) -> torch.Tensor:
        """``z2 ~ p(z2)``, ``z1 ~ p(z1|z2)``, then ``x ~ p(x|z1, z2)`` (or its mean): ``(n, D)``."""
        z2 = self.prior(register=False).sample((num_samples,))
        loc, scale = self.p_z1(z2)
        z1 = loc + scale * torch.randn_like(loc)
        h = self.decoder(z1, z2)
        return self.likelihood.mean(h) if mean else self.likelihood(h).sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``E[x | z1, z2]`` at the guide's means ``z2 = E[z2|x]``, ``z1 = E[z1|x, z2]``."""
        x = self._data(x)
        z2 = self.encoder(x)[0]
        z1 = self.encoder_z1(x, z2)[0]
        return self.likelihood.mean(self.decoder(z1, z2))

    @torch.no_grad()
    def posterior_means(self, x: torch.Tensor, num_samples: int = 10) -> dict:
        """``E_q[z2|x]`` ``(N, L2)`` and ``E_q[z1|x] = E_{q(z2|x)} E[z1|x, z2]`` ``(N, L1)``
        (Monte Carlo over ``num_samples`` draws of ``z2``)."""
        x = self._data(x)
        loc2, scale2 = self.encoder(x)
        z2 = loc2 + scale2 * torch.randn((num_samples,) + loc2.shape, device=loc2.device)
        return {"z2": loc2, "z1": self.encoder_z1(x, z2)[0].mean(0)}


class ConvHVAE(HVAE):
    """The convolutional two-level HVAE of the VampPrior paper ("convHVAE", sec. 4 and its code):
    ``q(z2|x)`` and ``q(z1|x, z2)`` start with five gated convolutions, ``p(z1|z2)`` has two gated
    dense layers, ``p(x|z1, z2)`` maps ``z1`` and ``z2`` to image size and applies four gated 3x3
    convolutions of 64 channels. Same sites and methods as :class:`HVAE`; images of
    ``input_shape`` ``(H, W)``.

    Raises:
        ValueError: ``input_shape`` is not ``(H, W)`` (a flat ``(784,)`` is read as 28x28 when
            square), and the errors of :class:`HVAE`.
    """

    def __init__(self, input_shape, latent_dim: int = 40, *, prior="vampprior",
                 likelihood: str = "bernoulli", num_values: int | None = None,
                 hidden_dim: int = 300, num_components: int = 500, grid_side: int | None = None,
                 prior_hidden_dims=(64, 64), learn_weights: bool | None = None,
                 logvar_bounds=(-6.0, 2.0), num_flows: int = 4, z1_dim: int | None = None,
                 pseudo_input_parameterization: str | None = None):
        super().__init__(input_shape, latent_dim, prior="standard", likelihood=likelihood,
                         num_values=num_values, hidden_dim=hidden_dim, architecture="gated",
                         logvar_bounds=logvar_bounds, z1_dim=z1_dim)
        shape = self.input_shape_2d
        if shape[0] < 4 or shape[1] < 4:
            raise ValueError(f"ConvHVAE needs image input_shape (H, W), got {self.input_shape}")
        norm = self.likelihood.normalize
        self.encoder = ConvGaussianEncoder(shape, latent_dim, norm, logvar_bounds)
        self.encoder_z1 = ConvConditionalEncoder(shape, latent_dim, self.z1_dim, hidden_dim, norm,
                                                 logvar_bounds)
        self.decoder = ConvDecoder(shape, self.z1_dim, latent_dim, self.likelihood.params_per_dim,
                                   pixel_major=self.likelihood.name == "categorical")
        mark_fused(self.decoder.out, self.likelihood.output_blocks)
        self._set_prior(prior, num_components=num_components, grid_side=grid_side,
                        hidden_dims=prior_hidden_dims, learn_weights=learn_weights,
                        num_flows=num_flows, pseudo_input_parameterization=pseudo_input_parameterization)


class PixelHVAE(ConvHVAE):
    """The VampPrior paper's PixelHVAE (Tomczak & Welling 2018, sec. 4; their code
    ``models/PixelHVAE_2level.py``): the convHVAE's encoders ``q(z2|x)``, ``q(z1|x, z2)`` (gated
    convolutions) and ``p(z1|z2)`` (gated dense), with a PixelCNN decoder ``p(x|z1, z2) =
    prod_i p(x_i | x_<i, z1, z2)`` (:class:`~pyrovamp.nets.PixelCNNDecoder`: maps of ``z1`` and
    ``z2`` concatenated with the image, a type-A masked convolution and seven type-B ones of 64
    channels with batch normalisation and ReLU, a 1x1 convolution to Bernoulli logits or the
    discretised logistic's location and log-scale). Sites ``z2``, ``z1``, ``x`` in one
    ``pyro.plate("data")`` as :class:`HVAE`, any prior on ``z2`` (the VampPrior's components
    through the same ``q(z2|x)`` encoder object the guide uses).

    ``x`` is scored by :class:`~pyrovamp.likelihoods.AutoregressiveImage`: one decoder pass per
    latent sample gives every pixel's conditional (teacher forcing on the observed image), so
    training, importance sampling and the ELBO work unchanged; they take nats per image as
    every model. Batch normalisation uses batch statistics in ``train()`` mode and its running
    statistics in ``eval()`` mode, which the evaluation functions switch to. :meth:`sample`
    draws pixel after pixel, vectorised over the images.

    Args:
        input_shape: ``(H, W)`` (a flat square size such as ``(784,)`` is read as 28x28).
        latent_dim: size of ``z2`` (the paper: 40).

    Keyword-only options:
        prior, likelihood, num_values, hidden_dim, num_components, grid_side,
        prior_hidden_dims, learn_weights, logvar_bounds, num_flows, z1_dim,
        pseudo_input_parameterization: as
            :class:`ConvHVAE` (likelihood ``"bernoulli"``, ``"discretized_logistic"`` or
            ``"categorical"``).
        channels: channels of the masked convolutions (the paper: 64).
        num_masked_layers: masked convolutions, one type A then type B (the paper: 8).
        kernel_size: their kernel size (the paper: 3).
        max_decoder_batch: images per decoder pass without autograd (bounds the memory of
            importance sampling's many passes).

    Raises:
        ValueError: as :class:`ConvHVAE`, and bad PixelCNN settings.
    """

    def __init__(self, input_shape, latent_dim: int = 40, *, prior="vampprior",
                 likelihood: str = "bernoulli", num_values: int | None = None,
                 hidden_dim: int = 300, num_components: int = 500, grid_side: int | None = None,
                 prior_hidden_dims=(64, 64), learn_weights: bool | None = None,
                 logvar_bounds=(-6.0, 2.0), num_flows: int = 4, z1_dim: int | None = None,
                 pseudo_input_parameterization: str | None = None, channels: int = 64, num_masked_layers: int = 8, kernel_size: int = 3,
                 max_decoder_batch: int = 256):
        super().__init__(input_shape, latent_dim, prior=prior, likelihood=likelihood,
                         num_values=num_values, hidden_dim=hidden_dim,
                         num_components=num_components, grid_side=grid_side,
                         prior_hidden_dims=prior_hidden_dims, learn_weights=learn_weights,
                         logvar_bounds=logvar_bounds, num_flows=num_flows, z1_dim=z1_dim,
                         pseudo_input_parameterization=pseudo_input_parameterization)
        name = self.likelihood.name
        self.decoder = PixelCNNDecoder(
            self.input_shape_2d, self.z1_dim, latent_dim, self.likelihood.params_per_dim,
            channels=channels, num_layers=num_masked_layers, kernel_size=kernel_size,
            out_bias=name != "discretized_logistic", pixel_major=name == "categorical",
            max_batch=max_decoder_batch)
        mark_fused(self.decoder.out, self.likelihood.output_blocks)
        if hasattr(self, "pyro_name"):
            self.pyro_name = self.pyro_name.replace("ConvHVAE", "PixelHVAE")

    def decode(self, z1: torch.Tensor, z2: torch.Tensor) -> dist.TorchDistribution:
        """``p(x|z1, z2)``: an :class:`~pyrovamp.likelihoods.AutoregressiveImage` with batch
        shape ``broadcast(z1.shape[:-1], z2.shape[:-1])`` and event ``(D,)``."""
        return AutoregressiveImage(self.decoder, self.likelihood, z1, z2)

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = False) -> torch.Tensor:
        """``z2 ~ p(z2)``, ``z1 ~ p(z1|z2)``, then ``x`` pixel by pixel from ``p(x_i | x_<i, z1,
        z2)`` for all ``num_samples`` images at once: ``(n, D)``. With ``mean=True`` each pixel
        is its conditional mean ``E[x_i | x_<i, z1, z2]`` given the pixels drawn before it (the
        paper's code shows these). Runs in evaluation mode (batch normalisation's running
        statistics); the model's mode is restored.

        Raises:
            ValueError: ``num_samples`` not a positive integer.
        """
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        was_training = self.training
        self.eval()
        try:
            z2 = self.prior().sample((num_samples,))
            loc, scale = self.p_z1(z2)
            z1 = loc + scale * torch.randn_like(loc)
            values, means = self.decode(z1, z2).sample_with_means()
        finally:
            self.train(was_training)
        return means if mean else values

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Images drawn pixel by pixel from ``p(x | z1, z2)`` at the guide's means ``z2 =
        E[z2|x]``, ``z1 = E[z1|x, z2]``, each pixel shown as its conditional mean given the drawn
        pixels before it (as the paper's code reconstructs): ``(N, D)``. Evaluation mode."""
        x = check_data(x, self.input_dim, self.likelihood)
        was_training = self.training
        self.eval()
        try:
            z2 = self.encoder(x)[0]
            z1 = self.encoder_z1(x, z2)[0]
            return self.decode(z1, z2).sample_with_means()[1]
        finally:
            self.train(was_training)


MODELS = {"vae": VAE, "hvae": HVAE, "convhvae": ConvHVAE, "pixelhvae": PixelHVAE}
