"""Convolutional decoders: the convHVAE's :class:`ConvDecoder` and the PixelHVAE's
:class:`PixelCNNDecoder` (masked convolutions, van den Oord et al. 2016)."""

from __future__ import annotations

import torch
from torch import nn

from pyrovamp._validate import check_int
from pyrovamp.nn.layers import GatedConv2d, GatedDense, MaskedConv2d, eval_mode

__all__ = ["ConvDecoder", "PixelCNNDecoder"]


class ConvDecoder(nn.Module):
    """p(x|z1, z2) of the convHVAE: gated dense maps of ``z1`` and ``z2`` to image size, a joint
    gated dense layer, four gated 3x3 convolutions of 64 channels and a 1x1 convolution to
    ``params_per_pixel`` outputs per pixel. Returns ``(..., H * W * params_per_pixel)``:
    parameter-major (all pixels' first parameter, then the second, as the discretised logistic
    wants) or, with ``pixel_major=True``, pixel by pixel (the categorical likelihood's logits)."""

    def __init__(
        self,
        image_shape,
        z1_dim: int,
        z2_dim: int,
        params_per_pixel: int = 1,
        channels: int = 64,
        pixel_major: bool = False,
    ):
        super().__init__()
        self.image_shape = tuple(image_shape)
        d = self.image_shape[0] * self.image_shape[1]
        self.z1_layer = GatedDense(z1_dim, d)
        self.z2_layer = GatedDense(z2_dim, d)
        self.joint = GatedDense(2 * d, d)
        self.convs = nn.Sequential(
            GatedConv2d(1, channels, 3, 1, 1),
            *[GatedConv2d(channels, channels, 3, 1, 1) for _ in range(3)],
        )
        self.out = nn.Conv2d(channels, params_per_pixel, 1)
        self.params_per_pixel = params_per_pixel
        self.pixel_major = pixel_major

    def forward(self, z1, z2):
        h1, h2 = self.z1_layer(z1), self.z2_layer(z2)
        shape = torch.broadcast_shapes(h1.shape[:-1], h2.shape[:-1])
        h = self.joint(
            torch.cat([h1.expand(shape + h1.shape[-1:]), h2.expand(shape + h2.shape[-1:])], -1)
        )
        y = self.out(self.convs(h.reshape(-1, 1, *self.image_shape)))  # B x P x H x W
        if self.pixel_major:
            y = y.permute(0, 2, 3, 1)
        return y.reshape(shape + (-1,))


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
        z1_dim: size of the latent variable ``z1``.
        z2_dim: size of the latent variable ``z2``.
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
        ArgumentTypeError: a layer setting that is not an integer.
        ValueError: an image side below 1 or a bad layer setting.
    """

    def __init__(
        self,
        image_shape,
        z1_dim: int,
        z2_dim: int,
        params_per_pixel: int = 1,
        *,
        channels: int = 64,
        num_layers: int = 8,
        kernel_size: int = 3,
        out_bias: bool = True,
        pixel_major: bool = False,
        max_batch: int = 256,
    ):
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        if len(self.image_shape) != 2 or min(self.image_shape) < 1:
            raise ValueError(f"image_shape must be (H, W), got {image_shape!r}")
        channels = check_int("channels", channels)
        num_layers = check_int("num_layers", num_layers)
        max_batch = check_int("max_batch", max_batch)
        d = self.image_shape[0] * self.image_shape[1]
        self.z1_map = GatedDense(z1_dim, d)
        self.z2_map = GatedDense(z2_dim, d)
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers += [
                MaskedConv2d(
                    "A" if i == 0 else "B",
                    3 if i == 0 else channels,
                    channels,
                    kernel_size,
                    bias=False,
                ),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
        self.pixelcnn = nn.Sequential(*layers)
        self.out = nn.Conv2d(channels, params_per_pixel, 1, bias=out_bias)
        self.params_per_pixel = params_per_pixel
        self.pixel_major = pixel_major
        self.max_batch = max_batch
        # how far up (rows) and sideways (columns) the output at one pixel looks
        self.reach = num_layers * (kernel_size // 2)

    def _flat(self, x, z1, z2):
        shape = torch.broadcast_shapes(x.shape[:-1], z1.shape[:-1], z2.shape[:-1])
        return (
            shape,
            x.expand(shape + x.shape[-1:]).reshape(-1, x.shape[-1]),
            z1.expand(shape + z1.shape[-1:]).reshape(-1, z1.shape[-1]),
            z2.expand(shape + z2.shape[-1:]).reshape(-1, z2.shape[-1]),
        )

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
            z1: ``(..., z1_dim)``; leading shapes broadcast with ``x``'s.
            z2: ``(..., z2_dim)``; leading shapes broadcast with ``x``'s.

        Returns:
            ``(..., H * W * params_per_pixel)``.
        """
        shape, x, z1, z2 = self._flat(x, z1, z2)
        n = x.shape[0]
        if torch.is_grad_enabled() or n <= self.max_batch:
            y = self._net(x, z1, z2)
        else:
            y = torch.cat(
                [
                    self._net(
                        x[i : i + self.max_batch],
                        z1[i : i + self.max_batch],
                        z2[i : i + self.max_batch],
                    )
                    for i in range(0, n, self.max_batch)
                ]
            )
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
            z1: ``(B, z1_dim)``.
            z2: ``(B, z2_dim)``.
            pixel_likelihood: a :class:`~pyrovamp.distributions.Likelihood` of one pixel
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
        with eval_mode(self):
            maps = self._maps(z1.expand(b, -1), z2.expand(b, -1))
            # zero-padded input: p rows on top, p columns left and right (nothing below: the
            # masked kernels never look down)
            padded = maps.new_zeros(b, 3, H + p, W + 2 * p)
            padded[:, 1:, p:, p : p + W] = maps
            inside = maps.new_zeros(H + p, W + 2 * p)
            inside[p:, p : p + W] = 1
            kernels = [(m.weight * m.mask)[:, :, : h + 1, :] for m in convs]
            values = maps.new_zeros(b, H, W)
            means = torch.zeros_like(values)
            for r in range(H):
                for c in range(W):
                    a = padded[:, :, r : r + p + 1, c : c + 2 * p + 1]
                    for j, (w, bn, act) in enumerate(
                        zip(kernels, layers[1::3], layers[2::3], strict=False), 1
                    ):
                        a = act(bn(torch.nn.functional.conv2d(a, w)))
                        a = a * inside[r + j * h : r + p + 1, c + j * h : c + 2 * p + 1 - j * h]
                    y = self.out(a)[:, :, -1, 0]  # B x P at pixel (r, c)
                    v = pixel_likelihood(y).sample()[:, 0]
                    values[:, r, c] = v
                    means[:, r, c] = pixel_likelihood.mean(y)[:, 0]
                    padded[:, 0, p + r, p + c] = normalize(v) if normalize is not None else v
        return values.reshape(b, -1), means.reshape(b, -1)
