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
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def _first_max_mask(x: jax.Array, y: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """1 where ``x`` holds the first maximum of its window (over ``axes``), else 0."""
    if axes == tuple(range(axes[0], axes[-1] + 1)):
        # Adjacent axes merge for free: one argmax one-hot, the cheapest mask there is.
        lo, hi = axes[0], axes[-1] + 1
        merged = x.reshape(*x.shape[:lo], -1, *x.shape[hi:])
        first = jax.nn.one_hot(
            jnp.argmax(merged, axis=lo), merged.shape[lo], axis=lo, dtype=x.dtype
        )
        return first.reshape(x.shape)
    # Apart (the tiled max-pool's (N, Ho, kh, Wo, kw, C)): an element is not first if an
    # equal element comes before it, i.e. for some window axis i it has the same index on
    # the window axes before i and a smaller one on axis i (any on the axes after i).
    eq = x == jnp.expand_dims(y, axes)
    earlier = jnp.zeros_like(eq)
    for i, axis in enumerate(axes):
        hit = jnp.any(eq, axis=axes[i + 1 :], keepdims=True) if axes[i + 1 :] else eq
        count = jnp.cumsum(hit, axis=axis, dtype=jnp.int32) - hit
        earlier = earlier | (count > 0)
    return (eq & ~earlier).astype(x.dtype)


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
    return y, jnp.sum(dx * _first_max_mask(x, y, axes), axis=axes)
