"""Training-time augmentations: pure functions applied inside the jitted train step.

Each takes an explicit key and a float batch ``x: (N, H, W, C)`` of pixel intensities in
``[0, 1]`` (before normalisation, so 0 is black) and returns a batch of the same shape.
``config.augment.name`` picks one; its other fields are passed as keyword arguments, so a
new augmentation is a function here plus its fields in the experiment config.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections


def none(key: jax.Array, x: jax.Array) -> jax.Array:
    """No augmentation."""
    del key
    return x


def random_shift(key: jax.Array, x: jax.Array, *, max_shift: int) -> jax.Array:
    """Translates each image by an independent integer offset in ``[-max_shift, max_shift]``
    per axis; pixels that enter the frame are black (0).

    Args:
      key: PRNG key.
      x: ``(N, H, W, C)``.
      max_shift: largest shift in pixels, per axis.
    """
    n, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    offsets = jax.random.randint(key, (n, 2), 0, 2 * max_shift + 1)

    def crop(image: jax.Array, offset: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, image.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


AUGMENTATIONS: dict[str, Callable[..., jax.Array]] = {
    "none": none,
    "random_shift": random_shift,
}


def make_augment(config: ml_collections.ConfigDict) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``(key, x) -> x`` for ``config.augment``: the function ``name``, called with the
    fields of ``config.augment`` that it takes as keywords (fields of other augmentations
    are ignored, so switching ``name`` on the command line needs no other change)."""
    fn = AUGMENTATIONS[config.augment.name]
    accepted = inspect.signature(fn).parameters
    kwargs = {k: v for k, v in config.augment.items() if k != "name" and k in accepted}
    return functools.partial(fn, **kwargs)
