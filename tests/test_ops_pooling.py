"""Pooling ops against the NumPy loop references of ``reference.py``, TensorFlow's SAME
averaging, transformations (jit, vmap), dtypes and argument errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from test_ops_conv import (
    assert_bfloat16_close_to_float32,
    assert_close,
    assert_float64_matches_reference,
    assert_jit_matches_eager,
    assert_vmap_matches_loop,
    normal,
    op_args,
)

from cnnjax import ops

# (spatial, window, stride, padding): 1-3 spatial dims, odd and even sizes, the default
# stride (= window), strides 1-3, every padding form.
POOL_CASES = [
    ((8,), 2, None, "VALID"),
    ((7,), 3, 2, "SAME"),
    ((9,), 4, 3, 1),
    ((6,), (3,), (1,), [(2, 0)]),
    ((6, 7), (2, 3), None, "SAME"),
    ((7, 7), 3, (2, 3), "VALID"),
    ((5, 6), (3, 2), 1, (1, 0)),
    ((6, 5), 3, 3, ((0, 2), (1, 1))),
    ((8, 8), 2, None, "VALID"),
    ((4, 5, 6), 2, None, "SAME"),
    ((5, 4, 5), (3, 2, 2), (2, 1, 3), ((1, 1), (0, 1), (1, 0))),
    ((4, 4, 4), 3, 1, 1),
]

POOLS = {"max_pool": (ops.max_pool, ref.max_pool), "avg_pool": (ops.avg_pool, ref.avg_pool)}


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize(("spatial", "window", "stride", "padding"), POOL_CASES)
def test_pool_matches_reference(pool, spatial, window, stride, padding):
    op, reference = POOLS[pool]
    x = normal(0, (2, *spatial, 3))
    assert_close(op(x, window, stride, padding), reference(x, window, stride, padding))


@pytest.mark.parametrize(("spatial", "window", "stride", "padding"), POOL_CASES)
def test_pool_output_shape_matches_conv_output_shape(spatial, window, stride, padding):
    n = len(spatial)
    window_t = (window,) * n if isinstance(window, int) else window
    expected = ops.conv_output_shape(
        spatial, window_t, stride=window if stride is None else stride, padding=padding
    )
    assert ops.max_pool(normal(0, (1, *spatial, 1)), window, stride, padding).shape[1:-1] == (
        expected
    )


def test_avg_pool_same_averages_only_real_elements():
    # TensorFlow: [1, 2, 3, 4, 5], window 2, stride 2, SAME pads one cell at the high end,
    # and the last window averages the single real element.
    x = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0]).reshape(1, 5, 1)
    out = ops.avg_pool(x, 2, 2, "SAME")
    np.testing.assert_allclose(out.reshape(-1), [1.5, 3.5, 5.0])
    # 2-D corner: a 3x3 window centred on the corner of arange(9) sees 4 real cells.
    grid = jnp.arange(9.0).reshape(1, 3, 3, 1)
    corner = ops.avg_pool(grid, 3, 1, "SAME")[0, 0, 0, 0]
    np.testing.assert_allclose(corner, (0 + 1 + 3 + 4) / 4)


def test_max_pool_padding_never_wins():
    # All-negative input: zero padding would leak 0 into the maxima.
    x = -1.0 - jnp.arange(10.0).reshape(1, 10, 1)
    out = ops.max_pool(x, 3, 1, "SAME")
    np.testing.assert_allclose(out.reshape(-1), [-1, -1, -2, -3, -4, -5, -6, -7, -8, -9])


def test_max_pool_default_stride_is_window():
    x = jnp.arange(8.0).reshape(1, 8, 1)
    np.testing.assert_array_equal(ops.max_pool(x, 2).reshape(-1), [1, 3, 5, 7])


@pytest.mark.parametrize("spatial", [(5,), (4, 3), (3, 2, 4)])
def test_global_pools(spatial):
    x = normal(0, (2, *spatial, 3))
    axes = tuple(range(1, len(spatial) + 1))
    assert ops.global_avg_pool(x).shape == (2, 3)
    assert_close(ops.global_avg_pool(x), np.asarray(x, np.float64).mean(axis=axes))
    np.testing.assert_array_equal(ops.global_max_pool(x), np.asarray(x).max(axis=axes))


# ----------------------------------------------------------------------------------------
# Every pooling op: jit, vmap, bfloat16 and float64.
# ----------------------------------------------------------------------------------------


def _global_reference(reduce, x):
    return reduce(np.asarray(x, np.float64), axis=tuple(range(1, np.ndim(x) - 1)))


POOL_OP_CASES = {
    "max_pool": (
        functools.partial(ops.max_pool, window=2, padding="SAME"),
        functools.partial(ref.max_pool, window=2, padding="SAME"),
        [(2, 5, 5, 3)],
    ),
    "avg_pool": (
        functools.partial(ops.avg_pool, window=3, stride=2, padding="SAME"),
        functools.partial(ref.avg_pool, window=3, stride=2, padding="SAME"),
        [(2, 5, 6, 3)],
    ),
    "global_avg_pool": (
        ops.global_avg_pool,
        functools.partial(_global_reference, np.mean),
        [(2, 4, 3, 5)],
    ),
    "global_max_pool": (
        ops.global_max_pool,
        functools.partial(_global_reference, np.max),
        [(2, 3, 4, 2, 5)],
    ),
}


@pytest.mark.parametrize("name", POOL_OP_CASES)
def test_pool_op_under_jit(name):
    op, _, shapes = POOL_OP_CASES[name]
    assert_jit_matches_eager(op, op_args(shapes))


@pytest.mark.parametrize("name", POOL_OP_CASES)
def test_pool_op_under_vmap(name):
    op, _, shapes = POOL_OP_CASES[name]
    assert_vmap_matches_loop(op, shapes)


@pytest.mark.parametrize("name", POOL_OP_CASES)
def test_pool_op_bfloat16(name):
    op, _, shapes = POOL_OP_CASES[name]
    assert_bfloat16_close_to_float32(op, shapes)


@pytest.mark.parametrize("name", POOL_OP_CASES)
def test_pool_op_float64(name):
    op, reference, shapes = POOL_OP_CASES[name]
    assert_float64_matches_reference(op, reference, shapes)


# ----------------------------------------------------------------------------------------
# Bad arguments.
# ----------------------------------------------------------------------------------------

_X = jnp.zeros((2, 5, 5, 3))

BAD_CALLS = {
    "x rank": (lambda: ops.max_pool(jnp.zeros((5, 3)), 2), r"`x` must have layout"),
    "x rank 4 spatial": (lambda: ops.avg_pool(jnp.zeros((1, 2, 2, 2, 2, 1)), 2), r"`x`"),
    "x integer": (lambda: ops.max_pool(jnp.zeros((1, 4, 4, 1), jnp.int32), 2), r"`x`"),
    "window length": (lambda: ops.avg_pool(_X, (2, 2, 2)), r"`window`"),
    "window zero": (lambda: ops.avg_pool(_X, 0), r"`window`"),
    "stride zero": (lambda: ops.max_pool(_X, 2, 0), r"`stride`"),
    "negative stride": (lambda: ops.avg_pool(_X, 2, -1), r"`stride`"),
    "padding string": (lambda: ops.max_pool(_X, 2, padding="FULL"), r"`padding`"),
    "padding fill": (lambda: ops.max_pool(_X, 2, padding="REFLECT"), r"identity"),
    "dilation zero": (lambda: ops.max_pool(_X, 2, dilation=0), r"`dilation`"),
    "ceil_mode": (lambda: ops.avg_pool(_X, 2, ceil_mode=1), r"`ceil_mode`"),
    "count_include_pad": (lambda: ops.avg_pool(_X, 2, count_include_pad=None), r"`count_"),
    "x list of ints": (lambda: ops.max_pool([[[1, 2]]], 1), r"`x` must have a floating"),
    "x not an array": (lambda: ops.avg_pool("abc", 1), r"`x` must be"),
    "unpool indices dtype": (
        lambda: ops.max_unpool(_X, _X, (10, 10)),
        r"`indices` must be an integer array",
    ),
    "unpool shape length": (
        lambda: ops.max_unpool(_X, _X.astype(jnp.int32), (10, 10, 2)),
        r"`output_shape`",
    ),
    "global empty": (lambda: ops.global_max_pool(jnp.zeros((2, 0, 3))), r"no zero-size"),
    "padding too large": (lambda: ops.avg_pool(_X, 2, padding=2), r"covers padding only"),
    "global x rank": (lambda: ops.global_avg_pool(jnp.zeros((2, 3))), r"`x`"),
}


@pytest.mark.parametrize("name", BAD_CALLS)
def test_bad_arguments_raise_value_error(name):
    call, match = BAD_CALLS[name]
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("channels", [3, 8, 12])
def test_overlapping_max_pool_forward_mode_agrees_with_reverse_mode(channels):
    """The overlapping max-pool's derivative is a custom JVP on CPU; ``jvp`` agrees with
    the gradient: <grad f(x), v> = jvp(f, x, v)."""
    rng = np.random.default_rng(0)
    x, v = (jnp.asarray(rng.standard_normal((2, 7, 7, channels)), jnp.float32) for _ in "xv")

    def f(x):
        return jnp.sum(jnp.sin(ops.max_pool(x, 3, 2, "SAME")))

    _, directional = jax.jvp(f, (x,), (v,))
    np.testing.assert_allclose(directional, jnp.vdot(jax.grad(f)(x), v), rtol=1e-5)
