"""deformable_conv2d against a float64 NumPy reference written as plain loops.

The reference follows torchvision's ``TestDeformConv.expected_fn`` (the clearest statement
of the offset layout), transposed to channels-last: offsets ``(N, Ho, Wo, G*kh*kw*2)`` with
dy at ``2*(g*kh*kw + t)`` and dx right after it, mask ``(N, Ho, Wo, G*kh*kw)``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.test_util import check_grads

from cnnjax.ops import deformable
from cnnjax.ops.deformable import deformable_conv2d

# ---------------------------------------------------------------------------------------
# Reference, from the definition.


def bilinear_zero_outside(img: np.ndarray, y: float, x: float) -> float:
    """Bilinear interpolation of ``img`` (H, W) at (y, x); pixels outside the image are 0."""
    height, width = img.shape
    y_low, x_low = math.floor(y), math.floor(x)
    value = 0.0
    for yy, wy in ((y_low, 1 - (y - y_low)), (y_low + 1, y - y_low)):
        for xx, wx in ((x_low, 1 - (x - x_low)), (x_low + 1, x - x_low)):
            if 0 <= yy < height and 0 <= xx < width:
                value += wy * wx * img[yy, xx]
    return value


def explicit_pads(padding, in_hw, kernel, stride, dilation):
    """``padding`` in any accepted form -> ((top, bottom), (left, right))."""
    if padding == "VALID":
        return ((0, 0), (0, 0))
    if padding == "SAME":  # TensorFlow: output ceil(in / stride), odd padding at the end.
        pads = []
        for size, k, s, d in zip(in_hw, kernel, stride, dilation, strict=True):
            total = max((-(-size // s) - 1) * s + d * (k - 1) + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


def deform_conv_reference(
    x, offsets, w, b, mask, *, stride, pads, dilation, groups, offset_groups
) -> np.ndarray:
    """Plain loops over every output entry, kernel tap and input channel of its group."""
    n_batch, height, width, c_in = x.shape
    kh, kw, c_per_group, c_out = w.shape
    (sh, sw), ((pt, pb), (pl, pr)), (dh, dw) = stride, pads, dilation
    out_h = (height + pt + pb - (dh * (kh - 1) + 1)) // sh + 1
    out_w = (width + pl + pr - (dw * (kw - 1) + 1)) // sw + 1
    out_per_group = c_out // groups
    c_per_offset_group = c_in // offset_groups
    out = np.zeros((n_batch, out_h, out_w, c_out))
    for n in range(n_batch):
        for i in range(out_h):
            for j in range(out_w):
                for o in range(c_out):
                    total = 0.0 if b is None else b[o]
                    for ki in range(kh):
                        for kj in range(kw):
                            for c in range(c_per_group):
                                ch = (o // out_per_group) * c_per_group + c
                                tap = (ch // c_per_offset_group) * kh * kw + ki * kw + kj
                                y = i * sh - pt + ki * dh + offsets[n, i, j, 2 * tap]
                                xx = j * sw - pl + kj * dw + offsets[n, i, j, 2 * tap + 1]
                                m = 1.0 if mask is None else mask[n, i, j, tap]
                                sample = bilinear_zero_outside(x[n, :, :, ch], y, xx)
                                total += m * w[ki, kj, c, o] * sample
                    out[n, i, j, o] = total
    return out


def test_reference_bilinear_worked_example():
    # Pins the reference itself to hand-computed values, including half-outside samples.
    img = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert bilinear_zero_outside(img, 0.5, 0.5) == 2.5
    assert bilinear_zero_outside(img, -0.5, 0.0) == 0.5  # half of row 0, half of zeros
    assert bilinear_zero_outside(img, 1.25, 1.0) == 0.75 * 4.0
    assert bilinear_zero_outside(img, 0.0, -1.0) == 0.0
    assert bilinear_zero_outside(img, 2.0, 0.0) == 0.0
    assert bilinear_zero_outside(img, 1.0, 0.5) == 3.5


# ---------------------------------------------------------------------------------------
# Random problems.

CONFIGS = {
    # name: (N, H, W, C_in, C_out, (kh, kw), stride, padding, dilation, groups, offset_groups)
    "basic": (2, 5, 6, 3, 2, (3, 3), 1, 1, 1, 1, 1),
    "stride2_dil2_rect_kernel": (1, 7, 6, 2, 3, (3, 2), 2, 0, 2, 1, 1),
    "groups2_offset_groups2": (2, 4, 5, 4, 4, (3, 3), 1, 1, 1, 2, 2),
    "groups2": (1, 5, 6, 4, 2, (2, 3), (2, 1), (1, 0), (1, 2), 2, 1),
    "offset_groups2": (1, 5, 5, 4, 3, (3, 3), 2, "SAME", 1, 1, 2),
    # torchvision's own test problem: groups 2, offset groups 3, (3, 2) kernel.
    "groups2_offset_groups3": (2, 5, 4, 6, 2, (3, 2), (2, 1), (1, 0), (2, 1), 2, 3),
    "valid": (1, 6, 5, 2, 2, (3, 3), 1, "VALID", 1, 1, 1),
    "pairs": (2, 5, 4, 2, 2, (3, 3), 2, ((1, 0), (0, 2)), 1, 1, 1),
}

OFFSET_KINDS = ("fractional", "integer", "zero", "outside")


def make_problem(config, offset_kind, seed=0):
    n, h, w_, c_in, c_out, kernel, stride, padding, dilation, groups, og = config
    stride = (stride, stride) if isinstance(stride, int) else stride
    dilation = (dilation, dilation) if isinstance(dilation, int) else dilation
    pads = explicit_pads(padding, (h, w_), kernel, stride, dilation)
    out_h = (h + sum(pads[0]) - (dilation[0] * (kernel[0] - 1) + 1)) // stride[0] + 1
    out_w = (w_ + sum(pads[1]) - (dilation[1] * (kernel[1] - 1) + 1)) // stride[1] + 1
    taps = og * kernel[0] * kernel[1]
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, h, w_, c_in))
    w = rng.normal(size=(*kernel, c_in // groups, c_out))
    b = rng.normal(size=(c_out,))
    mask = rng.uniform(-0.5, 1.5, size=(n, out_h, out_w, taps))
    shape = (n, out_h, out_w, 2 * taps)
    if offset_kind == "fractional":
        offsets = rng.uniform(-2.0, 2.0, size=shape)
    elif offset_kind == "integer":
        offsets = rng.integers(-2, 3, size=shape).astype(np.float64)
    elif offset_kind == "zero":
        offsets = np.zeros(shape)
    else:  # Far outside, and straddling the border (within one pixel of it) on either side.
        offsets = rng.uniform(-1.5 * max(h, w_), 1.5 * max(h, w_), size=shape)
    kwargs = dict(
        stride=stride, padding=padding, dilation=dilation, groups=groups, offset_groups=og
    )
    return (x, offsets, w, b, mask), kwargs, pads


def reference_for(arrays, kwargs, pads, use_mask):
    x, offsets, w, b, mask = arrays
    return deform_conv_reference(
        x,
        offsets,
        w,
        b,
        mask if use_mask else None,
        stride=kwargs["stride"],
        pads=pads,
        dilation=kwargs["dilation"],
        groups=kwargs["groups"],
        offset_groups=kwargs["offset_groups"],
    )


def as_f32(arrays):
    return tuple(jnp.asarray(a, jnp.float32) for a in arrays)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_reference(name):
    for kind in OFFSET_KINDS:
        arrays, kwargs, pads = make_problem(CONFIGS[name], kind)
        x, offsets, w, b, mask = as_f32(arrays)
        for use_mask in (False, True):
            got = deformable_conv2d(x, offsets, w, b, mask if use_mask else None, **kwargs)
            want = reference_for(arrays, kwargs, pads, use_mask)
            np.testing.assert_allclose(
                np.asarray(got), want, rtol=1e-4, atol=1e-4, err_msg=f"{kind=} {use_mask=}"
            )


def test_outside_offsets_cover_every_border_case():
    # The "outside" problems must really exercise samples fully outside and half outside.
    arrays, kwargs, pads = make_problem(CONFIGS["basic"], "outside")
    offsets, h = arrays[1], arrays[0].shape[1]
    ki = np.arange(9) // 3  # 3x3 kernel, one offset group, stride and dilation 1
    rows = np.arange(offsets.shape[1]).reshape(1, -1, 1, 1) - pads[0][0] + ki
    y = offsets[..., 0::2] + rows
    assert (y <= -1).any() and (y >= h).any()
    assert ((y > -1) & (y < 0)).any() and ((y > h - 1) & (y < h)).any()


def test_hand_computed_example():
    # 1x1 kernel on one 2x2 channel: each output samples one point; offsets give the point.
    x = jnp.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
    w = jnp.ones((1, 1, 1, 1))
    offsets = jnp.array([[0.5, 0.5], [-0.5, -1.0], [0.25, 0.0], [0.0, 1.0]]).reshape(1, 2, 2, 2)
    # Sampling points (i + dy, j + dx): (0.5, 0.5), (-0.5, 0), (1.25, 0), (1, 2).
    got = deformable_conv2d(x, offsets, w)
    np.testing.assert_allclose(np.asarray(got).ravel(), [2.5, 0.5, 2.25, 0.0], rtol=1e-6)
    mask = jnp.array([2.0, 1.0, -1.0, 5.0]).reshape(1, 2, 2, 1)
    got = deformable_conv2d(x, offsets, w, mask=mask)
    np.testing.assert_allclose(np.asarray(got).ravel(), [5.0, 0.5, -2.25, 0.0], rtol=1e-6)


def test_float64_matches_reference_tightly():
    arrays, kwargs, pads = make_problem(CONFIGS["groups2_offset_groups2"], "fractional")
    with jax.enable_x64(True):
        got = deformable_conv2d(*arrays, **kwargs)
        assert got.dtype == jnp.float64
        got = np.asarray(got)
    np.testing.assert_allclose(
        got, reference_for(arrays, kwargs, pads, True), rtol=1e-12, atol=1e-12
    )


# ---------------------------------------------------------------------------------------
# Identities.


@pytest.mark.parametrize(
    "stride, pads, dilation, groups, offset_groups",
    [
        ((1, 1), ((1, 1), (1, 1)), (1, 1), 1, 1),
        ((2, 1), ((0, 2), (1, 0)), (1, 2), 2, 1),
        ((2, 2), ((2, 2), (0, 0)), (2, 2), 2, 4),
    ],
)
def test_zero_offsets_unit_mask_is_conv(stride, pads, dilation, groups, offset_groups):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 7, 6, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 4 // groups, 6)), jnp.float32)
    want = lax.conv_general_dilated(
        x,
        w,
        window_strides=stride,
        padding=pads,
        rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
        precision=lax.Precision.HIGHEST,
    )
    out_hw, taps = want.shape[1:3], offset_groups * 9
    offsets = jnp.zeros((2, *out_hw, 2 * taps))
    kwargs = dict(stride=stride, padding=pads, dilation=dilation, groups=groups)
    for mask in (None, jnp.ones((2, *out_hw, taps))):
        got = deformable_conv2d(x, offsets, w, mask=mask, offset_groups=offset_groups, **kwargs)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)


def test_unit_mask_equals_no_mask():
    arrays, kwargs, _ = make_problem(CONFIGS["offset_groups2"], "fractional")
    x, offsets, w, b, mask = as_f32(arrays)
    v1 = deformable_conv2d(x, offsets, w, b, **kwargs)
    v2 = deformable_conv2d(x, offsets, w, b, jnp.ones_like(mask), **kwargs)
    np.testing.assert_allclose(np.asarray(v1), np.asarray(v2), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Transformations and dtypes.


def test_jit_matches_reference_and_traces_once():
    arrays, kwargs, pads = make_problem(CONFIGS["groups2_offset_groups3"], "fractional")
    traces = []

    def f(*a):
        traces.append(None)
        return deformable_conv2d(*a, **kwargs)

    jitted = jax.jit(f)
    got = jitted(*as_f32(arrays))
    jitted(*as_f32(arrays))
    assert len(traces) == 1
    want = reference_for(arrays, kwargs, pads, use_mask=True)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_vmap_over_an_extra_batch_axis():
    arrays, kwargs, _ = make_problem(CONFIGS["groups2_offset_groups2"], "fractional")
    x, offsets, w, b, mask = as_f32(arrays)
    stacked = [jnp.stack([a, 2.0 * a]) for a in (x, offsets, mask)]
    f = functools.partial(deformable_conv2d, **kwargs)
    got = jax.vmap(lambda xx, oo, mm: f(xx, oo, w, b, mm))(*stacked)
    for k in range(2):
        want = f(stacked[0][k], stacked[1][k], w, b, stacked[2][k])
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_bfloat16_close_to_float32():
    arrays, kwargs, _ = make_problem(CONFIGS["basic"], "fractional")
    # Offsets on a 1/8 grid are exact in bfloat16, so both runs sample the same points.
    arrays = (*arrays[:1], np.round(arrays[1] * 8) / 8, *arrays[2:])
    bf16 = tuple(jnp.asarray(a, jnp.bfloat16) for a in arrays)
    got = deformable_conv2d(*bf16, **kwargs)
    assert got.dtype == jnp.bfloat16
    want = deformable_conv2d(*(a.astype(jnp.float32) for a in bf16), **kwargs)
    scale = float(jnp.max(jnp.abs(want)))
    np.testing.assert_allclose(
        np.asarray(got, np.float32), np.asarray(want), rtol=3e-2, atol=3e-2 * scale
    )


def test_gradients_match_finite_differences_smoke():
    # A guard on the hand-written VJP of the sampling step; the thorough finite-difference
    # sweep lives with cnnjax.gradcheck. Offsets avoid integer positions (kinks).
    arrays, kwargs, _ = make_problem(CONFIGS["groups2_offset_groups2"], "fractional", seed=3)
    x, offsets, w, b, mask = arrays
    offsets = np.floor(offsets) + 0.25 + 0.5 * np.random.default_rng(4).uniform(size=offsets.shape)
    with jax.enable_x64(True):
        f = jax.jit(functools.partial(deformable_conv2d, **kwargs))
        check_grads(
            f, (x, offsets, w, b, mask), order=1, modes=("rev",), eps=1e-4, atol=1e-5, rtol=1e-5
        )


# ---------------------------------------------------------------------------------------
# Memory: one sampling tensor.


def _compiled_temp_bytes(fn, *args) -> int:
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_forward_materialises_at_most_one_sampling_tensor():
    n, hw, c_in, c_out = 2, 16, 32, 8
    x = jnp.zeros((n, hw, hw, c_in))
    w = jnp.zeros((3, 3, c_in, c_out))
    offsets = jnp.zeros((n, hw, hw, 18))
    mask = jnp.zeros((n, hw, hw, 9))
    sampling_bytes = n * hw * hw * 9 * c_in * 4

    def forward(x, offsets, w, mask):
        return deformable_conv2d(x, offsets, w, mask=mask, padding=1)

    assert _compiled_temp_bytes(forward, x, offsets, w, mask) < 2 * sampling_bytes
    # The backward pass needs the saved samples, their cotangent and one per-corner
    # temporary; plain autodiff of the four gathers needed about eleven sampling tensors.
    grads = jax.grad(lambda *a: jnp.sum(forward(*a)), argnums=(0, 1, 2, 3))
    assert _compiled_temp_bytes(grads, x, offsets, w, mask) < 5 * sampling_bytes


# ---------------------------------------------------------------------------------------
# Bad arguments.


def _good():
    x = jnp.zeros((2, 6, 6, 4))
    w = jnp.zeros((3, 3, 2, 6))
    offsets = jnp.zeros((2, 4, 4, 2 * 2 * 9))  # offset_groups=2, VALID
    mask = jnp.zeros((2, 4, 4, 2 * 9))
    return dict(x=x, offsets=offsets, w=w, b=jnp.zeros((6,)), mask=mask, groups=2, offset_groups=2)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(x=jnp.zeros((6, 6, 4))), r"`x` must have rank 4.*\(6, 6, 4\)"),
        (dict(w=jnp.zeros((3, 2, 6))), r"`w` must have rank 4"),
        (
            dict(offsets=jnp.zeros((2, 4, 4, 18))),
            r"`offsets` must have shape.*\(2, 4, 4, 36\).*\(2, 4, 4, 18\)",
        ),
        (dict(offsets=jnp.zeros((2, 5, 4, 36))), r"`offsets` must have shape"),
        (dict(offsets=jnp.zeros((1, 4, 4, 36))), r"`offsets` must have shape"),
        (dict(mask=jnp.zeros((2, 4, 4, 9))), r"`mask` must have shape.*\(2, 4, 4, 18\)"),
        (dict(mask=jnp.zeros((4, 4, 18))), r"`mask` must have rank 4"),
        (dict(b=jnp.zeros((5,))), r"`b` must have shape \(C_out,\) = \(6,\); got \(5,\)"),
        (dict(groups=3), r"divisible by `groups` \(3\)"),
        (dict(groups=0), r"`groups` must be a positive int"),
        (dict(offset_groups=3), r"divisible by `offset_groups` \(3\)"),
        (dict(w=jnp.zeros((3, 3, 4, 6))), r"`w` shape \(3, 3, 4, 6\) needs C_in // groups"),
        (dict(w=jnp.zeros((3, 3, 2, 5)), b=None), r"`w` output channels \(5\).*`groups`"),
        (dict(x=jnp.zeros((2, 6, 6, 4), jnp.int32)), r"`x` must be a floating-point"),
        (dict(padding="FULL"), r"`padding`"),
        (dict(stride=0), r"`stride`"),
        (dict(dilation=(1, 2, 3)), r"`dilation`"),
        # A kernel larger than the padded input leaves an empty output, offsets included.
        (dict(w=jnp.zeros((7, 3, 2, 6))), r"`offsets` must have shape.*\(2, 0, 4, 84\)"),
        (dict(w=jnp.zeros((3, 0, 2, 6))), r"`w` must have no zero-size dims"),
        (dict(w=jnp.zeros((3, 3, 2, 6), jnp.bfloat16)), r"`w` must have the dtype of `x`"),
        (dict(offsets=jnp.zeros((2, 4, 4, 20)), offset_groups=None), r"multiple of 18"),
        (dict(x="abc"), r"`x` must be"),
        (dict(padding_mode="mirror"), r"`padding_mode`"),
    ],
)
def test_bad_arguments_raise_value_error(change, match):
    kwargs = {**_good(), **change}
    x, offsets, w = kwargs.pop("x"), kwargs.pop("offsets"), kwargs.pop("w")
    with pytest.raises(ValueError, match=match):
        deformable_conv2d(x, offsets, w, **kwargs)


def test_good_arguments_of_the_error_table_are_accepted():
    kwargs = _good()
    x, offsets, w = kwargs.pop("x"), kwargs.pop("offsets"), kwargs.pop("w")
    assert deformable_conv2d(x, offsets, w, **kwargs).shape == (2, 4, 4, 6)


# ---------------------------------------------------------------------------------------
# The sampling sum's two lowerings.


@pytest.mark.parametrize(
    "lowering", [deformable._weighted_sum_fused, deformable._weighted_sum_by_corner]
)
def test_weighted_gather_lowerings_match_numpy(lowering):
    """Both lowerings, called directly (the op picks by platform): the weighted sum of
    gathered rows, with repeated and shared indices, against NumPy."""
    rng = np.random.default_rng(5)
    rows = rng.normal(size=(7, 3)).astype(np.float32)
    index = [rng.integers(0, 7, size=11).astype(np.int32) for _ in range(4)]
    index[1][:3] = index[0][:3]  # corners clipped onto the same row
    coef = [rng.normal(size=11).astype(np.float32) for _ in range(4)]
    expected = sum(c[:, None] * rows[i] for i, c in zip(index, coef, strict=True))
    out = jax.jit(lowering)(rows, tuple(index), tuple(coef))
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-6, atol=1e-6)
