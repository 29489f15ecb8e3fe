"""The padding forms, padding modes, empty outputs and pooling options of issue 13 against
the NumPy loops of ``reference.py``; the first-maximum tie rule against ``jax.grad`` of
``lax.reduce_window``; ``max_unpool`` as the adjoint of ``max_pool``; jit/vmap/bfloat16;
and, where installed, PyTorch and Flax as peers."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from jax import lax
from test_ops_conv import (
    assert_bfloat16_close_to_float32,
    assert_close,
    assert_jit_matches_eager,
    assert_vmap_matches_loop,
    normal,
)
from test_ops_grads import _check

from cnnjax import layers, ops

# (x shape, w shape, kwargs): every new padding form and mode, 1-3 spatial dims.
CONV_PADDINGS = [
    ((2, 7, 3), (3, 3, 4), dict(padding="CAUSAL", dilation=2)),
    ((2, 7, 3), (4, 3, 2), dict(padding="SAME_LOWER", stride=2)),
    ((2, 6, 5, 2), (3, 3, 2, 3), dict(padding="CIRCULAR")),
    ((2, 6, 5, 2), (3, 2, 2, 3), dict(padding="REFLECT", stride=2)),
    ((2, 6, 5, 2), (3, 3, 2, 3), dict(padding="REPLICATE", dilation=(1, 2))),
    ((2, 6, 5, 2), (3, 3, 2, 3), dict(padding=[1, (2, 0)], padding_mode="reflect")),
    ((2, 6, 5, 2), (3, 3, 2, 3), dict(padding=[(2, 1), 1], padding_mode="circular")),
    ((2, 6, 5, 2), (3, 3, 2, 3), dict(padding=[(-1, 2), 1], padding_mode="replicate")),
    ((1, 7, 4), (2, 4, 2), dict(padding=[(-2, 1)])),
    ((1, 4, 5, 4, 2), (2, 3, 2, 2, 2), dict(padding=[1, (1, -1), 0], padding_mode="reflect")),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs"), CONV_PADDINGS)
def test_conv_padding_forms_match_reference(x_shape, w_shape, kwargs):
    x, w = normal(0, x_shape), normal(1, w_shape)
    assert_close(ops.conv(x, w, **kwargs), ref.conv(x, w, **kwargs))


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_every_conv_op_takes_padding_mode(mode):
    x = normal(0, (2, 6, 5, 3))
    w_dw, w_pw = normal(1, (3, 3, 1, 6)), normal(2, (1, 1, 6, 4))
    w_col, w_row = normal(3, (3, 1, 3, 2)), normal(4, (1, 3, 2, 4))
    kw = dict(padding=(1, (2, 1)), padding_mode=mode)
    assert_close(ops.depthwise_conv(x, w_dw, **kw), ref.conv(x, w_dw, groups=3, **kw))
    hidden = ref.conv(x, w_dw, groups=3, **kw)
    assert_close(ops.separable_conv(x, w_dw, w_pw, **kw), ref.conv(hidden, w_pw, padding=0))
    kernel = np.einsum("icm,jmo->ijco", np.asarray(w_col)[:, 0], np.asarray(w_row)[0])
    assert_close(ops.spatially_separable_conv2d(x, w_col, w_row, **kw), ref.conv(x, kernel, **kw))
    w = normal(5, (3, 3, 3, 4))
    expected = ref.max_pool(ref.conv(x, w, padding="REFLECT" if mode == "reflect" else 1), 2)
    fill = dict(padding="REFLECT") if mode == "reflect" else dict(padding=1, padding_mode=mode)
    if mode in ("zeros", "reflect"):
        assert_close(ops.conv_max_pool(x, w, **fill), expected)
    # Deformable with zero offsets is conv2d, fill included.
    out = ops.conv_output_shape((6, 5), (3, 3), padding=kw["padding"])
    offsets = jnp.zeros((2, *out, 2 * 9))
    assert_close(ops.deformable_conv2d(x, offsets, w, **kw), ref.conv(x, w, **kw))


def test_conv_transpose_new_padding_forms_are_the_vjp_of_conv():
    w = normal(0, (3, 2, 4))
    for padding in ["SAME_LOWER", "CAUSAL", [(-1, 2)], [(2, -1)]]:
        x = normal(1, (2, 8, 2))
        y, vjp = jax.vjp(lambda x, p=padding: ops.conv(x, w, stride=2, padding=p), x)
        g = normal(2, y.shape)
        out = ops.conv_transpose(
            g, w, stride=2, padding=padding, output_padding=0 if padding == "SAME_LOWER" else 1
        )
        assert_close(out[:, : x.shape[1]], vjp(g)[0])


def test_empty_outputs_have_the_right_shapes_and_gradients():
    x, w, b = normal(0, (2, 3, 4, 2)), normal(1, (5, 2, 2, 3)), normal(2, (3,))
    cases = {
        "conv": (lambda x, w: ops.conv(x, w, b, padding="VALID"), (2, 0, 3, 3)),
        "lax": (
            lambda x, w: lax.conv_general_dilated(
                x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
            ),
            (2, 0, 3, 3),
        ),
        "depthwise": (
            lambda x, w: ops.depthwise_conv(x, w[..., :1, :2], padding=((0, 1), 0)),
            (2, 0, 3, 2),
        ),
        "conv_max_pool": (lambda x, w: ops.conv_max_pool(x, w, padding="VALID"), (2, 0, 1, 3)),
        "transpose": (
            lambda x, w: ops.conv_transpose(x[..., :1, :], w[:, :1, :, :2], padding=((4, 4), 0)),
            (2, 0, 1, 2),
        ),
        "max_pool": (lambda x, w: ops.max_pool(x, (4, 1)) * jnp.sum(w), (2, 0, 4, 2)),
        "avg_pool": (lambda x, w: ops.avg_pool(x, (1, 5)) * jnp.sum(w), (2, 3, 0, 2)),
    }
    for name, (f, shape) in cases.items():
        out = f(x, w)
        assert out.shape == shape, name
        gx, gw = jax.grad(lambda x, w, f=f: jnp.sum(f(x, w)), argnums=(0, 1))(x, w)
        assert gx.shape == x.shape and gw.shape == w.shape, name
        assert not jnp.any(gx) and not jnp.any(gw), name
    assert ops.conv_output_shape((3, 4), (5, 2), padding="VALID") == (0, 3)


def test_python_lists_are_converted():
    x = [[[1.0], [2.0], [3.0]]]
    np.testing.assert_allclose(ops.conv(x, [[[1.0]], [[1.0]]], padding="VALID")[0, :, 0], [3, 5])
    np.testing.assert_allclose(ops.max_pool(x, 2, 1)[0, :, 0], [2, 3])


# ----------------------------------------------------------------------------------------
# Pooling options.
# ----------------------------------------------------------------------------------------

# (x shape, window, stride, padding, dilation, ceil_mode)
POOL_OPTIONS = [
    ((2, 7, 3), 2, None, "VALID", 1, True),
    ((2, 8, 3), 3, 2, 1, 2, False),
    ((2, 7, 6, 2), 3, 2, [1, (0, 1)], 1, True),
    ((2, 6, 7, 2), (2, 3), (2, 2), "SAME", (2, 1), True),
    ((1, 9, 8, 2), 3, 3, [(-1, 1), 0], (1, 2), False),
    ((1, 5, 5, 4, 2), 2, None, [0, 1, (1, 0)], 1, True),
]


@pytest.mark.parametrize(("shape", "window", "stride", "padding", "dilation", "ceil"), POOL_OPTIONS)
def test_pool_options_match_reference(shape, window, stride, padding, dilation, ceil):
    x = normal(0, shape)
    kw = dict(dilation=dilation, ceil_mode=ceil)
    assert_close(
        ops.max_pool(x, window, stride, padding, **kw),
        ref.max_pool(x, window, stride, padding, **kw),
    )
    for include in (False, True):
        assert_close(
            ops.avg_pool(x, window, stride, padding, count_include_pad=include, **kw),
            ref.avg_pool(x, window, stride, padding, count_include_pad=include, **kw),
        )
    _, indices = ops.max_pool(x, window, stride, padding, return_indices=True, **kw)
    np.testing.assert_array_equal(indices, ref.max_pool_indices(x, window, stride, padding, **kw))
    assert_close(
        ops.pool(x, 1.0, lax.mul, window, stride, padding, **kw),
        ref.pool(x, 1.0, np.multiply, window, stride, padding, **kw),
    )
    assert_close(
        ops.pool(x, 0.0, lax.add, window, stride, padding, **kw),
        ref.pool(x, 0.0, np.add, window, stride, padding, **kw),
    )


@pytest.mark.parametrize(
    ("shape", "window", "stride", "padding"),
    [
        ((2, 8, 3), 2, None, "VALID"),  # the reshape path
        ((2, 7, 6, 2), 3, 2, 1),  # overlapping windows: indices coincide, values add up
        ((1, 5, 6, 2, 2), 2, 1, "SAME"),
    ],
)
def test_max_unpool_is_the_vjp_of_max_pool(shape, window, stride, padding):
    rng = np.random.default_rng(0)
    # Equal values too: ties must send everything to the same (first) cell.
    x = jnp.asarray(rng.integers(0, 3, shape), jnp.float32)
    y, indices = ops.max_pool(x, window, stride, padding, return_indices=True)
    g = normal(1, y.shape)
    _, vjp = jax.vjp(lambda x: ops.max_pool(x, window, stride, padding), x)
    unpooled = ops.max_unpool(g, indices, x.shape[1:-1])
    np.testing.assert_allclose(unpooled, vjp(g)[0], rtol=1e-6, atol=1e-6)
    assert_close(unpooled, ref.max_unpool(g, indices, x.shape[1:-1]))
    # max_unpool is linear in y; its own vjp gathers at the indices.
    z = normal(2, unpooled.shape)
    _, unpool_vjp = jax.vjp(lambda g: ops.max_unpool(g, indices, x.shape[1:-1]), g)
    lhs = jnp.vdot(ops.max_unpool(g, indices, x.shape[1:-1]), z)
    np.testing.assert_allclose(lhs, jnp.vdot(g, unpool_vjp(z)[0]), rtol=1e-5)


# ----------------------------------------------------------------------------------------
# One tie rule: the first maximum of a window gets the whole gradient.
# ----------------------------------------------------------------------------------------


def _reduce_window_max(x, window, stride, padding):
    n = x.ndim - 2
    window = (window,) * n if isinstance(window, int) else window
    stride = window if stride is None else (stride,) * n if isinstance(stride, int) else stride
    pads = ops._args.padding_pairs(padding, x.shape[1:-1], window, stride, (1,) * n)
    return lax.reduce_window(
        x, -jnp.inf, lax.max, (1, *window, 1), (1, *stride, 1), ((0, 0), *pads, (0, 0))
    )


@pytest.mark.parametrize(
    ("shape", "window", "stride", "padding"),
    [
        ((2, 8, 3), 2, None, "VALID"),
        ((2, 6, 6, 3), 2, None, "VALID"),
        ((2, 7, 5, 3), (2, 3), None, "SAME"),
        ((1, 4, 4, 4, 2), 2, None, "VALID"),
        ((2, 6, 6, 3), 3, 1, "SAME"),
        ((2, 7, 6, 3), 3, 2, 1),
    ],
)
@pytest.mark.parametrize("values", ["equal", "binary"])
def test_max_pool_gradient_follows_the_first_maximum(shape, window, stride, padding, values):
    rng = np.random.default_rng(0)
    x = (
        jnp.ones(shape)
        if values == "equal"
        else jnp.asarray(rng.integers(0, 2, shape), jnp.float32)
    )
    ours = jax.grad(lambda x: jnp.sum(ops.max_pool(x, window, stride, padding)))(x)
    theirs = jax.grad(lambda x: jnp.sum(_reduce_window_max(x, window, stride, padding)))(x)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("values", ["equal", "binary"])
@pytest.mark.parametrize("shape", [(2, 5, 6, 3), (2, 2, 3, 3), (2, 7, 2), (1, 3, 2, 3, 2)])
def test_global_max_pool_forward_mode_follows_the_first_maximum(values, shape):
    # Both sides of the window-size switch in ops/_max.py (at most 16 cells, and more).
    rng = np.random.default_rng(0)
    x = (
        np.ones(shape, np.float32)
        if values == "equal"
        else rng.integers(0, 2, shape).astype(np.float32)
    )
    v = rng.normal(size=shape).astype(np.float32)
    _, tangent = jax.jvp(ops.global_max_pool, (jnp.asarray(x),), (jnp.asarray(v),))
    # NumPy's argmax returns the first maximum in row-major order over the spatial dims.
    n, c = shape[0], shape[-1]
    first = x.reshape(n, -1, c).argmax(axis=1)[:, None]
    expected = np.take_along_axis(v.reshape(n, -1, c), first, axis=1)[:, 0]
    np.testing.assert_array_equal(tangent, expected)
    np.testing.assert_array_equal(
        jax.jacfwd(ops.global_max_pool)(x), jax.jacrev(ops.global_max_pool)(x)
    )


@pytest.mark.parametrize("values", ["equal", "binary"])
def test_global_max_pool_and_conv_max_pool_follow_the_first_maximum(values):
    rng = np.random.default_rng(0)
    x = (
        jnp.ones((2, 5, 6, 3))
        if values == "equal"
        else jnp.asarray(rng.integers(0, 2, (2, 5, 6, 3)), jnp.float32)
    )
    ours = jax.grad(lambda x: jnp.sum(ops.global_max_pool(x)))(x)
    theirs = jax.grad(lambda x: jnp.sum(_reduce_window_max(x, (5, 6), None, "VALID")))(x)
    np.testing.assert_array_equal(ours, theirs)
    w = jnp.ones((2, 2, 3, 2))

    def two_ops(x, w):
        return jnp.sum(_reduce_window_max(ops.conv(x, w, padding="VALID"), 2, None, "VALID"))

    ours = jax.grad(lambda x, w: jnp.sum(ops.conv_max_pool(x, w, padding="VALID")), argnums=(0, 1))(
        x, w
    )
    theirs = jax.grad(two_ops, argnums=(0, 1))(x, w)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


# ----------------------------------------------------------------------------------------
# Finite-difference gradients of the new paths (float64), transformations, dtypes.
# ----------------------------------------------------------------------------------------

GRAD_CASES = [
    (ops.conv, dict(x=(1, 6, 2), w=(3, 2, 2)), dict(padding="CAUSAL", dilation=2)),
    (ops.conv, dict(x=(1, 5, 4, 2), w=(3, 2, 2, 2)), dict(padding="REFLECT")),
    (
        ops.conv,
        dict(x=(1, 5, 4, 2), w=(3, 3, 2, 2)),
        dict(padding=[(-1, 2), 1], padding_mode="circular"),
    ),
    (
        ops.conv,
        dict(x=(1, 5, 2), w=(2, 2, 2)),
        dict(padding="SAME_LOWER", padding_mode="replicate"),
    ),
    (ops.depthwise_conv, dict(x=(1, 5, 4, 2), w=(3, 3, 1, 2)), dict(padding_mode="reflect")),
    (ops.conv_transpose, dict(y=(1, 4, 2), w=(3, 2, 2)), dict(stride=2, padding=[(-1, 2)])),
    (
        ops.deformable_conv2d,
        dict(x=(1, 4, 4, 2), offsets=(1, 4, 4, 18), w=(3, 3, 2, 2)),
        dict(padding=1, padding_mode="replicate"),
    ),
]


@pytest.mark.parametrize(("op", "shapes", "kwargs"), GRAD_CASES)
def test_new_conv_paths_gradcheck(op, shapes, kwargs):
    _check(op, shapes, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(window=2, ceil_mode=True),
        dict(window=3, stride=2, padding=1, dilation=2),
        dict(window=2, stride=1, padding=(1, 0), ceil_mode=True, count_include_pad=True),
    ],
)
@pytest.mark.parametrize("op", [ops.max_pool, ops.avg_pool])
def test_pool_options_gradcheck(op, kwargs):
    if op is ops.max_pool:
        kwargs = {k: v for k, v in kwargs.items() if k != "count_include_pad"}
    _check(op, dict(x=(1, 7, 6, 2)), distinct=True, **kwargs)


def test_generic_pool_and_unpool_gradcheck():
    # JAX differentiates reduce_window for add, max and min.
    _check(lambda x: ops.pool(x, jnp.inf, lax.min, 2, 1, 1), dict(x=(1, 4, 3, 2)), distinct=True)
    indices = ops.max_pool(normal(0, (1, 6, 2)), 2, return_indices=True)[1]
    _check(lambda y: ops.max_unpool(y, indices, (6,)), dict(y=(1, 3, 2)))


NEW_OPS = {
    "conv reflect": (functools.partial(ops.conv, padding="REFLECT"), [(2, 5, 4, 3), (3, 3, 3, 2)]),
    "conv circular crop": (
        functools.partial(ops.conv, padding=[(-1, 2)], padding_mode="circular"),
        [(2, 6, 3), (3, 3, 2)],
    ),
    "max_pool ceil dilation": (
        functools.partial(ops.max_pool, window=2, stride=2, dilation=2, ceil_mode=True),
        [(2, 7, 6, 3)],
    ),
    "avg_pool count_include_pad": (
        functools.partial(ops.avg_pool, window=3, stride=2, padding=1, count_include_pad=True),
        [(2, 6, 5, 3)],
    ),
    "pool": (lambda x: ops.pool(x, -jnp.inf, lax.max, 3, 1, "SAME"), [(2, 5, 5, 3)]),
    "max_pool indices": (
        lambda x: ops.max_pool(x, 3, 2, return_indices=True)[1].astype(x.dtype),
        [(2, 7, 3)],
    ),
}


@pytest.mark.parametrize("name", NEW_OPS)
def test_new_options_under_jit_vmap_bfloat16(name):
    op, shapes = NEW_OPS[name]
    args = [normal(i, s) for i, s in enumerate(shapes)]
    assert_jit_matches_eager(op, args)
    assert_vmap_matches_loop(op, shapes)
    if name != "max_pool indices":  # bf16 rounding may move a tie
        assert_bfloat16_close_to_float32(op, shapes)


def test_offset_groups_is_inferred_from_offsets():
    x, w = normal(0, (1, 5, 5, 4)), normal(1, (3, 3, 4, 2))
    offsets, mask = normal(2, (1, 3, 3, 2 * 2 * 9)), normal(3, (1, 3, 3, 2 * 9))
    assert_close(
        ops.deformable_conv2d(x, offsets, w, mask=mask),
        ops.deformable_conv2d(x, offsets, w, mask=mask, offset_groups=2),
    )


def test_layers_expose_the_new_options():
    x = normal(0, (2, 6, 6, 3))
    key = jax.random.key(0)
    for layer in [
        layers.Conv(4, 3, padding_mode="reflect"),
        layers.Conv(4, 3, padding="CAUSAL"),
        layers.DepthwiseConv(3, padding="CIRCULAR"),
        layers.SeparableConv(4, 3, padding_mode="replicate"),
        layers.SpatiallySeparableConv(4, (3, 3), padding_mode="circular"),
        layers.DeformableConv(4, 3, offset_groups=1, padding_mode="reflect"),
        layers.ConvMaxPool(4, 3, padding="REFLECT"),
    ]:
        out, _ = layer.init_with_output(key, x)
        assert out.shape[0] == 2 and out.shape[-1] in (3, 4)
    y, indices = layers.MaxPool(2, return_indices=True).apply({}, x)
    assert_close(
        layers.MaxUnpool().apply({}, y, indices, (6, 6)), ops.max_unpool(y, indices, (6, 6))
    )
    assert_close(
        layers.AvgPool(3, 2, 1, ceil_mode=True, count_include_pad=True).apply({}, x),
        ref.avg_pool(x, 3, 2, 1, ceil_mode=True, count_include_pad=True),
    )
    assert_close(layers.MaxPool(2, 1, dilation=2).apply({}, x), ref.max_pool(x, 2, 1, dilation=2))
    assert_close(
        layers.Pool(2, init=0.0, reducer=lax.add).apply({}, x), ref.pool(x, 0.0, np.add, 2)
    )


# ----------------------------------------------------------------------------------------
# Peers, where installed: PyTorch (padding_mode, ceil_mode, unpool), Flax (CIRCULAR,
# count_include_pad).
# ----------------------------------------------------------------------------------------


def _nchw(a):
    return np.moveaxis(np.asarray(a, np.float64), -1, 1)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_padding_mode_matches_pytorch(mode):
    torch = pytest.importorskip("torch")
    x, w = normal(0, (2, 6, 7, 3)), normal(1, (3, 2, 3, 4))
    conv = torch.nn.Conv2d(
        3, 4, (3, 2), padding=(1, 2), padding_mode=mode, bias=False, stride=(2, 1)
    ).double()
    conv.weight.data = torch.from_numpy(np.transpose(np.asarray(w, np.float64), (3, 2, 0, 1)))
    expected = conv(torch.from_numpy(_nchw(x))).detach().numpy()
    ours = ops.conv(x, w, stride=(2, 1), padding=(1, 2), padding_mode=mode)
    assert_close(_nchw(ours), expected)


@pytest.mark.parametrize(
    ("window", "stride", "padding", "dilation"),
    [(2, 2, 0, 1), (3, 2, 1, 1), (3, 2, 1, 2), (2, 3, 1, 1)],
)
def test_ceil_mode_and_unpool_match_pytorch(window, stride, padding, dilation):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    x = normal(0, (2, 9, 8, 3))
    tx = torch.from_numpy(_nchw(x))
    kw = dict(padding=padding, ceil_mode=True)
    expected, t_indices = functional.max_pool2d(
        tx, window, stride, dilation=dilation, return_indices=True, **kw
    )
    y, indices = ops.max_pool(
        x, window, stride, padding, dilation=dilation, return_indices=True, ceil_mode=True
    )
    assert_close(_nchw(y), expected.numpy())
    np.testing.assert_array_equal(_nchw(indices), t_indices.numpy())
    if dilation == 1:
        for include in (False, True):
            avg = functional.avg_pool2d(tx, window, stride, count_include_pad=include, **kw)
            ours = ops.avg_pool(
                x, window, stride, padding, ceil_mode=True, count_include_pad=include
            )
            assert_close(_nchw(ours), avg.numpy())
    if stride == window and padding == 0:
        unpooled = functional.max_unpool2d(expected, t_indices, window, stride, output_size=(9, 8))
        assert_close(_nchw(ops.max_unpool(y, indices, (9, 8))), unpooled.numpy())


def test_circular_and_count_include_pad_match_flax():
    nn = pytest.importorskip("flax.linen")
    x = normal(0, (2, 6, 5, 3))
    conv = nn.Conv(4, (3, 2), padding="CIRCULAR", use_bias=False)
    params = conv.init(jax.random.key(0), x)
    expected = conv.apply(params, x)
    assert_close(ops.conv(x, params["params"]["kernel"], padding="CIRCULAR"), expected)
    for padding in ("SAME", ((1, 1), (0, 1))):
        expected = nn.avg_pool(x, (3, 3), (2, 2), padding=padding, count_include_pad=True)
        assert_close(ops.avg_pool(x, 3, 2, padding, count_include_pad=True), expected)
