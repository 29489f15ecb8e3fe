"""Pooling as pure functions over ``x``: ``(N, *spatial, C)`` with 1, 2 or 3 spatial dims.

``window``, ``stride`` and ``dilation`` are an int or one int per spatial dim (``stride``
defaults to ``window``); ``padding`` takes the amount forms of :func:`cnnjax.ops.conv`
(strings, ints, mixed per-dim entries, negative amounts cropping); the padded cells hold
the reducer's identity. ``ceil_mode`` is PyTorch's: the output size rounds up, the last
window may hang over the high end (never starting past the input and its low padding).

Max pooling pads with ``-inf``; its derivative goes to the first maximum of each window
(:func:`cnnjax.ops._max.max_first`) on every path. Average pooling divides each window
by the number of real (unpadded) elements it covers — TensorFlow's ``"SAME"``, PyTorch's
``count_include_pad=False`` — or, with ``count_include_pad=True``, by the window's cells
within the explicit padding (PyTorch's and Flax's default; cells added by ``ceil_mode``
are never counted, as in PyTorch).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnjax.ops._args import (
    IntOrSeq,
    PaddingLike,
    as_array,
    as_tuple,
    ceil_mode_extra,
    check_nonempty,
    conv_output_shape,
    effective_kernel,
    pad_input,
    padding_fill,
    padding_pairs,
)
from cnnjax.ops._cotangent import cotangent_read_once
from cnnjax.ops._max import max_first, tiled_max
from cnnjax.ops._stack import stack_taps


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


class _Windows(NamedTuple):
    """Validated window geometry over the full rank of ``x`` (batch and channel dims 1)."""

    x: jax.Array  # cropped where the padding was negative
    dims: tuple[int, ...]
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]  # explicit padding
    extra: tuple[int, ...]  # high-side cells added by ceil_mode
    out_shape: tuple[int, ...]

    @property
    def all_pads(self) -> tuple[tuple[int, int], ...]:
        return tuple((lo, hi + e) for (lo, hi), e in zip(self.pads, self.extra, strict=True))


def _windows(
    x: jax.Array,
    window: IntOrSeq,
    stride: IntOrSeq | None,
    padding: PaddingLike,
    dilation: IntOrSeq,
    ceil_mode: bool,
    *,
    needs_real: bool,
) -> _Windows:
    """Check the pooling arguments; ``needs_real``: no window may lie wholly in padding."""
    x = as_array("x", x)
    n = _spatial_rank(x)
    window = as_tuple("window", window, n)
    stride = window if stride is None else as_tuple("stride", stride, n)
    dilation = as_tuple("dilation", dilation, n)
    if not isinstance(ceil_mode, bool):
        raise ValueError(f"`ceil_mode` must be a bool; got {ceil_mode!r}")
    if padding_fill(padding, "zeros") != "constant":
        raise ValueError(
            f"`padding`={padding!r}: pooling pads with the reducer's identity only; give the "
            f"amounts ('SAME', ints, pairs)"
        )
    pads = padding_pairs(padding, x.shape[1:-1], window, stride, dilation)
    x, pads = pad_input(x, pads, "constant")
    in_spatial = tuple(x.shape[1:-1])
    extents = effective_kernel(window, dilation)
    extra = ceil_mode_extra(in_spatial, pads, extents, stride) if ceil_mode else (0,) * n
    all_pads = tuple((lo, hi + e) for (lo, hi), e in zip(pads, extra, strict=True))
    out = conv_output_shape(in_spatial, window, stride=stride, padding=all_pads, dilation=dilation)
    if needs_real:
        _check_real_taps(in_spatial, pads, window, stride, dilation, out)
    return _Windows(
        x,
        (1, *window, 1),
        (1, *stride, 1),
        (1, *dilation, 1),
        ((0, 0), *pads, (0, 0)),
        (0, *extra, 0),
        (x.shape[0], *out, x.shape[-1]),
    )


def _check_real_taps(
    in_spatial: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    window: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    out: tuple[int, ...],
) -> None:
    """Raises ValueError if an output window's taps all fall in padding (per dim: a window
    holds an input cell only if it does in every dim)."""
    for d, (size, (lo, _), k, s, r, o) in enumerate(
        zip(in_spatial, pads, window, stride, dilation, out, strict=True)
    ):
        taps = np.arange(o)[:, None] * s - lo + np.arange(k)[None, :] * r
        empty = ~((taps >= 0) & (taps < size)).any(axis=1)
        if empty.any():
            raise ValueError(
                f"window {int(np.argmax(empty))} along spatial dim {d} covers padding only "
                f"(input size {size}, padding {pads[d]}, window {k}, stride {s}, dilation "
                f"{r}): nothing to average; use less padding or count_include_pad=True"
            )


def _reduce(win: _Windows, operand: jax.Array, init, reducer) -> jax.Array:
    return lax.reduce_window(
        operand, init, reducer, win.dims, win.strides, win.all_pads, window_dilation=win.dilation
    )


def pool(
    x: jax.Array,
    init: float | jax.Array,
    reducer: Callable[[jax.Array, jax.Array], jax.Array],
    window: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: PaddingLike = "VALID",
    *,
    dilation: IntOrSeq = 1,
    ceil_mode: bool = False,
) -> jax.Array:
    """Reduce each window with a monoid ``(reducer, init)``, as Flax's ``pool``.

    ``reducer`` must be associative and commutative with identity ``init`` (e.g.
    ``lax.add``/0, ``lax.max``/-inf, ``lax.mul``/1); padded cells hold ``init``. Example:
    ``pool(x, 0.0, lax.add, 3, 1, "SAME")`` is a 3x3 box sum. Differentiable where JAX
    differentiates ``reduce_window`` (``lax.add``, ``lax.max``, ``lax.min`` with concrete
    identities, undilated for max/min); others are forward only.

    Args:
      x: ``(N, *spatial, C)``, 1-3 spatial dims, floating dtype.
      init: the reducer's identity, a scalar.
      reducer: ``(a, b) -> a ∘ b`` on arrays.
      window, stride, padding, dilation, ceil_mode: as for :func:`max_pool`.

    Returns:
      ``(N, *out_spatial, C)``.
    """
    win = _windows(x, window, stride, padding, dilation, ceil_mode, needs_real=False)
    if 0 in win.out_shape:
        return jnp.zeros(win.out_shape, win.x.dtype)
    # A concrete init lets JAX recognise the usual monoids (and their gradient rules).
    if not isinstance(init, jax.Array):
        init = np.array(init, dtype=win.x.dtype)
    return _reduce(win, win.x, init, reducer)


def max_pool(
    x: jax.Array,
    window: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: PaddingLike = "VALID",
    *,
    dilation: IntOrSeq = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Maximum over each window; padding counts as ``-inf``.

    The derivative goes to the first maximum of each window (row-major over the window),
    as ``lax.reduce_window``'s does, on every path.

    Args:
      x: ``(N, *spatial, C)``, 1-3 spatial dims, floating dtype.
      window: int or one int per spatial dim.
      stride: int or one int per spatial dim; ``None`` means ``window``.
      padding: any amount form of :func:`cnnjax.ops.conv`; each side smaller than the
        (dilated) window.
      dilation: window dilation, int or one int per spatial dim.
      ceil_mode: round the output size up (PyTorch's ``ceil_mode``).
      return_indices: also return where each maximum came from.

    Returns:
      ``(N, *out_spatial, C)``; with ``return_indices`` also int32 indices of the same
      shape: the first maximum's position in the flattened spatial dims of ``x`` (after a
      crop by negative padding), per batch element and channel — PyTorch's layout, for
      :func:`max_unpool`.
    """
    win = _windows(x, window, stride, padding, dilation, ceil_mode, needs_real=True)
    y = _max_pool(win)
    if not return_indices:
        return y
    return y, _max_indices(win)


