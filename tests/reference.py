"""Plain NumPy float64 references for the ops, written from the definitions.

Nothing here calls cnnjax: these loops are the independent statement of what each op
means, and read as documentation. Layouts are channels-last like the ops: ``x``
``(N, *spatial, C)``, kernel ``w`` ``(*k, C_in // groups, C_out)``. Each function loops
over output positions and kernel taps and vectorises over batch and channels, which is
quick enough for the tiny shapes of the tests.

Padding may be ``"SAME"``, ``"VALID"``, an int, one int per spatial dim, or one
``(low, high)`` pair per spatial dim.
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
    if padding == "VALID":
        return [(0, 0)] * n
    if isinstance(padding, int):
        return [(padding, padding)] * n
    return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def _per_dim(value, n: int) -> tuple[int, ...]:
    return (value,) * n if isinstance(value, int) else tuple(value)


def _extents(kernel, dilation) -> tuple[int, ...]:
    """A dilated kernel of ``k`` taps spans ``dilation * (k - 1) + 1`` input cells."""
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True))


def _tap_position(o, t, stride, dilation) -> tuple[int, ...]:
    """Padded-input cell read by kernel tap ``t`` for output position ``o``."""
    return tuple(oi * s + ti * d for oi, ti, s, d in zip(o, t, stride, dilation, strict=True))


def _pad(x: np.ndarray, pads, value: float = 0.0) -> np.ndarray:
    return np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=value)


def conv(x, w, b=None, *, stride=1, padding="SAME", dilation=1, groups=1) -> np.ndarray:
    """Cross-correlation with groups.

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
    xp = _pad(x, resolve_padding(padding, x.shape[1:-1], extents, stride))
    out_spatial = [
        (p - e) // s + 1 for p, e, s in zip(xp.shape[1:-1], extents, stride, strict=True)
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


def _pool(x, window, stride, padding, reduce_window):
    """Apply ``reduce_window(values, real)`` to each window; ``real`` marks unpadded cells."""
    x = np.asarray(x, np.float64)
    n = x.ndim - 2
    window = _per_dim(window, n)
    stride = window if stride is None else _per_dim(stride, n)
    pads = resolve_padding(padding, x.shape[1:-1], window, stride)
    xp = _pad(x, pads)
    real = _pad(np.ones_like(x), pads).astype(bool)
    out_spatial = [(p - k) // s + 1 for p, k, s in zip(xp.shape[1:-1], window, stride, strict=True)]
    out = np.zeros((x.shape[0], *out_spatial, x.shape[-1]))
    for o in itertools.product(*map(range, out_spatial)):
        cells = tuple(slice(oi * s, oi * s + k) for oi, s, k in zip(o, stride, window, strict=True))
        out[(slice(None), *o)] = reduce_window(
            xp[(slice(None), *cells)], real[(slice(None), *cells)]
        )
    return out


def max_pool(x, window, stride=None, padding="VALID") -> np.ndarray:
    """Maximum over the real cells of each window (padding never wins)."""
    axes = tuple(range(1, np.ndim(x) - 1))
    return _pool(
        x, window, stride, padding, lambda v, real: np.where(real, v, -np.inf).max(axis=axes)
    )


def avg_pool(x, window, stride=None, padding="VALID") -> np.ndarray:
    """Sum over each window divided by its number of real (unpadded) cells — TF's SAME."""
    axes = tuple(range(1, np.ndim(x) - 1))
    return _pool(x, window, stride, padding, lambda v, real: v.sum(axis=axes) / real.sum(axis=axes))
