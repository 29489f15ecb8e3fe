"""LeNet-5 as trained today: ReLU, max-pooling, a 10-way linear head."""

from __future__ import annotations

import flax.linen as nn
import jax
from jax.typing import DTypeLike

from cnnjax.layers import AvgPool, Conv, ConvMaxPool
from cnnjax.models import register

# How each conv stage downsamples by 2 (the ``pool`` field of LeNet5).
POOLS = ("max", "avg", "strided_conv")
# The ``padding`` field: None is the classic mix, conv1 SAME and conv2 VALID.
PADDINGS = (None, "SAME", "VALID")


@register("lenet5")
class LeNet5(nn.Module):
    """Modern LeNet-5 for 28x28 single-channel images (MNIST); 61,706 params at 10 classes.

    =======  ===============================================  ===========  ======
    layer    operation                                        output       params
    =======  ===============================================  ===========  ======
    conv1    5x5 conv, 6 filters, SAME; 2x2 max-pool; ReLU    14 x 14 x 6     156
    conv2    5x5 conv, 16 filters, VALID; 2x2 max-pool; ReLU  5 x 5 x 16    2,416
    flatten                                                   400
    dense1   dense, ReLU                                      120          48,120
    dense2   dense, ReLU                                      84           10,164
    logits   dense                                            num_classes     850
    =======  ===============================================  ===========  ======

    Each conv and the 2x2 max-pool after it are one :class:`~cnnjax.layers.ConvMaxPool`
    (conv -> ReLU -> pool equals conv -> pool -> ReLU, and the fused op trains 1.8-3.4x
    faster on CPU); the parameters are those of a ``Conv`` named ``conv1`` / ``conv2``.

    Two ablation fields change the conv stages; their defaults give the network above.
    ``pool`` is how each stage downsamples by 2 after its conv and ReLU: ``"max"``
    (2x2 max-pool), ``"avg"`` (a 2x2 average pool, ``AvgPool`` named ``pool1`` /
    ``pool2``) or ``"strided_conv"`` (a learned 2x2 conv with stride 2, VALID, as wide
    as the stage, then ReLU, named ``down1`` / ``down2``: the pool's window with learned
    weights; ``6 * 6 * 4 + 6 = 150`` and ``16 * 16 * 4 + 16 = 1,040`` more params).
    ``padding`` is that of both 5x5 convs: ``None`` (conv1 SAME, conv2 VALID),
    ``"SAME"`` (28 -> 14 -> 7: a 7 x 7 x 16 flatten, dense1 94,200 params) or ``"VALID"``
    (28 -> 24 -> 12 -> 8 -> 4: 4 x 4 x 16, dense1 30,840 params).

    Attributes:
      num_classes: size of the output layer.
      pool: ``"max"``, ``"avg"`` or ``"strided_conv"``.
      padding: ``None``, ``"SAME"`` or ``"VALID"``.
      dtype: compute dtype (``jnp.bfloat16`` for mixed precision; ``None``: from the input).
        Parameters stay float32; logits come out in the compute dtype.

    ``x: (N, 28, 28, 1) -> logits (N, num_classes)``. Other input sizes work too but change
    the size of ``dense1``.
    """

    num_classes: int = 10
    pool: str = "max"
    padding: str | None = None
    dtype: DTypeLike | None = None

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ValueError(f"`pool` must be one of {POOLS}; got {self.pool!r}")
        if self.padding not in PADDINGS:
            raise ValueError(f"`padding` must be one of {PADDINGS}; got {self.padding!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or batch norm; the flag keeps every model's signature alike
        paddings = ("SAME", "VALID") if self.padding is None else (self.padding,) * 2
        for i, (features, padding) in enumerate(zip((6, 16), paddings, strict=True), start=1):
            x = self._conv_stage(i, features, padding, x)
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(120, dtype=self.dtype, name="dense1")(x))
        x = nn.relu(nn.Dense(84, dtype=self.dtype, name="dense2")(x))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="logits")(x)

    def _conv_stage(self, i: int, features: int, padding: str, x: jax.Array) -> jax.Array:
        """5x5 conv ``conv{i}``, ReLU and downsampling by 2: ``(N, H, W, C) -> (N, H', W',
        features)`` with ``H'`` half the conv's output size."""
        if self.pool == "max":
            conv = ConvMaxPool(features, (5, 5), padding=padding, dtype=self.dtype, name=f"conv{i}")
            return nn.relu(conv(x))
        x = nn.relu(Conv(features, (5, 5), padding=padding, dtype=self.dtype, name=f"conv{i}")(x))
        if self.pool == "avg":
            return AvgPool(2, name=f"pool{i}")(x)
        down = Conv(features, (2, 2), stride=2, padding="VALID", dtype=self.dtype, name=f"down{i}")
        return nn.relu(down(x))