def _max_pool(win: _Windows) -> jax.Array:
    x = win.x
    if 0 in win.out_shape:
        return jnp.zeros(win.out_shape, x.dtype)
    # A concrete -inf lets JAX recognise the max monoid (and its gradient rule).
    init = np.array(-np.inf, dtype=x.dtype)
    dilated = set(win.dilation) != {1}
    if not dilated and win.dims == win.strides:
        return tiled_max(x, win.dims, win.all_pads, init)

    def tapped(x):
        return _tapped_max(win._replace(x=x), init)

    # Overlapping windows: JAX differentiates a reduce_window max through a variadic
    # reduce_window over index iotas, many times slower on XLA's CPU backend than the
    # one-hot of an argmax over the window's taps; GPU/TPU keep reduce_window. Dilated
    # windows have no reduce_window derivative in JAX: taps on every platform.
    return lax.platform_dependent(
        x,
        cpu=lambda x: cotangent_read_once(tapped(x)),
        default=tapped if dilated else lambda x: _reduce(win, x, init, lax.max),
    )


def _tapped_max(win: _Windows, init) -> jax.Array:
    """Max over windows as a max over the window's taps, each a strided slice: for
    dilated windows (JAX has no derivative for a dilated ``reduce_window`` max) and for
    overlapping ones on CPU. The same values as ``reduce_window``, and the derivative of
    :func:`max_first` (taps in row-major window order).
    """
    x = lax.pad(win.x, init, [(lo, hi, 0) for lo, hi in win.all_pads])
    out = win.out_shape
    taps = []
    for tap in itertools.product(*(range(k) for k in win.dims)):
        start = [t * d for t, d in zip(tap, win.dilation, strict=True)]
        limit = [b + (o - 1) * s + 1 for b, o, s in zip(start, out, win.strides, strict=True)]
        taps.append(lax.slice(x, start, limit, win.strides))
    return max_first(stack_taps(taps, win.dims), (x.ndim - 1,))


