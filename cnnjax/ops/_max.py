"""The maximum over some axes whose derivative follows the first maximum.

One tie rule for every max the ops take (``max_pool`` on each of its paths,
``global_max_pool``, ``conv_max_pool``): where several elements of a window equal its
maximum, the whole derivative goes to the first of them in row-major order over the
window — what ``lax.reduce_window``'s gradient (``select_and_scatter``), Flax and PyTorch
do. JAX's own rule for ``jnp.max`` splits it between the tied elements instead, and ties
are common (raw MNIST pixels, ReLU zeros).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Up to this many cells, a window whose axes are adjacent finds its first maximum with one
# argmax (fastest for pooling windows: ~2x JAX's own max rule on CPU); larger ones (a
# global pool) with a min-reduction of positions, which stays cheap at any size where the
# argmax over a long, non-minor axis is ~10x slower.
_ARGMAX_MAX_CELLS = 16


def _first_max_mask(x: jax.Array, y: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """1 where ``x`` holds the first maximum of its window (over non-adjacent ``axes``),
    else 0; ``y = max(x, axes)`` without ``axes``, the mask shaped like ``x``."""
    cells = math.prod(x.shape[a] for a in axes)
    # Each cell's row-major position in its window, a constant; the first maximum is the
    # smallest position holding the maximum.
    position = np.zeros([x.shape[a] if a in axes else 1 for a in range(x.ndim)], np.int32)
    for a in axes:
        along = np.arange(x.shape[a], dtype=np.int32).reshape(
            [x.shape[a] if b == a else 1 for b in range(x.ndim)]
        )
        position = position * x.shape[a] + along
    is_max = x == jnp.expand_dims(y, axes)
    first = jnp.min(jnp.where(is_max, position, np.int32(cells)), axis=axes, keepdims=True)
    return (position == first).astype(x.dtype)


def _first_max_tangent(
    x: jax.Array, y: jax.Array, dx: jax.Array, axes: tuple[int, ...]
) -> jax.Array:
    """``dx`` at the first maximum of each window of ``x`` (both shaped like ``x``, windows
    over ``axes``); ``y = max(x, axes)``. Returns an array shaped like ``y``."""
    if axes != tuple(range(axes[0], axes[-1] + 1)):
        return jnp.sum(dx * _first_max_mask(x, y, axes), axis=axes)
    # Adjacent axes merge into one, so a window's position is a single index along it.
    lo, hi = axes[0], axes[-1] + 1
    cells = math.prod(x.shape[lo:hi])
    x = x.reshape(*x.shape[:lo], cells, *x.shape[hi:])
    dx = dx.reshape(x.shape)
    if cells <= _ARGMAX_MAX_CELLS:
        first = jax.nn.one_hot(jnp.argmax(x, axis=lo), cells, axis=lo, dtype=x.dtype)
        return jnp.sum(dx * first, axis=lo)
    position = lax.broadcasted_iota(np.int32, x.shape, lo)
    is_max = x == jnp.expand_dims(y, lo)
    first = jnp.min(jnp.where(is_max, position, np.int32(cells)), axis=lo, keepdims=True)
    # A select rather than a product with a float mask: the transpose then keeps only
    # ``first`` (shaped like ``y``) and selects the cotangent, with no mask over every cell.
    return jnp.sum(jnp.where(position == first, dx, jnp.zeros((), dx.dtype)), axis=lo)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def max_first(x: jax.Array, axes: Sequence[int]) -> jax.Array:
    """``jnp.max(x, axis=axes)``; its derivative goes to the first maximum of each window.

    Args:
      x: any array.
      axes: the window's axes, increasing; row-major order over them decides "first".

    Returns:
      ``x`` without ``axes``.
    """
    return jnp.max(x, axis=tuple(axes))


@max_first.defjvp
def _max_first_jvp(axes, primals, tangents):
    (x,), (dx,) = primals, tangents
    axes = tuple(axes)
    y = jnp.max(x, axis=axes)
    return y, _first_max_tangent(x, y, dx, axes)


def tiled_max(
    x: jax.Array, dims: Sequence[int], pads: Sequence[tuple[int, int]], init
) -> jax.Array:
    """Max over non-overlapping windows as a reshape and a reduction.

    Args:
      x: any array; ``dims``: the window per axis of ``x`` (1 for axes not pooled);
      ``pads``: ``(low, high)`` per axis, filled with ``init``.

    Returns:
      ``x`` pooled: each axis ``size // dim`` long after padding (a trailing remainder
      smaller than the window is dropped, as VALID pooling does).

    Same values and derivative as ``reduce_window``, but the gradient is an elementwise
    mask instead of ``select_and_scatter``, which is several times slower on CPU.
    """
    x = lax.pad(x, init, [(lo, hi, 0) for lo, hi in pads])
    tiled = []
    for size, k in zip(x.shape, dims, strict=True):
        tiled += [size // k, k]
    x = x[tuple(slice(0, (size // k) * k) for size, k in zip(x.shape, dims, strict=True))]
    return max_first(x.reshape(tiled), tuple(range(1, 2 * x.ndim, 2)))
