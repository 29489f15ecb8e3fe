"""The model zoo: parameter counts and shapes against hand counts, the 1998 LeNet's own
layers against NumPy loops, and two training steps of every zoo experiment.

Hand counts are written from each layer's definition (the rules are in
``tests/zoo_helpers.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from zoo_helpers import (
    KEY,
    MODEL_INPUTS,
    TINY_RUN,
    batch_norm,
    by_model,
    conv,
    count,
    dense,
    rbg_keys,  # noqa: F401  (a fixture, used by name)
    trace,
)

from cnnjax import models
from cnnjax.analysis.gradcheck_model import check_model, format_by_layer
from cnnjax.models.dilated import receptive_field
from cnnjax.models.lenet_classic import TABLE_I, ConnectionTableConv, Subsampling, table_to_mask
from cnnjax.training import apply_overrides, load_experiment, train_and_evaluate

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


# ---------------------------------------------------------------------------------------
# Hand counts, per top-level layer
# ---------------------------------------------------------------------------------------

# LeNet-5's C3 (the paper, Section II.B): six maps see 3 contiguous S2 maps, six see 4
# contiguous ones, three see 4 non-contiguous ones, one sees all 6: 60 connections.
C3_CONNECTIONS = 6 * 3 + 6 * 4 + 3 * 4 + 1 * 6


def lenet5_classic_counts() -> dict[str, int]:
    return {
        "c1": conv(5, 1, 6),  # 156
        "s2": 6 + 6,  # a coefficient and a bias per map: 12
        "c3": C3_CONNECTIONS * 5 * 5 + 16,  # 1,516
        "s4": 16 + 16,  # 32
        "c5": conv(5, 16, 120),  # 48,120
        "f6": dense(120, 84),  # 10,164
        "output": dense(84, 10),  # 850
    }


def tf_tutorial_counts() -> dict[str, int]:
    return {
        "conv1": conv(5, 1, 32),
        "conv2": conv(5, 32, 64),
        "dense1": dense(7 * 7 * 64, 1024),  # two 2x2 pools: 28 -> 7
        "logits": dense(1024, 10),
    }


def keras_book_counts() -> dict[str, int]:
    return {
        "conv1": conv(3, 1, 32),  # 320
        "conv2": conv(3, 32, 64),  # 18,496
        "conv3": conv(3, 64, 64),  # 36,928
        "dense1": dense(3 * 3 * 64, 64),  # 36,928
        "logits": dense(64, 10),  # 650
    }


def nin_counts(c_in: int = 1) -> dict[str, int]:
    return {
        "mlpconv1": conv(5, c_in, 32) + conv(1, 32, 32) + conv(1, 32, 32),
        "mlpconv2": conv(5, 32, 64) + conv(1, 64, 64) + conv(1, 64, 64),
        "mlpconv3": conv(3, 64, 64) + conv(1, 64, 64) + conv(1, 64, 10),  # no dense layer
    }


def inception(c_in: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int) -> int:
    return (
        conv(1, c_in, c1)
        + conv(1, c_in, c3r) + conv(3, c3r, c3)
        + conv(1, c_in, c5r) + conv(5, c5r, c5)
        + conv(1, c_in, pool_proj)
    )  # fmt: skip


def inception_counts(c_in: int = 1) -> dict[str, int]:
    return {
        "stem": conv(3, c_in, 48),
        "inception1a": inception(48, 16, 24, 32, 4, 8, 8),
        "inception1b": inception(16 + 32 + 8 + 8, 32, 32, 48, 8, 24, 16),
        "inception2a": inception(32 + 48 + 24 + 16, 48, 24, 52, 4, 12, 16),
        "logits": dense(48 + 52 + 12 + 16, 10),
    }


def alexnet_counts(c_in: int = 1, groups: int = 2) -> dict[str, int]:
    return {
        "conv1": conv(5, c_in, 48),
        "conv2": conv(5, 48, 128, groups),
        "conv3": conv(3, 128, 192),
        "conv4": conv(3, 192, 192, groups),
        "conv5": conv(3, 192, 128, groups),
        "fc6": dense(4 * 4 * 128, 512),  # three stride-2 pools: 32 -> 4
        "fc7": dense(512, 512),
        "fc8": dense(512, 10),
    }


def mobilenet_counts(c_in: int = 1, alpha: float = 1.0, standard: bool = False):
    widths = [int(w * alpha) for w in (32, 64, 128, 128, 256, 256)]

    def block(a: int, b: int) -> int:
        if standard:
            return conv(3, a, b, bias=False) + batch_norm(b)
        depthwise = 3 * 3 * a + batch_norm(a)
        return depthwise + conv(1, a, b, bias=False) + batch_norm(b)

    counts = {"stem": conv(3, c_in, widths[0], bias=False), "stem_bn": batch_norm(widths[0])}
    for i in range(1, 6):
        counts[f"block{i}"] = block(widths[i - 1], widths[i])
    counts["logits"] = dense(widths[-1], 10)
    return counts


def dilated_counts(c_in: int = 1) -> dict[str, int]:
    return {
        "conv1": conv(3, c_in, 32),
        "conv2": conv(3, 32, 32),
        "conv3": conv(3, 32, 32),
        "conv4": conv(3, 32, 32),
        "logits": dense(32, 10),
    }


# (registry name, kwargs, input shape, hand counts per layer, expected total)
ZOO = [
    ("lenet5_classic", {}, (2, 32, 32, 1), lenet5_classic_counts(), 60_850),
    ("tf_tutorial_cnn", {}, (2, 28, 28, 1), tf_tutorial_counts(), 3_274_634),
    ("keras_book_cnn", {}, (2, 28, 28, 1), keras_book_counts(), 93_322),
    ("nin", {}, (2, 28, 28, 1), nin_counts(), 104_266),
    ("inception_small", {}, (2, 28, 28, 1), inception_counts(), 60_114),
    ("alexnet_small", {}, (2, 32, 32, 1), alexnet_counts(), 1_893_226),
    ("alexnet_small", {"groups": 1}, (2, 32, 32, 1), alexnet_counts(groups=1), 2_246_506),
    ("alexnet_small", {}, (2, 32, 32, 3), alexnet_counts(c_in=3), 1_895_626),
    ("mobilenet_small", {}, (2, 28, 28, 1), mobilenet_counts(), 136_202),
    ("mobilenet_small", {"standard_convs": True}, (2, 28, 28, 1),
     mobilenet_counts(standard=True), 1_128_938),
    ("mobilenet_small", {"alpha": 0.5}, (2, 28, 28, 1), mobilenet_counts(alpha=0.5), None),
    ("dilated_cnn", {}, (2, 28, 28, 1), dilated_counts(), 28_394),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "kwargs", "input_shape", "per_layer", "total"),
    ZOO,
    ids=[f"{z[0]}-{z[1]}-{z[2][-1]}ch" for z in ZOO],
)
def test_parameter_counts_and_logits_shape_by_hand(name, kwargs, input_shape, per_layer, total):
    params, logits, _ = trace(models.get(name, **kwargs), input_shape)
    assert logits.shape == (2, 10)
    assert {layer: count(p) for layer, p in params.items()} == per_layer
    assert count(params) == sum(per_layer.values())
    if total is not None:  # the totals quoted in the issue and the docstrings
        assert sum(per_layer.values()) == total


def test_lenet5_classic_layers_match_the_paper():
    counts = lenet5_classic_counts()
    assert (counts["s2"], counts["c3"], counts["s4"]) == (12, 1_516, 32)
    assert (counts["c5"], counts["f6"]) == (48_120, 10_164)
    _, _, shapes = trace(models.get("lenet5_classic"), (2, 32, 32, 1))
    assert {k: shapes[k] for k in ("c1", "s2", "c3", "s4", "c5", "f6", "output")} == {
        "c1": (28, 28, 6),
        "s2": (14, 14, 6),
        "c3": (10, 10, 16),
        "s4": (5, 5, 16),
        "c5": (1, 1, 120),
        "f6": (84,),
        "output": (10,),
    }


def test_keras_book_cnn_output_shapes():
    _, _, shapes = trace(models.get("keras_book_cnn"), (2, 28, 28, 1))
    got = [shapes[k] for k in ("conv1", "conv2", "conv3")]
    # conv1 and conv2 are ConvMaxPools: VALID 28 -> 26, pooled to 13; 13 -> 11, to 5
    assert got == [(13, 13, 32), (5, 5, 64), (3, 3, 64)]
    counts = keras_book_counts()
    assert list(counts.values()) == [320, 18_496, 36_928, 36_928, 650]


def test_tf_tutorial_cnn_dropout_follows_the_train_flag():
    model = models.get("tf_tutorial_cnn")
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 28, 28, 1)), jnp.float32)
    variables = jax.jit(model.init)(KEY, x)
    apply = jax.jit(model.apply, static_argnames="train")
    np.testing.assert_array_equal(apply(variables, x), apply(variables, x))
    rngs = {"dropout": jax.random.key(1, impl="rbg")}
    assert not np.allclose(apply(variables, x, train=True, rngs=rngs), apply(variables, x))


def test_nin_and_dilated_keep_their_layout():
    _, _, nin = trace(models.get("nin"), (2, 28, 28, 1))
    assert [nin[k] for k in ("mlpconv1", "mlpconv2", "mlpconv3", "gap")] == [
        (28, 28, 32), (14, 14, 64), (7, 7, 10), (10,)
    ]  # fmt: skip
    _, _, dilated = trace(models.get("dilated_cnn"), (2, 28, 28, 1))
    assert [dilated[f"conv{i}"] for i in range(1, 5)] == [(28, 28, 32)] * 4  # no pooling


def test_alexnet_groups_halve_the_weights_of_conv2_conv4_conv5():
    grouped = count(trace(models.get("alexnet_small", groups=2), (2, 32, 32, 1))[0])
    full = count(trace(models.get("alexnet_small", groups=1), (2, 32, 32, 1))[0])
    assert grouped < full
    assert full - grouped == (5 * 5 * 48 * 128 + 3 * 3 * 192 * 192 + 3 * 3 * 192 * 128) // 2
    _, _, shapes = trace(models.get("alexnet_small"), (2, 32, 32, 1))
    assert [shapes[k] for k in ("pool1", "pool2", "conv5", "pool5")] == [
        (16, 16, 48), (8, 8, 128), (8, 8, 128), (4, 4, 128)
    ]  # fmt: skip


def test_mobilenet_standard_convs_cost_more_than_separable():
    separable = count(trace(models.get("mobilenet_small"), (2, 28, 28, 1))[0])
    standard = count(trace(models.get("mobilenet_small", standard_convs=True), (2, 28, 28, 1))[0])
    assert standard > separable
    _, _, shapes = trace(models.get("mobilenet_small"), (2, 28, 28, 1))
    assert [shapes[f"block{i}"] for i in range(1, 6)] == [
        (28, 28, 64), (14, 14, 128), (14, 14, 128), (7, 7, 256), (7, 7, 256)
    ]  # fmt: skip
    with pytest.raises(ValueError, match="alpha"):
        models.get("mobilenet_small", alpha=0.0)


# ---------------------------------------------------------------------------------------
# Receptive field of the dilated network
# ---------------------------------------------------------------------------------------


def test_dilated_receptive_field_by_hand():
    # Each 3x3 conv with dilation d widens the field by 2 d: 1 + 2 (1 + 2 + 4 + 8).
    assert models.get("dilated_cnn").receptive_field == 31
    assert receptive_field(3, (1, 2, 4, 8)) == 31
    assert receptive_field(5, (1, 1)) == 9
    assert models.get("dilated_cnn", dilations=(1, 2)).receptive_field == 7


def test_dilated_receptive_field_is_where_the_gradient_reaches():
    """The centre output of the last conv depends on exactly a 31 x 31 input window."""
    model = models.get("dilated_cnn", features=2)
    size, centre = 41, 20
    x = jnp.ones((1, size, size, 1))
    variables = jax.jit(model.init)(KEY, x)
    # Positive weights and inputs keep every ReLU active, so no path is cut off.
    variables = jax.tree.map(lambda p: jnp.full_like(p, 0.1), variables)

    def centre_output(x):
        _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
        return state["intermediates"]["conv4"]["__call__"][0][0, centre, centre, 0]

    grad = np.asarray(jax.jit(jax.grad(centre_output))(x))
    reached = np.flatnonzero(grad[0, :, centre, 0])
    assert (reached.min(), reached.max()) == (centre - 15, centre + 15)


# ---------------------------------------------------------------------------------------
# LeNet-5 (1998): trainable subsampling and the C3 connection table
# ---------------------------------------------------------------------------------------


def _paper_table() -> np.ndarray:
    """Table I from the paper's prose, (6 S2 maps, 16 C3 maps), 1 = connected."""
    inputs = [{j % 6, (j + 1) % 6, (j + 2) % 6} for j in range(6)]
    inputs += [{(j + k) % 6 for k in range(4)} for j in range(6)]
    inputs += [{0, 1, 3, 4}, {1, 2, 4, 5}, {0, 2, 3, 5}, set(range(6))]
    return np.array([[int(i in s) for s in inputs] for i in range(6)])


