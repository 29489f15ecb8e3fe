"""Convolution ops against the NumPy loop references of ``reference.py``, their identities,
tutorial worked examples, transformations (jit, vmap), dtypes and argument errors."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref

from cnnjax import ops
from cnnjax.ops import _lowering

# ----------------------------------------------------------------------------------------
# Helpers.
# ----------------------------------------------------------------------------------------


def normal(seed: int, shape, dtype=np.float32) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def assert_close(actual, expected, tol: float = 2e-5) -> None:
    """Relative to the largest expected magnitude, so sums of many terms are fair."""
    expected = np.asarray(expected, np.float64)
    actual = np.asarray(
        jnp.asarray(actual, jnp.float32) if actual.dtype == jnp.bfloat16 else actual, np.float64
    )
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def _case_id(case: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in case.items()).replace(" ", "")


def _conv_args(case: dict, seed: int = 0):
    """Random ``x``, ``w`` and (every other case) ``b`` for a grid case."""
    n_batch = 2
    x = normal(seed, (n_batch, *case["spatial"], case["c_in"]))
    w = normal(seed + 1, (*case["kernel"], case["c_in"] // case["groups"], case["c_out"]))
    b = normal(seed + 2, (case["c_out"],)) if seed % 2 == 0 else None
    return x, w, b


def _conv_kwargs(case: dict) -> dict:
    return {k: case[k] for k in ("stride", "padding", "dilation", "groups")}


# Every padding form, strides 1-3, dilation 1-3, groups 1-4 (incl. a channel multiplier),
# odd and even sizes and kernels, in 1, 2 and 3 spatial dims.
CONV_CASES = [
    dict(
        spatial=(8,), kernel=(3,), c_in=3, c_out=4, stride=1, padding="SAME", dilation=1, groups=1
    ),
    dict(
        spatial=(7,), kernel=(2,), c_in=2, c_out=3, stride=2, padding="SAME", dilation=1, groups=1
    ),
    dict(
        spatial=(9,), kernel=(3,), c_in=2, c_out=2, stride=3, padding="VALID", dilation=2, groups=1
    ),
    dict(spatial=(8,), kernel=(3,), c_in=4, c_out=4, stride=2, padding=1, dilation=3, groups=2),
    dict(
        spatial=(7,), kernel=(4,), c_in=4, c_out=6, stride=1, padding=[(2, 1)], dilation=1, groups=2
    ),
    dict(
        spatial=(6, 7),
        kernel=(3, 3),
        c_in=3,
        c_out=5,
        stride=1,
        padding="SAME",
        dilation=1,
        groups=1,
    ),
    dict(
        spatial=(7, 6),
        kernel=(3, 2),
        c_in=2,
        c_out=4,
        stride=(2, 1),
        padding="SAME",
        dilation=(1, 2),
        groups=1,
    ),
    dict(
        spatial=(8, 8),
        kernel=(2, 2),
        c_in=3,
        c_out=2,
        stride=2,
        padding="VALID",
        dilation=1,
        groups=1,
    ),
    dict(
        spatial=(7, 7),
        kernel=(3, 3),
        c_in=2,
        c_out=3,
        stride=3,
        padding=(1, 2),
        dilation=2,
        groups=1,
    ),
    dict(
        spatial=(6, 5),
        kernel=(3, 3),
        c_in=4,
        c_out=6,
        stride=1,
        padding=((0, 2), (1, 0)),
        dilation=1,
        groups=2,
    ),
    dict(
        spatial=(5, 6),
        kernel=(1, 3),
        c_in=4,
        c_out=8,
        stride=(1, 3),
        padding=2,
        dilation=3,
        groups=4,
    ),
    dict(
        spatial=(9, 8),
        kernel=(2, 3),
        c_in=6,
        c_out=3,
        stride=(3, 2),
        padding="SAME",
        dilation=(3, 1),
        groups=3,
    ),
    dict(
        spatial=(4, 5, 4),
        kernel=(2, 3, 2),
        c_in=2,
        c_out=3,
        stride=1,
        padding="SAME",
        dilation=1,
        groups=1,
    ),
    dict(
        spatial=(5, 4, 5),
        kernel=(3, 3, 3),
        c_in=4,
        c_out=2,
        stride=2,
        padding="VALID",
        dilation=(1, 1, 2),
        groups=2,
    ),
    dict(
        spatial=(4, 4, 5),
        kernel=(1, 2, 3),
        c_in=2,
        c_out=2,
        stride=(3, 1, 2),
        padding=((1, 1), (0, 1), (2, 0)),
        dilation=1,
        groups=1,
    ),
    dict(
        spatial=(5, 5, 5),
        kernel=(2, 2, 2),
        c_in=3,
        c_out=3,
        stride=1,
        padding=(1, 0, 2),
        dilation=2,
        groups=3,
    ),
    # More than 8 taps: the CPU lowering stacks its patches one kernel dim per level.
    dict(
        spatial=(6, 5),
        kernel=(3, 3),
        c_in=5,
        c_out=3,
        stride=1,
        padding="SAME",
        dilation=(2, 1),
        groups=1,
    ),
    dict(
        spatial=(4, 5, 4),
        kernel=(3, 3, 3),
        c_in=5,
        c_out=2,
        stride=(1, 2, 1),
        padding="SAME",
        dilation=1,
        groups=1,
    ),
    # At least 4x more input than output channels, stride 1: lowered output-side on CPU
    # (and, with the two channel counts swapped, the phases of the transposed conv).
    dict(
        spatial=(6, 7),
        kernel=(3, 2),
        c_in=8,
        c_out=2,
        stride=1,
        padding="SAME",
        dilation=(1, 2),
        groups=1,
    ),
    dict(
        spatial=(5, 4, 5),
        kernel=(2, 3, 2),
        c_in=1,
        c_out=4,
        stride=(2, 1, 2),
        padding=((1, 0), (1, 1), (0, 1)),
        dilation=1,
        groups=1,
    ),
    # A kernel dim of more than 8 taps: a flat stack of every tap.
    dict(
        spatial=(5, 13),
        kernel=(2, 9),
        c_in=3,
        c_out=2,
        stride=(1, 2),
        padding="SAME",
        dilation=1,
        groups=1,
    ),
]


# ----------------------------------------------------------------------------------------
# conv, conv1d/2d/3d.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", CONV_CASES, ids=_case_id)
def test_conv_matches_reference(case, seed):
    x, w, b = _conv_args(case, seed)
    out = ops.conv(x, w, b, **_conv_kwargs(case))
    assert_close(out, ref.conv(x, w, b, **_conv_kwargs(case)))


@pytest.mark.parametrize("case", CONV_CASES, ids=_case_id)
def test_conv_nd_wrappers_equal_conv(case):
    x, w, b = _conv_args(case)
    conv_nd = (ops.conv1d, ops.conv2d, ops.conv3d)[len(case["spatial"]) - 1]
    np.testing.assert_array_equal(
        conv_nd(x, w, b, **_conv_kwargs(case)), ops.conv(x, w, b, **_conv_kwargs(case))
    )


def test_conv_output_shape_tutorial_numbers():
    # A 28x28 input and a 3x3 kernel: SAME/1 -> 28, VALID/1 -> 26, VALID/2 -> 13.
    assert ops.conv_output_shape((28, 28), (3, 3), stride=1, padding="SAME") == (28, 28)
    assert ops.conv_output_shape((28, 28), (3, 3), stride=1, padding="VALID") == (26, 26)
    assert ops.conv_output_shape((28, 28), (3, 3), stride=2, padding="VALID") == (13, 13)
    x, w = jnp.zeros((1, 28, 28, 1)), jnp.zeros((3, 3, 1, 1))
    assert ops.conv(x, w, padding="SAME").shape == (1, 28, 28, 1)
    assert ops.conv(x, w, padding="VALID").shape == (1, 26, 26, 1)
    assert ops.conv(x, w, stride=2, padding="VALID").shape == (1, 13, 13, 1)


@pytest.mark.parametrize("case", CONV_CASES, ids=_case_id)
def test_conv_output_shape_matches_conv(case):
    x, w, _ = _conv_args(case)
    expected = ops.conv_output_shape(
        case["spatial"],
        case["kernel"],
        stride=case["stride"],
        padding=case["padding"],
        dilation=case["dilation"],
    )
    assert ops.conv(x, w, **_conv_kwargs(case)).shape[1:-1] == expected


def test_tutorial_1d_example():
    # The signal [0,0,0,1,1,0,0,0] through the identity-like filter [0,1,0], VALID.
    x = jnp.array([0, 0, 0, 1, 1, 0, 0, 0], jnp.float32).reshape(1, 8, 1)
    w = jnp.array([0, 1, 0], jnp.float32).reshape(3, 1, 1)
    out = ops.conv1d(x, w, padding="VALID")
    np.testing.assert_array_equal(out.reshape(-1), [0, 0, 1, 1, 0, 0])


def test_tutorial_vertical_line_example():
    # An 8x8 image, zero except a vertical line of ones in (0-based) columns 3 and 4, and
    # the 3x3 vertical-line detector (ones down the middle column), VALID: each output
    # pixel whose window is centred on the line sums three ones.
    image = np.zeros((8, 8), np.float32)
    image[:, 3:5] = 1.0
    detector = np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], np.float32)
    out = ops.conv2d(
        jnp.asarray(image).reshape(1, 8, 8, 1),
        jnp.asarray(detector).reshape(3, 3, 1, 1),
        padding="VALID",
    )
    np.testing.assert_array_equal(out.reshape(6, 6), [[0, 0, 3, 3, 0, 0]] * 6)


# ----------------------------------------------------------------------------------------
# Depthwise, separable, spatially separable.
# ----------------------------------------------------------------------------------------

DEPTHWISE_CASES = [
    dict(spatial=(9,), kernel=(3,), c_in=3, multiplier=2, stride=2, padding="SAME", dilation=1),
    dict(
        spatial=(6, 7), kernel=(3, 3), c_in=2, multiplier=1, stride=1, padding="VALID", dilation=2
    ),
    dict(
        spatial=(7, 6),
        kernel=(2, 3),
        c_in=3,
        multiplier=3,
        stride=(3, 2),
        padding=((1, 0), (2, 1)),
        dilation=(1, 3),
    ),
    dict(
        spatial=(4, 5, 4), kernel=(2, 2, 3), c_in=2, multiplier=2, stride=1, padding=1, dilation=1
    ),
]


def _depthwise_args(case: dict):
    c_out = case["c_in"] * case["multiplier"]
    x = normal(0, (2, *case["spatial"], case["c_in"]))
    w = normal(1, (*case["kernel"], 1, c_out))
    return x, w, normal(2, (c_out,))


def _geometry(case: dict) -> dict:
    return {k: case[k] for k in ("stride", "padding", "dilation")}


@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=_case_id)
def test_depthwise_conv_matches_reference_and_grouped_conv(case):
    x, w, b = _depthwise_args(case)
    out = ops.depthwise_conv(x, w, b, **_geometry(case))
    # Output channel c * multiplier + m filters input channel c alone.
    assert_close(out, ref.conv(x, w, b, groups=case["c_in"], **_geometry(case)))
    np.testing.assert_array_equal(out, ops.conv(x, w, b, groups=case["c_in"], **_geometry(case)))


@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=_case_id)
def test_separable_conv_is_depthwise_then_pointwise(case):
    x, w_dw, b = _depthwise_args(case)
    n = len(case["spatial"])
    w_pw = normal(3, (*(1,) * n, w_dw.shape[-1], 5))
    b = normal(4, (5,))
    out = ops.separable_conv(x, w_dw, w_pw, b, **_geometry(case))
    hidden = ref.conv(x, w_dw, groups=case["c_in"], **_geometry(case))
    assert_close(out, ref.conv(hidden, w_pw, b, padding="VALID"))
    expected = ops.conv(ops.depthwise_conv(x, w_dw, **_geometry(case)), w_pw, b)
    assert_close(out, expected, tol=1e-6)


@pytest.mark.parametrize(
    ("spatial", "kh", "kw", "stride", "padding"),
    [
        ((7, 6), 3, 3, 1, "SAME"),
        ((6, 7), 2, 3, 2, "SAME"),
        ((8, 7), 3, 2, (3, 1), "VALID"),
        ((6, 6), 4, 3, (1, 2), (2, 1)),
        ((7, 5), 3, 3, 3, ((0, 2), (1, 1))),
    ],
)
def test_spatially_separable_equals_outer_product_kernel(spatial, kh, kw, stride, padding):
    x = normal(0, (2, *spatial, 3))
    w_col, w_row, b = normal(1, (kh, 1, 3, 2)), normal(2, (1, kw, 2, 4)), normal(3, (4,))
    out = ops.spatially_separable_conv2d(x, w_col, w_row, b, stride=stride, padding=padding)
    kernel = np.einsum("icm,jmo->ijco", np.asarray(w_col)[:, 0], np.asarray(w_row)[0])
    assert_close(out, ref.conv(x, kernel, b, stride=stride, padding=padding))
    assert_close(out, ops.conv2d(x, jnp.asarray(kernel), b, stride=stride, padding=padding))


# ----------------------------------------------------------------------------------------
# Transposed convolution.
# ----------------------------------------------------------------------------------------


def _transpose_output_padding(case: dict, index: int):
    """0 for SAME; otherwise every other case uses the largest PyTorch allows."""
    if case["padding"] == "SAME" or index % 2 == 0:
        return 0
    n = len(case["spatial"])
    stride, dilation = (np.broadcast_to(case[k], (n,)) for k in ("stride", "dilation"))
    return tuple(int(max(s, d)) - 1 for s, d in zip(stride, dilation, strict=True))


@pytest.mark.parametrize(
    ("index", "case"), list(enumerate(CONV_CASES)), ids=[_case_id(c) for c in CONV_CASES]
)
def test_conv_transpose_matches_scatter_reference(index, case):
    # `case` describes the forward conv; its output channels are the input channels here.
    y = normal(0, (2, *case["spatial"], case["c_out"]))
    w = normal(1, (*case["kernel"], case["c_in"] // case["groups"], case["c_out"]))
    b = normal(2, (case["c_in"],))
    kwargs = dict(_conv_kwargs(case), output_padding=_transpose_output_padding(case, index))
    assert_close(ops.conv_transpose(y, w, b, **kwargs), ref.conv_transpose(y, w, b, **kwargs))


@pytest.mark.parametrize(
    ("in_size", "k", "stride", "padding", "dilation", "output_padding", "expected"),
    [
        # PyTorch: (in - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1.
        (5, 3, 2, 1, 1, 1, 10),
        (4, 3, 3, 0, 2, 2, 16),
        (6, 1, 2, 1, 1, 0, 9),  # padding beyond the kernel extent crops
        (4, 3, 1, 0, 3, 2, 12),  # output_padding may reach dilation - 1
        (5, 4, 2, "SAME", 1, 0, 10),  # in * stride
        (5, 4, 3, "SAME", 2, 0, 15),
        (5, 2, 3, "SAME", 1, 0, 15),  # kernel shorter than stride
        (5, 3, 2, "VALID", 2, 0, 13),  # (in - 1) * stride + dilation * (k - 1) + 1
        (5, 3, 2, "VALID", 1, 1, 12),
    ],
)
def test_conv_transpose_output_size(
    in_size, k, stride, padding, dilation, output_padding, expected
):
    y, w = jnp.ones((1, in_size, 2)), jnp.ones((k, 1, 2))
    out = ops.conv_transpose(
        y, w, stride=stride, padding=padding, dilation=dilation, output_padding=output_padding
    )
    assert out.shape == (1, expected, 1)


ADJOINT_GEOMETRIES = [
    dict(y_spatial=(5,), kernel=(3,), a=2, b=3, dilation=1, groups=1),
    dict(y_spatial=(4, 4), kernel=(3, 2), a=4, b=6, dilation=(2, 1), groups=2),
    dict(y_spatial=(3, 2, 3), kernel=(2, 3, 2), a=3, b=3, dilation=(1, 2, 1), groups=3),
]


def _paddings(n: int) -> list:
    return [
        "SAME",
        "VALID",
        1,
        tuple(i % 2 + 1 for i in range(n)),
        tuple((i % 2, 2 - i % 2) for i in range(n)),
    ]


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("geometry", ADJOINT_GEOMETRIES, ids=_case_id)
@pytest.mark.parametrize("padding_index", range(5))
def test_conv_transpose_is_vjp_of_conv(geometry, stride, padding_index):
    n = len(geometry["y_spatial"])
    padding = _paddings(n)[padding_index]
    # Any output_padding below the stride is a valid adjoint; vary it across dims.
    output_padding = 0 if padding == "SAME" else tuple((stride - 1 - i) % stride for i in range(n))
    y = normal(0, (2, *geometry["y_spatial"], geometry["b"]))
    w = normal(1, (*geometry["kernel"], geometry["a"] // geometry["groups"], geometry["b"]))
    kwargs = dict(
        stride=stride, padding=padding, dilation=geometry["dilation"], groups=geometry["groups"]
    )
    out = ops.conv_transpose(y, w, output_padding=output_padding, **kwargs)
    x0 = jnp.zeros(out.shape[:-1] + (geometry["a"],))
    forward, vjp = jax.vjp(lambda x: ops.conv(x, w, **kwargs), x0)
    assert forward.shape == y.shape
    (expected,) = vjp(y)
    assert_close(out, expected, tol=1e-5)
    # ⟨conv(x, w), y⟩ = ⟨x, conv_transpose(y, w)⟩ for a random x.
    x = normal(2, x0.shape)
    lhs = float(jnp.vdot(ops.conv(x, w, **kwargs), y))
    np.testing.assert_allclose(lhs, float(jnp.vdot(x, out)), rtol=1e-4)


# ----------------------------------------------------------------------------------------
# Every op: jit, vmap, bfloat16 and float64.
# ----------------------------------------------------------------------------------------


def _ref_depthwise(x, w, b, **kw):
    return ref.conv(x, w, b, groups=x.shape[-1], **kw)


def _ref_separable(x, w_dw, w_pw, b, **kw):
    return ref.conv(ref.conv(x, w_dw, groups=x.shape[-1], **kw), w_pw, b, padding="VALID")


def _ref_spatially_separable(x, w_col, w_row, b, **kw):
    kernel = np.einsum(
        "icm,jmo->ijco", np.asarray(w_col, np.float64)[:, 0], np.asarray(w_row, np.float64)[0]
    )
    return ref.conv(x, kernel, b, **kw)


def _op_case(op, reference, shapes, **kwargs):
    return functools.partial(op, **kwargs), functools.partial(reference, **kwargs), shapes


# name -> (op, its reference, argument shapes); every op of the module, one setting each
# (conv2d two: im2col and output-side).
OP_CASES = {
    "conv1d": _op_case(ops.conv1d, ref.conv, [(2, 7, 4), (3, 4, 5), (5,)], stride=2, padding=1),
    "conv2d": _op_case(
        ops.conv2d,
        ref.conv,
        [(2, 6, 5, 4), (3, 3, 2, 6), (6,)],
        padding="SAME",
        dilation=2,
        groups=2,
    ),
    # Stride 1 and 4x more input than output channels: lowered output-side on CPU.
    "conv2d_output_side": _op_case(
        ops.conv2d, ref.conv, [(2, 6, 5, 8), (3, 2, 8, 2), (2,)], padding="SAME"
    ),
    "conv3d": _op_case(
        ops.conv3d,
        ref.conv,
        [(2, 4, 5, 4, 2), (2, 2, 3, 2, 3), (3,)],
        stride=(1, 2, 1),
        padding="VALID",
    ),
    "depthwise_conv": _op_case(
        ops.depthwise_conv,
        _ref_depthwise,
        [(2, 6, 6, 3), (3, 3, 1, 6), (6,)],
        stride=2,
        padding="SAME",
    ),
    "separable_conv": _op_case(
        ops.separable_conv,
        _ref_separable,
        [(2, 6, 6, 3), (3, 3, 1, 6), (1, 1, 6, 4), (4,)],
        padding="VALID",
    ),
    "spatially_separable_conv2d": _op_case(
        ops.spatially_separable_conv2d,
        _ref_spatially_separable,
        [(2, 6, 7, 3), (3, 1, 3, 2), (1, 3, 2, 4), (4,)],
        stride=2,
        padding="SAME",
    ),
    "conv_transpose": _op_case(
        ops.conv_transpose,
        ref.conv_transpose,
        [(2, 4, 3, 6), (3, 3, 2, 6), (4,)],
        stride=2,
        padding=1,
        output_padding=1,
        groups=2,
    ),
}


def op_args(shapes, dtype=np.float32, seed: int = 0) -> list[jax.Array]:
    return [normal(seed + i, shape, dtype) for i, shape in enumerate(shapes)]


def assert_jit_matches_eager(op, args) -> None:
    assert_close(jax.jit(op)(*args), op(*args), tol=1e-6)


def assert_vmap_matches_loop(op, shapes) -> None:
    """vmap over a new leading axis of every argument (kernels included)."""
    stacked = [
        jnp.stack([a, b])
        for a, b in zip(op_args(shapes, seed=0), op_args(shapes, seed=10), strict=True)
    ]
    looped = np.stack([op(*[a[i] for a in stacked]) for i in range(2)])
    assert_close(jax.vmap(op)(*stacked), looped, tol=1e-5)


def assert_bfloat16_close_to_float32(op, shapes) -> None:
    out = op(*op_args(shapes, jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    assert_close(out, op(*op_args(shapes)), tol=3e-2)


def assert_float64_matches_reference(op, reference, shapes) -> None:
    with jax.enable_x64(True):
        args = op_args(shapes, np.float64)
        out = op(*args)
        assert out.dtype == jnp.float64
        assert_close(out, reference(*[np.asarray(a) for a in args]), tol=1e-12)


@pytest.mark.parametrize("name", OP_CASES)
def test_op_matches_reference(name):
    op, reference, shapes = OP_CASES[name]
    args = op_args(shapes)
    assert_close(op(*args), reference(*[np.asarray(a) for a in args]))


@pytest.mark.parametrize("name", OP_CASES)
def test_op_under_jit(name):
    op, _, shapes = OP_CASES[name]
    assert_jit_matches_eager(op, op_args(shapes))


@pytest.mark.parametrize("name", OP_CASES)
def test_op_under_vmap(name):
    op, _, shapes = OP_CASES[name]
    assert_vmap_matches_loop(op, shapes)


@pytest.mark.parametrize("name", OP_CASES)
def test_op_bfloat16(name):
    op, _, shapes = OP_CASES[name]
    assert_bfloat16_close_to_float32(op, shapes)


@pytest.mark.parametrize("name", OP_CASES)
def test_op_float64(name):
    op, reference, shapes = OP_CASES[name]
    assert_float64_matches_reference(op, reference, shapes)


# ----------------------------------------------------------------------------------------
# Bad arguments.
# ----------------------------------------------------------------------------------------


def _z(*shape, dtype=jnp.float32) -> jax.Array:
    return jnp.zeros(shape, dtype)


BAD_CALLS = {
    "x rank": (lambda: ops.conv(_z(2, 5, 5, 3), _z(3, 3, 3, 3, 4)), r"`x` must have rank 5"),
    "w rank": (lambda: ops.conv(_z(2, 5, 3), _z(3, 4)), r"`w`"),
    "conv2d kernel rank": (lambda: ops.conv2d(_z(2, 5, 3), _z(3, 3, 4)), r"`w` must have rank 4"),
    "channels": (lambda: ops.conv(_z(2, 5, 5, 3), _z(3, 3, 4, 4)), r"`x` has 3 channels"),
    "groups vs channels": (
        lambda: ops.conv(_z(2, 5, 5, 4), _z(3, 3, 4, 4), groups=2),
        r"`x` has 4 channels.*groups=2",
    ),
    "groups vs c_out": (
        lambda: ops.conv(_z(2, 5, 5, 4), _z(3, 3, 2, 3), groups=2),
        r"`groups`=2 must divide the output channels 3",
    ),
    "groups zero": (lambda: ops.conv(_z(2, 5, 3), _z(3, 3, 4), groups=0), r"`groups`"),
    "padding string": (
        lambda: ops.conv(_z(2, 5, 3), _z(3, 3, 4), padding="FULL"),
        r"`padding` string must be one of \('SAME', 'SAME_LOWER', 'VALID', 'CAUSAL'",
    ),
    "padding pairs": (
        lambda: ops.conv(_z(2, 5, 5, 3), _z(3, 3, 3, 4), padding=[(1, 1)]),
        r"`padding`",
    ),
    "negative stride": (lambda: ops.conv(_z(2, 5, 3), _z(3, 3, 4), stride=-1), r"`stride`"),
    "dilation length": (
        lambda: ops.conv(_z(2, 5, 5, 3), _z(3, 3, 3, 4), dilation=(1, 2, 3)),
        r"`dilation`",
    ),
    "bias shape": (lambda: ops.conv(_z(2, 5, 3), _z(3, 3, 4), _z(3)), r"`b` must have shape"),
    "dtype": (lambda: ops.conv(_z(2, 5, 3), _z(3, 3, 4, dtype=jnp.bfloat16)), r"dtype"),
    "zero-size kernel dim": (lambda: ops.conv(_z(2, 5, 3), _z(0, 3, 4)), r"`w` must have no zero"),
    "zero-size transpose kernel": (
        lambda: ops.conv_transpose(_z(2, 5, 4), _z(3, 0, 4)),
        r"`w` must have no zero-size dims; got shape \(3, 0, 4\)",
    ),
    "zero-size depthwise kernel": (
        lambda: ops.depthwise_conv(_z(2, 5, 3), _z(3, 1, 0)),
        r"`w` must have no zero",
    ),
    "not an array": (lambda: ops.conv("abc", _z(3, 3, 4)), r"`x` must be"),
    "integer list": (lambda: ops.conv([[[1, 2, 3]]], _z(1, 3, 4)), r"floating dtype"),
    "padding_mode": (
        lambda: ops.conv(_z(2, 5, 3), _z(3, 3, 4), padding_mode="mirror"),
        r"`padding_mode` must be one of",
    ),
    "padding_mode conflict": (
        lambda: ops.conv(_z(2, 5, 3), _z(3, 3, 4), padding="CIRCULAR", padding_mode="reflect"),
        r"conflicts",
    ),
    "transpose fill": (
        lambda: ops.conv_transpose(_z(2, 5, 4), _z(3, 2, 4), padding="REFLECT"),
        r"not supported by conv_transpose",
    ),
    "depthwise in-channels": (lambda: ops.depthwise_conv(_z(2, 5, 3), _z(3, 3, 6)), r"`w`"),
    "depthwise multiplier": (lambda: ops.depthwise_conv(_z(2, 5, 3), _z(3, 1, 4)), r"`w`"),
    "separable pointwise": (
        lambda: ops.separable_conv(_z(2, 5, 3), _z(3, 1, 6), _z(3, 6, 4)),
        r"`w_pointwise`",
    ),
    "separable depthwise": (
        lambda: ops.separable_conv(_z(2, 5, 3), _z(3, 2, 6), _z(1, 6, 4)),
        r"`w_depthwise`",
    ),
    "spatially separable w_col": (
        lambda: ops.spatially_separable_conv2d(_z(1, 5, 5, 3), _z(3, 2, 3, 2), _z(1, 3, 2, 4)),
        r"`w_col`",
    ),
    "spatially separable w_row": (
        lambda: ops.spatially_separable_conv2d(_z(1, 5, 5, 3), _z(3, 1, 3, 2), _z(1, 3, 5, 4)),
        r"`w_row`",
    ),
    "transpose channels": (lambda: ops.conv_transpose(_z(2, 5, 3), _z(3, 2, 4)), r"`y`"),
    "transpose output_padding": (
        lambda: ops.conv_transpose(_z(2, 5, 4), _z(3, 2, 4), stride=2, output_padding=2),
        r"`output_padding` must be smaller than stride or dilation",
    ),
    "transpose output_padding with SAME": (
        lambda: ops.conv_transpose(
            _z(2, 5, 4), _z(3, 2, 4), stride=2, padding="SAME", output_padding=1
        ),
        r"`output_padding` must be 0",
    ),
    "transpose bias": (lambda: ops.conv_transpose(_z(2, 5, 4), _z(3, 2, 4), _z(4)), r"`b`"),
}


@pytest.mark.parametrize("name", BAD_CALLS)
def test_bad_arguments_raise_value_error(name):
    call, match = BAD_CALLS[name]
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_with_many_output_positions_matches_reference_and_native_gradients(stride):
    """Convs with enough output positions (and channels) that the CPU lowering splits
    their matmul in two: the output against the NumPy reference, both gradients against
    those of XLA's own convolution."""
    side = stride * (math.isqrt(_lowering._SPLIT_MIN_ROWS // 2) + 1)  # 2 images
    rng = np.random.default_rng(0)
    c = _lowering._SPLIT_MIN_CHANNELS
    x = rng.standard_normal((2, side, side, c // 8)).astype(np.float32)  # 9 taps: depth 9c/8
    w = (rng.standard_normal((3, 3, c // 8, c)) / 6).astype(np.float32)
    ct = rng.standard_normal(ops.conv(x, w, stride=stride).shape).astype(np.float32)
    assert math.prod(ct.shape[:-1]) >= _lowering._SPLIT_MIN_ROWS
    assert_close(ops.conv(x, w, stride=stride), ref.conv(x, w, stride=stride))

    def native(x, w):
        pads = [ref.same_padding(side, 3, stride)] * 2
        return jax.lax.conv_general_dilated(
            x, w, (stride, stride), pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    def grads(f):
        return jax.grad(lambda x, w: jnp.vdot(f(x, w), ct), argnums=(0, 1))(x, w)

    ours = grads(lambda x, w: ops.conv(x, w, stride=stride))
    for mine, theirs in zip(ours, grads(native), strict=True):
        assert_close(mine, theirs, tol=1e-4)
