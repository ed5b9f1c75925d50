"""Gaussian encoders: q(z|x) and the conditional Gaussians of the hierarchical VAEs, dense
(:class:`GaussianEncoder`, :class:`ConditionalGaussian`) and convolutional (the convHVAE's)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pyrovamp._precision import full_precision
from pyrovamp.nn.adapters import flatten_event
from pyrovamp.nn.layers import MLP, GatedConv2d, GatedDense, check_dropout, dense_layer, mark_fused

__all__ = [
    "GaussianEncoder",
    "JointNet",
    "ConditionalGaussian",
    "ConvFeatures",
    "ConvGaussianEncoder",
    "ConvConditionalEncoder",
]


class GaussianEncoder(nn.Module):
    """Diagonal Gaussian encoder q(z|x): returns ``(loc, scale)``, each ``(..., latent_dim)``.

    ``scale = exp(0.5 * logvar)`` -- the standard deviation (not ``exp(logvar)``, a defect of the
    book's listings). With ``logvar_bounds=(lo, hi)`` the log-variance passes through
    ``hardtanh(lo, hi)`` as in the VampPrior paper's code (``(-6, 2)``).

    Args:
        input_dim: number of data dimensions ``D``.
        latent_dim: latent size ``L``.
        hidden_dims: hidden layer sizes.
        architecture: ``"mlp"`` or ``"gated"``.
        normalize: callable mapping data-space input to ``[0, 1]`` (the likelihood's
            ``normalize``); identity if ``None``.
        logvar_bounds: optional ``(low, high)`` clamp of the log-variance.
        dropout: dropout probability after every hidden layer.
        input_shape: shape of one data point (default ``(input_dim,)``): the encoder takes
            ``(..., *input_shape)`` (the contract of :mod:`pyrovamp.nn.adapters`) or flat
            ``(..., input_dim)``.
    """

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        hidden_dims: Sequence[int],
        architecture: str = "mlp",
        normalize=None,
        logvar_bounds=None,
        dropout: float = 0.0,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__()
        self.input_dim = input_dim
        self.input_shape = tuple(input_shape) if input_shape is not None else (input_dim,)
        self.latent_dim = latent_dim
        self.net = MLP(input_dim, hidden_dims, 2 * latent_dim, architecture, dropout)
        mark_fused(self.net[-1], 2)  # the mean and log-variance heads
        self._normalize = normalize
        self.logvar_bounds = tuple(logvar_bounds) if logvar_bounds is not None else None

    def forward(self, x):
        x = flatten_event(x, self.input_shape)[1]
        if self._normalize is not None:
            x = self._normalize(x)
        loc, logvar = self.net(x).chunk(2, dim=-1)
        loc, logvar = full_precision(loc), full_precision(logvar)
        if self.logvar_bounds is not None:
            logvar = torch.nn.functional.hardtanh(logvar, *self.logvar_bounds)
        return loc, torch.exp(0.5 * logvar)


class JointNet(nn.Module):
    """A network of several inputs (the HVAE's conditionals, VampPrior paper sec. 3.2 and its
    code): each input passes through a hidden layer of its own, the results are concatenated and
    pass through ``num_joint_layers`` more hidden layers and a linear output layer.

    Shapes: inputs ``(..., in_dims[i])`` with broadcastable leading shapes -> ``(..., out_dim)``.

    Args:
        in_dims: sizes of the inputs.
        hidden_dim: units per hidden layer.
        out_dim: output size.
        architecture: ``"mlp"`` or ``"gated"``.
        num_joint_layers: hidden layers after the concatenation.
        normalizers: optional per-input callables applied first (e.g. data to ``[0, 1]``).
        dropout: dropout probability after every hidden layer, the inputs' own layers included
            (0: none; active in training mode only).
        input_shapes: the shape of one point of each input (default ``(in_dims[i],)``): input
            ``i`` may come as ``(..., *input_shapes[i])`` or flat ``(..., in_dims[i])``.

    Raises:
        ValueError: unknown ``architecture`` or a dropout outside ``[0, 1)``.
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        hidden_dim: int,
        out_dim: int,
        architecture: str = "mlp",
        num_joint_layers: int = 1,
        normalizers=None,
        dropout: float = 0.0,
        input_shapes: Sequence[Sequence[int] | None] | None = None,
    ):
        check_dropout(dropout)
        super().__init__()
        self.dropout = float(dropout)
        shapes = list(input_shapes) if input_shapes is not None else [None] * len(in_dims)
        self.input_shapes = [
            tuple(s) if s is not None else (d,) for s, d in zip(shapes, in_dims, strict=True)
        ]
        self.branches = nn.ModuleList([dense_layer(d, hidden_dim, architecture) for d in in_dims])
        joint: list[nn.Module] = []
        d = hidden_dim * len(in_dims)
        for _ in range(num_joint_layers):
            joint.append(dense_layer(d, hidden_dim, architecture))
            d = hidden_dim
        joint.append(nn.Linear(d, out_dim))
        self.joint = nn.Sequential(*joint)
        self._normalizers = list(normalizers) if normalizers is not None else [None] * len(in_dims)

    def forward(self, *inputs):
        hs = []
        for x, branch, norm, shape in zip(
            inputs, self.branches, self._normalizers, self.input_shapes, strict=False
        ):
            x = flatten_event(x, shape)[1]
            hs.append(self._drop(branch(norm(x) if norm is not None else x)))
        shape = torch.broadcast_shapes(*(h.shape[:-1] for h in hs))
        hs = [h.expand(shape + h.shape[-1:]) for h in hs]
        h = torch.cat(hs, dim=-1)
        if not self.dropout:  # the plain path, as without dropout (the measured memory, too)
            return self.joint(h)
        for layer in self.joint[:-1]:
            h = self._drop(layer(h))
        return self.joint[-1](h)

    def _drop(self, h):
        """Dropout as a function, not a module: the parameter names do not depend on it."""
        return F.dropout(h, self.dropout, self.training) if self.dropout else h


