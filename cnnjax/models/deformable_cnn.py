"""A deformable-conv network (Dai et al., 2017; Zhu et al., 2019) and its plain-conv twin."""

from __future__ import annotations

from jax.typing import DTypeLike

from cnnjax.models import register
from cnnjax.models.slot_cnn import SlotCNN


@register("deformable_cnn")
def deformable_cnn(
    num_classes: int = 10,
    features: tuple[int, ...] = (16, 32),
    deformable_features: tuple[int, ...] = (16, 16),
    deformable: bool = True,
    kernel_size: int = 3,
    offset_groups: int = 1,
    dtype: DTypeLike | None = None,
) -> SlotCNN:
    """Plain conv stages with 2x2 max-pooling, then deformable v2 convs at the pooled
    resolution, global average pooling, dense: :class:`~cnnjax.models.slot_cnn.SlotCNN`
    with ``conv="deformable"``, or ``conv="standard"`` with ``deformable=False``.

    Each entry of ``features`` is a SAME conv + ReLU + 2x2 max-pool; each entry of
    ``deformable_features`` is a SAME :class:`~cnnjax.layers.DeformableConv` (with mask)
    + ReLU, or a plain :class:`~cnnjax.layers.Conv` with ``deformable=False``: the plain
    twin, identical in everything else, including the names and shapes of the main conv
    parameters. The deformable layers sit last, on the 7x7 maps, where one tap stands for a
    4x4 block of the input, so offsets of a pixel or two can follow a rotated or rescaled
    stroke, and where their sampling, the costly part, visits the fewest positions.

    With the defaults (3x3 kernels) on 28x28x1: 23,632 params at 10 classes, of which
    11,718 are the two offset/mask convs; the plain twin has 11,914.

    ======  =======================================  ============  =====  ==========
    layer   operation                                output        plain  deformable
    ======  =======================================  ============  =====  ==========
    conv1   3x3 conv, 16 filters, ReLU               28 x 28 x 16    160         160
    pool1   2x2 max-pool                             14 x 14 x 16
    conv2   3x3 conv, 32 filters, ReLU               14 x 14 x 32  4,640       4,640
    pool2   2x2 max-pool                             7 x 7 x 32
    conv3   3x3 (deformable) conv, 16 filters, ReLU  7 x 7 x 16    4,624  12,427 (a)
    conv4   3x3 (deformable) conv, 16 filters, ReLU  7 x 7 x 16    2,320   6,235 (a)
    gap     global average pool                      16
    logits  dense                                    num_classes     170         170
    ======  =======================================  ============  =====  ==========

    (a) the main kernel and bias plus ``offset_conv``: a 3x3 conv from the layer's ``C_in``
    channels to 27 = 9 taps x (dy, dx, mask logit), ``9 C_in 27 + 27``: 7,803 for conv3
    (32 channels in), 3,915 for conv4 (16 in).

    The deformable stage is narrow because on a CPU its sampling, not its multiply-adds,
    sets the cost: a 3x3 deformable layer on 128 x 7 x 7 x 32 trains about ten times
    slower than the plain conv it replaces.

    Args:
      num_classes: size of the output layer.
      features: filters of each plain conv stage (each followed by a 2x2 max-pool).
      deformable_features: filters of each conv of the last stage, at least one.
      deformable: deformable v2 convs in the last stage; ``False`` gives the plain twin.
      kernel_size: taps per spatial dim of every conv.
      offset_groups: offset groups of each deformable conv (channels sharing offsets).
      dtype: compute dtype (``None``: from the input); parameters stay float32.

    ``x: (N, H, W, C) -> logits (N, num_classes)``.
    """
    if not deformable_features:
        raise ValueError("`deformable_features` must name at least one conv; got ()")
    return SlotCNN(
        num_classes=num_classes,
        conv="deformable" if deformable else "standard",
        features=features,
        slot_features=deformable_features,
        kernel_size=kernel_size,
        offset_groups=offset_groups,
        dtype=dtype,
    )
