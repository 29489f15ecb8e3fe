"""Every op's reverse-mode gradient against float64 central differences (cnnjax.gradcheck).

Each case differentiates ``sum(op(*args) * ct)`` with a fixed random cotangent ``ct``, so
every output entry matters, with respect to every differentiable input the op takes.
Inputs are chosen away from the points where an op is not differentiable (see ``_array``):
max pooling gets distinct values, deformable conv gets offsets whose fractional parts lie
in [0.2, 0.8] so that no bilinear sample sits on an integer position.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import ops
from cnnjax.gradcheck import assert_grads_close


def _array(name: str, shape: tuple[int, ...], rng: np.random.Generator, distinct: bool):
    if name == "offsets":
        # Integer parts move samples across (and out of) the image; fractional parts keep
        # every sample away from the kinks of bilinear interpolation at integer positions.
        return rng.integers(-2, 2, shape) + rng.uniform(0.2, 0.8, shape)
    if name == "mask":
        return rng.uniform(0.2, 1.0, shape)
    if distinct:
        # No ties, and neighbours far apart compared with the finite-difference step.
        size = int(np.prod(shape))
        return rng.permutation(size).reshape(shape) / size * 2.0 - 1.0
    return rng.standard_normal(shape)


def _check(op, shapes: dict[str, tuple[int, ...] | None], distinct: bool = False, **kwargs):
    """Gradcheck ``op`` w.r.t. each array of ``shapes``, passed positionally in order.

    A shape of ``None`` passes ``None`` (e.g. no bias) in that position.
    """
    rng = np.random.default_rng(0)
    names = tuple(shapes)
    args = tuple(
        None if shape is None else _array(name, shape, rng, distinct)
        for name, shape in shapes.items()
    )
    with jax.enable_x64(True):
        out_shape = jax.eval_shape(lambda *a: op(*a, **kwargs), *args).shape
    ct = rng.standard_normal(out_shape)

    def loss(*a):
        return jnp.sum(op(*a, **kwargs) * ct)

    assert_grads_close(loss, *args, arg_names=names)


CONV_CASES = [
    pytest.param(dict(x=(2, 7, 3), w=(3, 3, 4), b=(4,)), dict(stride=2), id="1d-same-s2"),
    pytest.param(
        dict(x=(1, 8, 2), w=(3, 2, 3), b=(3,)),
        dict(padding=((2, 1),), dilation=2),
        id="1d-pairs-d2",
    ),
    pytest.param(
        dict(x=(2, 5, 6, 4), w=(3, 2, 2, 4), b=(4,)),
        dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2),
        id="2d-pairs-groups",
    ),
    pytest.param(
        dict(x=(1, 6, 5, 2), w=(2, 3, 2, 2)),
        dict(stride=3, padding="VALID"),
        id="2d-valid-s3-nobias",
    ),
    pytest.param(
        dict(x=(1, 5, 5, 3), w=(3, 3, 3, 2), b=(2,)), dict(padding=1, dilation=2), id="2d-int-d2"
    ),
    pytest.param(
        dict(x=(1, 4, 5, 3), w=(2, 2, 1, 6), b=(6,)),
        dict(padding=(0, 2), groups=3, stride=(1, 2)),
        id="2d-perdim-groups3",
    ),
    pytest.param(
        dict(x=(1, 4, 5, 3, 2), w=(2, 3, 2, 2, 3), b=(3,)),
        dict(stride=(1, 2, 1), padding=1),
        id="3d-int",
    ),
    pytest.param(
        dict(x=(1, 3, 4, 3, 2), w=(2, 2, 2, 2, 2)),
        dict(padding="SAME", dilation=2),
        id="3d-same-d2",
    ),
    # More than 8 taps: patches stacked one kernel dim per level.
    pytest.param(
        dict(x=(1, 5, 4, 5), w=(3, 3, 5, 2), b=(2,)), dict(padding="SAME"), id="2d-5-channels"
    ),
    # At least 4x more input than output channels, stride 1: lowered output-side on CPU.
    pytest.param(
        dict(x=(1, 5, 6, 8), w=(3, 2, 8, 2), b=(2,)),
        dict(padding="SAME", dilation=(2, 1)),
        id="2d-output-side",
    ),
    pytest.param(
        dict(x=(2, 7, 4), w=(3, 4, 1)), dict(padding=((2, 0),)), id="1d-output-side-nobias"
    ),
]


@pytest.mark.parametrize(("shapes", "kwargs"), CONV_CASES)
def test_conv(shapes, kwargs):
    _check(ops.conv, shapes, **kwargs)


def _forward_mode_agrees_with_central_differences(op, shapes, kwargs):
    # jvp against a central difference along one random direction of every argument.
    rng = np.random.default_rng(1)
    args = tuple(rng.standard_normal(shape) for shape in shapes.values())
    direction = tuple(rng.standard_normal(shape) for shape in shapes.values())
    with jax.enable_x64(True):
        f = functools.partial(op, **kwargs)
        _, tangent = jax.jvp(f, args, direction)
        eps = 1e-6
        plus = f(*(a + eps * d for a, d in zip(args, direction, strict=True)))
        minus = f(*(a - eps * d for a, d in zip(args, direction, strict=True)))
        np.testing.assert_allclose(tangent, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(("shapes", "kwargs"), CONV_CASES)
def test_conv_forward_mode(shapes, kwargs):
    _forward_mode_agrees_with_central_differences(ops.conv, shapes, kwargs)


@pytest.mark.parametrize(
    ("shapes", "kwargs"),
    [
        pytest.param(
            dict(x=(2, 8, 8, 1), w=(5, 5, 1, 3), b=(3,)), dict(padding="SAME"), id="2d-lenet-like"
        ),
        pytest.param(
            dict(x=(1, 7, 6, 2), w=(2, 3, 2, 3)),
            dict(padding=1, pool=(3, 2)),
            id="2d-remainder-nobias",
        ),
        pytest.param(
            dict(x=(2, 9, 2), w=(3, 2, 2), b=(2,)), dict(padding="VALID", pool=3), id="1d-pool3"
        ),
    ],
)
def test_conv_max_pool(shapes, kwargs):
    _check(ops.conv_max_pool, shapes, distinct=True, **kwargs)


@pytest.mark.parametrize(
    ("op", "shapes"),
    [
        pytest.param(ops.conv1d, dict(x=(2, 6, 2), w=(3, 2, 3), b=(3,)), id="conv1d"),
        pytest.param(ops.conv2d, dict(x=(1, 4, 5, 2), w=(3, 2, 2, 3), b=(3,)), id="conv2d"),
        pytest.param(ops.conv3d, dict(x=(1, 3, 3, 4, 2), w=(2, 2, 3, 2, 2), b=(2,)), id="conv3d"),
    ],
)
def test_conv_of_rank(op, shapes):
    _check(op, shapes, stride=2, padding="SAME")


@pytest.mark.parametrize(
    ("shapes", "kwargs"),
    [
        pytest.param(
            dict(x=(2, 5, 5, 3), w=(3, 3, 1, 6), b=(6,)), dict(stride=2), id="2d-mult2-s2"
        ),
        pytest.param(
            dict(x=(1, 9, 2), w=(3, 1, 2)), dict(dilation=2, padding="VALID"), id="1d-d2-valid"
        ),
    ],
)
def test_depthwise_conv(shapes, kwargs):
    _check(ops.depthwise_conv, shapes, **kwargs)


@pytest.mark.parametrize(
    ("shapes", "kwargs"),
    [
        pytest.param(
            dict(x=(1, 5, 5, 2), w_depthwise=(3, 3, 1, 4), w_pointwise=(1, 1, 4, 3), b=(3,)),
            dict(padding="SAME"),
            id="2d-same",
        ),
        pytest.param(
            dict(x=(2, 7, 3), w_depthwise=(3, 1, 3), w_pointwise=(1, 3, 2)),
            dict(stride=2, padding=1, dilation=2),
            id="1d-s2-d2",
        ),
    ],
)
def test_separable_conv(shapes, kwargs):
    _check(ops.separable_conv, shapes, **kwargs)


@pytest.mark.parametrize(
    ("shapes", "kwargs"),
    [
        pytest.param(
            dict(x=(1, 5, 6, 2), w_col=(3, 1, 2, 3), w_row=(1, 2, 3, 4), b=(4,)),
            dict(stride=2, padding="SAME"),
            id="same-s2",
        ),
        pytest.param(
            dict(x=(2, 4, 5, 2), w_col=(2, 1, 2, 2), w_row=(1, 3, 2, 3)),
            dict(padding="VALID"),
            id="valid-nobias",
        ),
    ],
)
def test_spatially_separable_conv2d(shapes, kwargs):
    _check(ops.spatially_separable_conv2d, shapes, **kwargs)


@pytest.mark.parametrize(
    ("shapes", "kwargs"),
    [
        pytest.param(
            dict(y=(2, 4, 3), w=(3, 2, 3), b=(2,)),
            dict(stride=2, padding=1, output_padding=1),
            id="1d-s2-outpad",
        ),
        pytest.param(
            dict(y=(1, 3, 4, 4), w=(3, 3, 2, 4), b=(4,)),
            dict(stride=(2, 3), padding="SAME", groups=2),
            id="2d-same-groups",
        ),
        pytest.param(
            dict(y=(1, 3, 3, 2), w=(2, 2, 3, 2), b=(3,)),
            dict(padding="VALID", dilation=2),
            id="2d-valid-d2",
        ),
        pytest.param(
            dict(y=(1, 2, 3, 2, 2), w=(2, 2, 2, 1, 2)),
            dict(stride=2, output_padding=(1, 0, 1)),
            id="3d-s2-outpad",
        ),
        # Its phases' convs map 8 channels to 1: lowered output-side on CPU.
        pytest.param(
            dict(y=(1, 3, 3, 8), w=(3, 3, 1, 8), b=(1,)),
            dict(stride=2, padding="SAME"),
            id="2d-s2-output-side",
        ),
    ],
)
def test_conv_transpose(shapes, kwargs):
    _check(ops.conv_transpose, shapes, **kwargs)
    _forward_mode_agrees_with_central_differences(ops.conv_transpose, shapes, kwargs)


@pytest.mark.parametrize(
    ("shapes", "kwargs"),
    [
        pytest.param(
            dict(x=(1, 5, 5, 2), offsets=(1, 5, 5, 18), w=(3, 3, 2, 3), b=(3,)),
            dict(padding=1),
            id="v1",
        ),
        # H_out = (6 + 2 - 3) // 2 + 1 = 3, W_out = (5 + 2 - 5) // 2 + 1 = 2.
        pytest.param(
            dict(x=(1, 6, 5, 4), offsets=(1, 3, 2, 36), w=(3, 3, 2, 4), b=(4,), mask=(1, 3, 2, 18)),
            dict(stride=2, padding=1, dilation=(1, 2), groups=2, offset_groups=2),
            id="v2-groups-offset-groups",
        ),
        pytest.param(
            dict(x=(2, 4, 4, 2), offsets=(2, 3, 3, 8), w=(2, 2, 2, 2), b=None, mask=(2, 3, 3, 4)),
            dict(),
            id="v2-nobias",
        ),
    ],
)
def test_deformable_conv2d(shapes, kwargs):
    _check(ops.deformable_conv2d, shapes, **kwargs)


POOL_CASES = [
    pytest.param((2, 4, 6, 3), dict(window=2), id="2d-w2"),
    pytest.param((1, 5, 5, 2), dict(window=3, stride=2, padding="SAME"), id="2d-w3-s2-same"),
    # Channel counts whose cotangents pass in blocks of 4 and 8 on CPU.
    pytest.param((1, 5, 5, 12), dict(window=3, stride=2, padding="SAME"), id="2d-w3-s2-12ch"),
    pytest.param((1, 4, 16), dict(window=3, stride=1, padding="SAME"), id="1d-w3-16ch"),
    pytest.param((1, 7, 2), dict(window=3, stride=1), id="1d-overlapping"),
    pytest.param(
        (1, 6, 5, 2), dict(window=(3, 2), stride=(2, 1), padding=((1, 1), (0, 1))), id="2d-pairs"
    ),
    pytest.param((1, 4, 4, 4, 1), dict(window=2, stride=(1, 2, 2)), id="3d"),
]


@pytest.mark.parametrize(("shape", "kwargs"), POOL_CASES)
def test_max_pool(shape, kwargs):
    _check(ops.max_pool, dict(x=shape), distinct=True, **kwargs)


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        *POOL_CASES,
        pytest.param(
            (2, 5, 6, 2), dict(window=(3, 2), stride=(2, 1), padding="SAME"), id="2d-same-uneven"
        ),
    ],
)
def test_avg_pool(shape, kwargs):
    _check(ops.avg_pool, dict(x=shape), **kwargs)


@pytest.mark.parametrize("shape", [(2, 5, 3), (2, 3, 4, 3), (1, 2, 3, 2, 2)])
@pytest.mark.parametrize("op", [ops.global_avg_pool, ops.global_max_pool])
def test_global_pools(op, shape):
    _check(op, dict(x=shape), distinct=True)


def test_harness_catches_a_wrong_op_gradient():
    # The same harness on a conv whose kernel gradient is off by 1 %: it must fail.
    @jax.custom_vjp
    def conv_bad_w(x, w):
        return ops.conv(x, w)

    def bwd(vjp, ct):
        dx, dw = vjp(ct)
        return dx, 1.01 * dw

    # The forward pass's residual is conv's own vjp function.
    conv_bad_w.defvjp(lambda x, w: jax.vjp(ops.conv, x, w), bwd)
    with pytest.raises(AssertionError, match=r"(?s)\nw .*FAIL.*: w$"):
        _check(conv_bad_w, dict(x=(1, 4, 4, 2), w=(2, 2, 2, 2)))
