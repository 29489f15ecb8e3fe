"""Pooling layers: parameter-free modules over the pooling ops.

They exist so that models can be written declaratively and so that their outputs show up
in model summaries and ``capture_intermediates``; each calls its op and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax

from cnnjax import ops
from cnnjax.ops._args import IntOrSeq, PaddingLike


class WindowPool(nn.Module):
    """Fields shared by the windowed pools (not used directly).

    Attributes:
      window: int or one int per spatial dim.
      stride: int, one int per spatial dim, or ``None`` for ``window``.
      padding: as for the convolution ops (amounts only: the reducer's identity fills).
      dilation: window dilation, int or one int per spatial dim.
      ceil_mode: round the output size up, as PyTorch's ``ceil_mode``.
    """

    window: IntOrSeq
    stride: IntOrSeq | None = None
    padding: PaddingLike = "VALID"
    dilation: IntOrSeq = 1
    ceil_mode: bool = False

    def _geometry(self) -> dict:
        return dict(
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            ceil_mode=self.ceil_mode,
        )


class MaxPool(WindowPool):
    """Max pooling, :func:`cnnjax.ops.max_pool`. ``(N, *spatial, C) -> (N, *out, C)``.

    With ``return_indices`` it returns ``(y, indices)`` for :class:`MaxUnpool`.
    """

    return_indices: bool = False

    def __call__(self, x: jax.Array) -> jax.Array | tuple[jax.Array, jax.Array]:
        return ops.max_pool(x, self.window, return_indices=self.return_indices, **self._geometry())


class AvgPool(WindowPool):
    """Average pooling, :func:`cnnjax.ops.avg_pool`. ``(N, *spatial, C) -> (N, *out, C)``.

    Only real (unpadded) elements are averaged (TensorFlow's SAME) unless
    ``count_include_pad`` (PyTorch's and Flax's default).
    """

    count_include_pad: bool = False

    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.avg_pool(
            x, self.window, count_include_pad=self.count_include_pad, **self._geometry()
        )


class Pool(WindowPool):
    """Any monoid pooling, :func:`cnnjax.ops.pool`, e.g. ``Pool(3, init=0.0,
    reducer=lax.add)``: a box sum. ``(N, *spatial, C) -> (N, *out, C)``."""

    init: float = 0.0
    reducer: Callable[[jax.Array, jax.Array], jax.Array] = jax.lax.add

    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.pool(x, self.init, self.reducer, self.window, **self._geometry())


class MaxUnpool(nn.Module):
    """Puts pooled values back where their maxima were, :func:`cnnjax.ops.max_unpool`
    (SegNet's decoder).

    ``(y (N, *out, C), indices, output_shape) -> (N, *output_shape, C)``, with ``indices``
    from ``MaxPool(..., return_indices=True)`` and ``output_shape`` the pooled input's
    spatial shape.
    """

    def __call__(self, y: jax.Array, indices: jax.Array, output_shape: Sequence[int]) -> jax.Array:
        return ops.max_unpool(y, indices, output_shape)


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