class ConditionalGaussian(nn.Module):
    """A diagonal Gaussian whose parameters a :class:`JointNet` computes from its inputs:
    returns ``(loc, scale)`` with ``scale = exp(0.5 * logvar)`` (``logvar`` optionally clamped by
    ``hardtanh(*logvar_bounds)`` as in the VampPrior paper's code).

    Args:
        in_dims: see :class:`JointNet`.
        hidden_dim: see :class:`JointNet`.
        architecture: see :class:`JointNet`.
        num_joint_layers: see :class:`JointNet`.
        normalizers: see :class:`JointNet`.
        latent_dim: size of the Gaussian variable.
        logvar_bounds: optional ``(low, high)``.
        input_shapes: see :class:`JointNet`.
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        hidden_dim: int,
        latent_dim: int,
        architecture: str = "mlp",
        num_joint_layers: int = 1,
        normalizers=None,
        logvar_bounds=None,
        input_shapes=None,
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = JointNet(
            in_dims,
            hidden_dim,
            2 * latent_dim,
            architecture,
            num_joint_layers,
            normalizers,
            input_shapes=input_shapes,
        )
        mark_fused(self.net.joint[-1], 2)  # the mean and log-variance heads
        self.logvar_bounds = tuple(logvar_bounds) if logvar_bounds is not None else None

    def forward(self, *inputs):
        loc, logvar = self.net(*inputs).chunk(2, dim=-1)
        loc, logvar = full_precision(loc), full_precision(logvar)
        if self.logvar_bounds is not None:
            logvar = torch.nn.functional.hardtanh(logvar, *self.logvar_bounds)
        return loc, torch.exp(0.5 * logvar)


def _conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class ConvFeatures(nn.Module):
    """The paper's convolutional feature extractor for q(z2|x) and q(z1|x, z2): five gated
    convolutions (two of stride 2) ending in 6 channels, flattened.

    Shapes: ``(..., *input_shape)`` or flat ``(..., H * W)`` (any leading shape) ->
    ``(..., out_features)``.

    Args:
        image_shape: ``(H, W)``.
        kernels: kernel sizes of the five layers (the paper: 7,3,5,3,3 for q(z2|x) and
            3,3,3,3,3 for q(z1|x, z2)).
        normalize: callable mapping data to ``[0, 1]`` first.
        input_shape: the model's shape of one image (default ``image_shape``).
    """

    def __init__(self, image_shape, kernels=(7, 3, 5, 3, 3), normalize=None, input_shape=None):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.input_shape = tuple(input_shape) if input_shape is not None else self.image_shape
        chans = [1, 32, 32, 64, 64, 6]
        strides = [1, 2, 1, 2, 1]
        layers = []
        h, w = self.image_shape
        for i, (k, s) in enumerate(zip(kernels, strides, strict=False)):
            p = k // 2
            layers.append(GatedConv2d(chans[i], chans[i + 1], k, s, p))
            h, w = _conv_output_size(h, k, s, p), _conv_output_size(w, k, s, p)
        self.net = nn.Sequential(*layers)
        self.out_features = 6 * h * w
        self._normalize = normalize

    def forward(self, x):
        lead, x = flatten_event(x, self.input_shape)
        if self._normalize is not None:
            x = self._normalize(x)
        h = self.net(x.reshape(-1, 1, *self.image_shape))
        return h.reshape(lead + (self.out_features,))


class ConvGaussianEncoder(nn.Module):
    """q(z|x) of the convHVAE: :class:`ConvFeatures` then linear heads for the mean and the
    (hardtanh-clamped) log-variance; returns ``(loc, scale)``, each ``(..., latent_dim)``."""

    def __init__(
        self,
        image_shape,
        latent_dim: int,
        normalize=None,
        logvar_bounds=(-6.0, 2.0),
        input_shape=None,
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.features = ConvFeatures(image_shape, (7, 3, 5, 3, 3), normalize, input_shape)
        self.head = mark_fused(nn.Linear(self.features.out_features, 2 * latent_dim), 2)
        self.logvar_bounds = tuple(logvar_bounds) if logvar_bounds is not None else None

    def forward(self, x):
        loc, logvar = self.head(self.features(x)).chunk(2, dim=-1)
        loc, logvar = full_precision(loc), full_precision(logvar)
        if self.logvar_bounds is not None:
            logvar = torch.nn.functional.hardtanh(logvar, *self.logvar_bounds)
        return loc, torch.exp(0.5 * logvar)


class ConvConditionalEncoder(nn.Module):
    """q(z1|x, z2) of the convHVAE: conv features of ``x`` and a gated dense layer of ``z2``,
    concatenated, a gated dense layer of ``hidden_dim`` units, linear heads; ``(loc, scale)``."""

    def __init__(
        self,
        image_shape,
        z2_dim: int,
        z1_dim: int,
        hidden_dim: int = 300,
        normalize=None,
        logvar_bounds=(-6.0, 2.0),
        input_shape=None,
    ):
        super().__init__()
        self.features = ConvFeatures(image_shape, (3, 3, 3, 3, 3), normalize, input_shape)
        f = self.features.out_features
        self.z2_layer = GatedDense(z2_dim, f)
        self.joint = GatedDense(2 * f, hidden_dim)
        self.head = mark_fused(nn.Linear(hidden_dim, 2 * z1_dim), 2)
        self.logvar_bounds = tuple(logvar_bounds) if logvar_bounds is not None else None

    def forward(self, x, z2):
        hx, hz = self.features(x), self.z2_layer(z2)
        shape = torch.broadcast_shapes(hx.shape[:-1], hz.shape[:-1])
        h = torch.cat([hx.expand(shape + hx.shape[-1:]), hz.expand(shape + hz.shape[-1:])], -1)
        loc, logvar = self.head(self.joint(h)).chunk(2, dim=-1)
        loc, logvar = full_precision(loc), full_precision(logvar)
        if self.logvar_bounds is not None:
            logvar = torch.nn.functional.hardtanh(logvar, *self.logvar_bounds)
        return loc, torch.exp(0.5 * logvar)
