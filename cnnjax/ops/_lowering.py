"""How a convolution is handed to XLA.

Every op in :mod:`cnnjax.ops` that convolves ends in :func:`conv_general` (``conv_max_pool``
in :func:`conv_max_pool_general`, at the end of this file), so the choice of lowering is
made here, once.

On CPU, float32 convolutions go to oneDNN (:mod:`cnnjax.ops._onednn`) where
:func:`_use_onednn` says it is faster: one primitive each for the convolution and its two
gradients, reading the channels-last buffers in place, with no patch tensor. Transposed
(input-dilated) convolutions, other dtypes, the small convs that rule leaves out, and
builds without oneDNN take cnnjax's own CPU lowering.

That lowering exists because XLA's CPU convolutions are slow for the small channel counts
of research CNNs (LeNet's 1->6 and 6->16 layers run several times slower than the same
arithmetic as a matmul), for grouped convolutions (6x at 64 channels, 4 groups) and for
input-dilated ones, i.e. transposed convolutions (4x). Worse, inside loops
(``lax.scan``/``while``, as in every fused training chunk and every evaluation pass)
XLA's CPU backend runs the kernel-gradient convolution ~50x slower than outside one (1.7 s
vs 32 ms for 128 x 13 x 13 x 32 -> 64, 3x3), at every width. It lowers every convolution
to "im2col": gather the kernel taps into a patch tensor with strided slices and contract
it with the kernel in one matmul (``dot_general``), which XLA's CPU backend runs through
its fast GEMM, and whose transpose (the gradient) is again slices, pads and matmuls.
Depthwise convolutions (one input channel per group) skip the matmul: they are the sum
over taps of shifted inputs times per-channel weights (:func:`_conv_depthwise`); other
grouped ones are one im2col matmul per group, concatenated. Stride-1 convolutions with far
fewer outputs than inputs are lowered output-side (:func:`_conv_output_side`). Only when
the patches would exceed ``IM2COL_MAX_BYTES`` is the native convolution kept, to bound
memory. On GPU/TPU the native convolution is the fast path and is kept.
``jax.lax.platform_dependent`` makes the choice when the computation is lowered for its
device, not when it is traced, so one jitted function is right on every backend.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnjax.ops import _onednn
from cnnjax.ops._args import conv_output_shape
from cnnjax.ops._cotangent import cotangent_read_once
from cnnjax.ops._max import max_first, tiled_max
from cnnjax.ops._stack import stack_taps

_SPATIAL = "DHW"

# im2col materialises kernel-taps times the input; above this many bytes of patches the
# native convolution is used even on CPU, to bound memory.
IM2COL_MAX_BYTES = 512 * 2**20

# im2col matmuls with at least this many rows (output positions), and this many channels
# each way (patch depth and outputs), are split in two.
_SPLIT_MIN_ROWS = 4096
_SPLIT_MIN_CHANNELS = 64

# Stride-1 convs with at least this many times more input than output channels are
# lowered output-side (:func:`_conv_output_side`) rather than by im2col.
_OUTPUT_SIDE_MIN_RATIO = 4

# Ungrouped float32 convs go to oneDNN with at least this many input channels, this many
# outputs if the kernel is 1x1, and this many output positions per image.
_ONEDNN_MIN_CHANNELS = 6
_ONEDNN_MIN_POINTWISE_OUTPUTS = 32
_ONEDNN_MIN_POSITIONS = 16
# A conv followed by a 2x2 max-pool (conv_max_pool) goes to oneDNN, then a tiled max, with
# at least this many input channels; narrower ones are faster by space-to-depth.
_ONEDNN_MIN_CONV_POOL_CHANNELS = 32


def dimension_numbers(n: int) -> tuple[str, str, str]:
    """Channels-last layouts for ``n`` spatial dims, e.g. ``("NHWC", "HWIO", "NHWC")``."""
    s = _SPATIAL[-n:]
    return (f"N{s}C", f"{s}IO", f"N{s}C")


def _conv_native(x, w, stride, padding, dilation, groups, lhs_dilation, precision):
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=tuple(stride),
        padding=tuple(padding),
        lhs_dilation=tuple(lhs_dilation),
        rhs_dilation=tuple(dilation),
        dimension_numbers=dimension_numbers(w.ndim - 2),
        feature_group_count=groups,
        precision=precision,
    )


def _padded(x, kernel, stride, padding, dilation, lhs_dilation):
    """``x`` zero-padded (and input-dilated) for a convolution, ``(N, *padded, C)``, and
    the convolution's output spatial shape."""
    config = [(0, 0, 0)]
    config += [(lo, hi, ld - 1) for (lo, hi), ld in zip(padding, lhs_dilation, strict=True)]
    config += [(0, 0, 0)]
    xp = lax.pad(x, np.array(0, dtype=x.dtype), config)
    out = conv_output_shape(
        xp.shape[1:-1], kernel, stride=stride, padding="VALID", dilation=dilation
    )
    return xp, out


