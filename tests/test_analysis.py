"""cnnjax.analysis: layer table against hand counts, pictures, model gradcheck, launch flags.

Every expected number below is worked out by hand from the layer definitions, with the
arithmetic written next to it.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest
import tensorflow_datasets as tfds
from launcher import launch

from cnnjax import layers, models
from cnnjax.analysis import (
    by_layer,
    check_model,
    format_by_layer,
    format_table,
    layer_rows,
    write_pictures,
)
from cnnjax.training.errors import DatasetUnavailableError, GradcheckFailedError

ROOT = Path(__file__).resolve().parents[1]


def _table(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple]:
    """``name -> (output shape, params, FLOPs, receptive field, jump)``; the model's row
    under ``"total"``. A receptive field or jump equal in every dim is given as one int."""

    def one(values):
        if values is None:
            return None
        return values[0] if len(set(values)) == 1 else tuple(values)  # Fraction(5) == 5

    rows = layer_rows(model, input_shape)
    table = {
        "/".join(row.path) or "total": (
            row.output_shape,
            row.params,
            row.flops,
            one(row.receptive_field),
            one(row.jump),
        )
        for row in rows
    }
    assert rows[-1].path == () and len(table) == len(rows)
    return table


# ---------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------


def test_lenet5_table_matches_hand_counts():
    table = _table(models.get("lenet5"), (1, 28, 28, 1))
    # Receptive field r and jump j (input pixels): r' = r + (k - 1) j, j' = j s; dense
    # on a flattened n x n map: r' = r + (n - 1) j, no jump.
    assert table == {
        # conv1 is a ConvMaxPool: the 5x5 SAME conv at 28x28 positions, 2 * 28*28 * 5*5*1*6
        # FLOPs (the pool has no multiply-adds); r = 1 + 4*1 = 5 after the conv, then
        # 5 + 1*1 = 6 after the 2x2/2 pool, j = 1*2 = 2.
        "conv1": ((14, 14, 6), 5 * 5 * 1 * 6 + 6, 2 * 28 * 28 * 5 * 5 * 1 * 6, 6, 2),
        # 5x5 VALID conv at 10x10 positions; r = 6 + 4*2 = 14, then 14 + 1*2 = 16, j = 4.
        "conv2": ((5, 5, 16), 5 * 5 * 6 * 16 + 16, 2 * 10 * 10 * 5 * 5 * 6 * 16, 16, 4),
        # Flattened 5x5 map: r = 16 + 4*4 = 32.
        "dense1": ((120,), 400 * 120 + 120, 2 * 400 * 120, 32, None),
        "dense2": ((84,), 120 * 84 + 84, 2 * 120 * 84, 32, None),
        "logits": ((10,), 84 * 10 + 10, 2 * 84 * 10, 32, None),
        # 235,200 + 480,000 + 96,000 + 20,160 + 1,680.
        "total": ((10,), 61_706, 833_040, 32, None),
    }
    assert 156 + 2_416 + 48_120 + 10_164 + 850 == 61_706


class KerasBookCNN(nn.Module):
    """Chollet, Deep Learning with Python, 5.1: the MNIST convnet, from cnnjax.layers."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(layers.Conv(32, 3, padding="VALID", name="conv1")(x))
        x = layers.MaxPool(2, name="pool1")(x)
        x = nn.relu(layers.Conv(64, 3, padding="VALID", name="conv2")(x))
        x = layers.MaxPool(2, name="pool2")(x)
        x = nn.relu(layers.Conv(64, 3, padding="VALID", name="conv3")(x))
        x = nn.relu(nn.Dense(64, name="dense1")(x.reshape(x.shape[0], -1)))
        return nn.Dense(10, name="logits")(x)


