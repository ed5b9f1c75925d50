"""The hierarchical VAEs of the VampPrior paper (sec. 3.2): :class:`HVAE` (two stochastic layers,
``z2`` with any prior, ``p(z1|z2)``, ``q(z2|x)``, ``q(z1|x, z2)``), :class:`ConvHVAE` and
:class:`PixelHVAE`."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrovamp._validate import check_int
from pyrovamp.distributions import AutoregressiveImage
from pyrovamp.models.vae import VAE, _check_latent_arg, _check_width, _sample_args
from pyrovamp.nn import (
    ConditionalGaussian,
    ConvConditionalEncoder,
    ConvDecoder,
    ConvGaussianEncoder,
    JointNet,
    PixelCNNDecoder,
    eval_mode,
    mark_fused,
)

__all__ = ["HVAE", "ConvHVAE", "PixelHVAE"]


class HVAE(VAE):
    """Two-level hierarchical VAE of the VampPrior paper (Tomczak & Welling 2018, sec. 3.2).

    Generative model ``p(z2) p(z1|z2) p(x|z1, z2)`` with any prior of :mod:`pyrovamp.priors` on
    ``z2`` (the VampPrior's components are ``q(z2|u_k)``, through the same encoder the guide uses)
    and Gaussian ``p(z1|z2)``; guide ``q(z2|x) q(z1|x, z2)``. Sites ``z2``, ``z1`` (latent) and
    ``x`` (observed), in one ``pyro.plate("data")``. Networks as in the paper's code: two hidden
    layers everywhere; the conditionals on two variables give each input a layer of its own
    before a joint layer.

    Args:
        input_shape: as :class:`VAE`.
        prior: as :class:`VAE`.
        likelihood: as :class:`VAE`.
        num_values: as :class:`VAE`.
        hidden_dim: as :class:`VAE` (the default here is the paper's: 300 units).
        architecture: as :class:`VAE` (the default here is the paper's: gated dense layers).
        num_components: as :class:`VAE` (the default here is the paper's: K=500).
        grid_side: as :class:`VAE`.
        prior_hidden_dims: as :class:`VAE`.
        learn_weights: as :class:`VAE`.
        logvar_bounds: as :class:`VAE` (the default here is the paper's: log-variances clamped
            to ``(-6, 2)``).
        num_flows: as :class:`VAE`.
        pseudo_input_parameterization: as :class:`VAE`.
        latent_dim: size of ``z2`` (the prior's variable); the paper uses 40.
        z1_dim: size of ``z1`` (default: ``latent_dim``).
        num_hidden_layers: hidden layers of ``q(z2|x)`` (the paper: 2).
        dropout: dropout probability after every hidden layer of the decoder ``p(x|z1, z2)``
            (a regulariser against over-fitting, not in the paper; active in training only, so
            the ELBO and log-likelihood estimates use the whole network).
        encoder: your own ``q(z2|x)`` network, as :class:`VAE`'s ``encoder``: ``(N,
            *input_shape)`` data in ``[0, 1]`` to ``(loc, scale)``, each ``(N, latent_dim)``.
        encoder_z1: your own ``q(z1|x, z2)``: ``(x, z2)`` of shapes ``(N, *input_shape)`` (in
            ``[0, 1]``) and ``(N, latent_dim)`` to ``(loc, scale)``, each ``(N, z1_dim)``.
        p_z1: your own ``p(z1|z2)``: ``(N, latent_dim)`` to ``(loc, scale)``, each
            ``(N, z1_dim)``.
        decoder: your own ``p(x|z1, z2)``: ``(z1, z2)`` of shapes ``(N, z1_dim)`` and
            ``(N, latent_dim)`` to ``N`` rows of the likelihood's parameters, as :class:`VAE`'s
            ``decoder``. Each network given replaces the built-in one (``hvae.p_z1.net`` is
            yours), checked at construction by one forward pass; the others stay built in.

    Raises:
        ArgumentTypeError, ValueError: as :class:`VAE` (also for ``encoder_z1``, ``p_z1``).
    """

    def __init__(
        self,
        input_shape,
        latent_dim: int = 40,
        *,
        prior="vampprior",
        likelihood: str = "bernoulli",
        num_values: int | None = None,
        hidden_dim: int = 300,
        architecture: str = "gated",
        num_components: int = 500,
        grid_side: int | None = None,
        prior_hidden_dims=(64, 64),
        learn_weights: bool | None = None,
        logvar_bounds=(-6.0, 2.0),
        num_flows: int = 4,
        z1_dim: int | None = None,
        num_hidden_layers: int = 2,
        pseudo_input_parameterization: str | None = None,
        dropout: float = 0.0,
        encoder: nn.Module | None = None,
        encoder_z1: nn.Module | None = None,
        p_z1: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ):
        super().__init__(
            input_shape,
            latent_dim,
            prior=prior,
            likelihood=likelihood,
            num_values=num_values,
            hidden_dim=hidden_dim,
            num_hidden_layers=num_hidden_layers,
            architecture=architecture,
            num_components=num_components,
            grid_side=grid_side,
            prior_hidden_dims=prior_hidden_dims,
            learn_weights=learn_weights,
            logvar_bounds=logvar_bounds,
            num_flows=num_flows,
            pseudo_input_parameterization=pseudo_input_parameterization,
            encoder=encoder,
        )
        z1_dim = self.latent_dim if z1_dim is None else check_int("z1_dim", z1_dim)
        self.z1_dim = z1_dim
        D, H, L2 = self.input_dim, hidden_dim, self.latent_dim
        # q(z2|x) is self.encoder (built by VAE.__init__, shared with the VampPrior)
        self.encoder_z1: nn.Module = (
            ConditionalGaussian(
                [D, L2],
                H,
                z1_dim,
                architecture,
                1,
                [self.likelihood.normalize, None],
                logvar_bounds,
                input_shapes=[self.input_shape, None],
            )
            if encoder_z1 is None
            else self._own_network(
                "encoder_z1", encoder_z1, [self.input_shape, (L2,)], z1_dim, data=True
            )
        )
        self.p_z1: nn.Module = (
            ConditionalGaussian([L2], H, z1_dim, architecture, 1, None, logvar_bounds)
            if p_z1 is None
            else self._own_network("p_z1", p_z1, [(L2,)], z1_dim)
        )
        if decoder is None:
            decoder = JointNet(
                [z1_dim, L2], H, self.likelihood.output_dim, architecture, 1, dropout=dropout
            )
            mark_fused(decoder.joint[-1], self.likelihood.output_blocks)
        else:
            decoder = self._own_network("decoder", decoder, [(z1_dim,), (L2,)])
        self.decoder = decoder

    def model(  # type: ignore[override]
        self, x: torch.Tensor | None = None, *, num_points: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``p(z2) p(z1|z2) p(x|z1, z2)``; sites ``z2``, ``z1`` (latent) and ``x``.

        As :meth:`VAE.model`: with ``x=None`` it draws ``num_points`` points from ``p(x, z1,
        z2)`` (``Predictive(m.model, num_samples=S)(None, num_points=B)``: ``"x"`` ``(S, B, D)``,
        ``"z2"`` ``(S, B, L2)``, ``"z1"`` ``(S, B, L1)``); the data's type and shape are checked,
        their values where data enter.

        Returns:
            ``(z1, z2)``.

        Raises:
            ArgumentTypeError, ValueError: as :meth:`VAE.model`.
        """
        x, n = self._observed(x, num_points)
        self.register_parameters()
        prior = self.prior(register=False)
        with pyro.plate("data", n, dim=-1):
            z2 = pyro.sample("z2", prior)
            loc, scale = self.p_z1(z2)
            z1 = pyro.sample("z1", dist.Normal(loc, scale, validate_args=False).to_event(1))
            pyro.sample("x", self.decode(z1, z2), obs=x)
        return z1, z2

    def guide(self, x: torch.Tensor):
        """``q(z2|x) q(z1|x, z2)``; sites ``z2``, ``z1``. Checks the data's type and shape as
        ``model`` does."""
        x = self._batch(x)
        self.register_parameters()
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", self.encode(x))
            z1 = pyro.sample("z1", self.encode_z1(x, z2))
        return z1, z2

    def encode_z1(self, x: torch.Tensor, z2: torch.Tensor) -> dist.TorchDistribution:
        """``q(z1|x, z2)``: ``Normal(loc, scale).to_event(1)``, batch shape broadcast of
        ``x.shape[:-1]`` and ``z2.shape[:-1]`` (``x`` used as it is, as in :meth:`VAE.encode`).

        Raises:
            ArgumentTypeError: ``x`` is not a tensor.
            ValueError: its last dimension is not ``D``.
        """
        _check_width(x, self.input_dim)
        loc, scale = self.encoder_z1(self._shaped(x), z2)
        return dist.Normal(loc, scale, validate_args=False).to_event(1)

    def decode(  # type: ignore[override]  # the decoder reads both latent layers
        self, z1: torch.Tensor, z2: torch.Tensor
    ) -> dist.TorchDistribution:
        """``p(x|z1, z2)``: the likelihood's distribution, event ``(D,)``.

        Raises:
            ValueError: ``z1`` or ``z2`` not a tensor of shape ``(..., z1_dim)`` /
                ``(..., latent_dim)`` (one line).
        """
        _check_latent_arg("z1", z1, self.z1_dim)
        _check_latent_arg("z2", z2, self.latent_dim)
        return self.likelihood(self.decoder(z1, z2))

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = False) -> torch.Tensor:
        """``z2 ~ p(z2)``, ``z1 ~ p(z1|z2)``, then ``x ~ p(x|z1, z2)`` (or its mean): ``(n, D)``.

        Raises:
            ArgumentTypeError, ValueError: as :meth:`VAE.sample`.
        """
        num_samples, mean = _sample_args(num_samples, mean)
        z2 = self.prior(register=False).sample((num_samples,))
        loc, scale = self.p_z1(z2)
        z1 = loc + scale * torch.randn_like(loc)
        h = self.decoder(z1, z2)
        return self.likelihood.mean(h) if mean else self.likelihood(h).sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``E[x | z1, z2]`` at the guide's means ``z2 = E[z2|x]``, ``z1 = E[z1|x, z2]``:
        ``(N, D)``.

        Raises:
            ArgumentTypeError, ValueError: bad ``x`` (:func:`check_data`).
        """
        x = self._shaped(self._data(x))
        z2 = self.encoder(x)[0]
        z1 = self.encoder_z1(x, z2)[0]
        return self.likelihood.mean(self.decoder(z1, z2))

    @torch.no_grad()
    def posterior_means(self, x: torch.Tensor, num_samples: int = 10) -> dict:
        """``E_q[z2|x]`` ``(N, L2)`` and ``E_q[z1|x] = E_{q(z2|x)} E[z1|x, z2]`` ``(N, L1)``
        (Monte Carlo over ``num_samples`` draws of ``z2``).

        Raises:
            ArgumentTypeError, ValueError: bad ``x`` (:func:`check_data`) or ``num_samples``.
        """
        num_samples = check_int("num_samples", num_samples)
        x = self._shaped(self._data(x))
        loc2, scale2 = self.encoder(x)
        z2 = loc2 + scale2 * torch.randn((num_samples,) + loc2.shape, device=loc2.device)
        return {"z2": loc2, "z1": self.encoder_z1(x, z2)[0].mean(0)}


class ConvHVAE(HVAE):
    """The convolutional two-level HVAE of the VampPrior paper ("convHVAE", sec. 4 and its code):
    ``q(z2|x)`` and ``q(z1|x, z2)`` start with five gated convolutions, ``p(z1|z2)`` has two gated
    dense layers, ``p(x|z1, z2)`` maps ``z1`` and ``z2`` to image size and applies four gated 3x3
    convolutions of 64 channels. Same sites and methods as :class:`HVAE`; images of
    ``input_shape`` ``(H, W)``.

    ``encoder``, ``encoder_z1``, ``p_z1``, ``decoder``: your own networks, as :class:`HVAE`'s
    (the convolutional ones are the defaults of the same arguments).

    Raises:
        ValueError: ``input_shape`` is not ``(H, W)`` (a flat ``(784,)`` is read as 28x28 when
            square), and the errors of :class:`HVAE`.
    """

    def __init__(
        self,
        input_shape,
        latent_dim: int = 40,
        *,
        prior="vampprior",
        likelihood: str = "bernoulli",
        num_values: int | None = None,
        hidden_dim: int = 300,
        num_components: int = 500,
        grid_side: int | None = None,
        prior_hidden_dims=(64, 64),
        learn_weights: bool | None = None,
        logvar_bounds=(-6.0, 2.0),
        num_flows: int = 4,
        z1_dim: int | None = None,
        pseudo_input_parameterization: str | None = None,
        encoder: nn.Module | None = None,
        encoder_z1: nn.Module | None = None,
        p_z1: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ):
        super().__init__(
            input_shape,
            latent_dim,
            prior="standard",
            likelihood=likelihood,
            num_values=num_values,
            hidden_dim=hidden_dim,
            architecture="gated",
            logvar_bounds=logvar_bounds,
            z1_dim=z1_dim,
            encoder=encoder,
            encoder_z1=encoder_z1,
            p_z1=p_z1,
            decoder=decoder,
        )
        shape = self.input_shape_2d
        if shape[0] < 4 or shape[1] < 4:
            raise ValueError(f"ConvHVAE needs image input_shape (H, W), got {self.input_shape}")
        norm = self.likelihood.normalize
        if encoder is None:
            self.encoder = ConvGaussianEncoder(
                shape, latent_dim, norm, logvar_bounds, input_shape=self.input_shape
            )
        if encoder_z1 is None:
            self.encoder_z1 = ConvConditionalEncoder(
                shape, latent_dim, self.z1_dim, hidden_dim, norm, logvar_bounds, self.input_shape
            )
        if decoder is None:
            conv = ConvDecoder(
                shape,
                self.z1_dim,
                latent_dim,
                self.likelihood.params_per_dim,
                pixel_major=self.likelihood.name == "categorical",
            )
            mark_fused(conv.out, self.likelihood.output_blocks)
            self.decoder = conv
        self._set_prior(
            prior,
            num_components=num_components,
            grid_side=grid_side,
            hidden_dims=prior_hidden_dims,
            learn_weights=learn_weights,
            num_flows=num_flows,
            pseudo_input_parameterization=pseudo_input_parameterization,
        )


class PixelHVAE(ConvHVAE):
    """The VampPrior paper's PixelHVAE (Tomczak & Welling 2018, sec. 4; their code
    ``models/PixelHVAE_2level.py``): the convHVAE's encoders ``q(z2|x)``, ``q(z1|x, z2)`` (gated
    convolutions) and ``p(z1|z2)`` (gated dense), with a PixelCNN decoder ``p(x|z1, z2) =
    prod_i p(x_i | x_<i, z1, z2)`` (:class:`~pyrovamp.nn.PixelCNNDecoder`: maps of ``z1`` and
    ``z2`` concatenated with the image, a type-A masked convolution and seven type-B ones of 64
    channels with batch normalisation and ReLU, a 1x1 convolution to Bernoulli logits or the
    discretised logistic's location and log-scale). Sites ``z2``, ``z1``, ``x`` in one
    ``pyro.plate("data")`` as :class:`HVAE`, any prior on ``z2`` (the VampPrior's components
    through the same ``q(z2|x)`` encoder object the guide uses).

    ``x`` is scored by :class:`~pyrovamp.distributions.AutoregressiveImage`: one decoder pass per
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
        encoder, encoder_z1, p_z1: your own networks, as :class:`HVAE`'s (the decoder is the
            PixelCNN: an autoregressive decoder needs its pixel-by-pixel sampler).

    Raises:
        ValueError: as :class:`ConvHVAE`, and bad PixelCNN settings.
    """

    def __init__(
        self,
        input_shape,
        latent_dim: int = 40,
        *,
        prior="vampprior",
        likelihood: str = "bernoulli",
        num_values: int | None = None,
        hidden_dim: int = 300,
        num_components: int = 500,
        grid_side: int | None = None,
        prior_hidden_dims=(64, 64),
        learn_weights: bool | None = None,
        logvar_bounds=(-6.0, 2.0),
        num_flows: int = 4,
        z1_dim: int | None = None,
        pseudo_input_parameterization: str | None = None,
        channels: int = 64,
        num_masked_layers: int = 8,
        kernel_size: int = 3,
        max_decoder_batch: int = 256,
        encoder: nn.Module | None = None,
        encoder_z1: nn.Module | None = None,
        p_z1: nn.Module | None = None,
    ):
        super().__init__(
            input_shape,
            latent_dim,
            prior=prior,
            likelihood=likelihood,
            num_values=num_values,
            hidden_dim=hidden_dim,
            num_components=num_components,
            grid_side=grid_side,
            prior_hidden_dims=prior_hidden_dims,
            learn_weights=learn_weights,
            logvar_bounds=logvar_bounds,
            num_flows=num_flows,
            z1_dim=z1_dim,
            pseudo_input_parameterization=pseudo_input_parameterization,
            encoder=encoder,
            encoder_z1=encoder_z1,
            p_z1=p_z1,
        )
        name = self.likelihood.name
        decoder = PixelCNNDecoder(
            self.input_shape_2d,
            self.z1_dim,
            latent_dim,
            self.likelihood.params_per_dim,
            channels=channels,
            num_layers=num_masked_layers,
            kernel_size=kernel_size,
            out_bias=name != "discretized_logistic",
            pixel_major=name == "categorical",
            max_batch=max_decoder_batch,
        )
        mark_fused(decoder.out, self.likelihood.output_blocks)
        self.decoder = decoder

    def decode(  # type: ignore[override]  # the decoder reads both latent layers
        self, z1: torch.Tensor, z2: torch.Tensor
    ) -> dist.TorchDistribution:
        """``p(x|z1, z2)``: an :class:`~pyrovamp.distributions.AutoregressiveImage` with batch
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
            ArgumentTypeError, ValueError: as :meth:`VAE.sample`.
        """
        num_samples, mean = _sample_args(num_samples, mean)
        with eval_mode(self):
            z2 = self.prior(register=False).sample((num_samples,))
            loc, scale = self.p_z1(z2)
            z1 = loc + scale * torch.randn_like(loc)
            values, means = self.decode(z1, z2).sample_with_means()
        return means if mean else values

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Images drawn pixel by pixel from ``p(x | z1, z2)`` at the guide's means ``z2 =
        E[z2|x]``, ``z1 = E[z1|x, z2]``, each pixel shown as its conditional mean given the drawn
        pixels before it (as the paper's code reconstructs): ``(N, D)``, in the model's dtype
        on its device. Evaluation mode; the model's mode is restored.

        Raises:
            ArgumentTypeError, ValueError: bad ``x`` (:func:`check_data`).
        """
        x = self._shaped(self._data(x))
        with eval_mode(self):
            z2 = self.encoder(x)[0]
            z1 = self.encoder_z1(x, z2)[0]
            return self.decode(z1, z2).sample_with_means()[1]
