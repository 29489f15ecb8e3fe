"""Deformable convolution (v1 and v2), torchvision semantics in channels-last layout.

Each output position ``(i, j)`` and kernel tap ``(ki, kj)`` samples the input at

    y = i * stride_h - pad_top + ki * dilation_h + dy
    x = j * stride_w - pad_left + kj * dilation_w + dx

by bilinear interpolation, counting pixels outside the image as zero (exactly
``bilinear_interpolate`` of torchvision's ``deform_conv2d`` kernel), scales the sample by
the mask (v2), and contracts the samples with the kernel.

How it reaches XLA: the four corner values are gathered from the image viewed as rows of
channels, weighted and summed into ONE sampling tensor ``(groups, N, H_out, W_out,
kh*kw*C_in/groups)``, which a batched matmul over the conv groups contracts with the
kernel. On GPU/TPU the four gathers stay inside one elementwise sum, which XLA fuses; on
CPU a loop over the corners adds one gather at a time (:func:`_weighted_gather`). Either
way the sampling tensor is the only tensor of that size the forward pass materialises. The
group axis is put first by the gather itself so that the matmul needs no transposed copy.

The sampling step has a hand-written VJP that walks the four corners one at a time
(autodiff would hold about eleven sampling-sized tensors in the backward pass, this holds
about three). The price: reverse mode only (``jax.grad``, ``jax.vjp``, ``jax.jacrev``, also
nested); ``jax.jvp``/``jax.jacfwd`` raise.
"""

from __future__ import annotations

import functools
import math
import operator

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
    pad_input,
    padding_fill,
    padding_pairs,
)


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int; got {value!r}")


def _check_shapes(
    x: jax.Array,
    offsets: jax.Array,
    w: jax.Array,
    b: jax.Array | None,
    mask: jax.Array | None,
    out_spatial: tuple[int, int],
    groups: int,
    offset_groups: int,
) -> None:
    """Raise a ValueError naming the argument whose shape does not fit the others."""
    n, _, _, c_in = x.shape
    kh, kw, c_in_per_group, c_out = w.shape
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"`x` must be a floating-point array; got dtype {x.dtype}")
    for name, a in (("w", w), ("b", b)):
        if a is not None and a.dtype != x.dtype:
            raise ValueError(
                f"`{name}` must have the dtype of `x` ({x.dtype}); got {a.dtype} (the op never "
                f"promotes, so that a bfloat16 model stays bfloat16)"
            )
    if c_in % groups:
        raise ValueError(f"`x` channels ({c_in}) must be divisible by `groups` ({groups})")
    if c_in % offset_groups:
        raise ValueError(
            f"`x` channels ({c_in}) must be divisible by `offset_groups` ({offset_groups})"
        )
    if c_in_per_group * groups != c_in:
        raise ValueError(
            f"`w` shape {w.shape} needs C_in // groups = {c_in} // {groups} = "
            f"{c_in // groups} input channels; got {c_in_per_group} (x shape {x.shape})"
        )
    if c_out % groups:
        raise ValueError(f"`w` output channels ({c_out}) must be divisible by `groups` ({groups})")
    taps = offset_groups * kh * kw
    expected = (n, *out_spatial, 2 * taps)
    if offsets.shape != expected:
        raise ValueError(
            f"`offsets` must have shape (N, H_out, W_out, offset_groups*kh*kw*2) = {expected} "
            f"for x {x.shape}, w {w.shape}, offset_groups={offset_groups}; got {offsets.shape}"
        )
    if mask is not None and mask.shape != expected[:-1] + (taps,):
        raise ValueError(
            f"`mask` must have shape (N, H_out, W_out, offset_groups*kh*kw) = "
            f"{expected[:-1] + (taps,)} for x {x.shape}, w {w.shape}, "
            f"offset_groups={offset_groups}; got {mask.shape}"
        )
    if b is not None and b.shape != (c_out,):
        raise ValueError(f"`b` must have shape (C_out,) = ({c_out},); got {b.shape}")


class _Blocks:
    """How input channels split into blocks that lie in one conv group and one offset group.

    With ``L = lcm(groups, offset_groups)`` blocks of ``C_in / L`` channels each, block
    ``blk`` belongs to conv group ``blk // (L / groups)`` and to offset group
    ``blk // (L / offset_groups)``. Gathering whole blocks lets one gather fetch channels
    that share a sampling position, and lets it emit the conv-group axis first.
    """

    def __init__(self, c_in: int, groups: int, offset_groups: int):
        self.count = math.lcm(groups, offset_groups)
        self.size = c_in // self.count
        self.groups = groups
        self.per_group = self.count // groups
        self.offset_group_of_block = np.arange(self.count) // (self.count // offset_groups)

    def expand(self, a: jax.Array) -> jax.Array:
        """``(N, Ho, Wo, offset_groups, T)`` -> ``(groups, N, Ho, Wo, T, blocks_per_group)``."""
        a = jnp.take(a, self.offset_group_of_block, axis=3)
        a = a.reshape(*a.shape[:3], self.groups, self.per_group, a.shape[-1])
        return a.transpose(3, 0, 1, 2, 5, 4)

    def index(self) -> np.ndarray:
        """Block number at each position of the expanded layout, ``(groups, 1, 1, 1, 1, bpg)``."""
        return np.arange(self.count).reshape(self.groups, 1, 1, 1, 1, self.per_group)


