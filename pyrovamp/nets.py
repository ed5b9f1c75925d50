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
           "dense_layer", "ARCHITECTURES"]

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
        return h * torch.sigmoid(g)


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