def _first_of_pair(a, b):
    """Of two (value, index) pairs the larger value, the smaller index on a tie."""
    (va, ia), (vb, ib) = a, b
    take_b = (vb > va) | ((vb == va) & (ib < ia))
    return lax.select(take_b, vb, va), lax.select(take_b, ib, ia)


def _max_indices(win: _Windows) -> jax.Array:
    x = win.x
    if 0 in win.out_shape:
        return jnp.zeros(win.out_shape, jnp.int32)
    size = math.prod(x.shape[1:-1])
    index = lax.broadcasted_iota(jnp.int32, (1, size, 1), 1).reshape(1, *x.shape[1:-1], 1)
    index = jnp.broadcast_to(index, x.shape)
    # Padding gets the value -inf and an index past the end, so it never wins a tie.
    inits = (np.array(-np.inf, x.dtype), np.array(size, np.int32))
    _, indices = _reduce(win, (lax.stop_gradient(x), index), inits, _first_of_pair)
    return indices


def max_unpool(y: jax.Array, indices: jax.Array, output_shape: Sequence[int]) -> jax.Array:
    """The partial inverse of :func:`max_pool`: each value of ``y`` put back where its
    maximum came from, zeros elsewhere (PyTorch's ``max_unpool``, SegNet's decoder).

    Values whose indices coincide (overlapping windows) are added, so this is exactly the
    adjoint of max-pooling: ``max_unpool(g, indices, x.shape[1:-1])`` is ``jax.vjp`` of
    ``max_pool(x, ...)`` at cotangent ``g``. Indices outside the output are dropped.

    Args:
      y: ``(N, *out_spatial, C)``, floating dtype.
      indices: int array of ``y``'s shape, from ``max_pool(..., return_indices=True)``.
      output_shape: the spatial shape of the result, e.g. ``x.shape[1:-1]``.

    Returns:
      ``(N, *output_shape, C)``.
    """
    y, indices = as_array("y", y), as_array("indices", indices)
    _spatial_rank(y)
    if not jnp.issubdtype(indices.dtype, jnp.integer) or indices.shape != y.shape:
        raise ValueError(
            f"`indices` must be an integer array of `y`'s shape {tuple(y.shape)}; got "
            f"{indices.dtype} of shape {tuple(indices.shape)}"
        )
    output_shape = as_tuple("output_shape", tuple(output_shape), y.ndim - 2)
    n, c = y.shape[0], y.shape[-1]
    flat = jnp.zeros((n, math.prod(output_shape), c), y.dtype)
    batch = jnp.arange(n).reshape(n, 1, 1)
    channel = jnp.arange(c).reshape(1, 1, c)
    flat = flat.at[batch, indices.reshape(n, -1, c), channel].add(y.reshape(n, -1, c), mode="drop")
    return flat.reshape(n, *output_shape, c)


