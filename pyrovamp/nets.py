"""Neural networks of the encoders, decoders and priors (plain ``torch.nn``).

* :class:`MLP` -- the book's fully connected network (Tomczak, *Deep Generative Modeling*,
  ch. 4.3: two hidden layers of 256 units with LeakyReLU for Digits).
* :class:`GatedDense` -- the gated dense layer of the VampPrior paper (Tomczak & Welling 2018,
  sec. 4 / appendix): ``h = (x W + b) * sigmoid(x V + c)``.
* :class:`GaussianEncoder` -- q(z|x) = N(z | mu(x), diag(exp(logvar(x)))), returning
  ``(loc, scale)`` with ``scale = exp(0.5 * logvar)``.

All networks act on the last dimension and accept any leading shape.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["GatedDense", "MLP", "GaussianEncoder", "JointNet", "ConditionalGaussian",
           "dense_layer", "ARCHITECTURES", "GatedConv2d", "ConvFeatures", "ConvGaussianEncoder",
           "ConvConditionalEncoder", "ConvDecoder"]

ARCHITECTURES = ("mlp", "gated")


class GatedDense(nn.Module):
    """Gated dense layer ``h = (x W + b) * sigmoid(x V + c)`` (VampPrior paper, sec. 4).

    Shapes: ``(..., in_features) -> (..., out_features)``. Both halves are computed by one
    ``nn.Linear`` of width ``2 * out_features`` so that a layer costs one matrix product.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.out_features = out_features
        self.linear = nn.Linear(in_features, 2 * out_features)

    def forward(self, x):
        h, g = self.linear(x).chunk(2, dim=-1)
        if torch.is_grad_enabled():
            return h * torch.sigmoid(g)
        return h.mul_(g.sigmoid_())  # no autograd: in place, no new tensors (evaluation)


def dense_layer(in_features: int, out_features: int, architecture: str = "mlp") -> nn.Module:
    """One hidden layer: ``GatedDense`` (``"gated"``) or ``Linear`` + LeakyReLU (``"mlp"``).

    Raises:
        ValueError: unknown ``architecture``.
    """
    if architecture == "gated":
        return GatedDense(in_features, out_features)
    if architecture == "mlp":
        return nn.Sequential(nn.Linear(in_features, out_features), nn.LeakyReLU())
    raise ValueError(f"unknown architecture {architecture!r}; expected one of {', '.join(ARCHITECTURES)}")


