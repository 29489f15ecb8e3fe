"""``conv_max_pool`` against the NumPy loops of ``reference.py`` (a convolution, then a
max-pool), both of its lowerings, transformations, dtypes and argument errors. Its
gradient is checked by finite differences in ``test_ops_grads.py``."""

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
    op_args,
)

from cnnjax import ops
from cnnjax.ops import _lowering
from cnnjax.ops._args import padding_pairs


def _reference(x, w, b=None, *, padding="SAME", pool=2):
    return ref.max_pool(ref.conv(x, w, b, padding=padding), pool)


# (x, w, b shapes, padding, pool): LeNet's two layers, 1-3 spatial dims, odd conv outputs
# (a dropped remainder), kernels 1-5 (odd and even), pools 1-3 and per dim, every padding
# form, no bias.
CASES = [
    pytest.param([(2, 28, 28, 1), (5, 5, 1, 6), (6,)], "SAME", 2, id="lenet-conv1"),
    pytest.param([(2, 14, 14, 6), (5, 5, 6, 16), (16,)], "VALID", 2, id="lenet-conv2"),
    pytest.param([(2, 9, 3), (4, 3, 5), (5,)], "SAME", 3, id="1d-k4-pool3-remainder"),
    pytest.param([(1, 7, 8), (2, 8, 4)], 1, 2, id="1d-k2-int-pad-nobias"),
    pytest.param([(2, 7, 9, 3), (3, 2, 3, 4), (4,)], ((2, 0), (1, 3)), (2, 3), id="2d-pairs"),
    pytest.param([(1, 6, 5, 2), (1, 1, 2, 3), (3,)], "VALID", (1, 2), id="2d-1x1-pool1x2"),
    pytest.param([(2, 5, 6, 7, 2), (3, 2, 3, 2, 3), (3,)], "SAME", 2, id="3d-same"),
]


@pytest.mark.parametrize(("shapes", "padding", "pool"), CASES)
def test_conv_max_pool_matches_conv_then_pool_reference(shapes, padding, pool):
    args = op_args(shapes)
    out = ops.conv_max_pool(*args, padding=padding, pool=pool)
    assert_close(out, _reference(*map(np.asarray, args), padding=padding, pool=pool))


@pytest.mark.parametrize(("shapes", "padding", "pool"), CASES)
def test_both_lowerings_agree(shapes, padding, pool):
    """The CPU lowering (space-to-depth) and the GPU/TPU one (XLA's conv, reduce_window),
    called directly: the op itself picks the first here."""
    x, w = op_args(shapes[:2])
    n = w.ndim - 2
    pads = padding_pairs(padding, x.shape[1:-1], w.shape[:n], (1,) * n, (1,) * n)
    pool = (pool,) * n if isinstance(pool, int) else pool
    s2d = _lowering._conv_max_pool_s2d(x, w, pads, pool, None)
    native = _lowering._conv_max_pool_native(x, w, pads, pool, None)
    assert s2d.shape == native.shape
    assert_close(s2d, native)


def test_relu_after_the_op_is_lenets_conv_relu_pool():
    x, w, b = op_args([(2, 12, 12, 3), (5, 5, 3, 4), (4,)])
    fused = jnp.maximum(ops.conv_max_pool(x, w, b, padding="SAME"), 0)
    assert_close(fused, ops.max_pool(jnp.maximum(ops.conv(x, w, b, padding="SAME"), 0), 2))


SETTING = (functools.partial(ops.conv_max_pool, padding=1, pool=2),
           functools.partial(_reference, padding=1, pool=2),
           [(2, 7, 6, 3), (3, 3, 3, 4), (4,)])  # fmt: skip


def test_under_jit():
    op, _, shapes = SETTING
    assert_jit_matches_eager(op, op_args(shapes))


def test_under_vmap():
    op, _, shapes = SETTING
    assert_vmap_matches_loop(op, shapes)


def test_bfloat16():
    op, _, shapes = SETTING
    assert_bfloat16_close_to_float32(op, shapes)


def test_float64():
    assert_float64_matches_reference(*SETTING)


_X = jnp.zeros((1, 8, 8, 3))
_W = jnp.zeros((3, 3, 3, 4))
BAD_CALLS = {
    "x rank": (lambda: ops.conv_max_pool(jnp.zeros((8, 8, 3)), _W), r"`x`"),
    "channels": (lambda: ops.conv_max_pool(_X, jnp.zeros((3, 3, 2, 4))), r"`x` has 3 channels"),
    "bias shape": (lambda: ops.conv_max_pool(_X, _W, jnp.zeros(3)), r"`b` must have shape"),
    "dtypes": (lambda: ops.conv_max_pool(_X, _W.astype(jnp.bfloat16)), r"floating dtype"),
    "pool zero": (lambda: ops.conv_max_pool(_X, _W, pool=0), r"`pool`"),
    "pool length": (lambda: ops.conv_max_pool(_X, _W, pool=(2, 2, 2)), r"`pool`"),
    "padding entries": (lambda: ops.conv_max_pool(_X, _W, padding=((1, 2, 3), (0, 0))),
                        r"`padding` must be .* \(low, high\) pair"),
    "zero-size kernel": (lambda: ops.conv_max_pool(_X, jnp.zeros((0, 3, 3, 4))),
                         r"`w` must have no zero-size dims"),
}  # fmt: skip


@pytest.mark.parametrize("name", BAD_CALLS)
def test_bad_arguments_raise_value_error(name):
    call, match = BAD_CALLS[name]
    with pytest.raises(ValueError, match=match):
        call()


def test_forward_mode_agrees_with_reverse_mode():
    """The max's derivative is a custom JVP (not a custom VJP), so ``jvp`` works and
    matches the gradient: <grad f(w), v> = jvp(f, w, v)."""
    x, w, v = op_args([(2, 8, 8, 2), (3, 3, 2, 3), (3, 3, 2, 3)])

    def f(w):
        return jnp.sum(ops.conv_max_pool(x, w, padding="SAME") ** 2)

    _, directional = jax.jvp(f, (w,), (v,))
    np.testing.assert_allclose(directional, jnp.vdot(jax.grad(f)(w), v), rtol=1e-4)
