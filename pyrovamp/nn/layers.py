"""Neural networks of the encoders, decoders and priors (plain ``torch.nn``).

* :class:`MLP` -- the book's fully connected network (Tomczak, *Deep Generative Modeling*,
  ch. 4.3: two hidden layers of 256 units with LeakyReLU for Digits).
* :class:`GatedDense` -- the gated dense layer of the VampPrior paper (Tomczak & Welling 2018,
  sec. 4 / appendix): ``h = (x W + b) * sigmoid(x V + c)``.
* :class:`GaussianEncoder` -- q(z|x) = N(z | mu(x), diag(exp(logvar(x)))), returning
  ``(loc, scale)`` with ``scale = exp(0.5 * logvar)``.
* :class:`MaskedConv2d`, :class:`PixelCNNDecoder` -- the PixelCNN decoder of the paper's
  PixelHVAE (masked convolutions, van den Oord et al. 2016).

All networks act on the last dimension and accept any leading shape.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["GatedDense", "MLP", "GaussianEncoder", "JointNet", "ConditionalGaussian",
           "dense_layer", "ARCHITECTURES", "GatedConv2d", "ConvFeatures", "ConvGaussianEncoder",
           "ConvConditionalEncoder", "ConvDecoder", "MaskedConv2d", "PixelCNNDecoder", "he_init_",
           "mark_fused", "parameter_chunks"]

ARCHITECTURES = ("mlp", "gated")


@torch.no_grad()
def he_init_(modules) -> int:
    """He initialisation of every ``nn.Linear`` in ``modules`` (an iterable of modules, each
    visited with its submodules, each layer once): weights ``~ N(0, 2 / fan_in)``, biases left as
    they are -- the initialisation of the VampPrior paper's code (jmtomczak/vae_vampprior
    ``utils/nn.py``, ``he_init``, applied to every linear layer of its models). Returns the
    number of layers initialised.
    """
    seen = set()
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Linear) and id(m) not in seen:
                seen.add(id(m))
                m.weight.normal_(0.0, (2.0 / m.in_features) ** 0.5)
    return len(seen)


def mark_fused(layer: nn.Module, chunks: int) -> nn.Module:
    """Record that ``layer``'s weight and bias stack ``chunks`` tensors of the VampPrior paper's
    code along their first dimension (the two halves of a gated layer, the mean and
    log-variance heads, the discretised logistic's location and log-scale outputs), so that
    :class:`pyrovamp.training.AdamNormGrad` normalises each block's gradient on its own, as the
    paper's code does with its separate layers. Sets ``layer.fused_chunks``; returns ``layer``.

    Raises:
        ValueError: ``chunks`` is not a positive integer dividing the layer's output size.
    """
    out = getattr(layer, "out_features", getattr(layer, "out_channels", None))
    if not isinstance(chunks, int) or isinstance(chunks, bool) or chunks < 1 or (
            out is not None and out % chunks):
        raise ValueError(f"chunks must be a positive integer dividing the layer's {out} outputs, "
                         f"got {chunks!r}")
    layer.fused_chunks = chunks
    return layer


def parameter_chunks(module: nn.Module) -> list[int]:
    """For each tensor of ``module.parameters()`` (same order, shared tensors once), the number
    of the paper's tensors it stacks along its first dimension (:func:`mark_fused`; 1 for the
    others): the ``norm_chunks`` of :class:`pyrovamp.training.AdamNormGrad`'s parameter group."""
    marks = {}
    for m in module.modules():
        chunks = getattr(m, "fused_chunks", 1)
        for p in m.parameters(recurse=False):
            marks[id(p)] = chunks
    return [marks.get(id(p), 1) for p in module.parameters()]


