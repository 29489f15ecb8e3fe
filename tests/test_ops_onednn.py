"""oneDNN's CPU convolutions (``cnnjax/ops/_onednn.py``): which convs reach them, their
values against the NumPy references, their gradients against central differences of those
references, forward mode, second order and vmap against XLA's own convolution in float64,
and cnnjax's own lowering kept tested in float32 with the path turned off."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from test_ops_conv import CONV_CASES, _case_id, _conv_args, _conv_kwargs, assert_close

from cnnjax import ops
from cnnjax.ops import _lowering, _onednn

TARGET = "cnnjax_onednn_conv"

needs_onednn = pytest.mark.skipif(
    not _onednn.available(), reason="oneDNN convolutions not built here, or CNNJAX_ONEDNN=0"
)


def lowered(fn, *args) -> str:
    return jax.jit(fn).lower(*args).as_text()


@pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64"),
    reason="oneDNN's wheels are built for Linux on x86-64 only",
)
def test_built_and_loaded_where_onednn_has_wheels():
    # Elsewhere the install skips the extension; here a silent fallback to cnnjax's own
    # lowering would leave this path untested.
    assert _onednn._load()


def _resolved(case) -> tuple:
    """``case``'s stride, explicit padding pairs and dilation, one entry per spatial dim."""
    n = len(case["spatial"])
    per_dim = lambda v: tuple(v) if isinstance(v, tuple | list) else (v,) * n  # noqa: E731
    stride, dilation = per_dim(case["stride"]), per_dim(case["dilation"])
    extents = [(k - 1) * d + 1 for k, d in zip(case["kernel"], dilation, strict=True)]
    pads = ref.resolve_padding(case["padding"], case["spatial"], extents, stride)
    return stride, tuple(tuple(p) for p in pads), dilation


def _forced(case):
    """oneDNN's convolution of ``case``, whatever the lowering would choose."""
    stride, pads, dilation = _resolved(case)
    return lambda x, w: _lowering._conv_onednn(x, w, stride, pads, dilation, case["groups"])


@needs_onednn
@pytest.mark.parametrize("case", CONV_CASES, ids=_case_id)
def test_onednn_matches_the_reference(case):
    x, w, _ = _conv_args(case)
    assert TARGET in lowered(_forced(case), x, w)
    assert_close(_forced(case)(x, w), ref.conv(x, w, None, **_conv_kwargs(case)), tol=1e-5)


@pytest.mark.parametrize("case", CONV_CASES, ids=_case_id)
def test_float32_without_onednn_uses_the_own_lowering(case, monkeypatch):
    monkeypatch.setenv("CNNJAX_ONEDNN", "0")
    x, w, b = _conv_args(case)
    fn = lambda x, w: ops.conv(x, w, b, **_conv_kwargs(case))  # noqa: E731
    assert TARGET not in lowered(fn, x, w)
    assert_close(fn(x, w), ref.conv(x, w, b, **_conv_kwargs(case)), tol=1e-5)


@needs_onednn
@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs", "dtype", "expected"),
    [
        ((8, 28, 28, 32), (3, 3, 32, 32), dict(dilation=2), jnp.float32, True),
        ((8, 28, 28, 32), (3, 3, 1, 32), dict(groups=32), jnp.float32, True),  # depthwise
        ((8, 7, 7, 96), (3, 3, 48, 64), dict(groups=2), jnp.float32, True),
        ((8, 14, 14, 64), (1, 1, 64, 128), {}, jnp.float32, True),
        ((8, 28, 28, 1), (3, 3, 1, 32), {}, jnp.float32, False),  # a first layer
        ((8, 7, 7, 120), (1, 1, 120, 16), {}, jnp.float32, False),  # 1x1 to few outputs
        ((8, 5, 5, 16), (5, 5, 16, 120), dict(padding="VALID"), jnp.float32, False),  # 1x1 out
        ((8, 28, 28, 32), (3, 3, 32, 32), {}, jnp.bfloat16, False),
        ((8, 784, 16), (2, 16, 16), dict(dilation=4), jnp.float32, False),  # 1-D
        ((8, 2, 8, 8, 8), (3, 3, 3, 8, 16), {}, jnp.float32, True),  # 3-D
    ],
)
def test_which_convs_reach_onednn(x_shape, w_shape, kwargs, dtype, expected):
    x, w = jnp.ones(x_shape, dtype), jnp.ones(w_shape, dtype)
    assert (TARGET in lowered(lambda x, w: ops.conv(x, w, **kwargs), x, w)) == expected


