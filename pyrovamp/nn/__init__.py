"""Networks (plain ``torch.nn``): gated dense layers, encoders, decoders, masked convolutions,
the PixelCNN decoder and initialisation; the contract of your own networks and
:class:`Network`, the base class that makes them saveable (:mod:`pyrovamp.nn.adapters`)."""

from pyrovamp.nn.adapters import BatchedNetwork, Network, check_network, flatten_event
from pyrovamp.nn.decoders import ConvDecoder, PixelCNNDecoder
from pyrovamp.nn.encoders import (
    ConditionalGaussian,
    ConvConditionalEncoder,
    ConvFeatures,
    ConvGaussianEncoder,
    GaussianEncoder,
    JointNet,
)
from pyrovamp.nn.init import he_init_
from pyrovamp.nn.layers import (
    ARCHITECTURES,
    MLP,
    GatedConv2d,
    GatedDense,
    MaskedConv2d,
    check_dropout,
    dense_layer,
    eval_mode,
    mark_fused,
    parameter_chunks,
)

__all__ = [
    "Network",
    "BatchedNetwork",
    "check_network",
    "flatten_event",
    "eval_mode",
    "GatedDense",
    "MLP",
    "GaussianEncoder",
    "JointNet",
    "ConditionalGaussian",
    "dense_layer",
    "ARCHITECTURES",
    "GatedConv2d",
    "ConvFeatures",
    "ConvGaussianEncoder",
    "ConvConditionalEncoder",
    "ConvDecoder",
    "MaskedConv2d",
    "PixelCNNDecoder",
    "he_init_",
    "mark_fused",
    "parameter_chunks",
    "check_dropout",
]
