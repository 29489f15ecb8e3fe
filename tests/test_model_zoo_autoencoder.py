"""The convolutional autoencoder and the reconstruction task: counts by hand, the loss and
PSNR against their definitions, learning on real digits, and the experiment's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from zoo_helpers import TINY_RUN, conv, count, trace

from cnnjax import models
from cnnjax.training import apply_overrides, load_experiment, train_and_evaluate
from cnnjax.training.config import ConfigError
from cnnjax.training.data import sklearn_digits
from cnnjax.training.tasks import Classification, Reconstruction

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def test_autoencoder_parameters_and_shapes_by_hand():
    params, out, shapes = trace(models.get("conv_autoencoder"), (2, 28, 28, 1))
    counts = {k: count(v) for k, v in params.items()}
    # 3x3 kernels: conv c_in -> c_out has 9 c_in c_out + c_out; a transposed conv the same
    # with its own c_in and c_out.
    assert counts == {
        "enc1": conv(3, 1, 32),
        "enc2": conv(3, 32, 64),
        "code": conv(3, 64, 8),
        "dec1": conv(3, 8, 64),
        "dec2": conv(3, 64, 32),
        "out": conv(3, 32, 1),
    }
    assert sum(counts.values()) == 46_857
    assert shapes == {
        "enc1": (14, 14, 32),
        "enc2": (7, 7, 64),
        "code": (7, 7, 8),
        "dec1": (14, 14, 64),
        "dec2": (14, 14, 32),
        "out": (28, 28, 1),
    }
    assert out.shape == (2, 28, 28, 1)


@pytest.mark.parametrize(
    ("kwargs", "shape", "message"),
    [
        ({"latent": 0}, (1, 8, 8, 1), "latent"),
        ({"widths": (8,)}, (1, 8, 8, 1), "widths"),
        ({}, (1, 10, 8, 1), "multiples of 4"),
    ],
)
def test_autoencoder_rejects_bad_arguments(kwargs, shape, message):
    with pytest.raises(ValueError, match=message):
        model = models.get("conv_autoencoder", **kwargs)
        model.init(jax.random.key(0), jnp.zeros(shape))


def test_reconstruction_loss_and_psnr_follow_their_definitions():
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(3, 4, 4, 2))
    outputs = inputs + rng.normal(scale=[[[[0.1]]], [[[0.3]]], [[[0.0]]]], size=inputs.shape)
    std = 0.3081
    task = Reconstruction(std=std)
    loss, psnr = task.evaluate(jnp.asarray(outputs), jnp.asarray(inputs), jnp.zeros(3, int))
    for n in range(3):
        mse = np.mean((outputs[n] - inputs[n]) ** 2)
        assert loss[n] == pytest.approx(mse, rel=1e-5)
        if mse > 0:
            # on the [0, 1] scale the error is std times the normalised one; peak 1
            assert psnr[n] == pytest.approx(10 * np.log10(1.0 / (mse * std**2)), rel=1e-5)
    assert psnr[2] == pytest.approx(100.0)  # an exact reconstruction: the 1e-10 floor


def test_tasks_check_the_models_output_shape():
    Reconstruction(std=1.0).check_outputs((2, 8, 8, 1), (2, 8, 8, 1), classes=10)
    with pytest.raises(ConfigError, match="input's shape"):
        Reconstruction(std=1.0).check_outputs((2, 10), (2, 8, 8, 1), classes=10)
    with pytest.raises(ConfigError, match="num_classes=10"):
        Classification().check_outputs((2, 8, 8, 1), (2, 8, 8, 1), classes=10)


def _digits_autoencoder(tmp_path: Path, epochs: int):
    config = load_experiment("mnist_autoencoder", EXPERIMENTS)
    apply_overrides(
        config,
        [
            "--config.dataset.name=sklearn_digits",
            "--config.dataset.mean=0.3",
            "--config.dataset.std=0.4",
            "--config.model.kwargs.widths=(16, 16)",
            "--config.model.kwargs.latent=4",
            "--config.batch_size=32",
            "--config.eval_batch_size=120",
            "--config.optimizer.base_lr=0.01",
            f"--config.total_epochs={epochs}",
            "--config.schedule.warmup_epochs=1.0",
            "--config.checkpoint.async_save=False",
        ],
    )
    return train_and_evaluate(config, tmp_path / "run")


def test_autoencoder_learns_real_digits(tmp_path):
    """On scikit-learn's real 8x8 digits (4x4x4 code, a quarter of the pixels), 8 epochs
    reconstruct the test digits better than the best constant image, the per-pixel mean
    of the training digits (which is what an untrained decoder can at most learn fast)."""
    summary = _digits_autoencoder(tmp_path, epochs=8)
    data = sklearn_digits()
    train = data.train.images.astype(np.float64) / 255.0
    test = data.test.images.astype(np.float64) / 255.0
    mean_image_mse = np.mean((test - train.mean(0)) ** 2, axis=(1, 2, 3))
    mean_image_psnr = np.mean(10 * np.log10(1.0 / mean_image_mse))
    assert summary["metric"] == "psnr" and summary["final_test_accuracy"] is None
    assert summary["final_test_psnr"] > mean_image_psnr + 3.0, (summary, mean_image_psnr)
    with Image.open(tmp_path / "run" / "reconstructions.png") as grid:
        assert grid.size[0] > grid.size[1]  # 8 columns, 2 rows


def test_autoencoder_experiment_writes_its_outputs(tmp_path):
    config = load_experiment("mnist_autoencoder", EXPERIMENTS)
    apply_overrides(
        config,
        [
            *TINY_RUN,
            "--config.model.kwargs.widths=(4, 4)",
            f"--config.dataset.cache_dir={tmp_path / 'cache'}",
        ],
    )
    workdir = tmp_path / "run"
    with tfds.testing.mock_data(num_examples=8):
        summary = train_and_evaluate(config, workdir)
    (record,) = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(record["train_psnr"]) and np.isfinite(record["test_psnr"])
    assert "test_accuracy" not in record
    saved = json.loads((workdir / "summary.json").read_text())
    assert saved["final_test_psnr"] == summary["final_test_psnr"] == record["test_psnr"]
    assert saved["target_psnr"] == 20.0
    for name in ("reconstructions.png", "learning_curves.png", "checkpoints/2"):
        assert (workdir / name).exists(), name