def test_table_i_is_the_papers():
    table = table_to_mask(TABLE_I)
    np.testing.assert_array_equal(table, _paper_table())
    assert table.sum() == C3_CONNECTIONS == 60


def test_subsampling_matches_a_numpy_loop():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 4, 3)).astype(np.float32)
    layer = Subsampling(2)
    coefficient = rng.normal(size=3).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    params = {"params": {"coefficient": coefficient, "bias": bias}}
    got = np.asarray(layer.apply(params, jnp.asarray(x)))
    expected = np.zeros((2, 3, 2, 3))
    for n in range(2):
        for i in range(3):
            for j in range(2):
                for c in range(3):
                    block = x[n, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, c].astype(np.float64)
                    expected[n, i, j, c] = coefficient[c] * block.sum() + bias[c]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    init = jax.jit(layer.init)(KEY, jnp.asarray(x))["params"]
    np.testing.assert_array_equal(init["coefficient"], 0.25)  # starts as average pooling


def test_connection_table_conv_matches_a_numpy_loop():
    """Output map o sums 3x3 VALID correlations of its connected input maps only; the
    ``kernel`` param lists connections by input map, then output map."""
    table = ("X.X", ".XX")  # map 0 sees input 0, map 1 sees input 1, map 2 sees both
    connections = [(0, 0), (0, 2), (1, 1), (1, 2)]
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 6, 2)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 4)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    layer = ConnectionTableConv(table, 3)
    got = np.asarray(layer.apply({"params": {"kernel": kernel, "bias": bias}}, jnp.asarray(x)))
    expected = np.zeros((2, 3, 4, 3)) + bias
    for k, (c, o) in enumerate(connections):
        for i in range(3):
            for j in range(4):
                patch = x[:, i : i + 3, j : j + 3, c].astype(np.float64)
                expected[:, i, j, o] += (patch * kernel[:, :, k]).sum(axis=(1, 2))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert jax.eval_shape(layer.init, KEY, x)["params"]["kernel"].shape == (3, 3, 4)