def test_keras_book_cnn_table_matches_the_book():
    table = _table(KerasBookCNN(), (1, 28, 28, 1))
    assert table == {
        # The book's model.summary(): 320 / 18,496 / 36,928 / 36,928 / 650 params.
        "conv1": ((26, 26, 32), 3 * 3 * 1 * 32 + 32, 2 * 26 * 26 * 3 * 3 * 1 * 32, 3, 1),
        "pool1": ((13, 13, 32), 0, 0, 3 + 1, 2),
        "conv2": ((11, 11, 64), 3 * 3 * 32 * 64 + 64, 2 * 11 * 11 * 3 * 3 * 32 * 64, 4 + 2 * 2, 2),
        "pool2": ((5, 5, 64), 0, 0, 8 + 1 * 2, 4),  # 11 // 2 = 5
        "conv3": ((3, 3, 64), 3 * 3 * 64 * 64 + 64, 2 * 3 * 3 * 3 * 3 * 64 * 64, 10 + 2 * 4, 4),
        "dense1": ((64,), 576 * 64 + 64, 2 * 576 * 64, 18 + 2 * 4, None),
        "logits": ((10,), 64 * 10 + 10, 2 * 64 * 10, 26, None),
        "total": ((10,), 93_322, 5_588_480, 26, None),
    }
    assert [table[name][1] for name in ("conv1", "conv2", "conv3", "dense1", "logits")] == [
        320,
        18_496,
        36_928,
        36_928,
        650,
    ]
    assert 389_376 + 4_460_544 + 663_552 + 73_728 + 1_280 == 5_588_480


