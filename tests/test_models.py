"""cnnjax.models: the registry, and lenet5 against hand counts and a NumPy forward pass."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import models

# rbg compiles several times faster than threefry on CPU; the values do not matter here.
KEY = jax.random.key(0, impl="rbg")


def _images(n: int = 2, seed: int = 1) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).uniform(size=(n, 28, 28, 1)), jnp.float32)


def _count(tree: dict) -> int:
    """Number of entries in a tree of arrays (or of ``jax.ShapeDtypeStruct``)."""
    return sum(math.prod(p.shape) for p in jax.tree.leaves(tree))


# ---------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------


def test_lenet5_is_registered():
    assert "lenet5" in models.available()
    assert models.available() == sorted(models.available())
    assert isinstance(models.get("lenet5"), nn.Module)


def test_unknown_model_lists_names_and_suggests():
    with pytest.raises(ValueError, match="unknown model 'lenet'") as err:
        models.get("lenet")
    assert "Did you mean 'lenet5'?" in str(err.value)
    assert "Available models: " in str(err.value)
    assert "lenet5" in str(err.value).split("Available models: ")[1]


def test_unknown_model_argument_is_a_value_error():
    with pytest.raises(ValueError, match="num_clases"):
        models.get("lenet5", num_clases=3)


def test_register_adds_a_model_and_rejects_duplicates(monkeypatch):
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))

    @models.register("tiny_test_model")
    class Tiny(nn.Module):
        num_classes: int = 3

        @nn.compact
        def __call__(self, x, train: bool = False):
            return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))

    assert "tiny_test_model" in models.available()
    assert models.get("tiny_test_model", num_classes=5).num_classes == 5
    with pytest.raises(ValueError, match="already registered"):
        models.register("lenet5")(Tiny)


# ---------------------------------------------------------------------------------------
# lenet5
# ---------------------------------------------------------------------------------------


def test_lenet5_parameter_counts_by_hand():
    params = jax.eval_shape(models.get("lenet5").init, KEY, _images())["params"]
    per_layer = {name: _count(p) for name, p in params.items()}
    assert per_layer == {
        "conv1": 5 * 5 * 1 * 6 + 6,  # 156
        "conv2": 5 * 5 * 6 * 16 + 16,  # 2,416
        "dense1": 400 * 120 + 120,  # 48,120
        "dense2": 120 * 84 + 84,  # 10,164
        "logits": 84 * 10 + 10,  # 850
    }
    assert _count(params) == 61_706


def test_lenet5_output_and_intermediate_shapes():
    model = models.get("lenet5")

    def forward(x):
        variables = model.init(KEY, x)
        outputs = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
        return outputs, variables

    # Shapes only: trace, do not compute.
    (logits, state), variables = jax.eval_shape(forward, _images(3))
    assert logits.shape == (3, 10)
    shapes = {
        name: out["__call__"][0].shape
        for name, out in state["intermediates"].items()
        if name != "__call__"
    }
    assert shapes == {
        "conv1": (3, 14, 14, 6),  # conv and 2x2 max-pool in one layer
        "conv2": (3, 5, 5, 16),
        "dense1": (3, 120),  # from the 5*5*16 = 400 flattened features
        "dense2": (3, 84),
        "logits": (3, 10),
    }
    assert variables["params"]["dense1"]["kernel"].shape == (400, 120)


def _conv2d_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    """Cross-correlation, stride 1, symmetric zero padding; a loop over kernel taps."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = w.shape[:2]
    h, wd = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((x.shape[0], h, wd, w.shape[-1]))
    for i in range(kh):
        for j in range(kw):
            out += x[:, i : i + h, j : j + wd, :] @ w[i, j]
    return out + b


def _max_pool2_ref(x: np.ndarray) -> np.ndarray:
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _lenet5_ref(p: dict, x: np.ndarray) -> np.ndarray:
    """LeNet-5 from its definition in float64 (a 5x5 SAME conv pads 2 on each side)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    h = _max_pool2_ref(relu(_conv2d_ref(x, p["conv1"]["kernel"], p["conv1"]["bias"], 2)))
    h = _max_pool2_ref(relu(_conv2d_ref(h, p["conv2"]["kernel"], p["conv2"]["bias"], 0)))
    h = h.reshape(h.shape[0], -1)  # (N, 5, 5, 16) flattened row-major: (row, col, channel)
    for name in ("dense1", "dense2"):
        h = relu(h @ p[name]["kernel"] + p[name]["bias"])
    return h @ p["logits"]["kernel"] + p["logits"]["bias"]


def test_lenet5_forward_matches_numpy_reference():
    model = models.get("lenet5")
    x = _images(2)
    params = jax.jit(model.init)(KEY, x)["params"]
    # Nonzero biases everywhere, so a dropped bias would show.
    rng = np.random.default_rng(3)
    params = jax.tree.map(lambda p: p + 0.1 * rng.standard_normal(p.shape, np.float32), params)
    logits = model.apply({"params": params}, x)
    expected = _lenet5_ref(params, np.asarray(x, np.float64))
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-4)


def test_lenet5_num_classes_and_train_flag():
    model = models.get("lenet5", num_classes=7)
    x = _images(2)
    variables = jax.jit(model.init)(KEY, x)
    assert _count(variables["params"]["logits"]) == 84 * 7 + 7
    out = jax.jit(model.apply, static_argnames="train")(variables, x, train=True)
    assert out.shape == (2, 7)
    np.testing.assert_array_equal(out, model.apply(variables, x, train=False))


def test_lenet5_bfloat16_compute_keeps_float32_params():
    x = _images(2)
    model = models.get("lenet5", dtype=jnp.bfloat16)
    variables = jax.jit(model.init)(KEY, x)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    logits = model.apply(variables, x)
    assert logits.dtype == jnp.bfloat16
    reference = models.get("lenet5").apply(variables, x)
    np.testing.assert_allclose(np.asarray(logits, np.float32), reference, atol=5e-2, rtol=5e-2)


def test_lenet5_jit_and_grad():
    model = models.get("lenet5")
    x = _images(4)
    variables = jax.jit(model.init)(KEY, x)
    np.testing.assert_allclose(
        jax.jit(model.apply)(variables, x), model.apply(variables, x), rtol=1e-5, atol=1e-6
    )
    grads = jax.jit(jax.grad(lambda v: jnp.sum(model.apply(v, x) ** 2)))(variables)
    assert all(bool(jnp.any(g != 0)) for g in jax.tree.leaves(grads))


def test_lenet5_rejects_non_image_input():
    with pytest.raises(ValueError, match="`x`"):
        jax.eval_shape(models.get("lenet5").init, KEY, jnp.zeros((2, 28, 28)))
