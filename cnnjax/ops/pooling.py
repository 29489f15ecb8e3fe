"""Pooling as pure functions over ``x``: ``(N, *spatial, C)`` with 1, 2 or 3 spatial dims.

``window`` and ``stride`` are an int or one int per spatial dim (``stride`` defaults to
``window``); ``padding`` takes the forms of :func:`cnnjax.ops.conv`. Padding never enters
a result: max pooling pads with ``-inf`` and average pooling divides each window by the
number of real (unpadded) elements it covers — TensorFlow's ``"SAME"`` semantics, and
PyTorch's ``count_include_pad=False`` for explicit padding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnjax.ops._args import IntOrSeq, PaddingLike, as_tuple, padding_pairs


def _spatial_rank(x: jax.Array) -> int:
    """Number of spatial dims of ``x``, checking its layout and dtype."""
    n = x.ndim - 2
    if n not in (1, 2, 3):
        raise ValueError(
            f"`x` must have layout (N, *spatial, C) with 1, 2 or 3 spatial dims; got shape "
            f"{tuple(x.shape)}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"`x` must have a floating dtype; got {x.dtype}")
    return n


def _window_args(
    x: jax.Array, window: IntOrSeq, stride: IntOrSeq | None, padding: PaddingLike
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[int, int], ...]]:
    """Validated ``reduce_window`` dims, strides and padding over the full ``x`` rank."""
    n = _spatial_rank(x)
    window = as_tuple("window", window, n)
    stride = window if stride is None else as_tuple("stride", stride, n)
    in_spatial = tuple(x.shape[1:-1])
    pads = padding_pairs(padding, in_spatial, window, stride, (1,) * n)
    for size, k, (lo, hi) in zip(in_spatial, window, pads, strict=True):
        if k > size + lo + hi:
            raise ValueError(
                f"`window` {window} is larger than the padded input (spatial shape "
                f"{in_spatial}, padding {pads})"
            )
        # A window lying wholly in the padding would have no real element to pool.
        if lo >= k or hi >= k:
            raise ValueError(
                f"`padding` {pads} must be smaller than `window` {window} on each side"
            )
    return (1, *window, 1), (1, *stride, 1), ((0, 0), *pads, (0, 0))


def max_pool(
    x: jax.Array,
    window: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: PaddingLike = "VALID",
) -> jax.Array:
    """Maximum over each window; padding counts as ``-inf``.

    Args:
      x: ``(N, *spatial, C)``, 1-3 spatial dims, floating dtype.
      window: int or one int per spatial dim.
      stride: int or one int per spatial dim; ``None`` means ``window``.
      padding: ``"SAME"``, ``"VALID"``, int, per-dim ints or ``(low, high)`` pairs; each
        side smaller than the window.

    Returns:
      ``(N, *out_spatial, C)``.
    """
    dims, strides, pads = _window_args(x, window, stride, padding)
    # A concrete -inf lets JAX recognise the max monoid (and its gradient rule).
    init = np.array(-np.inf, dtype=x.dtype)
    if dims == strides:
        return _tiled_max(x, dims, pads, init)
    return lax.reduce_window(x, init, lax.max, dims, strides, pads)


def _tiled_max(x, dims, pads, init):
    """Max over non-overlapping windows as a reshape and a reduction.

    Same values as ``reduce_window``, but its gradient is a cheap elementwise mask instead
    of ``select_and_scatter``, which is ~10x slower on CPU (LeNet's 2x2 pools). Where a
    window holds several equal maxima the gradient is split between them (``reduce_window``
    gives it all to one).
    """
    x = lax.pad(x, init, [(lo, hi, 0) for lo, hi in pads])
    tiled = []
    for size, k in zip(x.shape, dims, strict=True):
        tiled += [size // k, k]
    # A trailing remainder smaller than the window is dropped, as VALID pooling does.
    x = x[tuple(slice(0, (size // k) * k) for size, k in zip(x.shape, dims, strict=True))]
    return jnp.max(x.reshape(tiled), axis=tuple(range(1, 2 * x.ndim, 2)))


def avg_pool(
    x: jax.Array,
    window: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: PaddingLike = "VALID",
) -> jax.Array:
    """Mean over the real (unpadded) elements of each window.

    Args:
      x: ``(N, *spatial, C)``, 1-3 spatial dims, floating dtype.
      window: int or one int per spatial dim.
      stride: int or one int per spatial dim; ``None`` means ``window``.
      padding: ``"SAME"``, ``"VALID"``, int, per-dim ints or ``(low, high)`` pairs; each
        side smaller than the window.

    Returns:
      ``(N, *out_spatial, C)``.
    """
    dims, strides, pads = _window_args(x, window, stride, padding)
    zero = np.array(0, dtype=x.dtype)
    sums = lax.reduce_window(x, zero, lax.add, dims, strides, pads)
    # Counting real elements per window: a reduce over ones of shape (1, *spatial, 1),
    # which XLA folds to a constant.
    ones = jnp.ones((1, *x.shape[1:-1], 1), x.dtype)
    counts = lax.reduce_window(ones, zero, lax.add, dims, strides, pads)
    return sums / counts


def _spatial_axes(x: jax.Array) -> tuple[int, ...]:
    return tuple(range(1, _spatial_rank(x) + 1))


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over all spatial positions: ``(N, *spatial, C) -> (N, C)``."""
    return jnp.mean(x, axis=_spatial_axes(x))


def global_max_pool(x: jax.Array) -> jax.Array:
    """Maximum over all spatial positions: ``(N, *spatial, C) -> (N, C)``."""
    return jnp.max(x, axis=_spatial_axes(x))
