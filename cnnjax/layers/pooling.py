"""Pooling layers: parameter-free modules over the pooling ops.

They exist so that models can be written declaratively and so that their outputs show up
in model summaries and ``capture_intermediates``; each calls its op and nothing else.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from cnnjax import ops
from cnnjax.ops._args import IntOrSeq, PaddingLike


class WindowPool(nn.Module):
    """Fields shared by the windowed pools (not used directly).

    Attributes:
      window: int or one int per spatial dim.
      stride: int, one int per spatial dim, or ``None`` for ``window``.
      padding: as for the convolution ops.
    """

    window: IntOrSeq
    stride: IntOrSeq | None = None
    padding: PaddingLike = "VALID"


class MaxPool(WindowPool):
    """Max pooling, :func:`cnnjax.ops.max_pool`. ``(N, *spatial, C) -> (N, *out, C)``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.max_pool(x, self.window, stride=self.stride, padding=self.padding)


class AvgPool(WindowPool):
    """Average pooling, :func:`cnnjax.ops.avg_pool`. ``(N, *spatial, C) -> (N, *out, C)``.

    With ``"SAME"`` padding only real (unpadded) elements are averaged, as in TensorFlow.
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.avg_pool(x, self.window, stride=self.stride, padding=self.padding)


class GlobalAvgPool(nn.Module):
    """Mean over all spatial dims, :func:`cnnjax.ops.global_avg_pool`.

    ``(N, *spatial, C) -> (N, C)``.
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.global_avg_pool(x)


class GlobalMaxPool(nn.Module):
    """Max over all spatial dims, :func:`cnnjax.ops.global_max_pool`.

    ``(N, *spatial, C) -> (N, C)``.
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.global_max_pool(x)