@needs_onednn
def test_transposed_convs_keep_their_phase_split():
    y, w = jnp.ones((8, 14, 14, 64), jnp.float32), jnp.ones((3, 3, 32, 64), jnp.float32)
    assert TARGET not in lowered(lambda y, w: ops.conv_transpose(y, w, stride=2), y, w)


# Strides, dilations, groups (incl. depthwise), asymmetric and negative (cropping) padding.
GRAD_CASES = [
    dict(spatial=(7, 6), kernel=(3, 3), c_in=4, c_out=6, stride=(2, 1), padding=((1, 2), (0, 1)),
         dilation=(1, 2), groups=2),
    dict(spatial=(6, 6), kernel=(3, 3), c_in=3, c_out=3, stride=1, padding="SAME", dilation=2,
         groups=3),
    dict(spatial=(8,), kernel=(3,), c_in=2, c_out=3, stride=1, padding=[(-1, 2)], dilation=1,
         groups=1),
    dict(spatial=(4, 5, 4), kernel=(2, 3, 2), c_in=2, c_out=4, stride=(1, 2, 1),
         padding="VALID", dilation=1, groups=1),
    # 3-D weights gradients are taken one depth tap at a time: stride, dilation and
    # uneven padding along the depth.
    dict(spatial=(7, 5, 4), kernel=(2, 3, 2), c_in=4, c_out=4, stride=(2, 1, 2),
         padding=((1, 2), (1, 1), (0, 1)), dilation=(2, 1, 1), groups=2),
]  # fmt: skip


@needs_onednn
@pytest.mark.parametrize("case", GRAD_CASES, ids=_case_id)
def test_gradients_match_central_differences_of_the_reference(case):
    x, w, b = _conv_args(case, seed=1)
    kwargs = _conv_kwargs(case)
    rng = np.random.default_rng(0)
    ct = rng.standard_normal(ref.conv(x, w, None, **kwargs).shape)

    def loss64(x, w):  # the reference in float64: <conv(x, w), ct>
        return float(np.sum(ref.conv(x, w, None, **kwargs) * ct))

    conv = _forced(case)
    gx, gw = jax.grad(lambda x, w: jnp.sum(conv(x, w) * ct.astype(np.float32)), (0, 1))(x, w)
    for arg, grad in ((0, gx), (1, gw)):
        for _ in range(3):
            args = [np.asarray(x, np.float64), np.asarray(w, np.float64)]
            v = rng.standard_normal(args[arg].shape)
            eps = 1e-4
            plus, minus = list(args), list(args)
            plus[arg] = args[arg] + eps * v
            minus[arg] = args[arg] - eps * v
            expected = (loss64(*plus) - loss64(*minus)) / (2 * eps)
            actual = float(np.sum(np.asarray(grad, np.float64) * v))
            assert actual == pytest.approx(expected, rel=1e-4, abs=1e-3)


def _native(case):
    """XLA's own convolution (``lax.conv_general_dilated``) of ``case``."""
    stride, pads, dilation = _resolved(case)
    return lambda x, w: jax.lax.conv_general_dilated(
        x,
        w,
        stride,
        pads,
        rhs_dilation=dilation,
        dimension_numbers=_lowering.dimension_numbers(len(case["spatial"])),
        feature_group_count=case["groups"],
        precision="highest",
    )


SECOND_ORDER_CASES = [GRAD_CASES[1], GRAD_CASES[-1]]  # 2-D grouped, 3-D by depth taps


@pytest.fixture()
def x64():
    with jax.enable_x64(True):
        yield


def _loss(conv):
    return lambda x, w: jnp.sum(jnp.tanh(conv(x, w)) ** 2)


def _compare(actual, expected, tol=2e-4):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert_close(a, e, tol=tol)