def _taps(x, kernel, stride, padding, dilation, lhs_dilation):
    """Kernel taps of ``x``, row-major over the kernel: a list of ``(N, *out, C)``."""
    xp, out = _padded(x, kernel, stride, padding, dilation, lhs_dilation)
    taps = []
    for tap in itertools.product(*(range(k) for k in kernel)):
        start = [t * d for t, d in zip(tap, dilation, strict=True)]
        limit = [b + (o - 1) * s + 1 for b, o, s in zip(start, out, stride, strict=True)]
        taps.append(
            lax.slice(xp, (0, *start, 0), (xp.shape[0], *limit, xp.shape[-1]), (1, *stride, 1))
        )
    return taps


def _patches(x, kernel, stride, padding, dilation, lhs_dilation):
    """Kernel taps of ``x`` at every output position: ``(N, *out, taps, C)``, row-major
    over the kernel (one fusion: :func:`~cnnjax.ops._stack.stack_taps`)."""
    return stack_taps(_taps(x, kernel, stride, padding, dilation, lhs_dilation), kernel)


def _conv_depthwise(x, w, stride, padding, dilation, lhs_dilation):
    """``groups == C_in``: the sum over taps of each shifted input times its tap's
    per-channel weights, ``w``: ``(*kernel, 1, C_in * multiplier)``.

    As a matmul this is a batched product with one column per group, which XLA's CPU
    backend runs through transposed copies of the patch tensor; as a sum it is one
    elementwise fusion each way (the input gradient is the same sum of padded taps, the
    kernel gradient one reduction per tap) and no patch tensor is materialised. Both read
    the output's cotangent once per tap, so it is materialised first
    (:func:`~cnnjax.ops._cotangent.cotangent_read_once`): otherwise XLA recomputes the
    batch-norm and ReLU derivatives that produce it in each of those reads.
    """
    n = w.ndim - 2
    c = x.shape[-1]
    multiplier = w.shape[-1] // c
    # Low-precision inputs accumulate in float32, as the matmul path's dot does.
    acc = jnp.promote_types(x.dtype, jnp.float32)
    wk = w.reshape(-1, *(1,) * (n + 1), c, multiplier).astype(acc)
    taps = _taps(x.astype(acc), w.shape[:n], stride, padding, dilation, lhs_dilation)
    y = functools.reduce(operator.add, (t[..., None] * wk[i] for i, t in enumerate(taps)))
    return cotangent_read_once(y.reshape(*y.shape[:-2], c * multiplier).astype(x.dtype))


