"""Plain NumPy float64 references for the ops, written from the definitions.

Nothing here calls cnnjax: these loops are the independent statement of what each op
means, and read as documentation. Layouts are channels-last like the ops: ``x``
``(N, *spatial, C)``, kernel ``w`` ``(*k, C_in // groups, C_out)``. Each function loops
over output positions and kernel taps and vectorises over batch and channels, which is
quick enough for the tiny shapes of the tests.

Padding may be ``"SAME"``, ``"SAME_LOWER"``, ``"VALID"``, ``"CAUSAL"``, ``"CIRCULAR"``,
``"REFLECT"``, ``"REPLICATE"``, an int, or one entry per spatial dim, each an int or a
``(low, high)`` pair; negative amounts crop. ``padding_mode`` names NumPy's fill.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def same_padding(size: int, extent: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME: ``ceil(size / stride)`` outputs, the odd pad cell at the high end."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def resolve_padding(padding, in_spatial, extents, strides) -> list[tuple[int, int]]:
    """Any padding form -> one ``(low, high)`` pair per spatial dim."""
    n = len(in_spatial)
    if padding == "SAME":
        return [same_padding(i, e, s) for i, e, s in zip(in_spatial, extents, strides, strict=True)]
    if padding == "SAME_LOWER":
        same = [same_padding(i, e, s) for i, e, s in zip(in_spatial, extents, strides, strict=True)]
        return [(hi, lo) for lo, hi in same]
    if padding == "CAUSAL":  # output t sees inputs <= t
        return [(e - 1, 0) for e in extents]
    if padding in ("CIRCULAR", "REFLECT", "REPLICATE"):  # Flax's amounts
        return [((e - 1) // 2, e // 2) for e in extents]
    if padding == "VALID":
        return [(0, 0)] * n
    if isinstance(padding, int):
        return [(padding, padding)] * n
    return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


# padding_mode (PyTorch's names), or a padding string that implies it -> np.pad's mode.
NUMPY_FILL = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap",
              "CIRCULAR": "wrap", "REFLECT": "reflect", "REPLICATE": "edge"}  # fmt: skip


def _per_dim(value, n: int) -> tuple[int, ...]:
    return (value,) * n if isinstance(value, int) else tuple(value)


def _extents(kernel, dilation) -> tuple[int, ...]:
    """A dilated kernel of ``k`` taps spans ``dilation * (k - 1) + 1`` input cells."""
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True))


def _tap_position(o, t, stride, dilation) -> tuple[int, ...]:
    """Padded-input cell read by kernel tap ``t`` for output position ``o``."""
    return tuple(oi * s + ti * d for oi, ti, s, d in zip(o, t, stride, dilation, strict=True))


def _pad(x: np.ndarray, pads, value: float = 0.0, mode: str = "constant") -> np.ndarray:
    """Pad (or, for negative amounts, crop) the spatial dims of ``x``."""
    crop = tuple(
        slice(max(-lo, 0), x.shape[i + 1] - max(-hi, 0)) for i, (lo, hi) in enumerate(pads)
    )
    x = x[(slice(None), *crop)]
    grow = [(0, 0), *((max(lo, 0), max(hi, 0)) for lo, hi in pads), (0, 0)]
    if mode == "constant":
        return np.pad(x, grow, constant_values=value)
    return np.pad(x, grow, mode=mode)


def conv(
    x, w, b=None, *, stride=1, padding="SAME", dilation=1, groups=1, padding_mode="zeros"
) -> np.ndarray:
    """Cross-correlation with groups; padded cells filled as ``padding_mode`` says.

    ``y[n, o, g, j] = b + Σ_t Σ_i x_pad[n, o·stride + t·dilation, g, i] · w[t, i, g, j]``
    where ``o`` and ``t`` range over output positions and kernel taps (tuples, one entry per
    spatial dim), the ``C_in`` channels are split into ``groups`` blocks ``(g, i)`` and the
    ``C_out`` channels likewise into ``(g, j)``: group ``g`` of the output sees only group
    ``g`` of the input.
    """
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n = w.ndim - 2
    kernel, c_out = w.shape[:n], w.shape[-1]
    stride, dilation = _per_dim(stride, n), _per_dim(dilation, n)
    extents = _extents(kernel, dilation)
    fill = NUMPY_FILL[
        padding if isinstance(padding, str) and padding in NUMPY_FILL else padding_mode
    ]
    xp = _pad(x, resolve_padding(padding, x.shape[1:-1], extents, stride), mode=fill)
    # A kernel larger than the padded input leaves no output (lax's convention).
    out_spatial = [
        max((p - e) // s + 1, 0) for p, e, s in zip(xp.shape[1:-1], extents, stride, strict=True)
    ]
    batch = x.shape[0]
    wg = w.reshape(*kernel, w.shape[-2], groups, c_out // groups)
    y = np.zeros((batch, *out_spatial, groups, c_out // groups))
    for o in itertools.product(*map(range, out_spatial)):
        for t in itertools.product(*map(range, kernel)):
            pos = _tap_position(o, t, stride, dilation)
            patch = xp[(slice(None), *pos)].reshape(batch, groups, -1)  # (N, g, i)
            y[(slice(None), *o)] += np.einsum("ngi,igj->ngj", patch, wg[t])
    y = y.reshape(batch, *out_spatial, c_out)
    return y if b is None else y + np.asarray(b, np.float64)


def conv_transpose(
    y, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, output_padding=0
) -> np.ndarray:
    """Transposed convolution as a scatter-add (PyTorch's semantics).

    Every input value ``y[n, j, g, o]`` is spread over the cells that the forward conv of
    kernel ``w`` would have read to produce it: cell ``j·stride + t·dilation`` of the
    padded canvas receives ``y[n, j, g, o] · w[t, i, g, o]`` for each tap ``t`` and each
    channel ``i`` of group ``g``. The result is the canvas with the forward padding cut off
    (``low`` cells at the start, ``high − output_padding`` at the end):
    ``(in − 1)·stride + e − low − high + output_padding`` cells with ``e`` the dilated
    kernel extent. ``"SAME"`` means: the padding that forward SAME uses on an input of
    ``in · stride`` cells, and exactly that many output cells.
    """
    y, w = np.asarray(y, np.float64), np.asarray(w, np.float64)
    n = w.ndim - 2
    kernel, a_per_group = w.shape[:n], w.shape[-2]
    in_spatial = y.shape[1:-1]
    stride, dilation = _per_dim(stride, n), _per_dim(dilation, n)
    extents = _extents(kernel, dilation)
    if padding == "SAME":
        fwd_in = [i * s for i, s in zip(in_spatial, stride, strict=True)]
        pads = resolve_padding("SAME", fwd_in, extents, stride)
        output_padding = [
            f + lo + hi - e - (i - 1) * s
            for f, (lo, hi), e, i, s in zip(fwd_in, pads, extents, in_spatial, stride, strict=True)
        ]
    else:
        pads = resolve_padding(padding, in_spatial, extents, stride)
        output_padding = _per_dim(output_padding, n)
    canvas_size = [
        (i - 1) * s + e + op
        for i, s, e, op in zip(in_spatial, stride, extents, output_padding, strict=True)
    ]
    batch = y.shape[0]
    yg = y.reshape(batch, *in_spatial, groups, -1)
    wg = w.reshape(*kernel, a_per_group, groups, -1)
    canvas = np.zeros((batch, *canvas_size, groups, a_per_group))
    for j in itertools.product(*map(range, in_spatial)):
        for t in itertools.product(*map(range, kernel)):
            pos = _tap_position(j, t, stride, dilation)
            canvas[(slice(None), *pos)] += np.einsum("ngo,igo->ngi", yg[(slice(None), *j)], wg[t])
    out_size = [c - lo - hi for c, (lo, hi) in zip(canvas_size, pads, strict=True)]
    crop = tuple(slice(lo, lo + size) for (lo, _), size in zip(pads, out_size, strict=True))
    out = canvas[(slice(None), *crop)].reshape(batch, *out_size, groups * a_per_group)
    return out if b is None else out + np.asarray(b, np.float64)


def _pool(x, window, stride, padding, reduce_window, *, dilation=1, ceil_mode=False):
    """Apply ``reduce_window(values, real, inside, positions)`` to each window.

    ``real`` marks input cells, ``inside`` cells within the explicit padding (not those
    ``ceil_mode`` adds), ``positions`` the flat index of each cell in the (cropped) input.
    ``ceil_mode``: PyTorch's output size ``ceil((in + low + high - e) / stride) + 1``, less
    one if the last window would start past the input and its low padding.
    """
    x = np.asarray(x, np.float64)
    n = x.ndim - 2
    window, dilation = _per_dim(window, n), _per_dim(dilation, n)
    stride = window if stride is None else _per_dim(stride, n)
    extents = _extents(window, dilation)
    pads = resolve_padding(padding, x.shape[1:-1], extents, stride)
    x = _pad(x, [(min(lo, 0), min(hi, 0)) for lo, hi in pads])  # crops only
    pads = [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
    out_spatial = []
    for size, (lo, hi), e, s in zip(x.shape[1:-1], pads, extents, stride, strict=True):
        span = size + lo + hi - e
        out = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (out - 1) * s >= size + lo:
            out -= 1
        out_spatial.append(max(out, 0))
    # Room for the last windows: explicit padding, then whatever ceil_mode adds.
    extra = [
        max((o - 1) * s + e - (size + lo + hi), 0)
        for o, s, e, size, (lo, hi) in zip(
            out_spatial, stride, extents, x.shape[1:-1], pads, strict=True
        )
    ]
    full = [(lo, hi + ex) for (lo, hi), ex in zip(pads, extra, strict=True)]
    xp = _pad(x, full)
    real = _pad(np.ones_like(x), full).astype(bool)
    inside = _pad(_pad(np.ones_like(x), pads, value=1.0), [(0, ex) for ex in extra]).astype(bool)
    positions = _pad(
        np.broadcast_to(np.arange(np.prod(x.shape[1:-1])).reshape(1, *x.shape[1:-1], 1), x.shape),
        full,
        value=-1,
    )
    out = np.zeros((x.shape[0], *out_spatial, x.shape[-1]))
    for o in itertools.product(*map(range, out_spatial)):
        cells = tuple(
            slice(oi * s, oi * s + e, d)
            for oi, s, e, d in zip(o, stride, extents, dilation, strict=True)
        )
        at = (slice(None), *cells)
        out[(slice(None), *o)] = reduce_window(xp[at], real[at], inside[at], positions[at])
    return out


def _window_axes(x) -> tuple[int, ...]:
    return tuple(range(1, np.ndim(x) - 1))


def max_pool(x, window, stride=None, padding="VALID", *, dilation=1, ceil_mode=False):
    """Maximum over the real cells of each window (padding never wins); a window of
    padding only has no maximum (ValueError)."""
    axes = _window_axes(x)

    def reduce(v, real, inside, positions):
        if not real.any(axis=axes).all():
            raise ValueError("a window covers padding only")
        return np.where(real, v, -np.inf).max(axis=axes)

    return _pool(x, window, stride, padding, reduce, dilation=dilation, ceil_mode=ceil_mode)


def max_pool_indices(x, window, stride=None, padding="VALID", *, dilation=1, ceil_mode=False):
    """Flat spatial index (into ``x``) of the first maximum of each window, row-major."""

    def reduce(v, real, inside, positions):
        # Windows flattened in row-major order; argmax returns the first maximum.
        v = np.where(real, v, -np.inf)
        flat_v = np.moveaxis(v, -1, 1).reshape(v.shape[0], v.shape[-1], -1)
        flat_p = np.moveaxis(positions, -1, 1).reshape(v.shape[0], v.shape[-1], -1)
        first = flat_v.argmax(axis=-1)
        return np.take_along_axis(flat_p, first[..., None], axis=-1)[..., 0]

    return _pool(x, window, stride, padding, reduce, dilation=dilation, ceil_mode=ceil_mode)


def max_unpool(y, indices, output_shape) -> np.ndarray:
    """Each ``y[n, *o, c]`` added at flat spatial position ``indices[n, *o, c]``."""
    y, indices = np.asarray(y, np.float64), np.asarray(indices)
    out = np.zeros((y.shape[0], int(np.prod(output_shape)), y.shape[-1]))
    for n, *o, c in itertools.product(*map(range, y.shape)):
        out[n, indices[(n, *o, c)], c] += y[(n, *o, c)]
    return out.reshape(y.shape[0], *output_shape, y.shape[-1])


def avg_pool(
    x,
    window,
    stride=None,
    padding="VALID",
    *,
    dilation=1,
    ceil_mode=False,
    count_include_pad=False,
) -> np.ndarray:
    """Sum over each window divided by its number of real (unpadded) cells — TF's SAME — or
    with ``count_include_pad`` by its cells inside the explicit padding (PyTorch)."""
    axes = _window_axes(x)

    def reduce(v, real, inside, positions):
        count = inside if count_include_pad else real
        return v.sum(axis=axes) / count.sum(axis=axes)

    return _pool(x, window, stride, padding, reduce, dilation=dilation, ceil_mode=ceil_mode)


def pool(x, init, reducer, window, stride=None, padding="VALID", *, dilation=1, ceil_mode=False):
    """Fold ``reducer`` (a binary NumPy ufunc such as ``np.add``) over each window's cells,
    padding holding ``init``."""

    def reduce(v, real, inside, positions):
        v = np.where(real, v, init)
        flat = np.moveaxis(v, -1, 1).reshape(v.shape[0], v.shape[-1], -1)
        acc = np.full(flat.shape[:2], float(init))
        for i in range(flat.shape[-1]):
            acc = reducer(acc, flat[..., i])
        return acc

    return _pool(x, window, stride, padding, reduce, dilation=dilation, ceil_mode=ceil_mode)
