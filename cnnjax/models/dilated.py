"""A dilated-convolution network (Yu & Koltun, 2016): growing dilation, no pooling."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
from jax.typing import DTypeLike

from cnnjax.layers import Conv, GlobalAvgPool
from cnnjax.layers._checks import check_positive_int
from cnnjax.models import register


def receptive_field(kernel_size: int, dilations: Sequence[int]) -> int:
    """Receptive field (pixels per side) of stacked stride-1 convs with these dilations.

    A ``k``-tap conv with dilation ``d`` spans ``d (k - 1) + 1`` pixels, so each layer
    widens the field by ``d (k - 1)``: ``1 + (k - 1) * sum(dilations)``.
    """
    check_positive_int("kernel_size", kernel_size)
    for d in dilations:
        check_positive_int("dilations", d)
    return 1 + (kernel_size - 1) * sum(dilations)


@register("dilated_cnn")
class DilatedCNN(nn.Module):
    """Stride-1 SAME convs with dilations 1, 2, 4, 8 (ReLU), global average pooling, dense.

    No pooling and no stride: every layer keeps the full resolution, and the receptive
    field grows exponentially with depth while the parameters grow linearly. With the
    defaults (3x3 kernels, 32 filters) on 28x28x1: 28,394 params at 10 classes and a
    receptive field of 1 + 2 (1 + 2 + 4 + 8) = 31 pixels, the whole (28-pixel) image.

    ======  ======================================  ============  ======
    layer   operation                               output        params
    ======  ======================================  ============  ======
    conv1   3x3 conv, 32 filters, dilation 1, ReLU  28 x 28 x 32     320
    conv2   3x3 conv, 32 filters, dilation 2, ReLU  28 x 28 x 32   9,248
    conv3   3x3 conv, 32 filters, dilation 4, ReLU  28 x 28 x 32   9,248
    conv4   3x3 conv, 32 filters, dilation 8, ReLU  28 x 28 x 32   9,248
    gap     global average pool                     32
    logits  dense                                   num_classes      330
    ======  ======================================  ============  ======

    Attributes:
      num_classes: size of the output layer.
      features: filters of every conv.
      dilations: dilation of each conv, in order.
      kernel_size: taps per spatial dim of every conv.
      dtype: compute dtype (``None``: from the input); parameters stay float32.

    ``x: (N, H, W, C) -> logits (N, num_classes)``.
    """

    num_classes: int = 10
    features: int = 32
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    kernel_size: int = 3
    dtype: DTypeLike | None = None

    def __post_init__(self) -> None:
        check_positive_int("features", self.features)
        if not self.dilations:
            raise ValueError("`dilations` must name at least one conv; got ()")
        receptive_field(self.kernel_size, self.dilations)  # validates both
        super().__post_init__()

    @property
    def receptive_field(self) -> int:
        """Receptive field of the last conv (hence of every logit), pixels per side."""
        return receptive_field(self.kernel_size, self.dilations)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or batch norm; the flag keeps every model's signature alike
        for i, dilation in enumerate(self.dilations, start=1):
            conv = Conv(
                self.features,
                self.kernel_size,
                dilation=dilation,
                dtype=self.dtype,
                name=f"conv{i}",
            )
            x = nn.relu(conv(x))
        x = GlobalAvgPool(name="gap")(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="logits")(x)
