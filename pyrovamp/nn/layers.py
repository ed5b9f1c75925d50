"""Layers of the encoders, decoders and priors (plain ``torch.nn``; every layer acts on the last
dimension, or on ``(..., C, H, W)`` images, and accepts any leading shape):

* :class:`MLP` -- the book's fully connected network (Tomczak, *Deep Generative Modeling*,
  ch. 4.3: two hidden layers of 256 units with LeakyReLU for Digits);
* :class:`GatedDense` -- the gated dense layer of the VampPrior paper (Tomczak & Welling 2018,
  sec. 4 / appendix): ``h = (x W + b) * sigmoid(x V + c)``; :class:`GatedConv2d` its convolution;
* :class:`MaskedConv2d` -- the masked convolution of PixelCNN (van den Oord et al. 2016);
* :func:`mark_fused` / :func:`parameter_chunks` -- which layers compute several of the paper's
  tensors as one (for :class:`pyrovamp.training.AdamNormGrad`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pyrovamp._blocks import block_rows
from pyrovamp._validate import check_int

__all__ = [
    "eval_mode",
    "GatedDense",
    "MLP",
    "dense_layer",
    "ARCHITECTURES",
    "GatedConv2d",
    "MaskedConv2d",
    "mark_fused",
    "parameter_chunks",
    "check_dropout",
]

ARCHITECTURES = ("mlp", "gated")
"""The dense layer choices: ``"mlp"`` (linear + LeakyReLU) or ``"gated"`` (:class:`GatedDense`)."""


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
    if (
        not isinstance(chunks, int)
        or isinstance(chunks, bool)
        or chunks < 1
        or (out is not None and out % chunks)
    ):
        raise ValueError(
            f"chunks must be a positive integer dividing the layer's {out} outputs, got {chunks!r}"
        )
    setattr(layer, "fused_chunks", chunks)  # a plain attribute, not a parameter or buffer
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
    (marked with :func:`mark_fused`: the paper's code has two layers). With autograd the gate
    is :func:`torch.nn.functional.glu` (one pass forward and one backward); without it
    (evaluation) the bias and the gate are applied in place, block by block of rows in the
    cache (:func:`pyrovamp._blocks.block_rows`), after the matrix product without bias (a
    ``linear`` that is not a plain ``nn.Linear``, or has forward hooks, runs its own forward).
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.out_features = out_features
        self.linear = mark_fused(nn.Linear(in_features, 2 * out_features), 2)

    def forward(self, x):
        if torch.is_grad_enabled():
            return F.glu(self.linear(x), dim=-1)
        lin = self.linear
        if type(lin) is nn.Linear and not (lin._forward_hooks or lin._forward_pre_hooks):
            y, bias = F.linear(x, lin.weight), lin.bias  # the bias below, in cache
        else:  # a replaced or hooked layer (an adapter, a parametrisation): its own forward
            y, bias = lin(x).contiguous(), None
        flat = y.view(-1, y.shape[-1])
        step = block_rows(flat.shape[0], flat.shape[1], flat.device)
        for r in range(0, flat.shape[0], step):  # in cache: one read of the product from memory
            block = flat[r : r + step]
            if bias is not None:
                block.add_(bias)
            h, g = block.chunk(2, dim=-1)
            h.mul_(g.sigmoid_())
        return y[..., : self.out_features]


def dense_layer(in_features: int, out_features: int, architecture: str = "mlp") -> nn.Module:
    """One hidden layer: ``GatedDense`` (``"gated"``) or ``Linear`` + LeakyReLU (``"mlp"``).

    Raises:
        ValueError: unknown ``architecture``.
    """
    if architecture == "gated":
        return GatedDense(in_features, out_features)
    if architecture == "mlp":
        return nn.Sequential(nn.Linear(in_features, out_features), nn.LeakyReLU())
    raise ValueError(
        f"unknown architecture {architecture!r}; expected one of {', '.join(ARCHITECTURES)}"
    )


def check_dropout(dropout) -> None:
    """Raises ``ValueError`` unless ``0 <= dropout < 1``."""
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, (int, float))
        or not 0.0 <= dropout < 1.0
    ):
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

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int],
        out_dim: int,
        architecture: str = "mlp",
        dropout: float = 0.0,
    ):
        check_dropout(dropout)
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


class GatedConv2d(nn.Module):
    """Gated convolution ``h = conv_h(x) * sigmoid(conv_g(x))`` (VampPrior paper's convHVAE);
    both convolutions in one ``nn.Conv2d`` of ``2 * out_channels``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = mark_fused(
            nn.Conv2d(in_channels, 2 * out_channels, kernel_size, stride, padding), 2
        )

    def forward(self, x):
        h, g = self.conv(x).chunk(2, dim=1)
        return h * torch.sigmoid(g)


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

    def __init__(
        self,
        mask_type: str,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int | None = None,
        bias: bool = True,
    ):
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        kernel_size = check_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            1,
            kernel_size // 2 if padding is None else padding,
            bias=bias,
        )
        self.mask_type = mask_type
        k = kernel_size
        mask = torch.ones(k, k)
        mask[k // 2, k // 2 + (mask_type == "B") :] = 0
        mask[k // 2 + 1 :] = 0
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):
        """``(B, in_channels, H, W) -> (B, out_channels, H, W)`` with the masked kernel."""
        return self._conv_forward(x, self.weight * self.mask, self.bias)

    def extra_repr(self):
        return f"mask_type={self.mask_type!r}, " + super().extra_repr()


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """``module`` in evaluation mode inside (batch norm on its running statistics, no
    dropout); on exit, normal or by an exception, every submodule back in its own previous mode
    (a part the user had put in eval mode stays there)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
