"""Moving-digit clips (Moving MNIST, Srivastava et al. 2015), generated on the fly.

Each clip shows one image (an MNIST digit) moving across a black square frame along a
straight line, bouncing off the frame's edges so that the whole image stays inside every
frame. :func:`moving_clips` has the augmentation signature (``key, x, **fields``) of
:mod:`cnnjax.training.augment`, so a batch of digits becomes a batch of clips inside the
jitted train step.

Choices, written down:

* The digit is the real 28x28 MNIST image, never rescaled, and positions are whole
  pixels: a frame is the digit copied unchanged (``dynamic_update_slice``) into black at
  the rounded position, so every frame holds exactly the digit's pixels, once.
* The digit's top-left corner can travel ``frame_size - 28`` pixels per axis; in the
  issue's 32x32 frame that is only 0..4 pixels (4 px of jitter in a 32-pixel frame), and
  a 64x64 frame gives the original Moving MNIST's 0..36. Larger frames cost the 3-D conv
  net proportionally more.
* The start position is uniform over the whole-pixel positions, the velocity uniform in
  ``[-max_speed, max_speed]`` pixels per frame, independently per axis; the path is
  straight, reflected at the edges (a triangle wave of the unfolded position), and then
  rounded to the nearest pixel (ties to even).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
from jax import lax


def bounce_positions(
    starts: jax.Array, velocities: jax.Array, *, num_frames: int, travel: tuple[int, int]
) -> jax.Array:
    """Whole-pixel positions of a point moving in a straight line and bouncing in a box.

    The unfolded position ``start + velocity * t`` is reflected into ``[0, travel]`` (a
    triangle wave of period ``2 * travel``) and rounded to the nearest pixel.

    Args:
      starts: ``(N, 2)`` float positions at frame 0, in ``[0, travel]`` per axis (row,
        column).
      velocities: ``(N, 2)`` float velocities, pixels per frame.
      num_frames: frames ``T``.
      travel: the largest position per axis (``frame_size - digit_size``).

    Returns:
      ``(N, T, 2)`` int32 positions, in ``[0, travel]`` per axis.
    """
    t = jnp.arange(num_frames, dtype=starts.dtype)
    unfolded = starts[:, None, :] + velocities[:, None, :] * t[None, :, None]
    span = jnp.asarray(travel, starts.dtype)[None, None, :]
    # A period of at least 1 keeps the modulo defined on an axis without room to move;
    # the clip then pins that axis to 0 (elsewhere the folded position is already inside).
    folded = span - jnp.abs(span - jnp.mod(unfolded, jnp.maximum(2 * span, 1)))
    return jnp.clip(jnp.round(folded), 0, span).astype(jnp.int32)


def render_clips(x: jax.Array, positions: jax.Array, *, frame_size: int) -> jax.Array:
    """Each image copied into black frames at the given top-left positions.

    Args:
      x: ``(N, h, w, C)`` images, black 0, with ``h, w <= frame_size``.
      positions: ``(N, T, 2)`` int top-left (row, column) corners, each in
        ``[0, frame_size - h] x [0, frame_size - w]``.
      frame_size: side of the square frame.

    Returns:
      ``(N, T, frame_size, frame_size, C)``, dtype of ``x``.
    """
    _, h, w, c = x.shape
    travel = (frame_size - h, frame_size - w)
    # Each frame is a window of the image on a black canvas `travel` wider on every side:
    # a gather of whole rows, ~4x faster on CPU than writing the image into black frames.
    canvas = jnp.pad(x, ((0, 0), (travel[0], travel[0]), (travel[1], travel[1]), (0, 0)))

    def frame(image: jax.Array, corner: jax.Array) -> jax.Array:
        start = (travel[0] - corner[0], travel[1] - corner[1], 0)
        return lax.dynamic_slice(image, start, (frame_size, frame_size, c))

    clip = jax.vmap(frame, in_axes=(None, 0))  # one image, T corners
    return jax.vmap(clip)(canvas, positions.astype(jnp.int32))


def moving_clips(
    key: jax.Array, x: jax.Array, *, num_frames: int, frame_size: int, max_speed: float
) -> jax.Array:
    """Clips of each image moving across a black frame, bouncing off its edges.

    Start positions are uniform over the whole-pixel positions where the image fits;
    velocities are uniform in ``[-max_speed, max_speed]`` per axis (see the module
    docstring for the rounding and bounce rule). The same key gives the same clips.

    Args:
      key: PRNG key.
      x: ``(N, h, w, C)`` float intensities in ``[0, 1]``, black 0 (MNIST: ``(N, 28, 28,
        1)``).
      num_frames: frames per clip ``T``.
      frame_size: side ``F`` of the square frame, at least ``h`` and ``w``.
      max_speed: largest speed per axis, pixels per frame.

    Returns:
      ``(N, T, F, F, C)``, dtype of ``x``.
    """
    _check_args(x, num_frames, frame_size, max_speed)
    n, h, w, _ = x.shape
    travel = (frame_size - h, frame_size - w)
    start_key, velocity_key = jax.random.split(key)
    # Trajectories in float32 whatever the pixels' dtype: bfloat16 would misplace them.
    starts = jax.random.randint(start_key, (n, 2), 0, jnp.asarray([travel]) + 1)
    velocities = jax.random.uniform(velocity_key, (n, 2), minval=-max_speed, maxval=max_speed)
    positions = bounce_positions(
        starts.astype(jnp.float32), velocities, num_frames=num_frames, travel=travel
    )
    return render_clips(x, positions, frame_size=frame_size)


def _check_args(x: jax.Array, num_frames: int, frame_size: int, max_speed: float) -> None:
    if x.ndim != 4 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"`x` must be a float batch of images (N, h, w, C); got shape {tuple(x.shape)} "
            f"and dtype {x.dtype}"
        )
    for name, value in (("num_frames", num_frames), ("frame_size", frame_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int; got {value!r}")
    if frame_size < max(x.shape[1:3]):
        raise ValueError(
            f"`frame_size`={frame_size} must be at least the image size {tuple(x.shape[1:3])} "
            "so that the whole image fits in every frame"
        )
    if isinstance(max_speed, bool) or not isinstance(max_speed, numbers.Real) or max_speed < 0:
        raise ValueError(f"`max_speed` must be a non-negative number; got {max_speed!r}")