class MLP(nn.Sequential):
    """Fully connected network ``in_dim -> hidden_dims... -> out_dim``.

    Args:
        in_dim: input size.
        hidden_dims: sizes of the hidden layers.
        out_dim: output size (the last layer is linear, no activation).
        architecture: ``"mlp"`` (Linear + LeakyReLU, the book) or ``"gated"`` (gated dense
            layers, the VampPrior paper).
        dropout: dropout probability after every hidden layer (0: none).

    Raises:
        ValueError: unknown ``architecture`` or a dropout outside ``[0, 1)``.
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int,
                 architecture: str = "mlp", dropout: float = 0.0):
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if architecture not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {architecture!r}; expected one of {', '.join(ARCHITECTURES)}"
            )
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden_dims:
            if architecture == "gated":
                layers.append(GatedDense(d, h))
            else:
                layers += [nn.Linear(d, h), nn.LeakyReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        layers.append(nn.Linear(d, out_dim))
        super().__init__(*layers)


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
    """

    def __init__(self, input_dim: int, latent_dim: int, hidden_dims: Sequence[int],
                 architecture: str = "mlp", normalize=None, logvar_bounds=None,
                 dropout: float = 0.0):
        super().__init__()
        self.input_dim = input_dim
        self.latent_dim = latent_dim
        self.net = MLP(input_dim, hidden_dims, 2 * latent_dim, architecture, dropout)
        self._normalize = normalize
        self.logvar_bounds = tuple(logvar_bounds) if logvar_bounds is not None else None

    def forward(self, x):
        if self._normalize is not None:
            x = self._normalize(x)
        loc, logvar = self.net(x).chunk(2, dim=-1)
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
    """

    def __init__(self, in_dims: Sequence[int], hidden_dim: int, out_dim: int,
                 architecture: str = "mlp", num_joint_layers: int = 1, normalizers=None):
        super().__init__()
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
        for x, branch, norm in zip(inputs, self.branches, self._normalizers):
            hs.append(branch(norm(x) if norm is not None else x))
        shape = torch.broadcast_shapes(*(h.shape[:-1] for h in hs))
        hs = [h.expand(shape + h.shape[-1:]) for h in hs]
        return self.joint(torch.cat(hs, dim=-1))


class ConditionalGaussian(nn.Module):
    """A diagonal Gaussian whose parameters a :class:`JointNet` computes from its inputs:
    returns ``(loc, scale)`` with ``scale = exp(0.5 * logvar)`` (``logvar`` optionally clamped by
    ``hardtanh(*logvar_bounds)`` as in the VampPrior paper's code).

    Args:
        in_dims, hidden_dim, architecture, num_joint_layers, normalizers: see :class:`JointNet`.
        latent_dim: size of the Gaussian variable.
        logvar_bounds: optional ``(low, high)``.
    """

    def __init__(self, in_dims: Sequence[int], hidden_dim: int, latent_dim: int,
                 architecture: str = "mlp", num_joint_layers: int = 1, normalizers=None,
                 logvar_bounds=None):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = JointNet(in_dims, hidden_dim, 2 * latent_dim, architecture, num_joint_layers,
                            normalizers)
        self.logvar_bounds = tuple(logvar_bounds) if logvar_bounds is not None else None

    def forward(self, *inputs):
        loc, logvar = self.net(*inputs).chunk(2, dim=-1)
        if self.logvar_bounds is not None:
            logvar = torch.nn.functional.hardtanh(logvar, *self.logvar_bounds)
        return loc, torch.exp(0.5 * logvar)


class GatedConv2d(nn.Module):
    """Gated convolution ``h = conv_h(x) * sigmoid(conv_g(x))`` (VampPrior paper's convHVAE);
    both convolutions in one ``nn.Conv2d`` of ``2 * out_channels``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 2 * out_channels, kernel_size, stride, padding)

    def forward(self, x):
        h, g = self.conv(x).chunk(2, dim=1)
        return h * torch.sigmoid(g)


def _conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class ConvFeatures(nn.Module):
    """The paper's convolutional feature extractor for q(z2|x) and q(z1|x, z2): five gated
    convolutions (two of stride 2) ending in 6 channels, flattened.

    Shapes: ``(..., H * W)`` (flat images, any leading shape) -> ``(..., out_features)``.

    Args:
        image_shape: ``(H, W)``.
        kernels: kernel sizes of the five layers (the paper: 7,3,5,3,3 for q(z2|x) and
            3,3,3,3,3 for q(z1|x, z2)).
        normalize: callable mapping data to ``[0, 1]`` first.
    """

    def __init__(self, image_shape, kernels=(7, 3, 5, 3, 3), normalize=None):
        super().__init__()
        self.image_shape = tuple(image_shape)
        chans = [1, 32, 32, 64, 64, 6]
        strides = [1, 2, 1, 2, 1]
        layers = []
        h, w = self.image_shape
        for i, (k, s) in enumerate(zip(kernels, strides)):
            p = k // 2
            layers.append(GatedConv2d(chans[i], chans[i + 1], k, s, p))
            h, w = _conv_output_size(h, k, s, p), _conv_output_size(w, k, s, p)
        self.net = nn.Sequential(*layers)
        self.out_features = 6 * h * w
        self._normalize = normalize

    def forward(self, x):
        if self._normalize is not None:
            x = self._normalize(x)
        lead = x.shape[:-1]
        h = self.net(x.reshape(-1, 1, *self.image_shape))
        return h.reshape(lead + (self.out_features,))


class ConvGaussianEncoder(nn.Module):
    """q(z|x) of the convHVAE: :class:`ConvFeatures` then linear heads for the mean and the
    (hardtanh-clamped) log-variance; returns ``(loc, scale)``, each ``(..., latent_dim)``."""

    def __init__(self, image_shape, latent_dim: int, normalize=None, logvar_bounds=(-6.0, 2.0)):
        super().__init__()
        self.latent_dim = latent_dim
        self.features = ConvFeatures(image_shape, (7, 3, 5, 3, 3), normalize)
        self.head = nn.Linear(self.features.out_features, 2 * latent_dim)
        self.logvar_bounds = tuple(logvar_bounds) if logvar_bounds is not None else None

    def forward(self, x):
        loc, logvar = self.head(self.features(x)).chunk(2, dim=-1)
        if self.logvar_bounds is not None:
            logvar = torch.nn.functional.hardtanh(logvar, *self.logvar_bounds)
        return loc, torch.exp(0.5 * logvar)


class ConvConditionalEncoder(nn.Module):
    """q(z1|x, z2) of the convHVAE: conv features of ``x`` and a gated dense layer of ``z2``,
    concatenated, a gated dense layer of ``hidden_dim`` units, linear heads; ``(loc, scale)``."""

    def __init__(self, image_shape, z2_dim: int, z1_dim: int, hidden_dim: int = 300,
                 normalize=None, logvar_bounds=(-6.0, 2.0)):
        super().__init__()
        self.features = ConvFeatures(image_shape, (3, 3, 3, 3, 3), normalize)
        f = self.features.out_features
        self.z2_layer = GatedDense(z2_dim, f)
        self.joint = GatedDense(2 * f, hidden_dim)
        self.head = nn.Linear(hidden_dim, 2 * z1_dim)
        self.logvar_bounds = tuple(logvar_bounds) if logvar_bounds is not None else None

    def forward(self, x, z2):
        hx, hz = self.features(x), self.z2_layer(z2)
        shape = torch.broadcast_shapes(hx.shape[:-1], hz.shape[:-1])
        h = torch.cat([hx.expand(shape + hx.shape[-1:]), hz.expand(shape + hz.shape[-1:])], -1)
        loc, logvar = self.head(self.joint(h)).chunk(2, dim=-1)
        if self.logvar_bounds is not None:
            logvar = torch.nn.functional.hardtanh(logvar, *self.logvar_bounds)
        return loc, torch.exp(0.5 * logvar)


class ConvDecoder(nn.Module):
    """p(x|z1, z2) of the convHVAE: gated dense maps of ``z1`` and ``z2`` to image size, a joint
    gated dense layer, four gated 3x3 convolutions of 64 channels and a 1x1 convolution to
    ``params_per_pixel`` outputs per pixel. Returns ``(..., H * W * params_per_pixel)``:
    parameter-major (all pixels' first parameter, then the second, as the discretised logistic
    wants) or, with ``pixel_major=True``, pixel by pixel (the categorical likelihood's logits)."""

    def __init__(self, image_shape, z1_dim: int, z2_dim: int, params_per_pixel: int = 1,
                 channels: int = 64, pixel_major: bool = False):
        super().__init__()
        self.image_shape = tuple(image_shape)
        d = self.image_shape[0] * self.image_shape[1]
        self.z1_layer = GatedDense(z1_dim, d)
        self.z2_layer = GatedDense(z2_dim, d)
        self.joint = GatedDense(2 * d, d)
        self.convs = nn.Sequential(GatedConv2d(1, channels, 3, 1, 1),
                                   *[GatedConv2d(channels, channels, 3, 1, 1) for _ in range(3)])
        self.out = nn.Conv2d(channels, params_per_pixel, 1)
        self.params_per_pixel = params_per_pixel
        self.pixel_major = pixel_major

    def forward(self, z1, z2):
        h1, h2 = self.z1_layer(z1), self.z2_layer(z2)
        shape = torch.broadcast_shapes(h1.shape[:-1], h2.shape[:-1])
        h = self.joint(torch.cat([h1.expand(shape + h1.shape[-1:]),
                                  h2.expand(shape + h2.shape[-1:])], -1))
        y = self.out(self.convs(h.reshape(-1, 1, *self.image_shape)))  # B x P x H x W
        if self.pixel_major:
            y = y.permute(0, 2, 3, 1)
        return y.reshape(shape + (-1,))
