"""The ablation options of the zoo models: ``lenet5``'s ``pool`` and ``padding``,
``inception_small``'s ``block``, ``nin``'s ``head`` and ``slot_cnn``'s ``conv``.

Parameter counts are written by hand from each layer's definition (the rules are in
``tests/zoo_helpers.py``); every default must leave its model exactly as it was.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from zoo_helpers import KEY, by_model, conv, count, dense, trace

from cnnjax import models

MNIST = (2, 28, 28, 1)


def _lenet5(flatten: int, extra: dict[str, int] | None = None) -> dict[str, int]:
    return {
        "conv1": conv(5, 1, 6),
        "conv2": conv(5, 6, 16),
        **(extra or {}),
        "dense1": dense(flatten, 120),
        "dense2": dense(120, 84),
        "logits": dense(84, 10),
    }


def _nin(head: str) -> dict[str, int]:
    last = {"gap": conv(1, 64, 10), "dense": conv(1, 64, 64)}[head]
    counts = {
        "mlpconv1": conv(5, 1, 32) + conv(1, 32, 32) + conv(1, 32, 32),
        "mlpconv2": conv(5, 32, 64) + conv(1, 64, 64) + conv(1, 64, 64),
        "mlpconv3": conv(3, 64, 64) + conv(1, 64, 64) + last,
    }
    if head == "dense":
        counts["logits"] = dense(7 * 7 * 64, 10)  # two stride-2 SAME pools: 28 -> 7
    return counts


def _slot(kind: str) -> dict[str, int]:
    def slot(c_in: int, c_out: int) -> int:
        if kind == "depthwise_separable":  # 3x3 depthwise (no bias), 1x1, one bias
            return 9 * c_in + c_in * c_out + c_out
        if kind == "spatially_separable":  # 3x1 to c_out (no bias), 1x3, one bias
            return 3 * c_in * c_out + 3 * c_out * c_out + c_out
        if kind == "deformable":  # plus a 3x3 offset conv to 9 taps x (dy, dx, mask)
            return conv(3, c_in, c_out) + conv(3, c_in, 27)
        return conv(3, c_in, c_out)  # standard and dilated

    return {
        "conv1": conv(3, 1, 16),
        "conv2": conv(3, 16, 32),
        "conv3": slot(32, 16),
        "conv4": slot(16, 16),
        "logits": dense(16, 10),
    }


# (registry name, kwargs, hand counts per layer, expected total)
OPTIONS = [
    ("lenet5", {"pool": "avg"}, _lenet5(5 * 5 * 16), 61_706),
    # a 2x2 stride-2 conv as wide as its stage after each conv
    ("lenet5", {"pool": "strided_conv"},
     _lenet5(5 * 5 * 16, {"down1": conv(2, 6, 6), "down2": conv(2, 16, 16)}), 62_896),
    ("lenet5", {"padding": "SAME"}, _lenet5(7 * 7 * 16), 107_786),  # 28 -> 14 -> 7
    ("lenet5", {"padding": "VALID"}, _lenet5(4 * 4 * 16), 44_426),  # 28 -> 24 -> 12 -> 8 -> 4
    ("lenet5", {"pool": "avg", "padding": "VALID"}, _lenet5(4 * 4 * 16), 44_426),
    ("inception_small", {"block": "plain"},
     {"stem": conv(3, 1, 48), "conv1a": conv(3, 48, 48), "conv1b": conv(3, 48, 48),
      "conv2a": conv(3, 48, 48), "logits": dense(48, 10)}, 63_322),
    ("nin", {"head": "dense"}, _nin("dense"), 139_146),
    ("nin", {"head": "gap"}, _nin("gap"), 104_266),
    *[("slot_cnn", {"conv": kind}, _slot(kind), total) for kind, total in [
        ("standard", 11_914), ("depthwise_separable", 6_202),
        ("spatially_separable", 8_842), ("dilated", 11_914), ("deformable", 23_632)]],
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "kwargs", "per_layer", "total"), OPTIONS, ids=[f"{o[0]}-{o[1]}" for o in OPTIONS]
)
def test_parameter_counts_by_hand(name, kwargs, per_layer, total):
    params, logits, _ = trace(models.get(name, **kwargs), MNIST)
    assert logits.shape == (2, 10)
    assert {layer: count(p) for layer, p in params.items()} == per_layer
    assert sum(per_layer.values()) == total


def test_inception_plain_is_within_ten_percent_of_the_inception_params():
    inception = count(trace(models.get("inception_small"), MNIST)[0])
    plain = count(trace(models.get("inception_small", block="plain"), MNIST)[0])
    assert abs(plain - inception) / inception < 0.1


@pytest.mark.parametrize(
    ("kwargs", "shapes"),
    [
        ({"pool": "avg"}, {"conv1": (28, 28, 6), "pool1": (14, 14, 6),
                           "conv2": (10, 10, 16), "pool2": (5, 5, 16)}),
        ({"pool": "strided_conv"}, {"conv1": (28, 28, 6), "down1": (14, 14, 6),
                                    "conv2": (10, 10, 16), "down2": (5, 5, 16)}),
        ({"padding": "SAME"}, {"conv1": (14, 14, 6), "conv2": (7, 7, 16)}),
        ({"padding": "VALID"}, {"conv1": (12, 12, 6), "conv2": (4, 4, 16)}),
    ],
    ids=["avg", "strided_conv", "SAME", "VALID"],
)  # fmt: skip
def test_lenet5_option_shapes(kwargs, shapes):
    _, _, got = trace(models.get("lenet5", **kwargs), MNIST)
    assert {k: got[k] for k in shapes} == shapes
    assert got["logits"] == (10,)


def test_other_option_shapes():
    _, _, plain = trace(models.get("inception_small", block="plain"), MNIST)
    assert [plain[k] for k in ("stem", "conv1a", "conv1b", "conv2a", "gap")] == [
        (28, 28, 48), (14, 14, 48), (14, 14, 48), (7, 7, 48), (48,)
    ]  # fmt: skip
    _, _, dense_head = trace(models.get("nin", head="dense"), MNIST)
    assert [dense_head[k] for k in ("mlpconv3", "logits")] == [(7, 7, 64), (10,)]
    for kind in ("standard", "depthwise_separable", "spatially_separable", "dilated",
                 "deformable"):  # fmt: skip
        _, _, shapes = trace(models.get("slot_cnn", conv=kind), MNIST)
        assert [shapes[k] for k in ("conv1", "conv2", "conv3", "conv4", "gap")] == [
            (14, 14, 16), (7, 7, 32), (7, 7, 16), (7, 7, 16), (16,)
        ]  # fmt: skip


# Each option's default, spelled out: the model must be the same network as without it.
DEFAULTS = [
    ("lenet5", {"pool": "max", "padding": None}),
    ("inception_small", {"block": "inception"}),
    ("nin", {"head": "gap"}),
    ("deformable_cnn", {"deformable": True}),
    ("deformable_cnn", {"deformable": False}),
]


@pytest.mark.parametrize(
    ("name", "defaults"), by_model(DEFAULTS, ids=[f"{d[0]}-{d[1]}" for d in DEFAULTS])
)
def test_spelled_out_defaults_give_the_same_network(name, defaults):
    x = jnp.asarray(np.random.default_rng(0).uniform(size=MNIST), jnp.float32)
    base = models.get(name, **({} if name != "deformable_cnn" else defaults))
    explicit = models.get(name, **defaults)
    variables = jax.jit(base.init)(KEY, x)
    assert jax.tree.structure(variables) == jax.tree.structure(jax.jit(explicit.init)(KEY, x))
    np.testing.assert_array_equal(base.apply(variables, x), explicit.apply(variables, x))


def test_lenet5_max_pool_keeps_the_fused_layer():
    """The default keeps ConvMaxPool (one layer per conv stage, no separate pool)."""
    _, _, shapes = trace(models.get("lenet5"), MNIST)
    assert list(shapes) == ["conv1", "conv2", "dense1", "dense2", "logits"]


def test_deformable_cnn_is_the_slot_cnn():
    """deformable_cnn is slot_cnn with conv="deformable" (or "standard" for the twin)."""
    x = jnp.asarray(np.random.default_rng(1).uniform(size=MNIST), jnp.float32)
    for deformable, kind in ((True, "deformable"), (False, "standard")):
        twin = models.get("deformable_cnn", deformable=deformable)
        slot = models.get("slot_cnn", conv=kind)
        variables = jax.jit(slot.init)(KEY, x)
        np.testing.assert_array_equal(twin.apply(variables, x), slot.apply(variables, x))


def test_dilated_slot_sees_a_wider_window():
    """conv3 with dilation 2: an output depends on a 5x5 window of conv3's input."""
    model = models.get("slot_cnn", conv="dilated", features=(), slot_features=(1,))
    x = jnp.ones((1, 9, 9, 1))
    variables = jax.tree.map(lambda p: jnp.full_like(p, 0.1), jax.jit(model.init)(KEY, x))

    def centre(x):
        _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
        return state["intermediates"]["conv1"]["__call__"][0][0, 4, 4, 0]

    grad = np.asarray(jax.grad(centre)(x))[0, :, :, 0]
    assert np.flatnonzero(grad[4]).tolist() == [2, 4, 6]  # taps at -2, 0, +2


@pytest.mark.parametrize(
    ("name", "kwargs", "field"),
    [
        ("lenet5", {"pool": "mean"}, "pool"),
        ("lenet5", {"padding": "same"}, "padding"),
        ("inception_small", {"block": "vgg"}, "block"),
        ("nin", {"head": "fc"}, "head"),
        ("slot_cnn", {"conv": "separable"}, "conv"),
        ("slot_cnn", {"slot_features": ()}, "slot_features"),
    ],
)
def test_bad_option_values_name_the_field(name, kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        models.get(name, **kwargs)