def _phase(r, count, size, k, s, d, lo):
    """One output phase ``r`` (``o = s*q + r``, ``count`` of them) of a 1-d convolution of
    the ``s``-dilated input (``size`` samples, padded ``lo`` low) with ``k`` taps ``d``
    apart: ``(first tap, tap step, padding of x, dilation)``, or None when no tap of the
    phase lands on an input sample (or it has no outputs).

    Output ``o`` reads the dilated input at ``o + t*d - lo``, an input sample iff that is
    a multiple of ``s``: tap ``t`` then reads ``x[q + (r + t*d - lo) // s]``. The taps that
    do form a progression ``t0, t0 + step, ...`` whose reads are ``d * step // s`` apart.
    """
    first = [t for t in range(min(k, s)) if (r + t * d - lo) % s == 0]
    if not first or count == 0:
        return None
    t0, step = first[0], s // math.gcd(d, s)
    taps = len(range(t0, k, step))
    sub_dilation = d * step // s
    base = (r + t0 * d - lo) // s  # the first output's read offset into x
    return t0, step, (-base, count + sub_dilation * (taps - 1) - size + base), sub_dilation


def _conv_phases(x, w, padding, dilation, groups, lhs_dilation, precision):
    """Stride-1 convolution of the ``lhs_dilation``-dilated ``x`` (a transposed
    convolution) as one convolution of ``x`` itself per output phase, interleaved.

    Of the dilated input only every ``s``-th sample is not a zero, so output ``s*q + r``
    reads only the taps whose position lands on one; per phase ``r`` those taps form a
    smaller kernel over ``x`` (:func:`_phase`). The patch tensors then hold no inserted
    zeros: ``prod(s)`` times fewer bytes and multiplications than convolving the dilated
    input.
    """
    n = w.ndim - 2
    kernel, cout = w.shape[:n], w.shape[-1]
    size = x.shape[1:-1]
    out = [
        (i - 1) * s + 1 + lo + hi - d * (k - 1)
        for i, s, (lo, hi), d, k in zip(size, lhs_dilation, padding, dilation, kernel, strict=True)
    ]
    q = [-(-o // s) for o, s in zip(out, lhs_dilation, strict=True)]  # outputs per phase, most
    low = [lo for lo, _ in padding]
    per_dim = list(zip(size, kernel, lhs_dilation, dilation, low, strict=True))
    parts = []
    for r in itertools.product(*(range(s) for s in lhs_dilation)):
        counts = [len(range(ri, o, s)) for ri, o, s in zip(r, out, lhs_dilation, strict=True)]
        phases = [_phase(*args, *dim) for *args, dim in zip(r, counts, per_dim, strict=True)]
        if None in phases:
            y = jnp.zeros((x.shape[0], *counts, cout), x.dtype)
        else:
            index = tuple(slice(t0, None, step) for t0, step, *_ in phases)
            y = _conv_im2col(
                x,
                w[index],
                (1,) * n,
                tuple(p[2] for p in phases),
                tuple(p[3] for p in phases),
                groups,
                (1,) * n,
                precision,
            )
        # Every phase to the same size, so that they interleave by a reshape.
        pad = [(0, 0, 0), *((0, qi - c, 0) for qi, c in zip(q, counts, strict=True)), (0, 0, 0)]
        parts.append(lax.pad(y, np.array(0, y.dtype), pad))
    y = jnp.stack(parts).reshape(*lhs_dilation, x.shape[0], *q, cout)
    # (s_1..s_n, N, Q_1..Q_n, C) -> (N, Q_1, s_1, ..., Q_n, s_n, C) -> (N, out..., C)
    order = [n, *(a for i in range(n) for a in (n + 1 + i, i)), 2 * n + 1]
    interleaved = [qi * s for qi, s in zip(q, lhs_dilation, strict=True)]
    y = y.transpose(order).reshape(x.shape[0], *interleaved, cout)
    return y[(slice(None), *(slice(0, o) for o in out))]


def _conv_output_side(x, w, padding, dilation, precision):
    """Stride-1 convolution as one matmul of ``x`` with every tap's kernel at once,
    ``(N, *spatial, taps, C_out)``, then the sum over taps of its shifted slices.

    For convs with far fewer outputs than inputs this moves fewer bytes than im2col both
    ways: the tensor written has ``taps * C_out`` columns instead of ``taps * C_in``, and
    the transpose gathers the output's cotangent into that tensor instead of scattering
    a ``taps * C_in`` one.
    """
    n = w.ndim - 2
    kernel, (cin, cout) = w.shape[:n], w.shape[n:]
    taps = math.prod(kernel)
    w_all = w.reshape(taps, cin, cout).transpose(1, 0, 2).reshape(cin, taps * cout)
    dims = (((1,), (0,)), ((), ()))
    z = lax.dot_general(x.reshape(-1, cin), w_all, dims, precision=precision)
    # Low-precision taps are summed in float32, as im2col's one dot accumulates them.
    z = z.reshape(*x.shape[:-1], taps, cout).astype(jnp.promote_types(z.dtype, jnp.float32))
    config = [(0, 0, 0), *((lo, hi, 0) for lo, hi in padding), (0, 0, 0), (0, 0, 0)]
    zp = lax.pad(z, np.array(0, z.dtype), config)
    out = conv_output_shape(
        zp.shape[1:-2], kernel, stride=(1,) * n, padding="VALID", dilation=dilation
    )
    parts = []
    for i, tap in enumerate(itertools.product(*(range(k) for k in kernel))):
        start = [t * d for t, d in zip(tap, dilation, strict=True)]
        limit = [b + o for b, o in zip(start, out, strict=True)]
        part = lax.slice(zp, (0, *start, i, 0), (zp.shape[0], *limit, i + 1, cout))
        parts.append(part.reshape(*part.shape[:-2], cout))
    return functools.reduce(operator.add, parts).astype(x.dtype)


def _conv_onednn(x, w, stride, padding, dilation, groups):
    """oneDNN's convolution; negative padding (cropping) is done first, as a slice."""
    crop = [(0, 0, 0), *((min(lo, 0), min(hi, 0), 0) for lo, hi in padding), (0, 0, 0)]
    x = lax.pad(x, np.array(0, x.dtype), crop)
    padding = [(max(lo, 0), max(hi, 0)) for lo, hi in padding]
    return _onednn.conv(x, w, stride, padding, dilation, groups)


def _use_onednn(x, w, stride, padding, dilation, groups, lhs_dilation) -> bool:
    """Whether oneDNN is the faster CPU lowering of this convolution (float32 only).

    Measured per layer, forward and backward (benchmarks/RESULTS.md): grouped and
    depthwise convs gain 2-12x; first layers (few input channels), 1x1 convs to few
    outputs and convs to tiny outputs lose, since each oneDNN call has a fixed cost of
    ~0.5-1 ms that cnnjax's own lowering of such small matmuls does not pay; transposed
    convs keep their phase split (each phase is a small conv). 1-D convs keep the own
    lowering: oneDNN's 1-D kernels lose at most of the zoo's sequence layers (up to 4x at
    large dilations, where its weights gradient falls back to a GEMM).
    """
    if not (x.dtype == w.dtype == jnp.float32 and set(lhs_dilation) == {1}):
        return False
    # XLA's SPMD partitioner cannot split a custom call: under a mesh of several devices it
    # would gather the whole batch onto every device. Sharded programs keep the own lowering.
    if jax.device_count() > 1 or not _onednn.available():
        return False
    if w.ndim == 3:  # 1-D
        return False
    if groups > 1:
        return True
    n = w.ndim - 2
    kernel, (cin, cout) = w.shape[:n], w.shape[n:]
    out = conv_output_shape(
        x.shape[1:-1], kernel, stride=stride, padding=padding, dilation=dilation
    )
    pointwise_to_few = math.prod(kernel) == 1 and cout < _ONEDNN_MIN_POINTWISE_OUTPUTS
    return (
        cin >= _ONEDNN_MIN_CHANNELS
        and not pointwise_to_few
        and math.prod(out) >= _ONEDNN_MIN_POSITIONS
    )


def _conv_im2col(x, w, stride, padding, dilation, groups, lhs_dilation, precision):
    """cnnjax's own CPU lowering (see the module docstring)."""
    n = w.ndim - 2
    kernel, (cin_g, cout) = w.shape[:n], w.shape[n:]
    if any(ld > 1 for ld in lhs_dilation) and all(s == 1 for s in stride):
        return _conv_phases(x, w, padding, dilation, groups, lhs_dilation, precision)
    if groups > 1 and cin_g == 1:
        return _conv_depthwise(x, w, stride, padding, dilation, lhs_dilation)
    if groups > 1:
        # One matmul per group: as one batched matmul over groups, XLA's CPU backend
        # makes transposed copies of the whole patch tensor, which costs more than the dots.
        cout_g = cout // groups
        return jnp.concatenate(
            [
                _conv_im2col(
                    x[..., g * cin_g : (g + 1) * cin_g],
                    w[..., g * cout_g : (g + 1) * cout_g],
                    stride,
                    padding,
                    dilation,
                    1,
                    lhs_dilation,
                    precision,
                )
                for g in range(groups)
            ],
            axis=-1,
        )
    taps = math.prod(kernel)
    if (
        taps > 1
        and cin_g >= _OUTPUT_SIDE_MIN_RATIO * cout
        and set(stride) | set(lhs_dilation) == {1}
    ):
        return _conv_output_side(x, w, padding, dilation, precision)
    p = _patches(x, kernel, stride, padding, dilation, lhs_dilation)
    rows, depth = math.prod(p.shape[:-2]), p.shape[-2] * cin_g
    # The kernel gradient contracts over all rows; as one matmul XLA's CPU backend runs it
    # behind a transposed copy of the output gradient. Split into two halves of rows (a
    # batched matmul against the kernel broadcast twice), it is two matmuls and a sum:
    # faster train steps for convs this wide and long; narrower ones lose.
    wide = min(depth, cout) >= _SPLIT_MIN_CHANNELS
    halves = 2 if rows % 2 == 0 and rows >= _SPLIT_MIN_ROWS and wide else 1
    y = lax.dot_general(
        p.reshape(halves, rows // halves, depth),
        jnp.broadcast_to(w.reshape(depth, cout), (halves, depth, cout)),
        (((2,), (1,)), ((0,), (0,))),
        precision=precision,
    )
    return y.reshape(*p.shape[:-2], cout)


def _im2col_bytes(x_shape, w_shape, stride, padding, lhs_dilation, itemsize) -> int:
    n = len(w_shape) - 2
    out = 1
    for size, (lo, hi), s, ld in zip(x_shape[1:-1], padding, stride, lhs_dilation, strict=True):
        out *= max(((size - 1) * ld + 1 + lo + hi) // s, 1)
    return x_shape[0] * out * math.prod(w_shape[:n]) * x_shape[-1] * itemsize


def conv_general(
    x: jax.Array,
    w: jax.Array,
    *,
    stride: Sequence[int],
    padding: Sequence[tuple[int, int]],
    dilation: Sequence[int],
    groups: int = 1,
    lhs_dilation: Sequence[int] | None = None,
    precision: lax.Precision | None = None,
) -> jax.Array:
    """Channels-last N-d convolution with already-validated, explicit arguments.

    Args:
      x: ``(N, *spatial, C_in)``.
      w: ``(*kernel_spatial, C_in // groups, C_out)``.
      stride, dilation: one int per spatial dim.
      padding: one ``(low, high)`` pair per spatial dim (may be negative for cropping).
      groups: feature groups.
      lhs_dilation: input dilation (used by transposed convolution), one int per dim.

    Returns:
      ``(N, *out_spatial, C_out)``.
    """
    n = w.ndim - 2
    args = (
        tuple(stride),
        tuple(tuple(p) for p in padding),
        tuple(dilation),
        groups,
        (1,) * n if lhs_dilation is None else tuple(lhs_dilation),
        precision,
    )
    # On CPU: oneDNN where _use_onednn says, else cnnjax's own lowering, unless its patches
    # would be too large.
    if _use_onednn(x, w, *args[:5]):
        cpu = lambda x, w: _conv_onednn(x, w, *args[:4])  # noqa: E731
    elif _im2col_bytes(x.shape, w.shape, *args[:2], args[4], x.dtype.itemsize) > IM2COL_MAX_BYTES:
        return _conv_native(x, w, *args)
    else:
        cpu = lambda x, w: _conv_im2col(x, w, *args)  # noqa: E731
    return lax.platform_dependent(
        x,
        w,
        cpu=cpu,
        default=lambda x, w: _conv_native(x, w, *args),
    )


# ----------------------------------------------------------------------------------------
# A stride-1 convolution followed by a non-overlapping max-pool, as one lowering.
# ----------------------------------------------------------------------------------------


def _phase_taps(kernel: Sequence[int], pool: Sequence[int]) -> np.ndarray:
    """Which tap of the flattened kernel each tap of the space-to-depth kernel holds.

    The space-to-depth kernel has, per spatial dim, ``T = (p + k - 2) // p + 1`` taps ``m``,
    ``p`` input phases ``u`` and ``p`` output phases ``r``; it holds the original tap
    ``a = p*m + u - r`` where ``0 <= a < k``. Returns an int array of shape
    ``(*T, *p, *p)`` (all ``m``, then all ``u``, then all ``r``) of indices into the
    flattened kernel taps, ``prod(kernel)`` standing for a zero tap.
    """
    n = len(kernel)
    taps = [(p + k - 2) // p + 1 for k, p in zip(kernel, pool, strict=True)]
    index = np.full((*taps, *pool, *pool), math.prod(kernel), np.int32)
    for pos in itertools.product(*(range(s) for s in index.shape)):
        m, u, r = pos[:n], pos[n : 2 * n], pos[2 * n :]
        a = [p * mi + ui - ri for p, mi, ui, ri in zip(pool, m, u, r, strict=True)]
        if all(0 <= ai < k for ai, k in zip(a, kernel, strict=True)):
            index[pos] = np.ravel_multi_index(a, kernel)
    return index


def _conv_max_pool_native(x, w, padding, pool, precision):
    """XLA's convolution, then ``reduce_window`` max: the GPU/TPU lowering."""
    n = w.ndim - 2
    y = _conv_native(x, w, (1,) * n, padding, (1,) * n, 1, (1,) * n, precision)
    dims = (1, *pool, 1)
    return lax.reduce_window(y, np.array(-np.inf, y.dtype), lax.max, dims, dims, "VALID")


def _conv_max_pool_s2d(x, w, padding, pool, precision):
    """Space-to-depth: the convolution evaluated at every pool phase at once.

    ``x`` is regrouped into ``pool``-sized blocks (``(N, *S/p, prod(p)*C)``) and convolved
    VALID with a kernel mapping each input block to the conv output at all ``prod(p)``
    positions of one pooling window; the max-pool is then a max over those phases. For
    LeNet's 1->6 and 6->16 layers this is a denser matmul on a ~2.8x smaller patch tensor,
    and the pool needs no window gather (benchmarks/conv_max_pool.py: 1.8-3.4x faster
    forward+backward than ``conv`` then ``max_pool``).
    """
    n = w.ndim - 2
    kernel, (c_in, c_out) = w.shape[:n], w.shape[n:]
    phases = math.prod(pool)
    taps = [(p + k - 2) // p + 1 for k, p in zip(kernel, pool, strict=True)]
    # Pool windows per dim, then the blocks of input they need: pad or crop to fit.
    out = [
        (size + lo + hi - k + 1) // p
        for size, (lo, hi), k, p in zip(x.shape[1:-1], padding, kernel, pool, strict=True)
    ]
    config = [(0, 0, 0)]
    for size, (lo, _), o, t, p in zip(x.shape[1:-1], padding, out, taps, pool, strict=True):
        config.append((lo, p * (o + t - 1) - size - lo, 0))  # the high side pads or crops
    config.append((0, 0, 0))
    xp = lax.pad(x, np.array(0, x.dtype), config)
    blocks = [s // p for s, p in zip(xp.shape[1:-1], pool, strict=True)]
    split = [d for b, p in zip(blocks, pool, strict=True) for d in (b, p)]
    xs = xp.reshape(x.shape[0], *split, c_in)
    order = [0, *range(1, 2 * n, 2), *range(2, 2 * n + 1, 2), 2 * n + 1]
    xs = xs.transpose(order).reshape(x.shape[0], *blocks, phases * c_in)
    zero_tap = jnp.zeros((1, c_in, c_out), w.dtype)
    flat = jnp.concatenate([w.reshape(-1, c_in, c_out), zero_tap])
    ws = flat[_phase_taps(kernel, pool)]  # (*T, *p_in, *p_out, C_in, C_out)
    order = [*range(2 * n), 3 * n, *range(2 * n, 3 * n), 3 * n + 1]
    ws = ws.transpose(order).reshape(*taps, phases * c_in, phases * c_out)
    y = conv_general(
        xs, ws, stride=(1,) * n, padding=((0, 0),) * n, dilation=(1,) * n, precision=precision
    )
    # The first maximum gets the derivative (row-major phases: the window's order), and
    # one argmax one-hot is ~1.7x faster for LeNet's first layer than JAX's rule for max.
    return max_first(y.reshape(*y.shape[:-1], phases, c_out), (y.ndim - 1,))


def _conv_max_pool_onednn(x, w, padding, pool):
    """oneDNN's convolution, then the max over each pool window (first maximum's
    derivative), for convs wide enough that space-to-depth's extra taps cost more."""
    n = w.ndim - 2
    y = _conv_onednn(x, w, (1,) * n, padding, (1,) * n, 1)
    return tiled_max(y, (1, *pool, 1), ((0, 0),) * y.ndim, np.array(-np.inf, y.dtype))


def conv_max_pool_general(
    x: jax.Array,
    w: jax.Array,
    *,
    padding: Sequence[tuple[int, int]],
    pool: Sequence[int],
    precision: lax.Precision | None = None,
) -> jax.Array:
    """``max_pool(conv(x, w), pool)``: stride-1 convolution, then VALID max-pooling with
    windows of ``pool`` and stride ``pool``, from already-validated arguments.

    Args:
      x: ``(N, *spatial, C_in)``.
      w: ``(*kernel_spatial, C_in, C_out)``.
      padding: one ``(low, high)`` pair per spatial dim, each side ``>= 0``.
      pool: the pooling window (and stride), one int per spatial dim.

    Returns:
      ``(N, *(conv_out // pool), C_out)``.
    """
    padding = tuple(tuple(p) for p in padding)
    pool = tuple(pool)
    n = w.ndim - 2
    wide = w.shape[n] >= _ONEDNN_MIN_CONV_POOL_CHANNELS
    ones = (1,) * n
    if wide and _use_onednn(x, w, ones, padding, ones, 1, ones):
        cpu = functools.partial(_conv_max_pool_onednn, padding=padding, pool=pool)
    else:
        cpu = functools.partial(_conv_max_pool_s2d, padding=padding, pool=pool, precision=precision)
    return lax.platform_dependent(
        x,
        w,
        cpu=cpu,
        default=lambda x, w: _conv_max_pool_native(x, w, padding, pool, precision),
    )
