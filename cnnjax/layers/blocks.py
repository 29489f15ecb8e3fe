"""Composite blocks built from the layers."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from cnnjax.layers._checks import check_positive_int
from cnnjax.layers.conv import Conv
from cnnjax.layers.pooling import MaxPool


class Inception(nn.Module):
    """GoogLeNet Inception module (Szegedy et al., 2015, Fig. 2b).

    Four parallel branches, each convolution followed by ReLU, concatenated on channels in
    this order:

    1. 1x1 conv to ``c1``;
    2. 1x1 conv to ``c3_reduce``, then 3x3 conv to ``c3``;
    3. 1x1 conv to ``c5_reduce``, then 5x5 conv to ``c5``;
    4. 3x3 max-pool (stride 1, SAME), then 1x1 conv to ``pool_proj``.

    Every branch keeps the spatial size (SAME padding, stride 1). Kernel sizes are ints, so
    the block works in 1, 2 or 3 spatial dims.

    ``x: (N, *spatial, C_in) -> (N, *spatial, c1 + c3 + c5 + pool_proj)``.
    """

    c1: int
    c3_reduce: int
    c3: int
    c5_reduce: int
    c5: int
    pool_proj: int
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    def __post_init__(self) -> None:
        for name in ("c1", "c3_reduce", "c3", "c5_reduce", "c5", "pool_proj"):
            check_positive_int(name, getattr(self, name))
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        branch1 = self._conv_relu(x, self.c1, 1, "b1_1x1")
        branch3 = self._conv_relu(x, self.c3_reduce, 1, "b3_reduce")
        branch3 = self._conv_relu(branch3, self.c3, 3, "b3_3x3")
        branch5 = self._conv_relu(x, self.c5_reduce, 1, "b5_reduce")
        branch5 = self._conv_relu(branch5, self.c5, 5, "b5_5x5")
        pooled = MaxPool(3, stride=1, padding="SAME", name="pool")(x)
        branch_pool = self._conv_relu(pooled, self.pool_proj, 1, "pool_proj_1x1")
        return jnp.concatenate([branch1, branch3, branch5, branch_pool], axis=-1)

    def _conv_relu(self, x: jax.Array, features: int, kernel_size: int, name: str) -> jax.Array:
        conv = Conv(
            features, kernel_size, dtype=self.dtype, param_dtype=self.param_dtype, name=name
        )
        return nn.relu(conv(x))