def _base_grid(
    out_size: int, stride: int, pad_low: int, dilation: int, taps_along: np.ndarray
) -> np.ndarray:
    """Undeformed sampling coordinate ``o * stride - pad_low + k * dilation``: ``(out, T)``."""
    return np.arange(out_size)[:, None] * stride - pad_low + taps_along[None, :] * dilation


@jax.custom_vjp
def _weighted_gather(
    rows: jax.Array, index: tuple[jax.Array, ...], coef: tuple[jax.Array, ...]
) -> jax.Array:
    """``sum_k coef[k][:, None] * rows[index[k]]``: rows ``(R, B)``; index, coef: ``(M,)`` each.

    Returns ``(M, B)``, the only tensor of that size either lowering writes:
    :func:`_weighted_sum_by_corner` on CPU, :func:`_weighted_sum_fused` elsewhere.
    """
    return jax.lax.platform_dependent(
        rows, index, coef, cpu=_weighted_sum_by_corner, default=_weighted_sum_fused
    )


def _weighted_sum_fused(rows, index, coef):
    """:func:`_weighted_gather` as one elementwise sum of the corner gathers, which XLA
    fuses into the output."""
    terms = [c[:, None] * _gather(rows, i) for i, c in zip(index, coef, strict=True)]
    return functools.reduce(operator.add, terms)


def _weighted_sum_by_corner(rows, index, coef):
    """:func:`_weighted_gather` as a loop over the corners, adding one gather at a time.

    XLA's CPU backend computes every element of the fused sum on its own: each of the ``B``
    channels of a sample recomputes the sample's corner indices and weights, and each
    gathered value recomputes what produced ``rows`` (in a network, the previous layer's
    bias and ReLU), several times the work of the gathers themselves. The loop takes the
    indices, the weights and ``rows`` as materialised loop inputs.
    """

    def add_corner(total, idx_c):
        idx, c = idx_c
        return total + c[:, None] * _gather(rows, idx), None

    total = jnp.zeros((index[0].shape[0], rows.shape[1]), rows.dtype)
    return jax.lax.scan(add_corner, total, (jnp.stack(index), jnp.stack(coef)))[0]


def _gather(rows: jax.Array, idx: jax.Array) -> jax.Array:
    """``rows[idx]``: rows ``(R, B)``, idx ``(M,)`` in ``[0, R)``."""
    return rows.at[idx].get(mode="promise_in_bounds")


def _weighted_gather_fwd(rows, index, coef):
    return _weighted_gather(rows, index, coef), (rows, index, coef)


def _weighted_gather_bwd(residuals, ct):
    # Autodiff would keep the corner gathers alive from the forward pass and build every
    # scaled copy of `ct` before the first scatter. A scan over the corners runs them one
    # at a time, so the backward pass holds one (M, B) temporary besides `ct` itself.
    rows, index, coef = residuals
    acc_dtype = jnp.promote_types(ct.dtype, jnp.float32)

    def corner(ct_rows, idx_c):
        idx, c = idx_c
        value = _gather(rows, idx)
        ct_c = jnp.sum(value * ct, axis=-1, dtype=acc_dtype).astype(c.dtype)
        ct_rows = ct_rows.at[idx].add(c[:, None] * ct, mode="promise_in_bounds")
        return ct_rows, ct_c

    stacked = (jnp.stack(index), jnp.stack(coef))
    ct_rows, ct_coef = jax.lax.scan(corner, jnp.zeros_like(rows), stacked)
    return ct_rows, (None,) * len(index), tuple(ct_coef)


_weighted_gather.defvjp(_weighted_gather_fwd, _weighted_gather_bwd)


