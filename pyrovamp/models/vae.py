"""VAE with a learnable prior as a Pyro model / guide pair.

Generative model (Kingma & Welling 2014; Tomczak, *Deep Generative Modeling*, ch. 4):
``z ~ p_lambda(z)`` (any prior of :mod:`pyrovamp.priors`), ``x ~ p_theta(x|z)`` (a likelihood of
:mod:`pyrovamp.distributions`); guide ``q_phi(z|x) = N(z | mu(x), diag sigma^2(x))``.
Every data point sits in one ``pyro.plate("data")``; the latent site is ``"z"``, the observed
site ``"x"``. ELBO and log-likelihood values are nats per data point.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrovamp._validate import check_int, check_optional_int, check_type
from pyrovamp.distributions import make_likelihood
from pyrovamp.errors import ArgumentTypeError
from pyrovamp.nn import MLP, BatchedNetwork, GaussianEncoder, check_network, mark_fused
from pyrovamp.nn.adapters import _float_tensor
from pyrovamp.pretrained import PretrainedMixin
from pyrovamp.priors import Prior, make_prior
from pyrovamp.registration import RegisteredModule

__all__ = ["VAE", "check_data", "as_batch"]


def as_batch(x, input_dim: int, name: str = "x", *, dtype=None, device=None) -> torch.Tensor:
    """``x`` as a ``(N, D)`` floating tensor, with the checks that need no look at the values.

    The checks of :func:`check_data` that read only the type, shape and dtype: no
    device-to-host synchronisation, so the model and guide run them on every call (the values are
    checked once, where data enter: :func:`check_data`).

    Args:
        x: a ``torch.Tensor`` or numpy array of shape ``(N, D)`` or ``(N, *image_shape)`` with
            ``prod(image_shape) == D``, of any real dtype.
        input_dim: ``D``.
        name: the argument's name in error messages.
        dtype: floating dtype of the result (default: ``x``'s if floating, else torch's default).
        device: device of the result (default: ``x``'s).

    Raises:
        ArgumentTypeError: not a tensor or array, or not of a real dtype (complex, object,
            strings) -- also a ``ValueError``.
        ValueError: wrong shape, or empty.
    """
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise ArgumentTypeError(
                f"{name} must hold real numbers, got a numpy array of dtype {x.dtype}"
            )
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ArgumentTypeError(
            f"{name} must be a torch.Tensor or numpy array of shape (N, {input_dim}), "
            f"got {type(x).__name__}"
        )
    if x.is_complex():
        raise ArgumentTypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.dim() < 2 or math.prod(x.shape[1:]) != input_dim:
        raise ValueError(
            f"{name} must have shape (N, {input_dim}) (N data points of {input_dim} "
            f"values), got {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if x.dim() > 2:
        x = x.reshape(x.shape[0], input_dim)
    if dtype is None:
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    return x.to(device=device if device is not None else x.device, dtype=dtype)


def check_data(
    x, input_dim: int, likelihood, name: str = "x", *, dtype=None, device=None
) -> torch.Tensor:
    """Check a batch of data before any work; return it as a ``(N, D)`` floating tensor.

    Accepts a ``torch.Tensor`` or a numpy array of shape ``(N, D)`` or ``(N, *image_shape)``
    with ``prod(image_shape) == D``, of any real dtype (float64, integer and boolean data are
    cast: the values are checked against the likelihood's support, so nothing is lost).

    The value checks (finite, in the support) read the data on the host: on a GPU each is a
    synchronisation. They run where data enter -- ``fit``/``train``, the estimators, the models'
    ``reconstruct``/``posterior_means`` -- not in every ``model``/``guide`` call, which check the
    shape only (:func:`as_batch`).

    Args:
        x: the data.
        input_dim: ``D``.
        likelihood: a :class:`~pyrovamp.distributions.Likelihood` (its support is checked).
        name: the argument's name in error messages.
        dtype: floating dtype of the result (default: ``x``'s if floating, else torch's default).
        device: device of the result (default: ``x``'s).

    Raises:
        ArgumentTypeError: not a tensor or array, or not of a real dtype (a ``TypeError``; also
            a ``ValueError``).
        ValueError: wrong shape, empty, NaN/inf, or values outside the likelihood's support --
            the message names ``name`` and what was expected.
    """
    x = as_batch(x, input_dim, name, dtype=dtype, device=device)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    likelihood.check_support(x, name)
    return x


def _check_width(x, input_dim: int, name: str = "x") -> None:
    """Raise unless ``x`` is a tensor ``(..., input_dim)`` (shape only: no synchronisation)."""
    if not isinstance(x, torch.Tensor):
        raise ArgumentTypeError(
            f"{name} must be a torch.Tensor of shape (..., {input_dim}), got {type(x).__name__}"
        )
    if x.dim() < 1 or x.shape[-1] != input_dim:
        raise ValueError(f"{name} must have shape (..., {input_dim}), got {tuple(x.shape)}")


def _sample_args(num_samples, mean) -> tuple[int, bool]:
    """The checked arguments of the models' ``sample(num_samples, mean)``."""
    num_samples = check_int("num_samples", num_samples)
    check_type("mean", mean, (bool, np.bool_), "True or False")
    return num_samples, bool(mean)


def _check_latent_arg(name: str, z, size: int) -> None:
    """Refuse ``z`` unless it is a tensor of shape ``(..., size)``: one line naming ``name``."""
    if not isinstance(z, torch.Tensor) or z.dim() < 1 or z.shape[-1] != size:
        got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"{name} must be a tensor of shape (..., {size}), got {got}")


class VAE(PretrainedMixin, RegisteredModule):
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
        pseudo_input_parameterization: the VampPrior's pseudo-inputs, ``"sigmoid"`` or
            ``"clamp"`` (the paper's
            code; see :class:`pyrovamp.priors.VampPrior`); ``None``: its default.
        dropout: dropout probability after every hidden layer of the decoder (a regulariser
            against the decoder over-fitting small data sets; off in evaluation, which runs in
            ``eval()`` mode). The encoder has none, so the VampPrior's components stay
            deterministic functions of the pseudo-inputs.
        encoder: your own network for ``q(z|x)`` instead of the built-in MLP (whose
            ``logvar_bounds`` is then unused; ``hidden_dim``, ``num_hidden_layers`` and
            ``architecture`` still shape the built-in decoder, if any): any
            ``nn.Module`` mapping a batch ``(N, *input_shape)`` of data scaled to ``[0, 1]``
            (the likelihood's ``normalize``) to ``(loc, scale)``, each ``(N, latent_dim)``,
            ``scale > 0``. The VampPrior's components go through it, at pseudo-inputs of shape
            ``(K, *input_shape)``. ``vae.encoder.net`` is your module.
        decoder: your own network for ``p(x|z)`` (``dropout`` is then unused): any ``nn.Module``
            mapping ``(N, latent_dim)`` to ``N`` rows of the likelihood's ``D * params_per_dim``
            parameters in any shape -- ``(N, *input_shape)`` Bernoulli logits,
            ``(N, *input_shape, K)`` categorical logits, ``(N, 2, *input_shape)`` discretised
            logistic locations then log-scales (:mod:`pyrovamp.nn.adapters`).
            ``vae.decoder.net`` is your module. Both are checked here by one forward pass on two
            zero points (evaluation mode, no gradient, random streams untouched); to save the
            model with :meth:`save_pretrained`, derive them from :class:`pyrovamp.nn.Network`.

    Raises:
        ArgumentTypeError: a size that is not an integer (numpy integers are integers), an
            encoder or decoder that is not an ``nn.Module``.
        ValueError: unknown prior or likelihood name, latent size below 1, bad sizes, a prior
            whose latent size differs, a VampPrior on another encoder than the model's, or an
            encoder/decoder that does not map the contract's shapes (one line naming the
            argument, the shape it was given and what it returned).
    """

    # the prior is saved with its own configuration and assigned after the model is rebuilt:
    # it may be built on the model's encoder, or assigned after construction
    _rebuild_children = {"prior": "standard"}

    def __init__(
        self,
        input_shape,
        latent_dim: int = 2,
        *,
        prior="vampprior",
        likelihood: str = "bernoulli",
        num_values: int | None = None,
        hidden_dim: int = 256,
        num_hidden_layers: int = 2,
        architecture: str = "mlp",
        num_components: int = 16,
        grid_side: int | None = None,
        prior_hidden_dims=(64, 64),
        learn_weights: bool | None = None,
        logvar_bounds=None,
        num_flows: int = 4,
        dropout: float = 0.0,
        pseudo_input_parameterization: str | None = None,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ):
        super().__init__()
        if isinstance(input_shape, (int, np.integer)):
            input_shape = (input_shape,)
        if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Iterable):
            raise ArgumentTypeError(
                f"input_shape must be a size or a tuple of sizes, got {input_shape!r}"
            )
        self.input_shape = tuple(
            check_int(f"input_shape[{i}]", s) for i, s in enumerate(input_shape)
        )
        self.input_dim = math.prod(self.input_shape)
        self.latent_dim = latent_dim = check_int("latent_dim", latent_dim)
        hidden_dim = check_int("hidden_dim", hidden_dim)
        num_hidden_layers = check_int("num_hidden_layers", num_hidden_layers, low=0)
        num_components = check_int("num_components", num_components)
        grid_side = check_optional_int("grid_side", grid_side)
        num_flows = check_int("num_flows", num_flows)
        num_values = check_optional_int("num_values", num_values, low=2)
        self.likelihood = make_likelihood(likelihood, self.input_dim, num_values)
        hidden = [hidden_dim] * num_hidden_layers
        self.encoder: nn.Module = (
            GaussianEncoder(
                self.input_dim,
                latent_dim,
                hidden,
                architecture,
                normalize=self.likelihood.normalize,
                logvar_bounds=logvar_bounds,
                input_shape=self.input_shape,
            )
            if encoder is None
            else self._own_network("encoder", encoder, [self.input_shape], latent_dim, data=True)
        )
        if decoder is None:
            decoder = MLP(latent_dim, hidden, self.likelihood.output_dim, architecture, dropout)
            mark_fused(decoder[-1], self.likelihood.output_blocks)
        else:
            decoder = self._own_network("decoder", decoder, [(latent_dim,)])
        self.decoder: nn.Module = decoder
        self._set_prior(
            prior,
            num_components=num_components,
            grid_side=grid_side,
            hidden_dims=prior_hidden_dims,
            learn_weights=learn_weights,
            num_flows=num_flows,
            pseudo_input_parameterization=pseudo_input_parameterization,
        )

    def _own_network(
        self, name: str, net, in_shapes: list, latent_dim: int | None = None, data: bool = False
    ) -> BatchedNetwork:
        """A user's network checked against its contract (:func:`pyrovamp.nn.check_network`)
        and wrapped to take any leading shape: a Gaussian one (``latent_dim``: its ``(loc,
        scale)`` size) or the decoder (the likelihood's ``output_dim`` values per row). An
        encoder (``data=True``: its first input is the data) sees them scaled to ``[0, 1]``."""
        out_dim = None if latent_dim is not None else self.likelihood.output_dim
        role = f"the {self.likelihood.name} likelihood's parameters"
        check_network(name, net, in_shapes, out_dim=out_dim, latent_dim=latent_dim, role=role)
        normalize = self.likelihood.normalize if data else None
        return BatchedNetwork(net, in_shapes, out_dim, latent_dim, normalize)

    def _shaped(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` data as ``(..., *input_shape)``: what the encoders take (a reshape: a
        view of contiguous data). Passing the shape makes the call unambiguous for any
        ``input_shape`` (:func:`pyrovamp.nn.flatten_event`)."""
        return x.reshape(*x.shape[:-1], *self.input_shape)

    def _set_prior(self, prior, **kw):
        """``self.prior`` from a name (built around ``self.encoder``) or a Prior module."""
        if isinstance(prior, str):
            prior = make_prior(
                prior,
                self.latent_dim,
                encoder=self.encoder,
                input_dim=self.input_dim,
                input_shape=self.input_shape,
                data_range=(self.likelihood.low, self.likelihood.high),
                **kw,
            )
        self.prior = prior

    def _check_prior(self, prior) -> Prior:
        """The checks of ``vae.prior = prior``: a Prior of the model's latent size; one whose
        components go through an encoder (VampPrior, GTM-VampPrior) uses the model's own."""
        if not isinstance(prior, Prior):
            raise ValueError(
                f"prior must be a prior name or a pyrovamp.priors.Prior, got {prior!r}"
            )
        if prior.latent_dim != self.latent_dim:
            raise ValueError(
                f"prior.latent_dim={prior.latent_dim} differs from the model's "
                f"latent_dim={self.latent_dim}"
            )
        encoder = getattr(prior, "encoder", None)
        if encoder is not None and encoder is not self.encoder:
            raise ValueError(
                f"the {type(prior).__name__}'s components must be the model's own posterior "
                "q(z|u_k) at the pseudo-inputs (Tomczak & Welling 2018, eq. 9; book eq. 4.48), but "
                "its encoder is another module: build it on vae.encoder after constructing the "
                f"model (e.g. {type(prior).__name__}(vae.encoder, ...)) or pass the prior by name"
            )
        input_dim = getattr(prior, "input_dim", None)
        if input_dim is not None and input_dim != self.input_dim:
            raise ValueError(
                f"prior.input_dim={input_dim} (pseudo-inputs) differs from the "
                f"model's input_dim={self.input_dim}"
            )
        shape = getattr(prior, "input_shape", None)
        if shape is not None and tuple(shape) not in ((self.input_dim,), self.input_shape):
            raise ValueError(
                f"prior.input_shape={tuple(shape)} (pseudo-inputs) is neither the model's "
                f"input_shape={self.input_shape} nor flat ({self.input_dim},)"
            )
        return prior

    def __setattr__(self, name, value):
        if name == "prior":
            value = self._check_prior(value)
        elif name == "encoder" and "prior" in self._modules:
            encoder = getattr(self._modules["prior"], "encoder", None)
            if encoder is not None and encoder is not value:
                raise ValueError(
                    "the prior's components use the model's encoder: replacing "
                    "vae.encoder would leave the prior on the old one; assign a new "
                    "prior built on the new encoder afterwards instead"
                )
        super().__setattr__(name, value)

    def _target(self) -> dict:
        """The model's floating dtype and device (``None`` each for a model without tensors)."""
        t = _float_tensor(self)
        return {"dtype": None if t is None else t.dtype, "device": None if t is None else t.device}

    def _data(self, x, name: str = "x") -> torch.Tensor:
        """``x`` checked (:func:`check_data`: shape and values), as a ``(N, D)`` tensor of the
        model's dtype on its device -- for the methods where user data enter."""
        return check_data(x, self.input_dim, self.likelihood, name, **self._target())

    def _batch(self, x) -> torch.Tensor:
        """``x`` as a ``(N, D)`` tensor of the model's dtype on its device, with the checks that
        need no host synchronisation (:func:`as_batch`) -- for ``model`` and ``guide``."""
        return as_batch(x, self.input_dim, "x", **self._target())

    def _observed(self, x, num_points) -> tuple:
        """``(x, N)`` for ``model(x, num_points=...)``: the data as :meth:`_batch` gives them and
        their number, or ``(None, num_points)`` to sample ``x``."""
        num_points = check_int("num_points", num_points)
        if x is None:
            return None, num_points
        if num_points != 1:
            raise ValueError(
                f"num_points is the number of points to sample with x=None; with data x it "
                f"must be left at 1, got num_points={num_points}"
            )
        x = self._batch(x)
        return x, x.shape[0]

    # --- Pyro model and guide -------------------------------------------------------------
    def model(self, x: torch.Tensor | None = None, *, num_points: int = 1) -> torch.Tensor:
        """Generative model ``p(x, z) = p(z) p(x|z)``; sites ``z`` (latent) and ``x``.

        With data ``x`` the site ``x`` is observed; with ``x=None`` the model is a generative
        program drawing ``num_points`` points from ``p(x, z)`` (site ``x`` sampled), so
        ``pyro.infer.Predictive(vae.model, num_samples=S)(None, num_points=B)`` returns ``"x"``
        of shape ``(S, B, D)`` and ``"z"`` of shape ``(S, B, L)`` (also with
        ``parallel=True``).

        Only the data's type and shape are checked here (no host synchronisation on every
        step); their values are checked where data enter: ``fit``/``train``, the estimators,
        :func:`check_data`.

        Args:
            x: ``(N, D)`` data (or ``(N, *input_shape)``), or ``None``.
            num_points: points to draw with ``x=None``.

        Returns:
            ``z``, ``(N, L)``.

        Raises:
            ArgumentTypeError: ``x`` not a tensor or array, ``num_points`` not an integer.
            ValueError: ``x`` of the wrong shape or empty, ``num_points`` below 1, or
                ``num_points`` other than 1 with data ``x``.
        """
        x, n = self._observed(x, num_points)
        self.register_parameters()
        prior = self.prior(register=False)
        with pyro.plate("data", n, dim=-1):
            z = pyro.sample("z", prior)
            pyro.sample("x", self.decode(z), obs=x)
        return z

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        """Amortised variational posterior ``q(z|x)``; site ``z``, ``(N, L)``. Checks the data's
        type and shape as ``model`` does."""
        x = self._batch(x)
        self.register_parameters()
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample("z", self.encode(x))

    # --- networks as distributions -----------------------------------------------------------
    def encode(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z|x): ``Normal(loc, scale).to_event(1)`` with batch shape ``x.shape[:-1]``.

        ``x`` is a tensor ``(..., D)`` of the model's dtype, used as it is (the network's input;
        :func:`check_data` checks and converts user data).

        Raises:
            ArgumentTypeError: ``x`` is not a tensor.
            ValueError: its last dimension is not ``D``.
        """
        _check_width(x, self.input_dim)
        loc, scale = self.encoder(self._shaped(x))
        return dist.Normal(loc, scale, validate_args=False).to_event(1)

    def decode(self, z: torch.Tensor) -> dist.TorchDistribution:
        """p(x|z): the likelihood's distribution, batch shape ``z.shape[:-1]``, event ``(D,)``.

        Raises:
            ValueError: ``z`` not a tensor of shape ``(..., latent_dim)`` (one line; the
                decoder's matrix product would fail with both shapes but not the cause).
        """
        _check_latent_arg("z", z, self.latent_dim)
        return self.likelihood(self.decoder(z))

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = False) -> torch.Tensor:
        """Draw ``z ~ p(z)`` then ``x ~ p(x|z)`` (or ``E[x|z]`` with ``mean=True``): ``(n, D)``.

        Raises:
            ArgumentTypeError: ``num_samples`` not an integer, ``mean`` not a bool.
            ValueError: ``num_samples`` below 1.
        """
        num_samples, mean = _sample_args(num_samples, mean)
        z = self.prior(register=False).sample((num_samples,))
        h = self.decoder(z)
        return self.likelihood.mean(h) if mean else self.likelihood(h).sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``E[x | z = mean of q(z|x)]`` in data space, ``(N, D)``.

        Raises:
            ArgumentTypeError, ValueError: bad ``x`` (:func:`check_data`).
        """
        x = self._data(x)
        loc, _ = self.encoder(self._shaped(x))
        return self.likelihood.mean(self.decoder(loc))

    @torch.no_grad()
    def posterior_means(self, x: torch.Tensor, num_samples: int = 1) -> dict:
        """``E_q[z|x]`` per latent site: ``{"z": (N, L)}`` (for active units).

        Raises:
            ArgumentTypeError, ValueError: bad ``x`` (:func:`check_data`) or ``num_samples``.
        """
        check_int("num_samples", num_samples)
        x = self._data(x)
        return {"z": self.encoder(self._shaped(x))[0]}

    @property
    def input_shape_2d(self) -> tuple:
        """``(H, W)`` for showing a data point as an image (square if ``input_shape`` is flat)."""
        if len(self.input_shape) >= 2:
            return (math.prod(self.input_shape[:-1]), self.input_shape[-1])
        side = math.isqrt(self.input_dim)
        return (side, side) if side * side == self.input_dim else (1, self.input_dim)

    def extra_repr(self):
        return (
            f"input_shape={self.input_shape}, latent_dim={self.latent_dim}, "
            f"likelihood={self.likelihood!r}"
        )
