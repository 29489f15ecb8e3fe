"""Flax (``flax.linen``) layers over :mod:`cnnjax.ops`.

Each layer creates its parameters and calls the op of the same name: the maths lives in
the ops only. Inputs are channels-last, ``(N, *spatial, C)``.
"""

from cnnjax.layers.blocks import Inception
from cnnjax.layers.conv import (
    Conv,
    ConvMaxPool,
    ConvTranspose,
    DepthwiseConv,
    SeparableConv,
    SpatiallySeparableConv,
)
from cnnjax.layers.deformable import DeformableConv
from cnnjax.layers.pooling import (
    AvgPool,
    GlobalAvgPool,
    GlobalMaxPool,
    MaxPool,
    MaxUnpool,
    Pool,
)

__all__ = [
    "AvgPool",
    "Conv",
    "ConvMaxPool",
    "ConvTranspose",
    "DeformableConv",
    "DepthwiseConv",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "Inception",
    "MaxPool",
    "MaxUnpool",
    "Pool",
    "SeparableConv",
    "SpatiallySeparableConv",
]
