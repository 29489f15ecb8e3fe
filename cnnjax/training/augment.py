"""Training-time augmentations: pure functions applied inside the jitted train step.

Each takes an explicit key and a float batch ``x: (N, H, W, C)`` of pixel intensities in
``[0, 1]`` (before normalisation, so 0 is black) and returns a batch of model inputs
(usually the same shape; ``moving_clips`` makes ``(N, T, H', W', C)`` clips of each image).
``config.augment.name`` picks one; its other fields are passed as keyword arguments, so a
new augmentation is a function here plus its fields in the experiment config.

With ``config.augment.distort_test`` the test split is passed once through the same
function with the fixed key ``augment.test_seed`` (:func:`distort_test`), so a model
trained on distorted digits is evaluated on distorted digits, the same for every run.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.scipy.ndimage
import ml_collections
import numpy as np

from cnnjax.training.clips import moving_clips
from cnnjax.training.data import Dataset, Split
from cnnjax.training.errors import ConfigError, did_you_mean


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


def rotate_and_scale(x: jax.Array, degrees: jax.Array, scales: jax.Array) -> jax.Array:
    """Rotates image ``n`` of ``x`` by ``degrees[n]`` and scales it by ``scales[n]`` about
    the image centre, with bilinear resampling; pixels that come from outside the frame
    are black (0), as is the missing corner of a sample straddling the border.

    Direction: a positive angle turns the picture counter-clockwise as displayed (row 0 at
    the top), so 90 degrees on a square image is ``np.rot90(image)``. A scale above 1
    enlarges the content. Output pixel ``(i, j)`` reads the input at

        (cy, cx) + R ((i - cy, j - cx)) / s,   R = [[cos t, sin t], [-sin t, cos t]]

    with the centre ``(cy, cx) = ((H - 1) / 2, (W - 1) / 2)``: the inverse map, so every
    output pixel gets exactly one interpolated value and no holes appear.

    Args:
      x: ``(N, H, W, C)`` floats.
      degrees: ``(N,)`` rotation angles in degrees.
      scales: ``(N,)`` positive scale factors.

    Returns:
      ``(N, H, W, C)``, the dtype of ``x``.
    """
    if x.ndim != 4:
        raise ValueError(f"`x` must be (N, H, W, C); got shape {x.shape}")
    if degrees.shape != x.shape[:1] or scales.shape != x.shape[:1]:
        raise ValueError(
            f"`degrees` and `scales` must be (N,) = {x.shape[:1]} for `x` of shape "
            f"{x.shape}; got {degrees.shape} and {scales.shape}"
        )
    _, h, w, _ = x.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    rows, cols = jnp.meshgrid(
        jnp.arange(h, dtype=x.dtype) - cy, jnp.arange(w, dtype=x.dtype) - cx, indexing="ij"
    )

    def resample(image: jax.Array, radians: jax.Array, scale: jax.Array) -> jax.Array:
        cos, sin = jnp.cos(radians) / scale, jnp.sin(radians) / scale
        source = [cy + cos * rows + sin * cols, cx - sin * rows + cos * cols]

        def channel(plane: jax.Array) -> jax.Array:
            return jax.scipy.ndimage.map_coordinates(plane, source, order=1, mode="constant")

        return jax.vmap(channel, in_axes=-1, out_axes=-1)(image)

    radians = jnp.deg2rad(degrees.astype(x.dtype))
    return jax.vmap(resample)(x, radians, scales.astype(x.dtype))


def random_affine(
    key: jax.Array, x: jax.Array, *, max_degrees: float, min_scale: float, max_scale: float
) -> jax.Array:
    """Rotates each image by an independent angle uniform in ``[-max_degrees,
    max_degrees]`` and scales it by an independent factor uniform in ``[min_scale,
    max_scale]`` about its centre (:func:`rotate_and_scale`: bilinear, black outside).

    Args:
      key: PRNG key.
      x: ``(N, H, W, C)``.
      max_degrees: largest rotation either way, in degrees (>= 0).
      min_scale, max_scale: range of the scale factor, ``0 < min_scale <= max_scale``.
    """
    if max_degrees < 0:
        raise ValueError(f"`max_degrees` must be >= 0; got {max_degrees}")
    if not 0 < min_scale <= max_scale:
        raise ValueError(f"need 0 < `min_scale` <= `max_scale`; got {min_scale} and {max_scale}")
    angle_key, scale_key = jax.random.split(key)
    n = x.shape[0]
    degrees = jax.random.uniform(angle_key, (n,), minval=-max_degrees, maxval=max_degrees)
    scales = jax.random.uniform(scale_key, (n,), minval=min_scale, maxval=max_scale)
    return rotate_and_scale(x, degrees, scales)


AUGMENTATIONS: dict[str, Callable[..., jax.Array]] = {
    "none": none,
    "random_shift": random_shift,
    "random_affine": random_affine,
    "moving_clips": moving_clips,
}


# Fields of config.augment that no augmentation function takes.
_SHARED_FIELDS = ("name", "distort_test", "test_seed")


def check_fields(augment: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for a field of ``config.augment`` that no augmentation takes
    (a misspelt field would otherwise be dropped silently by :func:`make_augment`)."""
    known = {*_SHARED_FIELDS}
    for fn in AUGMENTATIONS.values():
        known |= set(list(inspect.signature(fn).parameters)[2:])  # after (key, x)
    for field in augment:
        if field not in known:
            raise ConfigError(
                f"augment.{field} is not a field of any augmentation."
                f"{did_you_mean(field, known)} Fields: {', '.join(sorted(known))}."
            )


def make_augment(config: ml_collections.ConfigDict) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``(key, x) -> x`` for ``config.augment``: the function ``name``, called with the
    fields of ``config.augment`` that it takes as keywords (fields of other augmentations
    are ignored, so switching ``name`` on the command line needs no other change)."""
    fn = AUGMENTATIONS[config.augment.name]
    accepted = inspect.signature(fn).parameters
    kwargs = {k: v for k, v in config.augment.items() if k != "name" and k in accepted}
    return functools.partial(fn, **kwargs)


def distort_test(
    dataset: Dataset, config: ml_collections.ConfigDict, *, batch_size: int = 1000
) -> Dataset:
    """``dataset`` with its test (and validation) images passed through ``config.augment``
    once, with the key ``augment.test_seed``, and rounded back to uint8 (unchanged without
    ``augment.distort_test``)."""
    if not config.augment.distort_test:
        return dataset
    augment = jax.jit(make_augment(config))
    key = jax.random.key(config.augment.test_seed)

    def distort(split: Split) -> Split:
        out = []
        for i, lo in enumerate(range(0, len(split.images), batch_size)):
            x = jnp.asarray(split.images[lo : lo + batch_size], jnp.float32) / 255.0
            distorted = augment(jax.random.fold_in(key, i), x)
            out.append(np.asarray(jnp.round(jnp.clip(distorted, 0.0, 1.0) * 255.0), np.uint8))
        return Split(np.concatenate(out), split.labels)

    validation = None if dataset.validation is None else distort(dataset.validation)
    return dataclasses.replace(dataset, test=distort(dataset.test), validation=validation)