def _sample(
    x: jax.Array,
    y: jax.Array,
    xpos: jax.Array,
    scale: jax.Array | None,
    blocks: _Blocks,
) -> jax.Array:
    """Bilinear samples of ``x`` (zeros outside), scaled by ``scale``.

    Args:
      x: ``(N, H, W, C_in)``.
      y, xpos: sampling coordinates ``(groups, N, Ho, Wo, T, bpg)`` (bpg: blocks per group).
      scale: the mask in the same layout, or ``None``.

    Returns:
      ``(groups, N, Ho, Wo, T, bpg, C_in / blocks)``.
    """
    n, h, w, _ = x.shape
    if n * h * w * blocks.count > np.iinfo(np.int32).max:
        raise ValueError(
            f"`x` of shape {x.shape} with lcm(groups, offset_groups) = {blocks.count} has too "
            "many (pixel, channel block) rows for int32 gather indices; split the batch"
        )
    batch = np.arange(n).reshape(1, n, 1, 1, 1, 1)
    y0 = jnp.floor(y)
    x0 = jnp.floor(xpos)
    # Corner weights as in torchvision: (1 - ly, ly) along y, (1 - lx, lx) along x.
    ly, lx = y - y0, xpos - x0
    index, coef = [], []
    for dy, wy in ((0, 1 - ly), (1, ly)):
        for dx, wx in ((0, 1 - lx), (1, lx)):
            yc, xc = y0 + dy, x0 + dx
            inside = (yc >= 0) & (yc <= h - 1) & (xc >= 0) & (xc <= w - 1)
            weight = wy * wx if scale is None else wy * wx * scale
            # `where`, not a product, so that inf/nan coordinates far outside give 0.
            coef.append(jnp.where(inside, weight, 0).astype(x.dtype).reshape(-1))
            yi = jnp.clip(yc, 0, h - 1).astype(jnp.int32)
            xi = jnp.clip(xc, 0, w - 1).astype(jnp.int32)
            row = ((batch * h + yi) * w + xi) * blocks.count + blocks.index()
            index.append(row.reshape(-1))
    rows = x.reshape(n * h * w * blocks.count, blocks.size)
    samples = _weighted_gather(rows, tuple(index), tuple(coef))
    return samples.reshape(*y.shape, blocks.size)


def deformable_conv2d(
    x: jax.Array,
    offsets: jax.Array,
    w: jax.Array,
    b: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    stride: IntOrSeq = 1,
    padding: PaddingLike = 0,
    dilation: IntOrSeq = 1,
    groups: int = 1,
    offset_groups: int | None = None,
    padding_mode: str = "zeros",
) -> jax.Array:
    """Deformable 2-D convolution: v1 without ``mask``, v2 (modulated) with it.

    Equals ``torchvision.ops.deform_conv2d`` after NCHW<->NHWC and OIHW<->HWIO
    transposition of the arrays (offsets and mask move their channel axis last, unchanged
    in order). With zero offsets and a mask of ones it equals :func:`cnnjax.ops.conv2d`
    with the same padding.

    Args:
      x: ``(N, H, W, C_in)``, floating point.
      offsets: ``(N, H_out, W_out, offset_groups * kh * kw * 2)``; entry
        ``2 * (g * kh * kw + t)`` is the row offset dy and the next one the column offset dx
        of offset group ``g`` and kernel tap ``t = ki * kw + kj``. Offset group ``g`` moves
        input channels ``[g * C_in / offset_groups, (g + 1) * C_in / offset_groups)``.
      w: ``(kh, kw, C_in // groups, C_out)``.
      b: ``(C_out,)`` or ``None``.
      mask: ``(N, H_out, W_out, offset_groups * kh * kw)`` modulation scalars (same
        ``g * kh * kw + t`` order), or ``None`` for v1.
      stride, dilation: an int or ``(sh, sw)``.
      padding: any form :func:`cnnjax.ops.conv` accepts (strings, ints, mixed per-dim
        entries, negative amounts cropping); with zero fill, which with bilinear sampling
        means "outside the image".
      groups: conv groups, as in :func:`cnnjax.ops.conv`.
      offset_groups: number of independent offset (and mask) fields; ``None`` infers it
        from ``offsets.shape[-1] = offset_groups * kh * kw * 2``, as torchvision does.
      padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``: other
        fills than zeros pad ``x`` first (samples beyond that padding still count as
        zero), so that zero offsets give :func:`cnnjax.ops.conv2d` with that mode.

    Returns:
      ``(N, H_out, W_out, C_out)`` with ``H_out, W_out`` as for an ordinary convolution
      (zero-size where the kernel does not fit).

    Raises:
      ValueError: if a rank, shape, group count or convolution argument does not fit.

    Differentiable in reverse mode with respect to ``x``, ``offsets``, ``w``, ``b`` and
    ``mask`` (at integer sampling positions, where bilinear interpolation has a kink, the
    derivative is the one-sided one torchvision also uses); forward mode is not supported.
    """
    x, offsets, w = as_array("x", x), as_array("offsets", offsets), as_array("w", w)
    b = None if b is None else as_array("b", b)
    mask = None if mask is None else as_array("mask", mask)
    check_rank("x", x.shape, 4, "(N, H, W, C_in)")
    check_rank("w", w.shape, 4, "(kh, kw, C_in // groups, C_out)")
    check_rank("offsets", offsets.shape, 4, "(N, H_out, W_out, offset_groups*kh*kw*2)")
    if mask is not None:
        check_rank("mask", mask.shape, 4, "(N, H_out, W_out, offset_groups*kh*kw)")
    if b is not None:
        check_rank("b", b.shape, 1, "(C_out,)")
    check_nonempty("w", w.shape, range(4), "dims")
    _check_positive_int("groups", groups)
    kernel = w.shape[:2]
    if offset_groups is None:
        per_group = 2 * kernel[0] * kernel[1]
        if offsets.shape[-1] % per_group or not offsets.shape[-1]:
            raise ValueError(
                f"`offsets` last dim must be offset_groups * kh * kw * 2, a positive multiple "
                f"of {per_group} for `w` of shape {tuple(w.shape)}; got shape "
                f"{tuple(offsets.shape)}"
            )
        offset_groups = offsets.shape[-1] // per_group
    _check_positive_int("offset_groups", offset_groups)
    stride = as_tuple("stride", stride, 2)
    dilation = as_tuple("dilation", dilation, 2)
    pads = padding_pairs(padding, x.shape[1:3], kernel, stride, dilation)
    out_spatial = conv_output_shape(
        x.shape[1:3], kernel, stride=stride, padding=pads, dilation=dilation
    )
    _check_shapes(x, offsets, w, b, mask, out_spatial, groups, offset_groups)
    if 0 in (x.shape[0], *out_spatial):
        empty = jnp.zeros((x.shape[0], *out_spatial, w.shape[-1]), x.dtype)
        return empty if b is None else empty + b.reshape(1, 1, 1, -1)
    # Crops, and fills other than zeros, go on the image; zero padding stays implicit.
    x, pads = pad_input(x, pads, padding_fill(padding, padding_mode))
    return _deformable_conv2d(
        x,
        offsets,
        w,
        b,
        mask,
        stride=stride,
        pads=pads,
        dilation=dilation,
        groups=groups,
        offset_groups=offset_groups,
    )


