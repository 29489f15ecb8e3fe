"""A small CNN with a choice of convolution in a fixed slot: the network behind the
"which conv" ablation, and behind ``deformable_cnn``."""

from __future__ import annotations

import flax.linen as nn
import jax
from jax.typing import DTypeLike

from cnnjax.layers import (
    Conv,
    ConvMaxPool,
    DeformableConv,
    GlobalAvgPool,
    SeparableConv,
    SpatiallySeparableConv,
)
from cnnjax.layers._checks import check_positive_int
from cnnjax.models import register

# The ``conv`` field of SlotCNN: the layer in each slot.
SLOT_CONVS = ("standard", "depthwise_separable", "spatially_separable", "dilated", "deformable")


@register("slot_cnn")
class SlotCNN(nn.Module):
    """Plain conv stages with 2x2 max-pooling, then the slot convs at the pooled resolution,
    global average pooling, dense; ``conv`` picks the layer in the slots.

    Each entry of ``features`` is a SAME 3x3 conv + 2x2 max-pool, as one
    :class:`~cnnjax.layers.ConvMaxPool`, + ReLU (the same as ReLU before the pool: the
    max commutes with it); each entry of ``slot_features`` is a SAME ``kernel_size`` conv
    of the kind ``conv`` + ReLU, named ``conv3``, ``conv4``, ...:

    ======================  =====================================================  =======
    ``conv``                layer (C_in -> C_out, k = ``kernel_size``)             params
    ======================  =====================================================  =======
    standard                ``Conv``                                               (a)
    depthwise_separable     ``SeparableConv``: k x k depthwise, then 1x1           (b)
    spatially_separable     ``SpatiallySeparableConv``: k x 1 to C_out, then 1 x k (c)
    dilated                 ``Conv`` with dilation 2 (a (2k-1)-wide window)        (a)
    deformable              ``DeformableConv`` v2 (offsets and mask)               (d)
    ======================  =====================================================  =======

    (a) ``k² C_in C_out + C_out``; (b) ``k² C_in + C_in C_out + C_out``; (c) ``k C_in
    C_out + k C_out² + C_out``; (d) (a) plus its offset conv ``k² C_in 3k² + 3k²``.

    With the defaults on 28x28x1 (10 classes):

    ======  ============================  ============  =====================
    layer   operation                     output        params
    ======  ============================  ============  =====================
    conv1   3x3 conv, 16 filters, ReLU    28 x 28 x 16  160
    pool1   2x2 max-pool                  14 x 14 x 16
    conv2   3x3 conv, 32 filters, ReLU    14 x 14 x 32  4,640
    pool2   2x2 max-pool                  7 x 7 x 32
    conv3   slot conv, 16 filters, ReLU   7 x 7 x 16    4,624 / 816 / 2,320 /
                                                        4,624 / 12,427
    conv4   slot conv, 16 filters, ReLU   7 x 7 x 16    2,320 / 416 / 1,552 /
                                                        2,320 / 6,235
    gap     global average pool           16
    logits  dense                         num_classes   170
    ======  ============================  ============  =====================

    (the slot params in the order of the first table): 11,914 params in all with standard
    or dilated convs, 6,202 depthwise-separable, 8,842 spatially separable, 23,632
    deformable. The slots sit on the 7x7 maps, where one tap stands for a 4x4 block of the
    input, so a dilated window (5x5 taps) or a deformed one can reach across most of the
    digit, and where the deformable sampling, the costly part on a CPU, visits the fewest
    positions.

    Attributes:
      num_classes: size of the output layer.
      conv: the slot layer, one of ``SLOT_CONVS``.
      features: filters of each plain conv stage (each followed by a 2x2 max-pool).
      slot_features: filters of each slot conv, at least one.
      kernel_size: taps per spatial dim of every conv.
      offset_groups: offset groups of each deformable conv (channels sharing offsets).
      dtype: compute dtype (``None``: from the input); parameters stay float32.

    ``x: (N, H, W, C) -> logits (N, num_classes)``.
    """

    num_classes: int = 10
    conv: str = "standard"
    features: tuple[int, ...] = (16, 32)
    slot_features: tuple[int, ...] = (16, 16)
    kernel_size: int = 3
    offset_groups: int = 1
    dtype: DTypeLike | None = None

    def __post_init__(self) -> None:
        check_positive_int("num_classes", self.num_classes)
        if self.conv not in SLOT_CONVS:
            raise ValueError(f"`conv` must be one of {SLOT_CONVS}; got {self.conv!r}")
        for f in self.features:
            check_positive_int("features", f)
        if not self.slot_features:
            raise ValueError("`slot_features` must name at least one conv; got ()")
        for f in self.slot_features:
            check_positive_int("slot_features", f)
        check_positive_int("kernel_size", self.kernel_size)
        check_positive_int("offset_groups", self.offset_groups)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or batch norm; the flag keeps every model's signature alike
        for i, features in enumerate(self.features, start=1):
            conv = ConvMaxPool(features, self.kernel_size, dtype=self.dtype, name=f"conv{i}")
            x = nn.relu(conv(x))
        for i, features in enumerate(self.slot_features, start=len(self.features) + 1):
            x = nn.relu(self._slot_conv(features, name=f"conv{i}")(x))
        x = GlobalAvgPool(name="gap")(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="logits")(x)

    def _slot_conv(self, features: int, name: str) -> nn.Module:
        k, dtype = self.kernel_size, self.dtype
        if self.conv == "depthwise_separable":
            return SeparableConv(features, k, dtype=dtype, name=name)
        if self.conv == "spatially_separable":
            return SpatiallySeparableConv(features, (k, k), dtype=dtype, name=name)
        if self.conv == "deformable":
            return DeformableConv(
                features, k, offset_groups=self.offset_groups, dtype=dtype, name=name
            )
        dilation = 2 if self.conv == "dilated" else 1
        return Conv(features, k, dilation=dilation, dtype=dtype, name=name)
