"""cnnjax.layers: each layer is its op applied to the layer's own parameters.

The ops are tested against NumPy references in the op tests; here we check what the layers
add: parameter names, shapes and counts (by hand), how fields reach the op, initial state
(DeformableConv starts as a plain Conv), jit, dtypes and argument validation.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import layers, ops

# rbg compiles several times faster than threefry on CPU; the values do not matter here.
KEY = jax.random.key(0, impl="rbg")
# Nonzero biases, so that a layer which forgot to pass its bias would be caught.
NORMAL = nn.initializers.normal(1.0)


def _x(*shape: int, seed: int = 1) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _init(module: nn.Module, x: jax.Array) -> dict:
    # One compilation is cheaper than dispatching every initialiser eagerly (and shows that
    # init works under jit).
    return jax.jit(module.init)(KEY, x)["params"]


def _param_shapes(module: nn.Module, x: jax.Array) -> dict:
    """Parameter shapes without computing (or compiling) any initialiser."""
    return jax.tree.map(lambda p: p.shape, jax.eval_shape(module.init, KEY, x)["params"])


def _shapes(params: dict) -> dict:
    return jax.tree.map(jnp.shape, params)


def _output_shape(module: nn.Module, x: jax.Array) -> tuple[int, ...]:
    return jax.eval_shape(module.init_with_output, KEY, x)[0].shape


def _count(shapes: dict) -> int:
    """Number of parameters in a tree of shapes."""
    leaves = jax.tree.leaves(shapes, is_leaf=lambda s: isinstance(s, tuple))
    return sum(math.prod(s) for s in leaves)


def _close(a: jax.Array, b: jax.Array, tol: float = 1e-5) -> None:
    assert a.shape == b.shape
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------------
# Conv
# ---------------------------------------------------------------------------------------

CONV_CASES = [
    # (x shape, kernel_size, stride, padding, dilation, groups)
    ((2, 9, 3), (3,), 1, "SAME", 1, 1),
    ((2, 10, 4), 4, 2, "VALID", 2, 2),
    ((2, 7, 8, 4), (3, 3), 1, "SAME", 1, 1),
    ((1, 8, 9, 6), (3, 2), (2, 1), 1, (1, 2), 3),
    ((2, 9, 8, 2), 5, 3, ((2, 1), (0, 3)), 1, 1),
    ((1, 5, 6, 4, 2), (2, 3, 2), 1, "SAME", 1, 2),
]


@pytest.mark.parametrize(
    ("shape", "kernel_size", "stride", "padding", "dilation", "groups"), CONV_CASES
)
def test_conv_is_op_on_own_params(shape, kernel_size, stride, padding, dilation, groups):
    x = _x(*shape)
    features = 6
    layer = layers.Conv(features, kernel_size, stride, padding, dilation, groups, bias_init=NORMAL)
    params = _init(layer, x)
    k = (kernel_size,) * (x.ndim - 2) if isinstance(kernel_size, int) else kernel_size
    assert _shapes(params) == {"kernel": (*k, shape[-1] // groups, features), "bias": (features,)}
    expected = ops.conv(
        x,
        params["kernel"],
        params["bias"],
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
    )
    _close(layer.apply({"params": params}, x), expected)


def test_conv_int_kernel_size_takes_rank_from_input():
    for shape, kernel in [
        ((1, 8, 3), (3, 3, 4)),
        ((1, 8, 8, 3), (3, 3, 3, 4)),
        ((1, 5, 5, 5, 3), (3, 3, 3, 3, 4)),
    ]:
        assert _param_shapes(layers.Conv(4, 3), _x(*shape))["kernel"] == kernel


def test_conv_without_bias():
    x = _x(2, 6, 6, 3)
    layer = layers.Conv(4, 3, use_bias=False)
    params = _init(layer, x)
    assert set(params) == {"kernel"}
    _close(layer.apply({"params": params}, x), ops.conv(x, params["kernel"]))


@pytest.mark.parametrize(
    ("shape", "padding", "pool"), [((2, 9, 9, 3), "SAME", 2), ((1, 10, 4), "VALID", 3)]
)
def test_conv_max_pool_is_op_on_own_params_and_equals_conv_then_max_pool(shape, padding, pool):
    x = _x(*shape)
    layer = layers.ConvMaxPool(4, 3, padding=padding, pool=pool, bias_init=NORMAL)
    params = _init(layer, x)
    assert _shapes(params) == {"kernel": (*(3,) * (len(shape) - 2), shape[-1], 4), "bias": (4,)}
    out = layer.apply({"params": params}, x)
    _close(out, ops.conv_max_pool(x, params["kernel"], params["bias"], padding=padding,
                                  pool=pool))  # fmt: skip
    # The same parameters in a Conv, then a MaxPool: the same output.
    conv = layers.Conv(4, 3, padding=padding).apply({"params": params}, x)
    _close(out, layers.MaxPool(pool).apply({}, conv))


def test_keras_mnist_cnn_param_counts():
    # A conv layer with n input and m output channels and a 3x3 kernel has n*m*9 + m
    # parameters: the Keras MNIST CNN's 1->32, 32->64, 64->64 layers.
    for c_in, c_out, expected in [(1, 32, 320), (32, 64, 18_496), (64, 64, 36_928)]:
        assert _count(_param_shapes(layers.Conv(c_out, 3), _x(1, 8, 8, c_in))) == expected


# ---------------------------------------------------------------------------------------
# Depthwise, separable and spatially separable
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "stride", "padding", "dilation"),
    [((2, 8, 8, 4), 1, "SAME", 1), ((1, 9, 7, 4), 2, 1, (2, 1)), ((2, 10, 4), 1, "VALID", 2)],
)
def test_depthwise_conv_is_op_on_own_params(shape, stride, padding, dilation):
    x = _x(*shape)
    layer = layers.DepthwiseConv(
        3, multiplier=2, stride=stride, padding=padding, dilation=dilation, bias_init=NORMAL
    )
    params = _init(layer, x)
    c = shape[-1]
    assert _shapes(params) == {"kernel": (*(3,) * (x.ndim - 2), 1, 2 * c), "bias": (2 * c,)}
    expected = ops.depthwise_conv(
        x, params["kernel"], params["bias"], stride=stride, padding=padding, dilation=dilation
    )
    _close(layer.apply({"params": params}, x), expected)


def test_separable_conv_is_op_on_own_params():
    x = _x(2, 9, 8, 4)
    layer = layers.SeparableConv(
        5, (3, 3), multiplier=2, stride=2, padding="SAME", bias_init=NORMAL
    )
    params = _init(layer, x)
    assert _shapes(params) == {
        "depthwise_kernel": (3, 3, 1, 8),
        "pointwise_kernel": (1, 1, 8, 5),
        "bias": (5,),
    }
    expected = ops.separable_conv(
        x,
        params["depthwise_kernel"],
        params["pointwise_kernel"],
        params["bias"],
        stride=2,
        padding="SAME",
        dilation=1,
    )
    _close(layer.apply({"params": params}, x), expected)


def test_spatially_separable_conv_is_op_on_own_params():
    x = _x(2, 9, 8, 4)
    layer = layers.SpatiallySeparableConv(
        5, (3, 5), mid_features=2, stride=(1, 2), padding="VALID", bias_init=NORMAL
    )
    params = _init(layer, x)
    assert _shapes(params) == {"col_kernel": (3, 1, 4, 2), "row_kernel": (1, 5, 2, 5), "bias": (5,)}
    expected = ops.spatially_separable_conv2d(
        x,
        params["col_kernel"],
        params["row_kernel"],
        params["bias"],
        stride=(1, 2),
        padding="VALID",
    )
    _close(layer.apply({"params": params}, x), expected)


def test_spatially_separable_mid_features_defaults_to_features():
    shapes = _param_shapes(layers.SpatiallySeparableConv(6, 3), _x(1, 5, 5, 2))
    assert shapes["col_kernel"] == (3, 1, 2, 6)


def test_separable_family_param_counts():
    x = _x(1, 6, 6, 4)
    # depthwise 3x3, multiplier 2 on 4 channels: 9*8 weights + 8 biases
    assert _count(_param_shapes(layers.DepthwiseConv(3, multiplier=2), x)) == 80
    # + pointwise 8 -> 5: 72 + 8*5 + 5
    assert _count(_param_shapes(layers.SeparableConv(5, 3, multiplier=2), x)) == 117
    # 3x1 from 4 to 2, 1x3 from 2 to 5, 5 biases: 24 + 30 + 5
    assert _count(_param_shapes(layers.SpatiallySeparableConv(5, 3, mid_features=2), x)) == 59


# ---------------------------------------------------------------------------------------
# ConvTranspose
# ---------------------------------------------------------------------------------------


def test_conv_transpose_is_op_on_own_params():
    x = _x(2, 5, 4, 4)
    layer = layers.ConvTranspose(
        6, (3, 2), stride=2, padding=1, groups=2, output_padding=1, bias_init=NORMAL
    )
    params = _init(layer, x)
    # The layout of the forward conv being transposed (6 -> 4 channels, 2 groups).
    assert _shapes(params) == {"kernel": (3, 2, 3, 4), "bias": (6,)}
    expected = ops.conv_transpose(
        x,
        params["kernel"],
        params["bias"],
        stride=2,
        padding=1,
        dilation=1,
        groups=2,
        output_padding=1,
    )
    _close(layer.apply({"params": params}, x), expected)
    assert _count(_shapes(params)) == 3 * 2 * 3 * 4 + 6


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation", "output_padding", "size"),
    [
        (3, 1, 0, 1, 0, 7),  # (5-1)*1 + 2 + 1
        (3, 2, 0, 1, 0, 11),  # (5-1)*2 + 2 + 1
        (3, 2, 1, 1, 1, 10),  # (5-1)*2 - 2 + 2 + 1 + 1
        (4, 2, 1, 1, 0, 10),  # the DCGAN up-sampler: doubles the size
        (3, 3, 2, 2, 0, 13),  # (5-1)*3 - 4 + 2*2 + 1
        (3, 2, "SAME", 1, 0, 10),  # in * stride
        (3, 2, "VALID", 1, 0, 11),  # (in-1)*stride + k
    ],
)
def test_conv_transpose_output_size(kernel, stride, padding, dilation, output_padding, size):
    layer = layers.ConvTranspose(
        3, kernel, stride=stride, padding=padding, dilation=dilation, output_padding=output_padding
    )
    assert _output_shape(layer, _x(2, 5, 5, 2)) == (2, size, size, 3)


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_transpose_layer_is_adjoint_of_conv_layer(groups):
    # Conv from A=4 to B=6 channels and ConvTranspose from B to A share one kernel shape,
    # and with that kernel <Conv(x), y> = <x, ConvTranspose(y)>.
    conv = layers.Conv(6, 3, stride=2, padding=1, groups=groups, use_bias=False)
    convt = layers.ConvTranspose(4, 3, stride=2, padding=1, groups=groups, use_bias=False)
    x, y = _x(2, 7, 7, 4, seed=1), _x(2, 4, 4, 6, seed=2)
    kernel = _init(conv, x)["kernel"]
    assert _param_shapes(convt, y)["kernel"] == kernel.shape
    lhs = jnp.vdot(conv.apply({"params": {"kernel": kernel}}, x), y)
    rhs = jnp.vdot(x, convt.apply({"params": {"kernel": kernel}}, y))
    np.testing.assert_allclose(float(lhs), float(rhs), rtol=1e-4)


# ---------------------------------------------------------------------------------------
# DeformableConv
# ---------------------------------------------------------------------------------------

DEFORM_CASES = [
    # (stride, padding, dilation, groups, offset_groups, use_mask)
    (1, "SAME", 1, 1, 1, True),
    (2, 1, 1, 2, 2, True),
    (1, "VALID", 2, 1, 2, False),
]


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups", "offset_groups", "use_mask"), DEFORM_CASES
)
def test_deformable_conv_at_init_equals_conv(
    stride, padding, dilation, groups, offset_groups, use_mask
):
    x = _x(2, 9, 8, 4)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    layer = layers.DeformableConv(
        6, 3, offset_groups=offset_groups, use_mask=use_mask, bias_init=NORMAL, **kwargs
    )
    params = _init(layer, x)
    plain = layers.Conv(6, 3, **kwargs)
    conv_params = {"kernel": params["kernel"], "bias": params["bias"]}
    _close(layer.apply({"params": params}, x), plain.apply({"params": conv_params}, x), tol=1e-4)


def test_deformable_conv_params_by_hand():
    x = _x(1, 6, 6, 4)
    # kernel 3*3*4*6 + 6 biases; offset conv 3x3 from 4 channels to
    # 2 offset groups * 9 taps * (2 offsets + 1 mask logit) = 54 channels, + 54 biases.
    shapes = _param_shapes(layers.DeformableConv(6, 3, offset_groups=2), x)
    assert shapes == {
        "kernel": (3, 3, 4, 6),
        "bias": (6,),
        "offset_conv": {"kernel": (3, 3, 4, 54), "bias": (54,)},
    }
    assert _count(shapes) == 216 + 6 + 9 * 4 * 54 + 54
    no_mask = _param_shapes(layers.DeformableConv(6, 3, offset_groups=2, use_mask=False), x)
    assert no_mask["offset_conv"]["kernel"] == (3, 3, 4, 36)


def _perturbed_offset_conv(params: dict) -> dict:
    offset_conv = {
        name: 0.3 * _x(*value.shape, seed=7 + i)
        for i, (name, value) in enumerate(sorted(params["offset_conv"].items()))
    }
    return {**params, "offset_conv": offset_conv}


@pytest.mark.parametrize("use_mask", [True, False])
def test_deformable_conv_is_op_on_own_params(use_mask):
    # With a trained (nonzero) offset predictor: offsets = the first 2*og*9 channels of the
    # offset conv, mask = 2 * sigmoid(the remaining og*9), fed to the op.
    x = _x(2, 8, 7, 4)
    layer = layers.DeformableConv(
        6, 3, stride=2, padding=1, offset_groups=2, use_mask=use_mask, bias_init=NORMAL
    )
    params = _perturbed_offset_conv(_init(layer, x))
    predicted = ops.conv(
        x, params["offset_conv"]["kernel"], params["offset_conv"]["bias"], stride=2, padding=1
    )
    offsets = predicted[..., :36]
    mask = 2 * jax.nn.sigmoid(predicted[..., 36:]) if use_mask else None
    expected = ops.deformable_conv2d(
        x, offsets, params["kernel"], params["bias"], mask, stride=2, padding=1, offset_groups=2
    )
    y = layer.apply({"params": params}, x)
    _close(y, expected, tol=1e-4)
    plain = ops.conv(x, params["kernel"], params["bias"], stride=2, padding=1)
    assert not np.allclose(y, plain, atol=1e-3)


def test_deformable_conv_offset_predictor_gets_gradients_at_init():
    # Zero-initialised offsets must still be learnable.
    x = _x(2, 6, 6, 3)
    layer = layers.DeformableConv(4, 3)
    params = _init(layer, x)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(layer.apply({"params": p}, x) ** 2)))(params)
    offset_kernel_grad = np.asarray(grads["offset_conv"]["kernel"])
    assert np.abs(offset_kernel_grad[..., :18]).max() > 0  # offsets
    assert np.abs(offset_kernel_grad[..., 18:]).max() > 0  # mask logits


# ---------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------


def test_pooling_layers_are_ops():
    x = _x(2, 7, 6, 3)
    cases = [
        (layers.MaxPool(2), ops.max_pool(x, 2)),
        (
            layers.MaxPool((3, 2), stride=1, padding="SAME"),
            ops.max_pool(x, (3, 2), stride=1, padding="SAME"),
        ),
        (layers.AvgPool(3, stride=2, padding="SAME"), ops.avg_pool(x, 3, stride=2, padding="SAME")),
        (layers.GlobalAvgPool(), ops.global_avg_pool(x)),
        (layers.GlobalMaxPool(), ops.global_max_pool(x)),
    ]
    for layer, expected in cases:
        assert not jax.tree.leaves(jax.eval_shape(layer.init, KEY, x))
        _close(layer.apply({}, x), expected)


def test_pooling_output_shapes():
    x = _x(2, 28, 28, 6)
    assert layers.MaxPool(2).apply({}, x).shape == (2, 14, 14, 6)
    assert layers.AvgPool(3, stride=1, padding="SAME").apply({}, x).shape == (2, 28, 28, 6)
    assert layers.GlobalAvgPool().apply({}, x).shape == (2, 6)


# ---------------------------------------------------------------------------------------
# Inception
# ---------------------------------------------------------------------------------------


def test_inception_channels_spatial_and_params():
    x = _x(2, 7, 6, 8)
    block = layers.Inception(c1=4, c3_reduce=3, c3=5, c5_reduce=2, c5=3, pool_proj=2)
    assert _output_shape(block, x) == (2, 7, 6, 4 + 5 + 3 + 2)
    shapes = _param_shapes(block, x)
    # 1x1 8->4 | 1x1 8->3, 3x3 3->5 | 1x1 8->2, 5x5 2->3 | pool, 1x1 8->2 (weights + biases)
    assert _count(shapes) == 36 + (27 + 140) + (18 + 153) + 18
    assert shapes["b5_5x5"]["kernel"] == (5, 5, 2, 3)


def test_inception_branch_order_and_contents():
    x = _x(2, 6, 6, 8)
    block = layers.Inception(c1=4, c3_reduce=3, c3=5, c5_reduce=2, c5=3, pool_proj=2)
    params = _init(block, x)
    y = block.apply({"params": params}, x)

    def conv_relu(h, p):
        return jax.nn.relu(ops.conv(h, p["kernel"], p["bias"]))

    _close(y[..., :4], conv_relu(x, params["b1_1x1"]))
    _close(y[..., 4:9], conv_relu(conv_relu(x, params["b3_reduce"]), params["b3_3x3"]))
    _close(y[..., 9:12], conv_relu(conv_relu(x, params["b5_reduce"]), params["b5_5x5"]))
    pooled = ops.max_pool(x, 3, stride=1, padding="SAME")
    _close(y[..., 12:], conv_relu(pooled, params["pool_proj_1x1"]))


def test_inception_works_in_1d():
    x = _x(2, 10, 3)
    block = layers.Inception(2, 2, 2, 2, 2, 2)
    assert _output_shape(block, x) == (2, 10, 8)


# ---------------------------------------------------------------------------------------
# jit
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [
        layers.Conv(4, 3, stride=2),
        layers.ConvMaxPool(4, 3),
        layers.DepthwiseConv(3),
        layers.SeparableConv(4, 3),
        layers.SpatiallySeparableConv(4, (3, 3)),
        layers.ConvTranspose(4, 3, stride=2),
        layers.DeformableConv(4, 3),
        layers.MaxPool(2),
        layers.Inception(2, 2, 2, 2, 2, 2),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_layers_work_under_jit(layer):
    x = _x(2, 6, 6, 4)
    variables = jax.jit(layer.init)(KEY, x)
    _close(jax.jit(layer.apply)(variables, x), layer.apply(variables, x), tol=1e-5)


@pytest.mark.parametrize(
    "layer",
    [
        layers.Conv(4, 3),
        layers.ConvMaxPool(4, 3),
        layers.DepthwiseConv(3),
        layers.SeparableConv(4, 3),
        layers.SpatiallySeparableConv(4, 3),
        layers.ConvTranspose(4, 3, stride=2),
        layers.DeformableConv(4, 3),
        layers.Inception(2, 2, 2, 2, 2, 2),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_bfloat16_compute_keeps_float32_params(layer):
    x = _x(2, 6, 6, 3)
    params = _init(layer.clone(dtype=jnp.bfloat16), x)
    assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    y = jax.jit(layer.clone(dtype=jnp.bfloat16).apply)({"params": params}, x)
    assert y.dtype == jnp.bfloat16
    _close(y.astype(jnp.float32), layer.apply({"params": params}, x), tol=5e-2)


# ---------------------------------------------------------------------------------------
# Bad arguments
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: layers.Conv(0, 3), "features"),
        (lambda: layers.Conv(4, 0), "kernel_size"),
        (lambda: layers.Conv(4, (3, 3, 3, 3)), "kernel_size"),
        (lambda: layers.Conv(4, 3, groups=3), "groups"),
        (lambda: layers.ConvMaxPool(0, 3), "features"),
        (lambda: layers.DepthwiseConv(3, multiplier=0), "multiplier"),
        (lambda: layers.SeparableConv(4, 3, multiplier=-1), "multiplier"),
        (lambda: layers.SpatiallySeparableConv(4, (3, 3, 3)), "kernel_size"),
        (lambda: layers.SpatiallySeparableConv(4, 3, mid_features=0), "mid_features"),
        (lambda: layers.ConvTranspose(5, 3, groups=2), "groups"),
        (lambda: layers.DeformableConv(4, (3, 3, 3)), "kernel_size"),
        (lambda: layers.DeformableConv(4, 3, offset_groups=0), "offset_groups"),
        (lambda: layers.Inception(4, 3, 5, 2, 0, 2), "c5"),
    ],
)
def test_bad_constructor_arguments_raise(make, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        make()


@pytest.mark.parametrize(
    ("layer", "shape", "name"),
    [
        (layers.Conv(4, (3, 3)), (2, 8, 3), "`x`"),  # 1-D input, 2-D kernel
        (layers.Conv(4, 3), (8, 3), "`x`"),  # no batch/spatial dims
        (layers.Conv(4, 3, groups=2), (1, 8, 8, 3), "`groups`"),  # 3 channels, 2 groups
        (layers.ConvTranspose(4, 3, groups=2), (1, 8, 8, 3), "`groups`"),
        (layers.DeformableConv(4, 3), (1, 8, 3), "`x`"),  # 2-D only
        (layers.DeformableConv(4, 3, offset_groups=2), (1, 8, 8, 3), "`offset_groups`"),
        (layers.Conv(4, 3, stride=0), (1, 8, 8, 3), "stride"),  # validated by the op
        (layers.ConvMaxPool(4, 3, pool=0), (1, 8, 8, 3), "`pool`"),
    ],
)
def test_bad_input_shapes_raise(layer, shape, name):
    with pytest.raises(ValueError, match=name):
        jax.eval_shape(layer.init, KEY, jnp.zeros(shape))