def test_c3_disconnected_input_maps_get_zero_gradient():
    layer = ConnectionTableConv(TABLE_I, 5)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 7, 7, 6)), jnp.float32)
    variables = jax.jit(layer.init)(KEY, x)

    def map_sums(x):  # (16,): the sum of each C3 output map
        return layer.apply(variables, x).sum(axis=(0, 1, 2))

    grads = np.asarray(jax.jit(jax.jacrev(map_sums))(x))  # (16, 1, 7, 7, 6)
    reaches = (np.abs(grads).sum(axis=(1, 2, 3)) > 0).T.astype(int)  # (6 inputs, 16 maps)
    np.testing.assert_array_equal(reaches, _paper_table())


def test_lenet5_classic_rejects_unpadded_mnist():
    with pytest.raises(ValueError, match="32, 32"):
        jax.eval_shape(models.get("lenet5_classic").init, KEY, jnp.zeros((2, 28, 28, 1)))


def test_connection_table_rejects_an_output_map_without_inputs():
    with pytest.raises(ValueError, match=r"output maps \[1\]"):
        ConnectionTableConv(("X.", "X."), 3)


# ---------------------------------------------------------------------------------------
# Every zoo experiment: two training steps on generated data
# ---------------------------------------------------------------------------------------

# Each zoo experiment with overrides that make its model tiny (narrow, and shallow where
# the depth is a field) without changing its kind; the counts above cover the full sizes.
ZOO_EXPERIMENTS = {
    "mnist_lenet_classic": [],
    "mnist_tf_tutorial_cnn": [],
    "mnist_keras_book_cnn": [],
    "mnist_nin": ["--config.model.kwargs.blocks=((3, 4), (3, 4))"],
    "mnist_inception": [
        "--config.model.kwargs.stem_features=4",
        "--config.model.kwargs.stages=(((2, 2, 2, 2, 2, 2),),)",
    ],
    "mnist_alexnet": [
        "--config.model.kwargs.widths=(4, 4, 4, 4, 4)",
        "--config.model.kwargs.hidden=8",
    ],
    "mnist_mobilenet": ["--config.model.kwargs.blocks=((8, 1), (8, 2))"],
    # the tiny batch of 4 in 2 parts (the experiment's 16 parts need a batch of 16)
    "mnist_dilated": ["--config.model.kwargs.features=4", "--config.microbatches=2"],
    "mnist_deformable": [
        "--config.model.kwargs.features=(4, 4)",
        "--config.model.kwargs.deformable_features=(4,)",
    ],
    "mnist_deformable_plain": [
        "--config.model.kwargs.features=(4, 4)",
        "--config.model.kwargs.deformable_features=(4,)",
    ],
    "mnist_slot_cnn": [
        "--config.model.kwargs.features=(4, 4)",
        "--config.model.kwargs.slot_features=(4,)",
    ],
    "mnist_conv1d_seq": ["--config.model.kwargs.features=(4, 4, 4)"],
    "mnist_tcn": [
        "--config.model.kwargs.features=(4, 4)",
        "--config.model.kwargs.dilations=(1, 2)",
        "--config.model.kwargs.pools=(1, 1)",
    ],
    # test digits become 4-frame clips (distort_test): the run fails unless they reach
    # the 3-D model as clips
    "mnist_clips": ["--config.model.kwargs.features=(2, 2, 2)", "--config.augment.num_frames=4"],
    "cifar10_alexnet": [
        "--config.model.kwargs.widths=(4, 4, 4, 4, 4)",
        "--config.model.kwargs.hidden=8",
    ],
    "cifar10_mobilenet": ["--config.model.kwargs.blocks=((8, 1), (8, 2))"],
    "cifar10_inception": [
        "--config.model.kwargs.stem_features=4",
        "--config.model.kwargs.stages=(((2, 2, 2, 2, 2, 2),),)",
    ],
}