@pytest.mark.parametrize(
    "transform",
    [
        "jvp",
        "hessian_w",
        "grad_x_then_jacrev_w",
        "grad_of_grad_norm",
        "vmap_x",
        "vmap_w",
        "per_example_grads",
    ],
)
@pytest.mark.parametrize("case", SECOND_ORDER_CASES, ids=_case_id)
@needs_onednn
def test_transformations_match_xla_convolution_in_float64(transform, case, x64):
    x, w, _ = _conv_args(case, seed=3)
    x, w = x.astype(jnp.float32), w.astype(jnp.float32) * 0.5
    mine, native = _forced(case), _native(case)
    assert TARGET in lowered(mine, x, w)
    x64_, w64 = x.astype(jnp.float64), w.astype(jnp.float64)

    def run(conv, x, w):
        loss = _loss(conv)
        if transform == "jvp":
            return jax.jvp(conv, (x, w), (w.sum() * x, x.mean() * w))
        if transform == "hessian_w":
            return jax.hessian(loss, 1)(x, w)
        if transform == "grad_x_then_jacrev_w":
            return jax.jacrev(jax.grad(loss, 0), 1)(x, w)
        if transform == "grad_of_grad_norm":
            return jax.grad(lambda w: jnp.sum(jax.grad(loss, 0)(x, w) ** 2))(w)
        if transform == "vmap_x":
            return jax.vmap(conv, (0, None))(jnp.stack([x, -2 * x]), w)
        if transform == "vmap_w":
            return jax.vmap(conv, (None, 0))(x, jnp.stack([w, -2 * w]))
        return jax.vmap(jax.grad(loss, 1), (0, None))(x[:, None], w)

    _compare(run(mine, x, w), run(native, x64_, w64))


@needs_onednn
def test_empty_output_is_empty():
    x = jnp.ones((2, 2, 2, 8), jnp.float32)
    w = jnp.ones((3, 3, 8, 4), jnp.float32)
    conv = lambda x, w: _onednn.conv(x, w, (1, 1), ((0, 0), (0, 0)), (1, 1), 1)  # noqa: E731
    assert conv(x, w).shape == (2, 0, 0, 4)
    assert jax.grad(lambda w: conv(x, w).sum())(w).shape == w.shape


@needs_onednn
def test_several_devices_keep_the_own_lowering():
    # XLA's SPMD partitioner would gather a custom call's whole batch onto every device.
    code = (
        "import jax, jax.numpy as jnp; from cnnjax import ops; "
        "x, w = jnp.ones((8, 28, 28, 32)), jnp.ones((3, 3, 32, 32)); "
        "print(jax.device_count(), 'cnnjax_onednn_conv' in "
        "jax.jit(lambda x, w: ops.conv(x, w, groups=2)).lower(x, w[..., :16, :]).as_text())"
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["2", "False"]


@needs_onednn
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_wide_conv_max_pool_is_onednn_then_a_tiled_max(padding):
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((2, 9, 8, 32)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 32, 5)) * 0.2, jnp.float32)
    fn = lambda x, w: ops.conv_max_pool(x, w, padding=padding, pool=2)  # noqa: E731
    assert TARGET in lowered(fn, x, w)

    def reference(x, w):
        return ref.max_pool(ref.conv(x, w, None, padding=padding), 2)

    assert_close(fn(x, w), reference(x, w), tol=1e-5)
    ct = rng.standard_normal(reference(x, w).shape)
    gw = jax.grad(lambda w: jnp.sum(fn(x, w) * ct.astype(np.float32)))(w)
    v, eps = rng.standard_normal(w.shape), 1e-4
    x64, w64 = np.asarray(x, np.float64), np.asarray(w, np.float64)
    expected = (
        np.sum(reference(x64, w64 + eps * v) * ct) - np.sum(reference(x64, w64 - eps * v) * ct)
    ) / (2 * eps)
    assert float(np.sum(np.asarray(gw, np.float64) * v)) == pytest.approx(expected, rel=1e-4)


def test_calling_onednn_without_the_library_says_so(monkeypatch):
    monkeypatch.setattr(_onednn, "_load", lambda: False)
    x, w = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2))
    with pytest.raises(RuntimeError, match="oneDNN extension is not built"):
        _onednn.conv(x, w, (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
