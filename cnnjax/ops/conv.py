"""Convolutions as pure functions, channels-last.

Layouts (``n`` = 1, 2 or 3 spatial dims, taken from the kernel's rank):

- input ``x``: ``(N, *spatial, C_in)``
- kernel ``w``: ``(*kernel_spatial, C_in // groups, C_out)``
- bias ``b``: ``(C_out,)`` or ``None``

``stride`` and ``dilation`` are an int or one int per spatial dim; ``padding`` is a
string (``"SAME"``, ``"SAME_LOWER"``, ``"VALID"``, ``"CAUSAL"``, ``"CIRCULAR"``,
``"REFLECT"``, ``"REPLICATE"``), an int, or one entry per spatial dim, each an int or a
``(low, high)`` pair, negative amounts cropping (see
:func:`cnnjax.ops._args.padding_pairs`); ``padding_mode`` (``"zeros"``, ``"reflect"``,
``"replicate"``, ``"circular"``) says how padded cells are filled. Other fills than zeros
are applied to the input with ``jnp.pad`` before the convolution, which then pads nothing.
A kernel larger than the padded input gives an empty output, as in lax.

Every op validates its arguments, raises a ``ValueError`` naming the offending argument,
and reaches XLA only through :func:`cnnjax.ops._lowering.conv_general`. Array arguments
may be anything ``jnp.asarray`` takes; ``x``, the kernels and ``b`` must share one floating
dtype: the ops never promote silently, so a bfloat16 model stays bfloat16.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.ops._args import (
    IntOrSeq,
    PaddingLike,
    as_array,
    as_tuple,
    check_nonempty,
    check_rank,
    conv_output_shape,
    effective_kernel,
    pad_input,
    padding_fill,
    padding_pairs,
    spatial_rank_of_kernel,
)
from cnnjax.ops._lowering import conv_general, conv_max_pool_general

# ----------------------------------------------------------------------------------------
# Validation shared by the ops below. Each helper takes the argument names to quote.
# ----------------------------------------------------------------------------------------


def _spatial_rank(x: jax.Array, w: jax.Array, x_name: str = "x", w_name: str = "w") -> int:
    """Spatial rank from the kernel; check that ``x`` has the matching rank and that the
    kernel has no zero-size dim."""
    n = spatial_rank_of_kernel(w.shape, w_name)
    check_nonempty(w_name, w.shape, range(w.ndim), "dims")
    check_rank(
        x_name,
        x.shape,
        n + 2,
        f"(N, *spatial, C) with {n} spatial dim(s), as `{w_name}` of shape "
        f"{tuple(w.shape)} implies",
    )
    return n


def _check_dtypes(**arrays: jax.Array | None) -> None:
    """All given arrays (``None`` skipped) must share one floating dtype."""
    dtypes = {name: jnp.dtype(a.dtype) for name, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) > 1 or not all(
        jnp.issubdtype(d, jnp.floating) for d in dtypes.values()
    ):
        given = ", ".join(f"`{name}`: {d}" for name, d in dtypes.items())
        raise ValueError(f"arrays must share one floating dtype; got {given}")


def _check_groups(groups: int, c_in: int, w: jax.Array, x_name: str, w_name: str) -> None:
    """``c_in == w.shape[-2] * groups`` and ``groups`` divides ``C_out``."""
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"`groups` must be an int >= 1; got {groups!r}")
    if c_in != w.shape[-2] * groups:
        raise ValueError(
            f"`{x_name}` has {c_in} channels but `{w_name}` of shape {tuple(w.shape)} with "
            f"groups={groups} expects {w_name}.shape[-2] * groups = {w.shape[-2] * groups}"
        )
    if w.shape[-1] % groups:
        raise ValueError(
            f"`groups`={groups} must divide the output channels {w.shape[-1]} of `{w_name}` "
            f"of shape {tuple(w.shape)}"
        )


def _check_bias(b: jax.Array | None, c_out: int) -> None:
    if b is not None and tuple(b.shape) != (c_out,):
        raise ValueError(f"`b` must have shape ({c_out},) (C_out,); got {tuple(b.shape)}")


def _empty_or_none(x: jax.Array, out_spatial: Sequence[int], c_out: int) -> jax.Array | None:
    """The all-zero-size output ``(N, *out_spatial, c_out)`` when it has no element, else
    ``None``: lax returns such outputs where a kernel does not fit, and the lowerings
    need at least one output position."""
    shape = (x.shape[0], *out_spatial, c_out)
    return jnp.zeros(shape, x.dtype) if 0 in shape else None


def _add_bias(y: jax.Array, b: jax.Array | None) -> jax.Array:
    if b is None:
        return y
    # Explicit reshape: the project runs with rank promotion disabled.
    return y + b.reshape((1,) * (y.ndim - 1) + (-1,))


def _conv(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None,
    *,
    stride: IntOrSeq,
    padding: PaddingLike,
    dilation: IntOrSeq,
    groups: int,
    fill: str = "constant",
    x_name: str = "x",
    w_name: str = "w",
) -> jax.Array:
    """:func:`conv` with the fill as a ``jnp.pad`` mode, quoting the caller's argument
    names in its errors."""
    x, w = as_array(x_name, x), as_array(w_name, w)
    b = None if b is None else as_array("b", b)
    n = _spatial_rank(x, w, x_name, w_name)
    _check_groups(groups, x.shape[-1], w, x_name, w_name)
    _check_dtypes(**{x_name: x, w_name: w, "b": b})
    _check_bias(b, w.shape[-1])
    stride = as_tuple("stride", stride, n)
    dilation = as_tuple("dilation", dilation, n)
    kernel = tuple(w.shape[:n])
    pads = padding_pairs(padding, x.shape[1:-1], kernel, stride, dilation)
    out = conv_output_shape(x.shape[1:-1], kernel, stride=stride, padding=pads, dilation=dilation)
    empty = _empty_or_none(x, out, w.shape[-1])
    if empty is not None:
        return _add_bias(empty, b)
    x, pads = pad_input(x, pads, fill, x_name)
    y = conv_general(x, w, stride=stride, padding=pads, dilation=dilation, groups=groups)
    return _add_bias(y, b)


# ----------------------------------------------------------------------------------------
# Public ops.
# ----------------------------------------------------------------------------------------


def conv(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None = None,
    *,
    stride: IntOrSeq = 1,
    padding: PaddingLike = "SAME",
    dilation: IntOrSeq = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> jax.Array:
    """N-d cross-correlation (deep learning's "convolution"), channels-last.

    ``y[n, *o, c] = b[c] + Σ_{t, i} x_pad[n, *(o·stride + t·dilation), g·C_in/groups + i]
    · w[*t, i, c]``, summing over kernel taps ``t`` and the ``C_in/groups`` channels ``i``
    of group ``g = c // (C_out/groups)``, the group of output channel ``c``.
    With integer padding this equals ``torch.nn.functional.conv{1,2,3}d`` after
    NCHW↔NHWC and OIHW↔HWIO transposition.

    Args:
      x: ``(N, *spatial, C_in)`` with as many spatial dims as ``w``.
      w: ``(*kernel_spatial, C_in // groups, C_out)``; its rank sets the spatial rank (1-3).
      b: ``(C_out,)`` or ``None``.
      stride: int or one int per spatial dim, ``>= 1``.
      padding: ``"SAME"`` (TF/XLA: output ``ceil(in / stride)``, odd padding at the high
        end), ``"SAME_LOWER"`` (odd padding at the low end), ``"VALID"``, ``"CAUSAL"``
        (``dilation·(k − 1)`` at the low end only), ``"CIRCULAR"`` / ``"REFLECT"`` /
        ``"REPLICATE"`` (``((e − 1) // 2, e // 2)`` filled that way, as Flax), an int, or
        one entry per spatial dim, each an int or a ``(low, high)`` pair, e.g.
        ``[1, (2, 3)]``; negative amounts crop.
      dilation: kernel dilation, int or one int per spatial dim, ``>= 1``.
      groups: feature groups; must divide ``C_in`` (via ``w.shape[-2]``) and ``C_out``.
      padding_mode: how padded cells are filled: ``"zeros"``, ``"reflect"``,
        ``"replicate"`` or ``"circular"`` (``torch.nn.Conv*d``'s ``padding_mode``).

    Returns:
      ``(N, *out_spatial, C_out)``, ``out_spatial`` as given by
      :func:`cnnjax.ops.conv_output_shape` (zero-size where the kernel does not fit).
    """
    return _conv(
        x,
        w,
        b,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        fill=padding_fill(padding, padding_mode),
    )


def _conv_of_rank(n: int, x: jax.Array, w: jax.Array, b: jax.Array | None, **kw: Any) -> jax.Array:
    layout = (
        "(k, C_in // groups, C_out)",
        "(kh, kw, C_in // groups, C_out)",
        "(kd, kh, kw, C_in // groups, C_out)",
    )[n - 1]
    check_rank("w", np.shape(w), n + 2, f"{layout} for conv{n}d")
    return conv(x, w, b, **kw)


def conv1d(x: jax.Array, w: jax.Array, b: jax.Array | None = None, **kwargs: Any) -> jax.Array:
    """:func:`conv` with ``x``: ``(N, L, C_in)``, ``w``: ``(k, C_in // groups, C_out)``.

    Keyword arguments are those of :func:`conv`.
    """
    return _conv_of_rank(1, x, w, b, **kwargs)


def conv2d(x: jax.Array, w: jax.Array, b: jax.Array | None = None, **kwargs: Any) -> jax.Array:
    """:func:`conv` with ``x``: ``(N, H, W, C_in)``, ``w``: ``(kh, kw, C_in // groups, C_out)``.

    Keyword arguments are those of :func:`conv`.
    """
    return _conv_of_rank(2, x, w, b, **kwargs)


def conv3d(x: jax.Array, w: jax.Array, b: jax.Array | None = None, **kwargs: Any) -> jax.Array:
    """:func:`conv` with ``x``: ``(N, D, H, W, C_in)``, ``w``: ``(kd, kh, kw, C_in // groups,
    C_out)``.

    Keyword arguments are those of :func:`conv`.
    """
    return _conv_of_rank(3, x, w, b, **kwargs)


def conv_max_pool(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None = None,
    *,
    padding: PaddingLike = "SAME",
    pool: IntOrSeq = 2,
    padding_mode: str = "zeros",
) -> jax.Array:
    """``max_pool(conv(x, w, b, padding=padding), pool)`` as one op: a stride-1 convolution,
    then max-pooling over non-overlapping ``pool`` windows (VALID).

    The same values as the two ops in sequence. A non-decreasing activation commutes with
    the max, so ``relu(conv_max_pool(x, w, b))`` is LeNet's conv -> ReLU -> max-pool. On CPU
    it is lowered by space-to-depth (the conv evaluated at every position of a pooling
    window in one matmul, the pool a max over those positions): LeNet-5's layers train
    1.8x (conv2) to 3.4x (conv1) faster than with the two ops. Elsewhere it is XLA's
    convolution and ``reduce_window``.

    Args:
      x: ``(N, *spatial, C_in)`` with as many spatial dims as ``w``.
      w: ``(*kernel_spatial, C_in, C_out)``; its rank sets the spatial rank (1-3).
      b: ``(C_out,)`` or ``None``.
      padding: the convolution's padding, any form :func:`conv` accepts.
      pool: pooling window and stride, int or one int per spatial dim, ``>= 1``; a trailing
        remainder of the conv output smaller than a window is dropped.
      padding_mode: as for :func:`conv`.

    Returns:
      ``(N, *(conv_out_spatial // pool), C_out)``, ``conv_out_spatial`` that of
      :func:`conv` with stride 1 (zero-size where a pool window does not fit).
    """
    x, w = as_array("x", x), as_array("w", w)
    b = None if b is None else as_array("b", b)
    n = _spatial_rank(x, w)
    _check_groups(1, x.shape[-1], w, "x", "w")
    _check_dtypes(x=x, w=w, b=b)
    _check_bias(b, w.shape[-1])
    pool = as_tuple("pool", pool, n)
    kernel = tuple(w.shape[:n])
    pads = padding_pairs(padding, x.shape[1:-1], kernel, (1,) * n, (1,) * n)
    fill = padding_fill(padding, padding_mode)
    out = conv_output_shape(x.shape[1:-1], kernel, padding=pads)
    empty = _empty_or_none(x, [o // p for o, p in zip(out, pool, strict=True)], w.shape[-1])
    if empty is not None:
        return _add_bias(empty, b)
    x, pads = pad_input(x, pads, fill)
    # max(y) + b == max(y + b): the bias goes on the smaller, pooled tensor.
    return _add_bias(conv_max_pool_general(x, w, padding=pads, pool=pool), b)


def _check_depthwise_kernel(x: jax.Array, w: jax.Array, w_name: str) -> None:
    x, w = as_array("x", x), as_array(w_name, w)
    _spatial_rank(x, w, "x", w_name)
    c_in = x.shape[-1]
    if w.shape[-2] != 1 or w.shape[-1] % c_in:
        raise ValueError(
            f"`{w_name}` must have shape (*kernel_spatial, 1, C_in * multiplier) with C_in = "
            f"{c_in} (from `x` of shape {tuple(x.shape)}); got {tuple(w.shape)}"
        )


def depthwise_conv(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None = None,
    *,
    stride: IntOrSeq = 1,
    padding: PaddingLike = "SAME",
    dilation: IntOrSeq = 1,
    padding_mode: str = "zeros",
) -> jax.Array:
    """Depthwise convolution: each input channel gets its own ``multiplier`` filters.

    Output channel ``c·multiplier + m`` is input channel ``c`` correlated with
    ``w[..., 0, c·multiplier + m]`` (TensorFlow's order); this is :func:`conv` with
    ``groups = C_in``.

    Args:
      x: ``(N, *spatial, C_in)``.
      w: ``(*kernel_spatial, 1, C_in * multiplier)``.
      b: ``(C_in * multiplier,)`` or ``None``.
      stride, padding, dilation, padding_mode: as for :func:`conv`.

    Returns:
      ``(N, *out_spatial, C_in * multiplier)``.
    """
    x = as_array("x", x)
    _check_depthwise_kernel(x, w, "w")
    return _conv(
        x,
        w,
        b,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=x.shape[-1],
        fill=padding_fill(padding, padding_mode),
    )


def separable_conv(
    x: jax.Array,
    w_depthwise: jax.Array,
    w_pointwise: jax.Array,
    b: jax.Array | None = None,
    *,
    stride: IntOrSeq = 1,
    padding: PaddingLike = "SAME",
    dilation: IntOrSeq = 1,
    padding_mode: str = "zeros",
) -> jax.Array:
    """Depthwise-separable convolution: :func:`depthwise_conv`, then a 1×…×1 :func:`conv`.

    ``stride``, ``padding``, ``dilation`` and ``padding_mode`` apply to the depthwise step;
    the bias is added after the pointwise step.

    Args:
      x: ``(N, *spatial, C_in)``.
      w_depthwise: ``(*kernel_spatial, 1, C_in * multiplier)``.
      w_pointwise: ``(1, …, 1, C_in * multiplier, C_out)`` (same rank as ``w_depthwise``).
      b: ``(C_out,)`` or ``None``.
      stride, padding, dilation, padding_mode: as for :func:`conv`.

    Returns:
      ``(N, *out_spatial, C_out)``.
    """
    x = as_array("x", x)
    w_depthwise, w_pointwise = (
        as_array("w_depthwise", w_depthwise),
        as_array("w_pointwise", w_pointwise),
    )
    _check_depthwise_kernel(x, w_depthwise, "w_depthwise")
    n = w_depthwise.ndim - 2
    expected = (1,) * n + (w_depthwise.shape[-1],)
    if w_pointwise.ndim != n + 2 or tuple(w_pointwise.shape[:-1]) != expected:
        raise ValueError(
            f"`w_pointwise` must have shape {expected + ('C_out',)} to follow `w_depthwise` of "
            f"shape {tuple(w_depthwise.shape)}; got {tuple(w_pointwise.shape)}"
        )
    h = _conv(
        x,
        w_depthwise,
        None,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=x.shape[-1],
        fill=padding_fill(padding, padding_mode),
        w_name="w_depthwise",
    )
    return _conv(
        h, w_pointwise, b, stride=1, padding="VALID", dilation=1, groups=1, w_name="w_pointwise"
    )


def spatially_separable_conv2d(
    x: jax.Array,
    w_col: jax.Array,
    w_row: jax.Array,
    b: jax.Array | None = None,
    *,
    stride: IntOrSeq = 1,
    padding: PaddingLike = "SAME",
    padding_mode: str = "zeros",
) -> jax.Array:
    """A ``kh×1`` conv then a ``1×kw`` conv: :func:`conv2d` with a rank-factored kernel.

    Equals ``conv2d(x, K, b, stride=stride, padding=padding)`` with
    ``K[i, j, c, o] = Σ_m w_col[i, 0, c, m] · w_row[0, j, m, o]`` (padding resolved for the
    full ``kh×kw`` kernel): the column pass pads and strides only along H, the row pass
    only along W, which is exact because padding along W (any fill) commutes with a
    convolution along H.

    Args:
      x: ``(N, H, W, C_in)``.
      w_col: ``(kh, 1, C_in, C_mid)``.
      w_row: ``(1, kw, C_mid, C_out)``.
      b: ``(C_out,)`` or ``None``.
      stride: int or ``(sh, sw)``.
      padding: as for :func:`conv`, relative to the ``kh×kw`` kernel.
      padding_mode: as for :func:`conv`.

    Returns:
      ``(N, H_out, W_out, C_out)``.
    """
    x, w_col, w_row = as_array("x", x), as_array("w_col", w_col), as_array("w_row", w_row)
    check_rank("w_col", w_col.shape, 4, "(kh, 1, C_in, C_mid)")
    check_rank("w_row", w_row.shape, 4, "(1, kw, C_mid, C_out)")
    check_rank("x", x.shape, 4, "(N, H, W, C_in)")
    if w_col.shape[1] != 1:
        raise ValueError(f"`w_col` must have shape (kh, 1, C_in, C_mid); got {tuple(w_col.shape)}")
    if w_row.shape[0] != 1 or w_row.shape[2] != w_col.shape[3]:
        raise ValueError(
            f"`w_row` must have shape (1, kw, C_mid, C_out) with C_mid = {w_col.shape[3]} "
            f"(from `w_col` of shape {tuple(w_col.shape)}); got {tuple(w_row.shape)}"
        )
    sh, sw = as_tuple("stride", stride, 2)
    kernel = (w_col.shape[0], w_row.shape[1])
    pad_h, pad_w = padding_pairs(padding, x.shape[1:3], kernel, (sh, sw), (1, 1))
    fill = padding_fill(padding, padding_mode)
    h = _conv(
        x,
        w_col,
        None,
        stride=(sh, 1),
        padding=(pad_h, (0, 0)),
        dilation=1,
        groups=1,
        fill=fill,
        w_name="w_col",
    )
    return _conv(
        h,
        w_row,
        b,
        stride=(1, sw),
        padding=((0, 0), pad_w),
        dilation=1,
        groups=1,
        fill=fill,
        w_name="w_row",
    )


# ----------------------------------------------------------------------------------------
# Transposed convolution.
# ----------------------------------------------------------------------------------------


def _adjoint_kernel(w: jax.Array, groups: int) -> jax.Array:
    """``(*k, A // g, B)`` -> the kernel ``(*k, B // g, A)`` of the adjoint convolution.

    Within each group the in/out channel roles swap, and the taps are flipped because the
    adjoint of a correlation is a correlation with the reversed kernel.
    """
    *k, a_per_group, b = w.shape
    n = len(k)
    w = w.reshape(*k, a_per_group, groups, b // groups)
    w = w.transpose(*range(n), n + 2, n + 1, n)  # (i, g, j) -> (j, g, i)
    w = w.reshape(*k, b // groups, groups * a_per_group)
    return jnp.flip(w, axis=tuple(range(n)))


def _transpose_padding(
    padding: PaddingLike,
    output_padding: tuple[int, ...],
    in_spatial: tuple[int, ...],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]]:
    """The forward conv's ``(low, high)`` pairs and the effective output padding.

    ``"SAME"`` / ``"SAME_LOWER"`` is the forward padding of an input of size ``in · stride``
    (whose output is ``in``); the output padding is whatever makes the result exactly that
    size. Fills other than zeros have no place here: the adjoint of a reflecting pad is not
    a padding.
    """
    extent = effective_kernel(kernel, dilation)
    mode = padding.upper() if isinstance(padding, str) else None
    if mode in ("CIRCULAR", "REFLECT", "REPLICATE"):
        raise ValueError(
            f"`padding`={padding!r} is not supported by conv_transpose (zero padding only); "
            f"use 'SAME', 'SAME_LOWER', 'VALID', 'CAUSAL', ints or (low, high) pairs"
        )
    if mode in ("SAME", "SAME_LOWER"):
        if any(output_padding):
            raise ValueError(
                f"`output_padding` must be 0 with padding={padding!r} (the output size is "
                f"fixed to in * stride); got {output_padding}"
            )
        fwd_in = tuple(i * s for i, s in zip(in_spatial, stride, strict=True))
        pads = padding_pairs(mode, fwd_in, kernel, stride, dilation)
        output_padding = tuple(
            x + lo + hi - e - (i - 1) * s
            for x, (lo, hi), e, i, s in zip(fwd_in, pads, extent, in_spatial, stride, strict=True)
        )
        return pads, output_padding
    return padding_pairs(padding, in_spatial, kernel, stride, dilation), output_padding


def conv_transpose(
    y: jax.Array,
    w: jax.Array,
    b: jax.Array | None = None,
    *,
    stride: IntOrSeq = 1,
    padding: PaddingLike = 0,
    dilation: IntOrSeq = 1,
    groups: int = 1,
    output_padding: IntOrSeq = 0,
) -> jax.Array:
    """Transposed convolution: the adjoint of :func:`conv` with the same arguments.

    ``w`` is the kernel of the forward convolution being transposed: if
    ``conv(x, w, stride=s, padding=p, dilation=d, groups=g)`` maps ``A`` channels to ``B``,
    ``conv_transpose(y, w, stride=s, padding=p, dilation=d, groups=g)`` maps ``B`` channels
    to ``A``, and ``⟨conv(x, w), y⟩ = ⟨x, conv_transpose(y, w)⟩`` whenever the shapes line
    up, i.e. it is ``jax.vjp`` of ``conv`` with respect to ``x`` (plus the bias).

    Output spatial size per dim, with ``e = dilation · (k − 1) + 1``:

    - int / per-dim / ``(low, high)`` padding: ``(in − 1)·stride + e − low − high +
      output_padding`` — for symmetric ``p`` exactly ``torch.nn.functional.
      conv_transpose{1,2,3}d``. It is the adjoint of ``conv`` with the same padding on an
      input of that size whenever ``output_padding < stride``.
    - ``"VALID"``: padding 0, i.e. ``(in − 1)·stride + e`` (plus ``output_padding``).
    - ``"SAME"``: ``in · stride``. The padding is the forward ``"SAME"`` padding of an input
      of size ``in · stride`` (whose SAME output size is ``in``), so the result is exactly
      the vjp of ``conv(x, w, padding="SAME")`` at ``x`` of spatial size ``in · stride``
      (TensorFlow's ``conv2d_transpose`` with that output shape). ``output_padding`` must
      be 0. ``"SAME_LOWER"`` likewise, with the forward ``"SAME_LOWER"`` padding.
    - ``"CAUSAL"``: the forward ``(e − 1, 0)``, i.e. ``(in − 1)·stride + 1 +
      output_padding``; negative amounts (a forward crop) make the output larger.
    - A kernel larger than the padded forward input (no output left) gives a zero-size
      output, as for :func:`conv`. Fills other than zeros (``"REFLECT"`` …) are refused.

    Args:
      y: ``(N, *spatial, B)`` with ``B = w.shape[-1]``.
      w: ``(*kernel_spatial, A // groups, B)``, the forward kernel.
      b: ``(A,)`` or ``None``.
      stride, dilation: of the forward convolution; int or one per spatial dim, ``>= 1``.
      padding: of the forward convolution, any form :func:`conv` accepts.
      groups: feature groups of the forward convolution; must divide ``B``.
      output_padding: int or one per spatial dim, extra size at the high end; each must be
        ``< stride`` or ``< dilation`` in its dim (PyTorch's rule).

    Returns:
      ``(N, *out_spatial, A)`` with ``A = w.shape[-2] * groups``.
    """
    y, w = as_array("y", y), as_array("w", w)
    b = None if b is None else as_array("b", b)
    n = _spatial_rank(y, w, "y")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"`groups` must be an int >= 1; got {groups!r}")
    b_channels = w.shape[-1]
    if y.shape[-1] != b_channels or b_channels % groups:
        raise ValueError(
            f"`y` must have w.shape[-1] = {b_channels} channels, divisible by groups={groups} "
            f"(`w` of shape {tuple(w.shape)}); got `y` of shape {tuple(y.shape)}"
        )
    a_channels = w.shape[-2] * groups
    _check_dtypes(y=y, w=w, b=b)
    _check_bias(b, a_channels)
    stride = as_tuple("stride", stride, n)
    dilation = as_tuple("dilation", dilation, n)
    output_padding = as_tuple("output_padding", output_padding, n, minimum=0)
    if any(op >= max(s, d) for op, s, d in zip(output_padding, stride, dilation, strict=True)):
        raise ValueError(
            f"`output_padding` must be smaller than stride or dilation in every dim; got "
            f"output_padding={output_padding}, stride={stride}, dilation={dilation}"
        )
    kernel = tuple(w.shape[:n])
    in_spatial = tuple(y.shape[1:-1])
    pads, output_padding = _transpose_padding(
        padding, output_padding, in_spatial, kernel, stride, dilation
    )
    extent = effective_kernel(kernel, dilation)
    per_dim = list(zip(in_spatial, stride, extent, pads, output_padding, strict=True))
    out_spatial = tuple(max((i - 1) * s + e - lo - hi + op, 0) for i, s, e, (lo, hi), op in per_dim)
    empty = _empty_or_none(y, out_spatial, a_channels)
    if empty is not None or 0 in in_spatial:
        out = jnp.zeros((y.shape[0], *out_spatial, a_channels), y.dtype)
        return _add_bias(out if empty is None else empty, b)
    # Correlating the stride-dilated `y` with the flipped kernel, padded by e − 1 − low
    # (may be negative, i.e. a crop), scatters each y value over the taps that read it.
    lowered_pads = tuple((e - 1 - lo, e - 1 - hi + op) for _, _, e, (lo, hi), op in per_dim)
    out = conv_general(
        y,
        _adjoint_kernel(w, groups),
        stride=(1,) * n,
        padding=lowered_pads,
        dilation=dilation,
        groups=groups,
        lhs_dilation=stride,
    )
    return _add_bias(out, b)