def avg_pool(
    x: jax.Array,
    window: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: PaddingLike = "VALID",
    *,
    dilation: IntOrSeq = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = False,
) -> jax.Array:
    """Mean over each window: its sum divided by the real (unpadded) elements it covers,
    or with ``count_include_pad`` by its cells inside the explicit padding.

    Args:
      x: ``(N, *spatial, C)``, 1-3 spatial dims, floating dtype.
      window: int or one int per spatial dim.
      stride: int or one int per spatial dim; ``None`` means ``window``.
      padding: any amount form of :func:`cnnjax.ops.conv`; without ``count_include_pad``
        each side smaller than the (dilated) window.
      dilation: window dilation, int or one int per spatial dim.
      ceil_mode: round the output size up (PyTorch's ``ceil_mode``); the cells it adds
        are never counted.
      count_include_pad: count explicit padding cells in the divisor (PyTorch's and
        Flax's default; the cnnjax default ``False`` is TensorFlow's SAME).

    Returns:
      ``(N, *out_spatial, C)``.
    """
    if not isinstance(count_include_pad, bool):
        raise ValueError(f"`count_include_pad` must be a bool; got {count_include_pad!r}")
    win = _windows(
        x, window, stride, padding, dilation, ceil_mode, needs_real=not count_include_pad
    )
    if 0 in win.out_shape:
        return jnp.zeros(win.out_shape, win.x.dtype)
    zero = np.array(0, dtype=win.x.dtype)
    sums = _reduce(win, win.x, zero, lax.add)
    # Counting cells per window: a reduce over ones, which XLA folds to a constant. With
    # count_include_pad the explicit padding is ones too, and only ceil_mode's are zeros.
    ones = jnp.ones((1, *win.x.shape[1:-1], 1), win.x.dtype)
    if count_include_pad:
        ones = lax.pad(ones, np.array(1, ones.dtype), [(lo, hi, 0) for lo, hi in win.pads])
        win = win._replace(pads=((0, 0),) * len(win.pads))
    counts = _reduce(win, ones, zero, lax.add)
    return sums / counts


def _spatial_axes(x: jax.Array) -> tuple[int, ...]:
    axes = tuple(range(1, _spatial_rank(x) + 1))
    check_nonempty("x", x.shape, axes, "spatial dims")
    return axes


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over all spatial positions: ``(N, *spatial, C) -> (N, C)``."""
    x = as_array("x", x)
    return jnp.mean(x, axis=_spatial_axes(x))


def global_max_pool(x: jax.Array) -> jax.Array:
    """Maximum over all spatial positions: ``(N, *spatial, C) -> (N, C)``; the derivative
    goes to the first maximum (row-major over the spatial dims), as for :func:`max_pool`."""
    x = as_array("x", x)
    return max_first(x, _spatial_axes(x))
