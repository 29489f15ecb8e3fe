"""Network in Network (Lin, Chen & Yan, 2014): mlpconv blocks and global average pooling."""

from __future__ import annotations

import flax.linen as nn
import jax
from jax.typing import DTypeLike

from cnnjax.layers import Conv, GlobalAvgPool, MaxPool
from cnnjax.layers._checks import check_positive_int
from cnnjax.models import register

# The ``head`` field of NiN: global average pooling, or flatten + dense.
HEADS = ("gap", "dense")


class MLPConv(nn.Module):
    """An mlpconv block: a ``kernel_size`` conv then two 1x1 convs (a small MLP slid over
    every position), each SAME, stride 1 and followed by ReLU, except the last when
    ``relu_last=False``.

    ``x: (N, H, W, C_in) -> (N, H, W, out_features)``.
    """

    kernel_size: int
    features: int
    out_features: int
    relu_last: bool = True
    dtype: DTypeLike | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(Conv(self.features, self.kernel_size, dtype=self.dtype, name="conv")(x))
        x = nn.relu(Conv(self.features, 1, dtype=self.dtype, name="mlp1")(x))
        x = Conv(self.out_features, 1, dtype=self.dtype, name="mlp2")(x)
        return nn.relu(x) if self.relu_last else x


@register("nin")
class NiN(nn.Module):
    """Network in Network: mlpconv blocks, no dense layer, global average pooling.

    Block ``i`` is ``MLPConv(kernel_size_i, features_i)``; between blocks, a 3x3 max-pool
    with stride 2 (SAME) and dropout, as in the paper. The last block's last 1x1 conv has
    ``num_classes`` maps and no ReLU (its spatial mean is the logit, which must be free to
    go negative); global average pooling turns each map into one logit.

    With the default ``blocks`` on 28x28x1 (104,266 params at 10 classes):

    =========  =======================================  ============  ======
    layer      operation                                output        params
    =========  =======================================  ============  ======
    mlpconv1   5x5 conv 32, 1x1 conv 32, 1x1 conv 32    28 x 28 x 32   2,944
    pool1      3x3 max-pool, stride 2, SAME; dropout    14 x 14 x 32
    mlpconv2   5x5 conv 64, 1x1 conv 64, 1x1 conv 64    14 x 14 x 64  59,584
    pool2      3x3 max-pool, stride 2, SAME; dropout    7 x 7 x 64
    mlpconv3   3x3 conv 64, 1x1 conv 64, 1x1 conv 10    7 x 7 x 10    41,738
    gap        global average pool                      10
    =========  =======================================  ============  ======

    ``head="dense"`` is the ablation with a conventional classifier instead: the last
    block ends, like the others, in ``features`` maps with ReLU, which are flattened into
    a dense layer ``logits`` (no global pooling). With the defaults: mlpconv3 45,248
    params (its last 1x1 conv 64 -> 64), logits 7 * 7 * 64 * 10 + 10 = 31,370; 139,146
    in all.

    Attributes:
      num_classes: number of maps of the last 1x1 conv, hence of logits.
      blocks: ``(kernel_size, features)`` of each mlpconv block, at least one.
      head: ``"gap"`` (global average pooling of ``num_classes`` maps) or ``"dense"``
        (flatten, dense layer).
      dropout: drop probability after each pool; active when ``train=True``, drawing from
        the ``'dropout'`` rng.
      dtype: compute dtype (``None``: from the input); parameters stay float32.

    ``x: (N, H, W, C) -> logits (N, num_classes)``.
    """

    num_classes: int = 10
    blocks: tuple[tuple[int, int], ...] = ((5, 32), (5, 64), (3, 64))
    head: str = "gap"
    dropout: float = 0.5
    dtype: DTypeLike | None = None

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"`head` must be one of {HEADS}; got {self.head!r}")
        if not self.blocks or any(len(b) != 2 for b in self.blocks):
            raise ValueError(
                f"`blocks` must be one or more (kernel_size, features) pairs; got {self.blocks}"
            )
        for kernel_size, features in self.blocks:
            check_positive_int("blocks kernel_size", kernel_size)
            check_positive_int("blocks features", features)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        gap = self.head == "gap"
        for i, (kernel_size, features) in enumerate(self.blocks, start=1):
            # With GAP the last 1x1 conv gives the logit maps, free to go negative.
            last = gap and i == len(self.blocks)
            if i > 1:
                x = MaxPool(3, stride=2, padding="SAME", name=f"pool{i - 1}")(x)
                x = nn.Dropout(self.dropout, deterministic=not train, name=f"dropout{i - 1}")(x)
            x = MLPConv(
                kernel_size,
                features,
                self.num_classes if last else features,
                relu_last=not last,
                dtype=self.dtype,
                name=f"mlpconv{i}",
            )(x)
        if gap:
            return GlobalAvgPool(name="gap")(x)
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="logits")(x)
