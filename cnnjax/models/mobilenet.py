"""A small MobileNet (Howard et al., 2017): depthwise-separable blocks, width multiplier.

``standard_convs=True`` gives the same network with each depthwise-separable block
replaced by one standard 3x3 conv (the paper's "Conv MobileNet", Table 4), for comparing
parameters and FLOPs. A block from ``C_in`` to ``C_out`` channels at output size ``H x W``
costs ``H W C_in (9 + C_out)`` multiply-adds separable and ``H W 9 C_in C_out`` standard:
a ratio of ``1 / C_out + 1 / 9``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
from jax.typing import DTypeLike

from cnnjax.layers import Conv, DepthwiseConv, GlobalAvgPool
from cnnjax.models import register

# MobileNet's first blocks (Table 1): (output channels, stride) at width multiplier 1.
_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1))


class SeparableBlock(nn.Module):
    """3x3 depthwise conv (stride ``stride``) -> BN -> ReLU -> 1x1 conv -> BN -> ReLU;
    or, with ``standard=True``, 3x3 conv (stride ``stride``) -> BN -> ReLU.

    Convolutions have no bias (batch norm's shift takes its place).

    ``x: (N, H, W, C_in) -> (N, ceil(H / stride), ceil(W / stride), features)``.
    """

    features: int
    stride: int = 1
    standard: bool = False
    dtype: DTypeLike | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.standard:
            conv = Conv(
                self.features, 3, stride=self.stride, use_bias=False, dtype=self.dtype, name="conv"
            )
            x = conv(x)
            return nn.relu(self._norm("bn", x, train))
        depthwise = DepthwiseConv(
            3, stride=self.stride, use_bias=False, dtype=self.dtype, name="depthwise"
        )
        x = depthwise(x)
        x = nn.relu(self._norm("depthwise_bn", x, train))
        x = Conv(self.features, 1, use_bias=False, dtype=self.dtype, name="pointwise")(x)
        return nn.relu(self._norm("pointwise_bn", x, train))

    def _norm(self, name: str, x: jax.Array, train: bool) -> jax.Array:
        return nn.BatchNorm(use_running_average=not train, dtype=self.dtype, name=name)(x)


def scale_width(channels: int, alpha: float) -> int:
    """``channels`` thinned by the width multiplier ``alpha``: ``round(alpha * channels)``,
    at least 1."""
    return max(1, round(alpha * channels))


@register("mobilenet_small")
class MobileNetSmall(nn.Module):
    """MobileNet v1's stem and first five blocks, global average pooling, a dense layer.

    Every conv is followed by batch norm and ReLU. With ``alpha=1`` on 28x28x1 (136,202
    params at 10 classes; 1,128,938 with ``standard_convs``):

    =======  =========================================  ============  =========  ========
    layer    operation                                  output        separable  standard
    =======  =========================================  ============  =========  ========
    stem     3x3 conv, 32 filters, BN, ReLU             28 x 28 x 32        352       352
    block1   block to 64, stride 1                      28 x 28 x 64      2,528    18,560
    block2   block to 128, stride 2                     14 x 14 x 128     9,152    73,984
    block3   block to 128, stride 1                     14 x 14 x 128    18,048   147,712
    block4   block to 256, stride 2                     7 x 7 x 256      34,688   295,424
    block5   block to 256, stride 1                     7 x 7 x 256      68,864   590,336
    gap      global average pool                        256
    logits   dense                                      num_classes       2,570     2,570
    =======  =========================================  ============  =========  ========

    Multiply-adds per 28x28 image (convs and dense; FLOPs are twice these): 12.2 M
    separable, 101.4 M standard, 8.3 times more.

    Attributes:
      num_classes: size of the output layer.
      alpha: width multiplier applied to every conv's channels (:func:`scale_width`).
      standard_convs: replace each depthwise-separable block by a standard 3x3 conv.
      stem_features: channels of the stem conv before ``alpha``.
      blocks: ``(channels before alpha, stride)`` of each block.
      dtype: compute dtype (``None``: from the input); parameters stay float32.

    Uses batch norm: apply with ``train=True`` and ``mutable=["batch_stats"]`` to train.

    ``x: (N, H, W, C) -> logits (N, num_classes)``.
    """

    num_classes: int = 10
    alpha: float = 1.0
    standard_convs: bool = False
    stem_features: int = 32
    blocks: tuple[tuple[int, int], ...] = _BLOCKS
    dtype: DTypeLike | None = None

    def __post_init__(self) -> None:
        if not self.alpha > 0:
            raise ValueError(f"`alpha` must be positive; got {self.alpha!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        stem_features = scale_width(self.stem_features, self.alpha)
        x = Conv(stem_features, 3, use_bias=False, dtype=self.dtype, name="stem")(x)
        x = nn.BatchNorm(use_running_average=not train, dtype=self.dtype, name="stem_bn")(x)
        x = nn.relu(x)
        for i, (features, stride) in enumerate(self.blocks, start=1):
            block = SeparableBlock(
                scale_width(features, self.alpha),
                stride,
                standard=self.standard_convs,
                dtype=self.dtype,
                name=f"block{i}",
            )
            x = block(x, train)
        x = GlobalAvgPool(name="gap")(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="logits")(x)