@pytest.mark.usefixtures("rbg_keys")
@pytest.mark.parametrize(("experiment", "tiny_model"), ZOO_EXPERIMENTS.items())
def test_experiment_trains_two_steps_on_generated_data(experiment, tiny_model, tmp_path):
    config = load_experiment(experiment, EXPERIMENTS)
    cache = f"--config.dataset.cache_dir={tmp_path / 'cache'}"
    apply_overrides(config, [*TINY_RUN, *tiny_model, cache])
    workdir = tmp_path / "run"
    with tfds.testing.mock_data(num_examples=8):
        summary = train_and_evaluate(config, workdir)
    assert summary["steps"] == 2 and summary["params"] > 0
    assert json.loads((workdir / "config.json").read_text())["model"]["name"] == config.model.name
    (record,) = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(record["train_loss"]) and np.isfinite(record["test_loss"])
    assert (workdir / "checkpoints" / "2").is_dir()
    assert (workdir / "learning_curves.png").exists()


# ---------------------------------------------------------------------------------------
# Every model: the full-model gradient check in float64
# ---------------------------------------------------------------------------------------


def test_every_registered_model_has_a_gradcheck_input():
    assert sorted(MODEL_INPUTS) == models.available()


@pytest.mark.parametrize(("name", "input_shape"), by_model(MODEL_INPUTS.items()))
def test_full_model_gradient_check_in_float64(name, input_shape):
    x = np.random.default_rng(0).normal(size=input_shape)
    report = check_model(models.get(name), x, max_entries=8)
    text = format_by_layer(report)
    assert report.passed, text
    # every parameter leaf of the model was checked
    assert {row.path for row in report.rows} == set(_param_paths(name, input_shape))


def _param_paths(name: str, input_shape: tuple[int, ...]) -> list[str]:
    params, _, _ = trace(models.get(name), input_shape)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return ["/".join(str(k.key) for k in path) for path, _ in flat]
