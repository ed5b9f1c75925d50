"""Priors whose components are the encoder's posteriors at pseudo-inputs: the VampPrior
(book eqs. 4.48/4.49; Tomczak & Welling 2018, sec. 3) and the GTM-VampPrior (eq. 4.53)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from pyrovamp._validate import check_int
from pyrovamp.nn import MLP
from pyrovamp.priors.base import Prior, mixing_logits
from pyrovamp.priors.mixtures import DiagonalGaussianMixture, grid_points

__all__ = ["VampPrior", "GTMVampPrior", "PSEUDO_INPUT_PARAMETERIZATIONS"]

PSEUDO_INPUT_PARAMETERIZATIONS = ("sigmoid", "clamp")
"""The choices of ``VampPrior(parameterization=...)``."""


def _input_shape(input_dim, input_shape) -> tuple:
    """The checked shape of one data point: ``input_shape`` or ``(input_dim,)``."""
    input_dim = check_int("input_dim", input_dim)
    if input_shape is None:
        return (input_dim,)
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise ValueError(f"input_shape must be a tuple of sizes, got {input_shape!r}")
    shape = tuple(check_int(f"input_shape[{i}]", s) for i, s in enumerate(input_shape))
    if math.prod(shape) != input_dim:
        raise ValueError(
            f"input_shape={shape} holds {math.prod(shape)} values, not input_dim={input_dim}"
        )
    return shape


def _latent_dim(name: str, encoder: nn.Module, latent_dim: int | None) -> int:
    """``latent_dim``, else the encoder's ``latent_dim``.

    Raises:
        ValueError: neither is given, or they differ (one line, when the prior is made).
    """
    own = getattr(encoder, "latent_dim", None)
    if latent_dim is None:
        latent_dim = own
    if latent_dim is None:
        raise ValueError(f"{name} needs latent_dim (or an encoder with .latent_dim)")
    if isinstance(own, int) and not isinstance(own, bool) and own != latent_dim:
        raise ValueError(
            f"{name}: latent_dim={latent_dim} but the encoder's latent_dim is {own} (its "
            "posteriors at the pseudo-inputs are the prior's components)"
        )
    return latent_dim


def _encoded_components(prior) -> DiagonalGaussianMixture:
    """The mixture ``sum_k w_k q(z | u_k)`` of a prior whose components are the encoder's
    posteriors at its pseudo-inputs ``u_k`` (VampPrior, GTM-VampPrior).

    Raises:
        ValueError: the encoder's ``(loc, scale)`` are not ``(K, latent_dim)`` (one line naming
            the shapes).
    """
    loc, scale = prior.encoder(prior.pseudo_inputs)
    want = (prior.num_components, prior.latent_dim)
    if tuple(loc.shape) != want or tuple(scale.shape) != want:
        raise ValueError(
            f"{type(prior).__name__}: the encoder maps the pseudo-inputs to loc "
            f"{tuple(loc.shape)} and scale {tuple(scale.shape)}; expected {want} "
            "(num_components, latent_dim)"
        )
    return DiagonalGaussianMixture(prior.logits, loc, scale)


class VampPrior(Prior):
    """VampPrior, book eq. (4.48)/(4.49), Tomczak & Welling (2018) sec. 3:
    ``p(z) = sum_k w_k q(z | u_k)`` with learnable pseudo-inputs ``u_k``.

    The components are the encoder's own posteriors at the pseudo-inputs: ``encoder`` is the same
    module object as the model's guide uses (shared, not copied). Weights are uniform ``1/K`` as in
    the paper unless ``learn_weights=True`` (Alemi et al. 2018, eq. 4.49).

    Pseudo-inputs live in data space, from a learnable ``a`` of shape ``(K, D)``, in one of two
    parameterisations (``parameterization``):

    * ``"sigmoid"`` (default): ``u = low + (high - low) * sigmoid(a)`` -- always valid inputs that
      never lose their gradient at the edge of the range, but a pixel moves by at most a quarter
      of the optimiser's step in ``a`` (much less near the edges); ``init="random"`` draws ``u``
      uniformly over the range.
    * ``"clamp"`` (the paper's code, ``Model.add_pseudoinputs`` of jmtomczak/vae_vampprior):
      ``u = low + (high - low) * hardtanh(a, 0, 1)`` -- ``a`` is in units of the data range, as
      the paper's ``[0, 1]`` pseudo-inputs, so a pixel moves by the optimiser's full step whatever
      the range (0-255 grey levels included); one pushed past an edge stays there (zero
      gradient), as in the paper. ``init="random"`` draws ``a ~ N(0.05, 0.01^2)``: nearly black
      images, the paper's initialisation for MNIST and Omniglot (``load_data.py``; other data
      sets: :meth:`init_normal`).

    Args:
        encoder: module mapping ``(..., D)`` data to ``(loc, scale)`` of shape ``(..., L)``.
        input_dim: data size ``D``.
        num_components: number of pseudo-inputs ``K``.
        data_range: ``(low, high)`` of the data values (``(0, 1)`` binary, ``(0, 16)`` Digits).
        learn_weights: learn the mixing weights (default ``False``: uniform ``1/K``).
        init: ``"random"`` (see above) or a tensor ``(K, D)`` of training points (see
            :meth:`init_from_data`).
        latent_dim: ``L``; read from ``encoder.latent_dim`` when omitted.
        parameterization: ``"sigmoid"`` or ``"clamp"`` (see above).
        input_shape: the shape of one data point, e.g. ``(1, 28, 28)`` (default
            ``(input_dim,)``; its product must be ``input_dim``): the pseudo-inputs have shape
            ``(K, *input_shape)`` and the encoder is called on them so (Tomczak & Welling 2018,
            sec. 3: pseudo-inputs live where the data do).

    Raises:
        ValueError: bad sizes, ``init`` neither ``"random"`` nor a ``(K, D)`` tensor, an
            unknown ``parameterization``, an ``input_shape`` whose product is not
            ``input_dim``, or a ``latent_dim`` other than ``encoder.latent_dim``; at
            ``log_prob``/``sample``, an encoder whose outputs are not ``(K, latent_dim)``.
    """

    # training data given as ``init`` only start the pseudo-inputs: a rebuilt prior loads them
    _rebuild_arguments = {"init": "random"}

    def __init__(
        self,
        encoder: nn.Module,
        input_dim: int,
        num_components: int = 500,
        data_range=(0.0, 1.0),
        learn_weights: bool = False,
        init="random",
        latent_dim: int | None = None,
        parameterization: str = "sigmoid",
        input_shape=None,
    ):
        latent_dim = _latent_dim("VampPrior", encoder, latent_dim)
        if parameterization not in PSEUDO_INPUT_PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of "
                f"{', '.join(PSEUDO_INPUT_PARAMETERIZATIONS)}, got {parameterization!r}"
            )
        if not (isinstance(init, torch.Tensor) or (isinstance(init, str) and init == "random")):
            raise ValueError(f"init must be 'random' or a tensor of training data, got {init!r}")
        super().__init__(latent_dim)
        check_int("num_components", num_components)
        self.input_shape = _input_shape(input_dim, input_shape)
        self.encoder = encoder
        self.input_dim = input_dim
        self.num_components = num_components
        self.parameterization = parameterization
        self.low, self.high = float(data_range[0]), float(data_range[1])
        # the parameter's name tells the two apart in a saved state dict
        self._param_name = (
            "pseudo_inputs_logit" if parameterization == "sigmoid" else "pseudo_inputs_unclamped"
        )
        self.register_parameter(
            self._param_name, nn.Parameter(torch.empty(num_components, input_dim))
        )
        mixing_logits(self, num_components, learn_weights)
        if isinstance(init, torch.Tensor):
            self.init_from_data(init)
            return
        if parameterization == "sigmoid":
            with torch.no_grad():
                self._raw.copy_(
                    torch.logit(torch.rand(num_components, input_dim).clamp(0.01, 0.99))
                )
        else:
            self.init_normal(0.05, 0.01)

    @property
    def _raw(self) -> nn.Parameter:
        """The learnable ``a`` behind the pseudo-inputs, ``(K, D)``."""
        return getattr(self, self._param_name)

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """The pseudo-inputs ``u`` in data space, ``(K, *input_shape)``."""
        a = self._raw
        unit = (
            torch.nn.functional.hardtanh(a, 0.0, 1.0)
            if self.parameterization == "clamp"
            else torch.sigmoid(a)
        )
        u = self.low + (self.high - self.low) * unit
        return u.reshape(self.num_components, *self.input_shape)

    @torch.no_grad()
    def init_normal(self, mean: float, std: float) -> None:
        """Draw the pseudo-inputs' pixels from ``N(mean, std^2)`` in units of the data range
        (``0``: ``low``, ``1``: ``high``) -- the paper's random initialisation (``load_data.py``:
        ``(0.05, 0.01)`` for MNIST and Omniglot, ``(0.5, 0.02)`` for Caltech 101 Silhouettes and
        Frey Faces, ``(0.4, 0.05)`` for Histopathology). With the sigmoid parameterisation the
        draws are clipped to ``[0.01, 0.99]`` first.

        Raises:
            ValueError: ``std`` is negative.
        """
        if std < 0:
            raise ValueError(f"std must be >= 0, got {std}")
        a = self._raw
        a.normal_(mean, std)
        if self.parameterization == "sigmoid":
            a.copy_(torch.logit(a.clamp(0.01, 0.99)))

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, margin: float = 0.05) -> None:
        """Set the pseudo-inputs to ``K`` data points ``x`` (``(K, D)`` or ``(K, *input_shape)``,
        data space), pulled ``margin`` (fraction of the range) inside the range so their
        gradients stay alive (the paper's code adds N(0, 0.01) noise to the raw points instead,
        so about half of its black pixels start clamped, without gradient).

        Raises:
            ValueError: ``x`` is neither ``(K, D)`` nor ``(K, *input_shape)``.
        """
        shaped = (self.num_components, *self.input_shape)
        if tuple(x.shape) not in ((self.num_components, self.input_dim), shaped):
            raise ValueError(
                f"pseudo-input data must have shape ({self.num_components}, {self.input_dim}) "
                f"or {shaped}, got {tuple(x.shape)}"
            )
        x = x.reshape(self.num_components, self.input_dim)
        a = self._raw
        p = margin + (1 - 2 * margin) * (x.to(a) - self.low) / (self.high - self.low)
        a.copy_(torch.logit(p) if self.parameterization == "sigmoid" else p)

    def distribution(self):
        return _encoded_components(self)


class GTMVampPrior(Prior):
    """GTM-VampPrior, book eq. (4.53): ``p(z) = sum_k w_k q(z | g(u_k))`` -- a fixed 2-D grid
    mapped by a network ``g`` into data space gives the pseudo-inputs, which go through the
    model's (shared) encoder.

    Args:
        encoder: the model's encoder (shared module), ``(..., D) -> (loc, scale)``.
        input_dim: data size ``D``.
        grid_side: points per grid side (``K = grid_side**2``).
        data_range: ``(low, high)`` of the data; ``g``'s output is squashed into it by a sigmoid.
        hidden_dims: hidden sizes of ``g``.
        learn_weights: learn ``w`` (as the book) or keep ``1/K`` (default; better on Digits).
        latent_dim: ``L``; read from ``encoder.latent_dim`` when omitted.
        input_shape: the shape of one data point (default ``(input_dim,)``): the pseudo-inputs
            are ``(K, *input_shape)``, as :class:`VampPrior`'s.

    Raises:
        ValueError: no ``latent_dim``, bad sizes, an ``input_shape`` whose product is not
            ``input_dim``, or a ``latent_dim`` other than ``encoder.latent_dim``; at
            ``log_prob``/``sample``, an encoder whose outputs are not ``(K, latent_dim)``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        input_dim: int,
        grid_side: int = 4,
        data_range=(0.0, 1.0),
        hidden_dims: Sequence[int] = (64, 64),
        learn_weights: bool = False,
        latent_dim: int | None = None,
        input_shape=None,
    ):
        latent_dim = _latent_dim("GTMVampPrior", encoder, latent_dim)
        super().__init__(latent_dim)
        self.input_shape = _input_shape(input_dim, input_shape)
        self.encoder = encoder
        self.input_dim = input_dim
        self.grid_side = grid_side
        self.num_components = grid_side**2
        self.low, self.high = float(data_range[0]), float(data_range[1])
        self.register_buffer("grid", grid_points(grid_side))
        self.net = MLP(2, hidden_dims, input_dim)
        mixing_logits(self, self.num_components, learn_weights)

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """``g(u_k)`` in data space, ``(K, *input_shape)``."""
        u = self.low + (self.high - self.low) * torch.sigmoid(self.net(self.grid))
        return u.reshape(self.num_components, *self.input_shape)

    def distribution(self):
        return _encoded_components(self)