class GatedDense(nn.Module):
    """Gated dense layer ``h = (x W + b) * sigmoid(x V + c)`` (VampPrior paper, sec. 4).

    Shapes: ``(..., in_features) -> (..., out_features)``. Both halves are computed by one
    ``nn.Linear`` of width ``2 * out_features`` so that a layer costs one matrix product
    (marked with :func:`mark_fused`: the paper's code has two layers).
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.out_features = out_features
        self.linear = mark_fused(nn.Linear(in_features, 2 * out_features), 2)

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


def _check_dropout(dropout) -> None:
    """Raises ``ValueError`` unless ``0 <= dropout < 1``."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


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
        _check_dropout(dropout)
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
        mark_fused(self.net[-1], 2)  # the mean and log-variance heads
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
        dropout: dropout probability after every hidden layer, the inputs' own layers included
            (0: none; active in training mode only).

    Raises:
        ValueError: unknown ``architecture`` or a dropout outside ``[0, 1)``.
    """

    def __init__(self, in_dims: Sequence[int], hidden_dim: int, out_dim: int,
                 architecture: str = "mlp", num_joint_layers: int = 1, normalizers=None,
                 dropout: float = 0.0):
        _check_dropout(dropout)
        super().__init__()
        self.dropout = float(dropout)
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
        mark_fused(self.net.joint[-1], 2)  # the mean and log-variance heads
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
        self.conv = mark_fused(nn.Conv2d(in_channels, 2 * out_channels, kernel_size, stride,
                                         padding), 2)

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
        self.head = mark_fused(nn.Linear(self.features.out_features, 2 * latent_dim), 2)
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
        self.head = mark_fused(nn.Linear(hidden_dim, 2 * z1_dim), 2)
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


class MaskedConv2d(nn.Conv2d):
    """Masked convolution of the PixelCNN (van den Oord et al. 2016, "Pixel recurrent neural
    networks", sec. 3.5; the VampPrior paper's code, ``utils/nn.py`` ``MaskedConv2d``).

    The kernel is multiplied by a 0/1 mask in every forward pass: the rows below the centre and,
    on the centre row, the positions right of the centre are zero; type ``"A"`` also zeroes the
    centre (the first layer: the output at pixel ``i`` sees only pixels before ``i`` in raster
    order), type ``"B"`` keeps it (later layers: a unit may use its own position's features,
    which already depend only on earlier pixels). The mask applies to every input channel, as in
    the paper's code. It is a buffer (moves with ``.to()``, not saved in the ``state_dict``: it is
    a function of the type and the kernel size), and the masked weight entries never matter,
    whatever an optimiser does to them. Stride 1; ``padding`` defaults to ``kernel_size // 2``
    ("same" output size).

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.

    Raises:
        ValueError: ``mask_type`` not ``"A"`` or ``"B"``, or an even kernel size.
    """

    def __init__(self, mask_type: str, in_channels: int, out_channels: int, kernel_size: int = 3,
                 padding: int | None = None, bias: bool = True):
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")
        super().__init__(in_channels, out_channels, kernel_size, 1,
                         kernel_size // 2 if padding is None else padding, bias=bias)
        self.mask_type = mask_type
        k = kernel_size
        mask = torch.ones(k, k)
        mask[k // 2, k // 2 + (mask_type == "B"):] = 0
        mask[k // 2 + 1:] = 0
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):
        """``(B, in_channels, H, W) -> (B, out_channels, H, W)`` with the masked kernel."""
        return self._conv_forward(x, self.weight * self.mask, self.bias)

    def extra_repr(self):
        return f"mask_type={self.mask_type!r}, " + super().extra_repr()


class PixelCNNDecoder(nn.Module):
    """p(x|z1, z2) network of the VampPrior paper's PixelHVAE (Tomczak & Welling 2018, sec. 4;
    their code ``models/PixelHVAE_2level.py``): gated dense maps of ``z1`` and of ``z2`` to image
    size, concatenated with the image as three channels, then a type-A :class:`MaskedConv2d` and
    ``num_layers - 1`` type-B ones of ``channels`` channels, each followed by batch
    normalisation and ReLU, and a 1x1 convolution to ``params_per_pixel`` outputs per pixel.

    The output at pixel ``i`` (raster order) depends on the image only through pixels ``j < i``,
    so one pass over the observed image scores every pixel's conditional (teacher forcing), and
    :meth:`sample` draws images one pixel position at a time.

    Args:
        image_shape: ``(H, W)``.
        z1_dim, z2_dim: sizes of the latent variables.
        params_per_pixel: outputs per pixel (the likelihood's ``params_per_dim``).
        channels: channels of the masked convolutions (the paper: 64).
        num_layers: masked convolutions (the paper: 8 -- one type A, seven type B).
        kernel_size: their (odd) kernel size (the paper: 3).
        out_bias: bias in the 1x1 output convolution (the paper: yes for binary images, no for
            grey ones).
        pixel_major: order of the output: parameter-major (all pixels' first parameter, then
            the second, as the discretised logistic wants) or pixel by pixel (categorical logits).
        max_batch: without autograd (evaluation), images per pass: larger batches are cut into
            pieces of this size so that importance sampling's ``S x N`` decoder passes never
            hold more than ``max_batch`` images' feature maps at once.

    Raises:
        ValueError: an image side below 1 or a bad layer setting.
    """

    def __init__(self, image_shape, z1_dim: int, z2_dim: int, params_per_pixel: int = 1, *,
                 channels: int = 64, num_layers: int = 8, kernel_size: int = 3,
                 out_bias: bool = True, pixel_major: bool = False, max_batch: int = 256):
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        if len(self.image_shape) != 2 or min(self.image_shape) < 1:
            raise ValueError(f"image_shape must be (H, W), got {image_shape!r}")
        for name, v in (("channels", channels), ("num_layers", num_layers), ("max_batch", max_batch)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        d = self.image_shape[0] * self.image_shape[1]
        self.z1_map = GatedDense(z1_dim, d)
        self.z2_map = GatedDense(z2_dim, d)
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers += [MaskedConv2d("A" if i == 0 else "B", 3 if i == 0 else channels, channels,
                                    kernel_size, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.pixelcnn = nn.Sequential(*layers)
        self.out = nn.Conv2d(channels, params_per_pixel, 1, bias=out_bias)
        self.params_per_pixel = params_per_pixel
        self.pixel_major = pixel_major
        self.max_batch = max_batch
        # how far up (rows) and sideways (columns) the output at one pixel looks
        self.reach = num_layers * (kernel_size // 2)

    def _flat(self, x, z1, z2):
        shape = torch.broadcast_shapes(x.shape[:-1], z1.shape[:-1], z2.shape[:-1])
        return (shape, x.expand(shape + x.shape[-1:]).reshape(-1, x.shape[-1]),
                z1.expand(shape + z1.shape[-1:]).reshape(-1, z1.shape[-1]),
                z2.expand(shape + z2.shape[-1:]).reshape(-1, z2.shape[-1]))

    def _maps(self, z1, z2):
        """The latent variables as two image channels, ``(B, 2, H, W)``."""
        return torch.stack([self.z1_map(z1), self.z2_map(z2)], 1).reshape(-1, 2, *self.image_shape)

    def _net(self, x, z1, z2):
        h = torch.cat([x.reshape(-1, 1, *self.image_shape), self._maps(z1, z2)], 1)
        y = self.out(self.pixelcnn(h))  # B x P x H x W
        if self.pixel_major:
            y = y.permute(0, 2, 3, 1)
        return y.reshape(y.shape[0], -1)

    def forward(self, x, z1, z2):
        """Decoder outputs for every pixel given the image (teacher forcing).

        Args:
            x: ``(..., H * W)`` images scaled to ``[0, 1]``.
            z1, z2: ``(..., z1_dim)``, ``(..., z2_dim)``; leading shapes broadcast with ``x``'s.

        Returns:
            ``(..., H * W * params_per_pixel)``.
        """
        shape, x, z1, z2 = self._flat(x, z1, z2)
        n = x.shape[0]
        if torch.is_grad_enabled() or n <= self.max_batch:
            y = self._net(x, z1, z2)
        else:
            y = torch.cat([self._net(x[i:i + self.max_batch], z1[i:i + self.max_batch],
                                     z2[i:i + self.max_batch])
                           for i in range(0, n, self.max_batch)])
        return y.reshape(shape + (-1,))

    @torch.no_grad()
    def sample(self, z1, z2, pixel_likelihood, normalize=None):
        """Draw images autoregressively, one pixel position at a time for all images at once.

        Only the receptive field of pixel ``(r, c)`` is computed: rows ``r - reach .. r`` and
        columns ``c - reach .. c + reach`` of the input, shrinking by ``kernel_size // 2`` rows
        and columns per layer (each masked kernel's zero rows below the centre are skipped, the
        convolutions are "valid" ones, and the activations outside the image are set to zero as
        the full network's zero padding does) -- the same numbers as a full pass, about
        ``H W / (reach^3)`` times less work. Runs in evaluation mode (batch normalisation with
        its running statistics); the module's mode is restored afterwards.

        Args:
            z1, z2: ``(B, z1_dim)``, ``(B, z2_dim)``.
            pixel_likelihood: a :class:`~pyrovamp.likelihoods.Likelihood` of one pixel
                (``input_dim=1``) turning the ``params_per_pixel`` outputs into a distribution.
            normalize: maps a drawn value to the network's ``[0, 1]`` input (identity if None).

        Returns:
            ``(values, means)``, each ``(B, H * W)``: the drawn images (data space) and every
            pixel's conditional mean ``E[x_i | x_<i, z1, z2]`` given the pixels drawn before it.
        """
        z1 = z1.reshape(-1, z1.shape[-1])
        z2 = z2.reshape(-1, z2.shape[-1])
        b = max(z1.shape[0], z2.shape[0])
        H, W = self.image_shape
        layers = list(self.pixelcnn)
        convs = layers[0::3]
        h = convs[0].kernel_size[0] // 2  # rows above the centre = columns on each side
        p = self.reach
        was_training = self.training
        self.eval()
        try:
            maps = self._maps(z1.expand(b, -1), z2.expand(b, -1))
            # zero-padded input: p rows on top, p columns left and right (nothing below: the
            # masked kernels never look down)
            padded = maps.new_zeros(b, 3, H + p, W + 2 * p)
            padded[:, 1:, p:, p:p + W] = maps
            inside = maps.new_zeros(H + p, W + 2 * p)
            inside[p:, p:p + W] = 1
            kernels = [(m.weight * m.mask)[:, :, :h + 1, :] for m in convs]
            values = maps.new_zeros(b, H, W)
            means = torch.zeros_like(values)
            for r in range(H):
                for c in range(W):
                    a = padded[:, :, r:r + p + 1, c:c + 2 * p + 1]
                    for j, (w, bn, act) in enumerate(zip(kernels, layers[1::3], layers[2::3]), 1):
                        a = act(bn(torch.nn.functional.conv2d(a, w)))
                        a = a * inside[r + j * h:r + p + 1, c + j * h:c + 2 * p + 1 - j * h]
                    y = self.out(a)[:, :, -1, 0]  # B x P at pixel (r, c)
                    v = pixel_likelihood(y).sample()[:, 0]
                    values[:, r, c] = v
                    means[:, r, c] = pixel_likelihood.mean(y)[:, 0]
                    padded[:, 0, p + r, p + c] = normalize(v) if normalize is not None else v
        finally:
            self.train(was_training)
        return values.reshape(b, -1), means.reshape(b, -1)