class Variants(nn.Module):
    """One of every conv variant, behind a strided stem and an Inception block."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(layers.Conv(8, 3, stride=2, name="stem")(x))  # 16x16x3 -> 8x8x8
        x = layers.Inception(4, 2, 4, 2, 4, 4, name="inception")(x)  # -> 8x8x16
        x = layers.SeparableConv(8, 3, dilation=2, name="separable")(x)
        x = layers.DeformableConv(8, 3, name="deformable")(x)
        x = layers.SpatiallySeparableConv(8, (3, 5), stride=2, name="spatial")(x)  # -> 4x4
        x = layers.ConvTranspose(4, 4, stride=2, padding=1, name="up")(x)  # -> 8x8x4
        x = layers.DepthwiseConv(3, multiplier=2, name="depthwise")(x)  # -> 8x8x8
        x = layers.GlobalAvgPool(name="gap")(x)
        return nn.Dense(10, name="head")(x)


def test_conv_variants_flops_and_receptive_fields_by_hand():
    t = _table(Variants(), (2, 16, 16, 3))
    # stem: 3x3 stride 2 -> r 3, j 2; 8x8 = 64 positions.
    assert t["stem"] == ((8, 8, 8), 3 * 3 * 3 * 8 + 8, 2 * 64 * 3 * 3 * 3 * 8, 3, 2)
    # Inception: branches 1x1 (r 3), 1x1->3x3 (3 + 2*2 = 7), 1x1->5x5 (3 + 4*2 = 11),
    # 3x3 pool->1x1 (7): the block takes the widest, 11.
    assert t["inception/b5_5x5"][3:] == (11, 2)
    assert t["inception/pool_proj_1x1"][3:] == (7, 2)
    inception_flops = 2 * 64 * (8 * 4 + 8 * 2 + 9 * 2 * 4 + 8 * 2 + 25 * 2 * 4 + 8 * 4)
    assert t["inception"][2:] == (inception_flops, 11, 2)
    # Separable 3x3, dilation 2 (extent 5): depthwise 3*3*16 + pointwise 16*8 weights at
    # 64 positions; r = 11 + 4*2 = 19.
    assert t["separable"][2:] == (2 * 64 * (3 * 3 * 16 + 16 * 8), 19, 2)
    # Deformable v2 3x3, 8 -> 8 channels: conv 2*64*(9*8*8), plus sampling 9 taps * 8
    # channels * (4 bilinear corners + 1 mask) per position; its offset_conv predicts
    # 9*2 offsets + 9 mask logits: 2*64*(9*8*27). r = 19 + 2*2 = 23.
    offset_conv = 2 * 64 * (3 * 3 * 8 * 27)
    assert t["deformable/offset_conv"][1:3] == (3 * 3 * 8 * 27 + 27, offset_conv)
    assert t["deformable"][2:] == (2 * 64 * (9 * 8 * 8 + 9 * 8 * 5) + offset_conv, 23, 2)
    # Spatially separable (3, 5), stride 2: 3x1 pass at 4 x 8 positions (H strided, W
    # not), 1x5 pass at 4 x 4; r = 23 + 2*2 = 27 (H), 23 + 4*2 = 31 (W); j = 4.
    assert t["spatial"][2:] == (2 * (4 * 8 * 3 * 8 * 8 + 4 * 4 * 5 * 8 * 8), (27, 31), 4)
    # Transposed 4x4, stride 2: every one of the 4x4 input positions through all 4*4*4*8
    # weights; an output reads inputs at most floor(3 / 2) = 1 step apart:
    # r = 27 + 1*4, 31 + 1*4; j = 4 / 2.
    assert t["up"] == ((8, 8, 4), 4 * 4 * 4 * 8 + 4, 2 * 16 * 4 * 4 * 4 * 8, (31, 35), 2)
    # Depthwise 3x3, multiplier 2: 9 weights per output channel: r = 31 + 2*2, 35 + 2*2.
    assert t["depthwise"][2:] == (2 * 64 * 9 * 8, (35, 39), 2)
    # Global pooling over the 8x8 map: r = 35 + 7*2, 39 + 7*2, no jump.
    assert t["gap"][2:] == (0, (49, 53), None)
    assert t["total"][1] == sum(v[1] for k, v in t.items() if k != "total" and "/" not in k)
    assert t["total"][2] == sum(v[2] for k, v in t.items() if k != "total" and "/" not in k)


class Upsampler(nn.Module):
    third: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = layers.Conv(2, 1, name="mix")(x)
        x = layers.ConvTranspose(2, 2, stride=2, name="up2")(x)
        if self.third:
            x = layers.ConvTranspose(1, 3, stride=2, padding=1, output_padding=1, name="up3")(x)
        return x


def test_transposed_convs_divide_the_jump():
    t = _table(Upsampler(), (1, 4, 4, 1))
    assert t["mix"][3:] == (1, 1)
    # 2 taps, stride 2: each output reads one input: r stays 1, j = 1 / 2.
    assert t["up2"] == ((8, 8, 2), 2 * 2 * 2 * 2 + 2, 2 * 16 * 2 * 2 * 2 * 2, 1, Fraction(1, 2))
    # 3 taps, stride 2: an output reads inputs at most floor(2 / 2) = 1 step apart:
    # r = 1 + 1 * 1/2, j = 1/2 / 2.
    assert t["up3"][3:] == (Fraction(3, 2), Fraction(1, 4))
    assert t["total"][3:] == (Fraction(3, 2), Fraction(1, 4))
    # Without up3 the model's widest calls tie (r = 1): its output, up2, is the one.
    assert _table(Upsampler(third=False), (1, 4, 4, 1))["total"][3:] == (1, Fraction(1, 2))


def test_dilated_stack_on_rows_restarts_the_receptive_field():
    class RowsTCN(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = x.reshape(x.shape[0], 28, 28)  # the rows of an image as a sequence
            for i, rate in enumerate((1, 2, 4)):
                x = nn.relu(layers.Conv(8, 3, dilation=rate, name=f"conv{i}")(x))
            return nn.Dense(10, name="head")(x.reshape(x.shape[0], -1))

    t = _table(RowsTCN(), (1, 28, 28, 1))
    # Counted in rows: 1 + 2*1 = 3, 3 + 2*2 = 7, 7 + 2*4 = 15; the dense layer sees all
    # 28 rows: 15 + 27*1 = 42.
    assert [t[k][3] for k in ("conv0", "conv1", "conv2", "head")] == [3, 7, 15, 42]
    assert t["conv0"][2] == 2 * 28 * 3 * 28 * 8


def test_format_table_lists_every_layer_and_the_totals():
    text = format_table(layer_rows(models.get("lenet5"), (1, 28, 28, 1)))
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "type", "output", "shape", "params", "FLOPs", "RF", "jump"]
    assert [line.split()[0] for line in lines[2:7]] == [
        "conv1", "conv2", "dense1", "dense2", "logits"
    ]  # fmt: skip
    assert lines[8].split() == ["LeNet5", "total", "(10,)", "61,706", "833,040", "32", "-"]
    assert "FLOPs = 2 x multiply-adds" in text


# ---------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------


def test_pictures_of_lenet5(tmp_path):
    model = models.get("lenet5")
    image = jnp.asarray(np.random.default_rng(0).normal(size=(1, 28, 28, 1)), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), image)
    paths = write_pictures(model, variables, image, tmp_path / "pics")
    names = ["input.png", "filters.png", "feature_maps_conv1.png", "feature_maps_conv2.png"]
    assert [p.name for p in paths] == names
    # Tiles are enlarged by 96 // (largest side) and laid out ceil(sqrt(n)) wide with 2
    # white pixels around and between them.
    sizes = {
        "input.png": (84 + 4, 84 + 4),  # one 28x28 tile x3
        "filters.png": (2 * 95 + 3 * 2, 3 * 95 + 4 * 2),  # 6 filters 5x5 x19: 2 rows of 3
        "feature_maps_conv1.png": (2 * 84 + 6, 3 * 84 + 8),  # 6 pooled maps 14x14 x6
        "feature_maps_conv2.png": (4 * 95 + 10, 4 * 95 + 10),  # 16 maps 5x5 x19: 4 by 4
    }
    pictures = {name: matplotlib.image.imread(tmp_path / "pics" / name) for name in names}
    assert {name: p.shape[:2] for name, p in pictures.items()} == sizes
    assert all(p.std() > 0.05 for p in pictures.values())  # not blank

    # Filter o sits at row o // 3, column o % 3; tap (i, j) covers a 19x19 block whose
    # gray level is the weight scaled to the filter's own min..max.
    kernel = np.asarray(variables["params"]["conv1"]["kernel"])[:, :, 0, :]
    for o in range(6):
        top, left = 2 + (o // 3) * 97, 2 + (o % 3) * 97
        w = kernel[..., o]
        expected = (w - w.min()) / (w.max() - w.min())
        centres = pictures["filters.png"][top + 9 : top + 95 : 19, left + 9 : left + 95 : 19, 0]
        np.testing.assert_allclose(centres, expected, atol=2 / 255)  # 256 gray levels


def test_pictures_need_one_image_and_a_convolution(tmp_path):
    model = models.get("lenet5")
    two = jnp.zeros((2, 28, 28, 1))
    variables = jax.eval_shape(model.init, jax.random.key(0, impl="rbg"), two)
    with pytest.raises(ValueError, match=r"one example .* got shape \(2, 28, 28, 1\)"):
        write_pictures(model, variables, two, tmp_path)

    class Mlp(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            return nn.Dense(3)(x.reshape(x.shape[0], -1))

    x = jnp.zeros((1, 4, 4, 1))
    with pytest.raises(ValueError, match="Mlp calls no convolution"):
        write_pictures(Mlp(), jax.jit(Mlp().init)(jax.random.key(0, impl="rbg"), x), x, tmp_path)


# ---------------------------------------------------------------------------------------
# Model gradient check
# ---------------------------------------------------------------------------------------


def test_model_gradcheck_passes_on_lenet5():
    x = np.random.default_rng(0).normal(size=(2, 28, 28, 1))
    report = check_model(models.get("lenet5"), x, np.array([3, 7]), max_entries=16)
    text = format_by_layer(report)
    assert report.passed, text
    assert list(by_layer(report)) == ["conv1", "conv2", "dense1", "dense2", "logits"]
    assert [row.path for row in report.rows[:2]] == ["conv1/kernel", "conv1/bias"]
    assert report.rows[0].checked == 16 and report.rows[1].checked == 6  # sampled / all
    assert "PASS: 10 parameter leaves in 5 layers" in text


class Deformable(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(layers.Conv(4, 3, name="conv")(x))
        x = layers.DeformableConv(4, 3, name="deform")(x)
        return nn.Dense(3, name="head")(layers.GlobalAvgPool(name="gap")(x))


def test_model_gradcheck_of_deformable_conv_needs_the_jitter():
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 1))
    report = check_model(Deformable(), x, max_entries=8)
    assert report.passed, format_by_layer(report)
    # Unjittered, offset_conv's zero weights put every sample on the integer grid, where
    # bilinear interpolation has kinks: its central differences average two slopes.
    report = check_model(Deformable(), x, max_entries=8, jitter=0.0)
    failed = {layer for layer, rows in by_layer(report).items() if not all(r.passed for r in rows)}
    assert failed == {"deform/offset_conv"}


@jax.custom_vjp
def _matmul_wrong_vjp(x, w):
    return x @ w


def _matmul_fwd(x, w):
    return x @ w, (x, w)


def _matmul_bwd(residuals, g):
    x, w = residuals
    return g @ w.T, 2 * (x.T @ g)  # the kernel's cotangent is twice the truth


_matmul_wrong_vjp.defvjp(_matmul_fwd, _matmul_bwd)


class WrongVjpDense(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        w = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
        return _matmul_wrong_vjp(x, w)


class WithWrongLayer(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(layers.Conv(4, 3, name="conv")(x))
        x = layers.MaxPool(2, name="pool")(x)
        x = nn.relu(WrongVjpDense(8, name="wrong")(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes, name="head")(x)


def test_model_gradcheck_fails_on_the_layer_with_a_wrong_vjp():
    report = check_model(WithWrongLayer(), np.random.default_rng(1).normal(size=(2, 8, 8, 1)))
    status = {layer: all(r.passed for r in rows) for layer, rows in by_layer(report).items()}
    # The wrong VJP scales only the kernel's cotangent; the input's is right, so the
    # layers before it still check.
    assert status == {"conv": True, "wrong": False, "head": True}
    assert format_by_layer(report).splitlines()[-1].startswith("FAIL: 1 of 3 layers")


# ---------------------------------------------------------------------------------------
# launch.py --summary / --visualize / --gradcheck
# ---------------------------------------------------------------------------------------


def test_launch_tools_on_generated_data(tmp_path, capsys):
    workdir = tmp_path / "run"
    argv = ["--exp", "mnist_lenet", "--workdir", str(workdir),
            f"--config.dataset.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    with tfds.testing.mock_data(num_examples=4):
        status = launch.main([*argv, "--summary", "--visualize", "--gradcheck"])
    out = capsys.readouterr().out
    assert status == 0, out
    total = next(line for line in out.splitlines() if line.startswith("LeNet5"))
    assert total.split() == ["LeNet5", "total", "(10,)", "61,706", "833,040", "32", "-"]
    assert "PASS: 10 parameter leaves in 5 layers" in out
    pictures = ["input.png", "filters.png", "feature_maps_conv1.png", "feature_maps_conv2.png"]
    assert sorted(p.name for p in workdir.iterdir()) == sorted(pictures)  # and nothing else
    assert all((workdir / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pictures)


def test_launch_gradcheck_failure_has_its_exit_status(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
    models.register("with_wrong_layer")(WithWrongLayer)
    argv = ["--exp", "mnist_lenet", "--gradcheck", "--config.model.name=with_wrong_layer",
            f"--config.dataset.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    with tfds.testing.mock_data(num_examples=4):
        assert launch.main(argv) == launch.EXIT_CODES[GradcheckFailedError]
    assert "FAIL: 1 of 3 layers above tolerance" in capsys.readouterr().out


def test_launch_visualize_without_data_says_so(tmp_path, capsys):
    empty = tmp_path / "tfds"
    empty.mkdir()
    argv = ["--exp", "mnist_lenet", "--visualize", "--workdir", str(tmp_path / "run"),
            "--data_dir", str(empty), f"--config.dataset.cache_dir={tmp_path / 'cache'}",
            "--config.dataset.download=False"]  # fmt: skip
    assert launch.main(argv) == launch.EXIT_CODES[DatasetUnavailableError]
    err = capsys.readouterr().err
    assert "is not prepared in" in err and "TFDS_DATA_DIR" in err
    assert not (tmp_path / "run").exists()
