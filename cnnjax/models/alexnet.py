"""An AlexNet (Krizhevsky, Sutskever & Hinton, 2012) for 32x32 images, with its two groups."""

from __future__ import annotations

import flax.linen as nn
import jax
from jax.typing import DTypeLike

from cnnjax.layers import Conv, MaxPool
from cnnjax.layers._checks import check_positive_int
from cnnjax.models import register

# Convolutions whose inputs the original split between its two GPUs: conv2, conv4 and
# conv5 saw only the maps of their own GPU; conv3 and the dense layers saw both. (conv1
# was split too, but over the same input image, which is the same as not grouping it.)
_GROUPED = ("conv2", "conv4", "conv5")
_KERNELS = (5, 5, 3, 3, 3)


@register("alexnet_small")
class AlexNetSmall(nn.Module):
    """AlexNet's layout at half its conv widths, for 32x32 inputs: 5 conv + 3 dense.

    The 224x224 original's 11x11/4 first conv becomes 5x5/1; pooling is AlexNet's
    overlapping 3x3 max-pool with stride 2 (SAME, so 32 -> 16 -> 8 -> 4). Local response
    normalisation is left out. With the defaults on 32x32x1, ``groups=2`` (1,893,226
    params at 10 classes):

    =======  =============================================  ============  =========
    layer    operation                                      output        params
    =======  =============================================  ============  =========
    conv1    5x5 conv, 48 filters, SAME, ReLU               32 x 32 x 48      1,248
    pool1    3x3 max-pool, stride 2, SAME                   16 x 16 x 48
    conv2    5x5 conv, 128 filters, ``groups``, ReLU        16 x 16 x 128    76,928
    pool2    3x3 max-pool, stride 2, SAME                   8 x 8 x 128
    conv3    3x3 conv, 192 filters, ReLU                    8 x 8 x 192     221,376
    conv4    3x3 conv, 192 filters, ``groups``, ReLU        8 x 8 x 192     166,080
    conv5    3x3 conv, 128 filters, ``groups``, ReLU        8 x 8 x 128     110,720
    pool5    3x3 max-pool, stride 2, SAME                   4 x 4 x 128
    fc6      dense 512, ReLU, dropout                       512           1,049,088
    fc7      dense 512, ReLU, dropout                       512             262,656
    fc8      dense                                          num_classes       5,130
    =======  =============================================  ============  =========

    Attributes:
      num_classes: size of the output layer.
      groups: 2 for the original's two-GPU grouping of conv2, conv4 and conv5 (half
        their weights); 1 for full connections. Must divide their widths.
      widths: filters of conv1..conv5 (AlexNet's 96, 256, 384, 384, 256, halved).
      hidden: width of fc6 and fc7.
      dropout: drop probability after fc6 and fc7; active when ``train=True``, drawing
        from the ``'dropout'`` rng.
      dtype: compute dtype (``None``: from the input); parameters stay float32.

    ``x: (N, H, W, C) -> logits (N, num_classes)``, 32x32 by design.
    """

    num_classes: int = 10
    groups: int = 2
    widths: tuple[int, int, int, int, int] = (48, 128, 192, 192, 128)
    hidden: int = 512
    dropout: float = 0.5
    dtype: DTypeLike | None = None

    def __post_init__(self) -> None:
        check_positive_int("groups", self.groups)
        check_positive_int("hidden", self.hidden)
        if len(self.widths) != len(_KERNELS):
            raise ValueError(f"`widths` must give 5 conv widths; got {self.widths}")
        for width in self.widths:
            check_positive_int("widths", width)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i, (features, k) in enumerate(zip(self.widths, _KERNELS, strict=True), start=1):
            name = f"conv{i}"
            groups = self.groups if name in _GROUPED else 1
            x = nn.relu(Conv(features, k, groups=groups, dtype=self.dtype, name=name)(x))
            if i in (1, 2, 5):
                x = MaxPool(3, stride=2, padding="SAME", name=f"pool{i}")(x)
        x = x.reshape(x.shape[0], -1)
        for name in ("fc6", "fc7"):
            x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name=name)(x))
            x = nn.Dropout(self.dropout, deterministic=not train, name=f"dropout_{name}")(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc8")(x)
