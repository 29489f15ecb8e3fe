"""conv1d_seq, the 1-D conv net on an image read as a sequence: hand counts and shapes,
how rows and pixels become time steps (NumPy loops), causality and the receptive field of
the TCN variant (where the gradient reaches), and its two experiments training 2 steps.

A ``k``-tap 1-D conv from ``c_in`` to ``c_out`` channels has ``k * c_in * c_out`` weights
plus ``c_out`` biases; a dense layer ``n_in * n_out + n_out``.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from zoo_helpers import KEY, conv, count, dense

from cnnjax import models
from cnnjax.analysis import check_model, format_by_layer
from cnnjax.models.conv1d_seq import receptive_field
from cnnjax.training import load_experiment

# rbg compiles several times faster than threefry on CPU; the values do not matter here.
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _experiment_kwargs(name: str) -> dict:
    return dict(load_experiment(name, EXPERIMENTS).model.kwargs)


def _tiny(**kwargs):
    """A small causal residual stack on pixels (change what a test needs)."""
    fields = dict(sequence="pixels", features=(2, 2, 2), kernel_size=3, dilations=(1, 2, 4),
                  pools=(1, 1, 1), causal=True, residual=True)  # fmt: skip
    return models.get("conv1d_seq", **{**fields, **kwargs})


def _apply(model, variables, x):
    """(logits, top-level layer outputs, the sown conv stack output ``(N, L', C)``)."""
    logits, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    inter = state["intermediates"]
    layers = {k: v["__call__"][0] for k, v in inter.items() if k not in ("__call__", "features")}
    return logits, layers, inter["features"][0]


def _shapes(model, input_shape: tuple[int, ...]):
    """(params, logits, layer output shapes and the stack's, without the batch dim)."""

    def forward(x):
        variables = model.init(KEY, x)
        return variables["params"], *_apply(model, variables, x)

    x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    params, logits, layers, features = jax.eval_shape(forward, x)
    return params, logits, {k: v.shape[1:] for k, v in layers.items()}, features.shape[1:]


def _positive(model, x):
    """Variables with every parameter 0.1: with positive inputs every sum is positive, so
    each ReLU passes and no path through the stack is cut off or cancelled."""
    variables = jax.jit(model.init)(KEY, x)
    return jax.tree.map(lambda p: jnp.full_like(p, 0.1), variables)


# ---------------------------------------------------------------------------------------
# Hand counts and shapes
# ---------------------------------------------------------------------------------------


def rows_counts() -> dict[str, int]:
    return {
        "conv1": conv((5,), 28, 32),  # a step is one 28-pixel row: 4,512
        "conv2": conv((5,), 32, 64),  # 10,304
        "conv3": conv((5,), 64, 128),  # 41,088
        "logits": dense(7 * 128, 10),  # two pools of 2: 28 -> 7 steps; 8,970
    }


def tcn_counts() -> dict[str, int]:
    counts = {"conv1": conv((2,), 1, 16), "skip1": conv((1,), 1, 16)}  # 1 -> 16 channels
    counts |= {f"conv{i}": conv((2,), 16, 16) for i in range(2, 11)}  # identity skips
    return counts | {"logits": dense(16, 10)}  # the last step's 16 features


@pytest.mark.parametrize(
    ("kwargs", "per_layer", "total"),
    [
        ({}, rows_counts(), 64_874),
        (_experiment_kwargs("mnist_conv1d_seq"), rows_counts(), 64_874),
        (_experiment_kwargs("mnist_tcn"), tcn_counts(), 5_002),
    ],
    ids=["registry-default", "mnist_conv1d_seq", "mnist_tcn"],
)
def test_parameter_counts_by_hand(kwargs, per_layer, total):
    params, logits, _, _ = _shapes(models.get("conv1d_seq", **kwargs), (2, 28, 28, 1))
    assert logits.shape == (2, 10)
    assert {layer: count(p) for layer, p in params.items()} == per_layer
    assert sum(per_layer.values()) == total  # the totals quoted in the docstrings


def test_rows_model_output_shapes():
    _, _, layers, features = _shapes(models.get("conv1d_seq"), (2, 28, 28, 1))
    assert layers == {
        "conv1": (28, 32),
        "pool1": (14, 32),
        "conv2": (14, 64),
        "pool2": (7, 64),
        "conv3": (7, 128),
        "logits": (10,),
    }
    assert features == (7, 128)


def test_rows_of_a_colour_image_have_width_times_channels_features():
    params, _, layers, _ = _shapes(models.get("conv1d_seq"), (2, 32, 32, 3))
    assert layers["conv1"] == (32, 32) and layers["conv3"] == (8, 128)
    assert count(params["conv1"]) == conv((5,), 32 * 3, 32)
    assert count(params["logits"]) == dense(8 * 128, 10)


def test_tcn_keeps_all_784_steps():
    model = models.get("conv1d_seq", **_experiment_kwargs("mnist_tcn"))
    _, _, layers, features = _shapes(model, (2, 28, 28, 1))
    assert [layers[f"conv{i}"] for i in range(1, 11)] == [(784, 16)] * 10
    assert features == (784, 16)


# ---------------------------------------------------------------------------------------
# Rows and pixels as time steps, against NumPy loops
# ---------------------------------------------------------------------------------------


def test_rows_mode_reads_each_image_row_as_one_time_step():
    """A 1-tap conv on rows: step t mixes exactly the W x C pixels of row t, in (w, c)
    order, and nothing else."""
    model = models.get("conv1d_seq", sequence="rows", features=(3,), kernel_size=1,
                       dilations=(1,), pools=(1,))  # fmt: skip
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 4, 2)).astype(np.float32)
    variables = jax.jit(model.init)(KEY, x)
    kernel = rng.normal(size=(1, 8, 3)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    variables["params"]["conv1"] = {"kernel": kernel, "bias": bias}
    _, layers, _ = _apply(model, variables, jnp.asarray(x))
    expected = np.zeros((2, 5, 3))
    for n in range(2):
        for t in range(5):
            for f in range(3):
                expected[n, t, f] = bias[f]
                for w in range(4):
                    for c in range(2):
                        expected[n, t, f] += x[n, t, w, c] * kernel[0, w * 2 + c, f]
    np.testing.assert_allclose(layers["conv1"], expected, rtol=1e-5, atol=1e-5)


def test_pixels_mode_is_raster_order_and_causal_padding_is_on_the_left():
    """A 2-tap causal conv with dilation 3 on pixels: step t = i W + j is pixel (i, j),
    and its output is w[1] x_t + w[0] x_(t-3), with x_(t-3) = 0 for t < 3."""
    model = models.get("conv1d_seq", sequence="pixels", features=(2,), kernel_size=2,
                       dilations=(3,), pools=(1,), causal=True)  # fmt: skip
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 3, 4, 2)).astype(np.float32)
    variables = jax.jit(model.init)(KEY, x)
    kernel = rng.normal(size=(2, 2, 2)).astype(np.float32)
    bias = rng.normal(size=2).astype(np.float32)
    variables["params"]["conv1"] = {"kernel": kernel, "bias": bias}
    _, layers, _ = _apply(model, variables, jnp.asarray(x))

    def pixel(t: int, c: int) -> float:
        return x[0, t // 4, t % 4, c] if t >= 0 else 0.0

    expected = np.zeros((12, 2))
    for t in range(12):
        for f in range(2):
            expected[t, f] = bias[f]
            for c in range(2):
                expected[t, f] += kernel[1, c, f] * pixel(t, c) + kernel[0, c, f] * pixel(t - 3, c)
    np.testing.assert_allclose(layers["conv1"][0], expected, rtol=1e-5, atol=1e-5)


def test_causal_logits_read_the_last_step():
    model = _tiny()
    x = jnp.asarray(np.random.default_rng(2).uniform(size=(2, 3, 5, 1)), jnp.float32)
    variables = jax.jit(model.init)(KEY, x)
    logits, _, features = _apply(model, variables, x)
    head = variables["params"]["logits"]
    expected = np.asarray(features)[:, -1] @ np.asarray(head["kernel"]) + np.asarray(head["bias"])
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Causality and the receptive field, from where the gradient reaches
# ---------------------------------------------------------------------------------------


def _support(model, length: int) -> np.ndarray:
    """(L, L) bool: does step t of the stack's output (summed over channels) depend on
    input step s? From the Jacobian, with all-positive parameters and inputs."""
    x = jnp.asarray(np.random.default_rng(3).uniform(0.5, 1.5, size=(1, 1, length, 1)))
    variables = _positive(model, x)

    def stack(x):
        return _apply(model, variables, x)[2][0].sum(axis=-1)

    return np.asarray(jax.jit(jax.jacrev(stack))(x)).reshape(length, length) != 0


@pytest.mark.parametrize(
    ("kernel_size", "dilations", "field"),
    [
        (2, (1, 2, 4), 1 + 1 * (1 + 2 + 4)),  # 8
        (3, (1, 2, 4), 1 + 2 * (1 + 2 + 4)),  # 15
        (3, (2, 1), 1 + 2 * (2 + 1)),  # 7
    ],
)
def test_causal_step_sees_exactly_the_last_receptive_field_steps(kernel_size, dilations, field):
    """Output step t depends on input steps t - field + 1 ... t: exactly zero gradient
    from every later step, non-zero from every step of the field."""
    model = _tiny(kernel_size=kernel_size, dilations=dilations, features=(2,) * len(dilations),
                  pools=(1,) * len(dilations))  # fmt: skip
    assert model.receptive_field == field
    length = 20
    reached = _support(model, length)
    for t in range(length):
        expected = np.zeros(length, bool)
        expected[max(0, t - field + 1) : t + 1] = True
        np.testing.assert_array_equal(reached[t], expected, err_msg=f"output step {t}")


def test_the_same_stack_without_causal_padding_is_centred():
    """The control: with SAME padding output step t also sees the 7 steps after it, so
    the causal check above can tell the two apart."""
    model = _tiny(causal=False, residual=False)
    assert model.receptive_field == 15
    reached = _support(model, 20)
    for t in range(20):
        expected = np.zeros(20, bool)
        expected[max(0, t - 7) : t + 8] = True
        np.testing.assert_array_equal(reached[t], expected, err_msg=f"output step {t}")


@pytest.mark.parametrize(("layers", "seen"), [(10, 784), (9, 512)])
def test_tcn_last_step_sees_every_pixel(layers, seen):
    """mnist_tcn's dilations 1 ... 512 give a field of 1024 >= 784 steps: every pixel
    reaches the logits. One block fewer (field 512) leaves the first 272 pixels unseen."""
    kwargs = _experiment_kwargs("mnist_tcn")
    assert kwargs["dilations"] == tuple(2**i for i in range(10))
    model = models.get("conv1d_seq", **{**kwargs, "features": (2,) * layers,
                                        "dilations": kwargs["dilations"][:layers],
                                        "pools": (1,) * layers})  # fmt: skip
    assert model.receptive_field == 1 + sum(2**i for i in range(layers))
    x = jnp.asarray(np.random.default_rng(4).uniform(0.5, 1.5, size=(1, 28, 28, 1)))
    variables = _positive(model, x)
    grad = jax.jit(jax.grad(lambda x: model.apply(variables, x)[0, 0]))(x)
    reached = np.asarray(grad).reshape(784) != 0
    np.testing.assert_array_equal(reached, np.arange(784) >= 784 - seen)


def test_receptive_field_by_hand():
    assert models.get("conv1d_seq", **_experiment_kwargs("mnist_tcn")).receptive_field == 1024
    # Rows: conv1 +4 -> 5, pool1 +1 -> 6 (jump 2), conv2 +4*2 -> 14, pool2 +1*2 -> 16
    # (jump 4), conv3 +4*4 -> 32 rows, more than the image's 28.
    assert models.get("conv1d_seq").receptive_field == 32
    assert receptive_field(5, (1, 1, 1), (2, 2, 1)) == 32
    assert receptive_field(3, (1, 2, 4), (1, 1, 1)) == 15
    assert receptive_field(3, (2,), (3,)) == 1 + 2 * 2 + 2


# ---------------------------------------------------------------------------------------
# Gradient check and validation
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(features=(3, 4), dilations=(1, 1), pools=(2, 1), kernel_size=3),
        dict(sequence="pixels", features=(3, 3), dilations=(1, 2), pools=(1, 1), kernel_size=2,
             causal=True, residual=True),
    ],
    ids=["rows", "tcn"],
)  # fmt: skip
def test_model_gradcheck(kwargs):
    x = np.random.default_rng(5).normal(size=(2, 4, 6, 1))
    model = models.get("conv1d_seq", num_classes=3, **kwargs)
    report = check_model(model, x, np.array([0, 2]), max_entries=8)
    assert report.passed, format_by_layer(report)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        (dict(sequence="columns"), "sequence"),
        (dict(num_classes=0), "num_classes"),
        (dict(features=()), "features"),
        (dict(features=(32, 0, 128)), "features"),
        (dict(kernel_size=0), "kernel_size"),
        (dict(dilations=(1, 0, 1)), "dilations"),
        (dict(dilations=(1, 1)), "dilations"),
        (dict(pools=(2, 2)), "pools"),
        (dict(pools=(2, -1, 1)), "pools"),
        (dict(causal=True), "pools"),  # the default pools with causal padding
    ],
)
def test_bad_fields_raise_naming_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        models.get("conv1d_seq", **kwargs)


@pytest.mark.parametrize(
    ("input_shape", "argument"),
    [((2, 28, 28), "x"), ((2, 1, 28, 28, 1), "x"), ((2, 3, 28, 1), "pools")],
)
def test_inputs_that_do_not_fit_raise_naming_the_argument(input_shape, argument):
    model = models.get("conv1d_seq")  # rows, pools (2, 2, 1): needs 4 rows
    with pytest.raises(ValueError, match=f"`{argument}`"):
        jax.eval_shape(model.init, KEY, jax.ShapeDtypeStruct(input_shape, jnp.float32))