# Jitted (like jax.numpy's functions) so that an eager call compiles once instead of
# dispatching dozens of small primitives; inside an outer jit it is simply inlined.
@functools.partial(
    jax.jit, static_argnames=("stride", "pads", "dilation", "groups", "offset_groups")
)
def _deformable_conv2d(
    x: jax.Array,
    offsets: jax.Array,
    w: jax.Array,
    b: jax.Array | None,
    mask: jax.Array | None,
    *,
    stride: tuple[int, int],
    pads: tuple[tuple[int, int], tuple[int, int]],
    dilation: tuple[int, int],
    groups: int,
    offset_groups: int,
) -> jax.Array:
    """:func:`deformable_conv2d` on validated arguments with explicit ``pads``."""
    n, out_h, out_w = offsets.shape[:3]
    kh, kw, _, c_out = w.shape
    taps = kh * kw
    blocks = _Blocks(x.shape[-1], groups, offset_groups)
    # Coordinates in at least float32: bfloat16 cannot even hold pixel indices above 256.
    coord_dtype = jnp.promote_types(offsets.dtype, jnp.float32)
    delta = offsets.astype(coord_dtype).reshape(n, out_h, out_w, offset_groups, taps, 2)
    tap = np.arange(taps)
    base_y = _base_grid(out_h, stride[0], pads[0][0], dilation[0], tap // kw)
    base_x = _base_grid(out_w, stride[1], pads[1][0], dilation[1], tap % kw)
    y = blocks.expand(delta[..., 0]) + base_y.reshape(1, 1, out_h, 1, taps, 1)
    xpos = blocks.expand(delta[..., 1]) + base_x.reshape(1, 1, 1, out_w, taps, 1)
    scale = None
    if mask is not None:
        field = mask.astype(coord_dtype).reshape(n, out_h, out_w, offset_groups, taps)
        scale = blocks.expand(field)

    samples = _sample(x, y, xpos, scale, blocks)
    # (groups, N*Ho*Wo, T * C_in/groups), taps major, matching w's (kh, kw, C_in/groups) order.
    samples = samples.reshape(groups, -1, taps * blocks.per_group * blocks.size)
    kernel_mat = w.reshape(-1, groups, c_out // groups).transpose(1, 0, 2)
    out = jnp.einsum("gmk,gko->mgo", samples, kernel_mat)
    out = out.reshape(n, out_h, out_w, c_out)
    if b is not None:
        out = out + b.reshape(1, 1, 1, c_out)
    return out
