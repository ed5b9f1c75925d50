"""Networks (plain ``torch.nn``): gated dense layers, encoders, decoders, masked convolutions,
the PixelCNN decoder and initialisation."""

from pyrovamp.nn.layers import (ARCHITECTURES, he_init_, mark_fused, parameter_chunks, GatedDense, dense_layer, MLP, GaussianEncoder, JointNet, ConditionalGaussian, GatedConv2d, ConvFeatures, ConvGaussianEncoder, ConvConditionalEncoder, ConvDecoder, MaskedConv2d, PixelCNNDecoder)

__all__ = ['ARCHITECTURES', 'he_init_', 'mark_fused', 'parameter_chunks', 'GatedDense', 'dense_layer', 'MLP', 'GaussianEncoder', 'JointNet', 'ConditionalGaussian', 'GatedConv2d', 'ConvFeatures', 'ConvGaussianEncoder', 'ConvConditionalEncoder', 'ConvDecoder', 'MaskedConv2d', 'PixelCNNDecoder']
