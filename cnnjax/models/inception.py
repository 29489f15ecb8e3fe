"""A small GoogLeNet (Szegedy et al., 2015): Inception modules for 28x28 and 32x32 images."""

from __future__ import annotations

import flax.linen as nn
import jax
from jax.typing import DTypeLike

from cnnjax.layers import Conv, GlobalAvgPool, Inception, MaxPool
from cnnjax.layers._checks import check_positive_int
from cnnjax.models import register

# GoogLeNet's modules 3a, 3b and 4a (Table 1 of the paper) at a quarter of the width:
# (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
INCEPTION_3A = (16, 24, 32, 4, 8, 8)  # 64 channels out
INCEPTION_3B = (32, 32, 48, 8, 24, 16)  # 120
INCEPTION_4A = (48, 24, 52, 4, 12, 16)  # 128

InceptionSpec = tuple[int, int, int, int, int, int]

# The ``block`` field of InceptionSmall: the modules, or a plain 3x3 conv in each place.
BLOCKS = ("inception", "plain")


@register("inception_small")
class InceptionSmall(nn.Module):
    """A GoogLeNet-style network: a conv stem, stages of Inception modules each after a
    3x3 max-pool with stride 2 (SAME), global average pooling, dropout, a dense layer.

    An Inception module (:class:`cnnjax.layers.Inception`) concatenates 1x1 ‖ 1x1→3x3 ‖
    1x1→5x5 ‖ 3x3 max-pool→1x1, every conv followed by ReLU. With the defaults on
    28x28x1 (60,114 params at 10 classes):

    ===========  ====================================  =============  =======
    layer        operation                             output         params
    ===========  ====================================  =============  =======
    stem         3x3 conv, 48 filters, SAME, ReLU      28 x 28 x 48       480
    pool1        3x3 max-pool, stride 2, SAME          14 x 14 x 48
    inception1a  Inception (16, 24, 32, 4, 8, 8)       14 x 14 x 64    10,300
    inception1b  Inception (32, 32, 48, 8, 24, 16)     14 x 14 x 120   24,416
    pool2        3x3 max-pool, stride 2, SAME          7 x 7 x 120
    inception2a  Inception (48, 24, 52, 4, 12, 16)     7 x 7 x 128     23,628
    gap          global average pool, dropout          128
    logits       dense                                 num_classes      1,290
    ===========  ====================================  =============  =======

    ``block="plain"`` is the ablation without 1x1 bottlenecks: each Inception module
    becomes one 3x3 conv (SAME) + ReLU with ``stem_features`` filters (``conv1a``,
    ``conv1b``, ``conv2a``), so the network is a plain stack of 3x3 convs of one width;
    with the defaults that is 63,322 params (+5.3 %): the stem 480, three 3x3 convs
    48 -> 48 of 20,784 each, the dense layer 490.

    Attributes:
      num_classes: size of the output layer.
      stem_features: filters of the 3x3 stem conv.
      stages: one tuple of Inception modules per stage; each module is (#1x1,
        #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
      block: ``"inception"`` (the modules) or ``"plain"`` (a 3x3 conv per module).
      dropout: drop probability before the dense layer (GoogLeNet: 0.4); active when
        ``train=True``, drawing from the ``'dropout'`` rng.
      dtype: compute dtype (``None``: from the input); parameters stay float32.

    ``x: (N, H, W, C) -> logits (N, num_classes)``.
    """

    num_classes: int = 10
    stem_features: int = 48
    stages: tuple[tuple[InceptionSpec, ...], ...] = (
        (INCEPTION_3A, INCEPTION_3B),
        (INCEPTION_4A,),
    )
    block: str = "inception"
    dropout: float = 0.4
    dtype: DTypeLike | None = None

    def __post_init__(self) -> None:
        check_positive_int("stem_features", self.stem_features)
        if self.block not in BLOCKS:
            raise ValueError(f"`block` must be one of {BLOCKS}; got {self.block!r}")
        if not self.stages or not all(self.stages):
            raise ValueError(f"`stages` must be non-empty tuples of modules; got {self.stages}")
        for module in (m for stage in self.stages for m in stage):
            if len(module) != 6:
                raise ValueError(
                    "each module in `stages` must be (#1x1, #3x3 reduce, #3x3, #5x5 reduce, "
                    f"#5x5, pool proj); got {module}"
                )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.relu(Conv(self.stem_features, (3, 3), dtype=self.dtype, name="stem")(x))
        for s, stage in enumerate(self.stages, start=1):
            x = MaxPool(3, stride=2, padding="SAME", name=f"pool{s}")(x)
            for m, module in enumerate(stage):
                x = self._block(module, f"{s}{chr(ord('a') + m)}", x)
        x = GlobalAvgPool(name="gap")(x)
        x = nn.Dropout(self.dropout, deterministic=not train, name="dropout")(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="logits")(x)

    def _block(self, module: InceptionSpec, suffix: str, x: jax.Array) -> jax.Array:
        """One module of ``stages``, ``(N, H, W, C) -> (N, H, W, C')``: the Inception
        module ``inception{suffix}`` or, with ``block="plain"``, the 3x3 conv
        ``conv{suffix}`` (``C' = stem_features``)."""
        if self.block == "inception":
            return Inception(*module, dtype=self.dtype, name=f"inception{suffix}")(x)
        conv = Conv(self.stem_features, (3, 3), dtype=self.dtype, name=f"conv{suffix}")
        return nn.relu(conv(x))
