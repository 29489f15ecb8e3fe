"""Training: losses, schedules, augmentation, evaluation, learning, and exact resume.

The runs use scikit-learn's real 8x8 digits (``experiments/digits_lenet.py``), so they
need no download. One test runs in a subprocess with two CPU devices, so the run shards its
batches over two devices.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from short_run import SHORT_RUN, digits_config

from cnnjax import models
from cnnjax.training import (
    ConfigError,
    Interrupted,
    optim,
    tasks,
    train_and_evaluate,
)
from cnnjax.training import augment as augment_lib
from cnnjax.training.errors import NoVerifiedCheckpointError
from cnnjax.training.metrics import summarize
from cnnjax.training.signals import StopRequest
from cnnjax.training.step import Preprocess, init_state, make_eval_chunk
from cnnjax.training.tasks import Classification

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
DETERMINISTIC = ("epoch", "step", "lr", "train_loss", "train_accuracy", "test_loss",
                 "test_accuracy")  # fmt: skip


pytestmark = pytest.mark.usefixtures("compilation_cache")


# ------------------------------------------------------------------------- pieces


def test_cross_entropy_with_label_smoothing_matches_the_definition():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4)).astype(np.float32)
    labels = np.array([0, 3, 1, 1, 2])
    alpha = 0.1
    expected = []
    for z, y in zip(logits.astype(np.float64), labels, strict=True):
        log_p = z - math.log(sum(math.exp(v) for v in z))
        target = [alpha / 4 + (1 - alpha) * (k == y) for k in range(4)]
        expected.append(-sum(t * lp for t, lp in zip(target, log_p, strict=True)))
    got = tasks.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), label_smoothing=alpha)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    hits = tasks.correct(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_array_equal(hits, (logits.argmax(1) == labels).astype(int))


def schedule_config(name: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "optimizer": {"lr": 0.5},
            "schedule": {"name": name, "init_lr_fraction": 0.1, "final_lr_fraction": 0.01},
        }
    )


@pytest.mark.parametrize(
    ("name", "points"),
    [
        ("constant", {0: 0.5, 37: 0.5, 99: 0.5}),
        ("warmup", {0: 0.05, 10: 0.05 + 0.45 / 2, 20: 0.5, 99: 0.5}),
        # warm-up to the peak, then cosine from 0.5 to 0.005 over the remaining 80 steps
        ("cosine", {0: 0.05, 20: 0.5, 60: 0.005 + 0.495 / 2, 100: 0.005}),
        # cosine ramp 0.05 -> 0.5 over 20 steps, cosine down to 0.005 at step 100
        ("onecycle", {0: 0.05, 10: 0.05 + 0.45 / 2, 20: 0.5, 60: 0.005 + 0.495 / 2, 100: 0.005}),
    ],
)
def test_schedules(name, points):
    schedule = optim.make_schedule(schedule_config(name), total_steps=100, warmup_steps=20)
    for step, lr in points.items():
        assert float(schedule(step)) == pytest.approx(lr, rel=1e-4), step


def test_warmup_longer_than_the_run_is_an_error():
    with pytest.raises(ValueError, match="warm-up"):
        optim.make_schedule(schedule_config("cosine"), total_steps=10, warmup_steps=10)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_weight_decay_shrinks_kernels_but_not_biases(name):
    config = ml_collections.ConfigDict(
        {
            "optimizer": {
                "name": name, "lr": 0.1, "b1": 0.9, "b2": 0.999, "eps": 1e-8,
                "momentum": 0.9, "nesterov": False, "weight_decay": 0.5,
            }
        }
    )  # fmt: skip
    tx = optim.make_optimizer(config, optax.constant_schedule(0.1))
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    assert np.all(np.asarray(updates["kernel"]) < 0)  # pulled towards zero
    np.testing.assert_array_equal(updates["bias"], 0.0)


def _shift_reference(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``image`` moved down by dy and right by dx, zeros entering: plain loops."""
    h, w, c = image.shape
    out = np.zeros_like(image)
    for i in range(h):
        for j in range(w):
            if 0 <= i - dy < h and 0 <= j - dx < w:
                out[i, j] = image[i - dy, j - dx]
    return out


def test_random_shift_moves_each_image_by_at_most_max_shift():
    x = np.random.default_rng(1).uniform(0.1, 1, size=(6, 5, 5, 1)).astype(np.float32)
    config = ml_collections.ConfigDict({"augment": {"name": "random_shift", "max_shift": 1}})
    out = np.asarray(augment_lib.make_augment(config)(jax.random.key(0), jnp.asarray(x)))
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    used = []
    for image, shifted in zip(x, out, strict=True):
        matches = [s for s in shifts if np.array_equal(shifted, _shift_reference(image, *s))]
        assert len(matches) == 1
        used.append(matches[0])
    assert len(set(used)) > 1  # independent per image


def test_preprocess_pads_then_normalises():
    images = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3, 1) * 20
    got = np.asarray(Preprocess(mean=0.25, std=0.5, pad=1)(jnp.asarray(images)))
    assert got.shape == (2, 4, 5, 1)
    np.testing.assert_allclose(got[:, 0, :, 0], (0 - 0.25) / 0.5)  # padding is black
    np.testing.assert_allclose(got[:, 1:3, 1:4], (images / 255 - 0.25) / 0.5, atol=1e-6)


def test_evaluation_counts_each_example_once_and_ignores_padding():
    model = models.get("lenet5", num_classes=10)
    pre = Preprocess(mean=0.5, std=0.5, pad=4)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    tx = optax.sgd(0.1)
    state = init_state(model, tx, jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
    rng = np.random.default_rng(2)
    n, padded = 13, 16  # 13 real examples, padded to two batches of 8
    images = np.zeros((padded, 8, 8, 1), np.uint8)
    images[:n] = rng.integers(0, 256, (n, 8, 8, 1))
    labels = np.zeros(padded, np.int32)
    labels[:n] = rng.integers(0, 10, n)
    evaluate = make_eval_chunk(
        model,
        task=Classification(),
        preprocess=pre,
        eval_batch_size=8,
        batch_sharding=NamedSharding(mesh, P("data")),
    )
    sums = jax.device_get(evaluate(state, images.reshape(2, 8, 8, 8, 1), labels.reshape(2, 8), n))
    forward = jax.jit(lambda variables, x: model.apply(variables, pre(x)))
    logits = np.asarray(forward(state.variables(), images[:n]), np.float64)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert int(sums["count"]) == n
    assert int(sums["metric"]) == int((logits.argmax(1) == labels[:n]).sum())
    assert float(sums["loss"]) == pytest.approx(-log_p[np.arange(n), labels[:n]].sum(), rel=1e-4)


def test_summary_from_records():
    def record(epoch, acc, elapsed, images, seconds):
        return {
            "epoch": epoch, "step": 10 * epoch, "test_accuracy": acc, "test_loss": 0.1,
            "elapsed_seconds": elapsed, "steady_images": images, "steady_seconds": seconds,
        }  # fmt: skip

    records = [record(1, 0.9, 5.0, 100, 1.0), record(2, 0.97, 6.0, 300, 1.0),
               record(3, 0.96, 7.0, 300, 2.0)]  # fmt: skip
    s = summarize(records, experiment="x", params=7, target=0.95)
    assert (s["epochs"], s["steps"], s["params"]) == (3, 30, 7)
    assert s["final_test_accuracy"] == 0.96 and s["best_test_accuracy"] == 0.97
    assert s["best_epoch"] == 2
    assert s["seconds_to_target"] == 6.0  # first epoch at or above 0.95
    assert s["train_images_per_second"] == pytest.approx(700 / 4.0)
    assert s["train_seconds"] == 7.0
    assert summarize(records, experiment="x", params=7, target=0.99)["seconds_to_target"] is None


def test_stop_request_catches_sigterm_and_restores_the_handler():
    import os
    import signal

    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before


# ------------------------------------------------------------------------- runs


def test_lenet5_learns_real_handwritten_digits(tmp_path):
    """digits_lenet as shipped: LeNet-5 on 1,437 real 8x8 digits, tested on 360 others
    (written by other people). It reaches about 93 %; we require 90 %."""
    summary = train_and_evaluate(digits_config(), tmp_path)
    assert summary["final_test_accuracy"] >= 0.90
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["train_loss"] < records[0]["train_loss"] / 4


def _final_params(workdir: Path) -> list[np.ndarray]:
    manager = ocp.CheckpointManager(workdir.absolute() / "checkpoints", item_names=("state",))
    step = manager.latest_step()
    abstract = manager.item_metadata(step).state
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(
                jax.tree.map(
                    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=_one_device()),
                    abstract,
                )
            )
        ),
    )
    manager.close()
    return [np.asarray(leaf) for leaf in jax.tree.leaves(restored.state)]


def _one_device():
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])


def _records(workdir: Path) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: json.loads(line)[k] for k in DETERMINISTIC} for line in lines]


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory) -> Path:
    """The short run without interruption, one step per call."""
    workdir = tmp_path_factory.mktemp("whole")
    train_and_evaluate(digits_config(*SHORT_RUN), workdir)
    return workdir


def _assert_same_run(a: Path, b: Path) -> None:
    assert _records(a) == _records(b)
    for x, y in zip(_final_params(a), _final_params(b), strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)


def test_stopped_and_resumed_run_equals_an_uninterrupted_one_bitwise(whole_run, tmp_path):
    with pytest.raises(Interrupted) as e:
        train_and_evaluate(digits_config(*SHORT_RUN), tmp_path, stop_at_step=26)
    assert e.value.step == 26
    assert len(_records(tmp_path)) == 1  # epoch 1 finished before the stop
    summary = train_and_evaluate(digits_config(*SHORT_RUN), tmp_path)
    assert summary["steps"] == 30 and summary["epochs"] == 2
    _assert_same_run(whole_run, tmp_path)


def _flip_a_byte_of_every_array(checkpoint: Path) -> None:
    """Flips one byte in the middle of each data file of ``checkpoint``'s state."""
    for path in (checkpoint / "state" / "ocdbt.process_0" / "d").iterdir():
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))


# After a failed read, orbax's reader leaves futures behind whose collection Python reports
# as "Exception ignored in: None", at some later point in the process.
ORBAX_READ_ERRORS = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@ORBAX_READ_ERRORS
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_one_before_resumed(
    whole_run, tmp_path, capsys
):
    """A flipped byte in the last checkpoint (step 30) of a finished run: the relaunch
    reports it in one line, moves it to set_aside/, resumes from step 22 and ends with
    the uninterrupted run's metrics and parameters, bitwise."""
    train_and_evaluate(digits_config(*SHORT_RUN), tmp_path)
    _flip_a_byte_of_every_array(tmp_path / "checkpoints" / "30")
    capsys.readouterr()
    train_and_evaluate(digits_config(*SHORT_RUN), tmp_path)
    out, err = capsys.readouterr()
    [line] = [x for x in err.splitlines() if x.startswith("Checkpoint 30 in")]
    assert "set aside as" in line and (tmp_path / "set_aside" / "checkpoint-30").is_dir()
    assert "Resumed from checkpoint at step 22" in out
    _assert_same_run(whole_run, tmp_path)


@ORBAX_READ_ERRORS
def test_when_no_checkpoint_verifies_only_restart_starts_afresh(whole_run, tmp_path):
    train_and_evaluate(digits_config(*SHORT_RUN), tmp_path)
    for step in (22, 30):
        _flip_a_byte_of_every_array(tmp_path / "checkpoints" / str(step))
    with pytest.raises(NoVerifiedCheckpointError, match="--restart"):
        train_and_evaluate(digits_config(*SHORT_RUN), tmp_path)
    train_and_evaluate(digits_config(*SHORT_RUN), tmp_path, restart=True)
    _assert_same_run(whole_run, tmp_path)
    [before] = (tmp_path / "set_aside").glob("run-*")  # the earlier run's files, kept
    assert {"config.json", "metrics.jsonl", "checkpoints"} <= {p.name for p in before.iterdir()}
    assert (tmp_path / "set_aside" / "checkpoint-22").is_dir()


def test_fused_steps_equal_single_steps_bitwise(whole_run, tmp_path):
    # 4 steps per call: chunks of 4, and remainders of 2 at both epoch ends
    train_and_evaluate(digits_config(*SHORT_RUN, "--config.steps_per_call=4"), tmp_path)
    _assert_same_run(whole_run, tmp_path)


def test_microbatches_give_the_same_training_up_to_rounding(whole_run, tmp_path):
    """The gradient averaged over 4 interleaved parts of each batch (computed
    independently) is the batch's gradient: the same run, float rounding aside."""
    train_and_evaluate(digits_config(*SHORT_RUN, "--config.microbatches=4"), tmp_path)
    for a, b in zip(_records(whole_run), _records(tmp_path), strict=True):
        for key, value in a.items():
            assert b[key] == pytest.approx(value, rel=1e-3, abs=1e-6), key
    for x, y in zip(_final_params(whole_run), _final_params(tmp_path), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5)


def test_batch_must_split_into_the_microbatches(tmp_path):
    config = digits_config(*SHORT_RUN, "--config.microbatches=3")
    with pytest.raises(ConfigError, match=r"batch_size=64 must be a multiple .* microbatches"):
        train_and_evaluate(config, tmp_path)


def test_training_sharded_over_two_devices_matches_one_device(tmp_path):
    """A short digits_lenet run with the batch split over two CPU devices (a subprocess,
    since the device count is fixed when JAX starts) reaches the same losses as on one."""
    overrides = [
        "--config.total_epochs=None",
        "--config.total_steps=12",
        "--config.schedule.warmup_epochs=None",
        "--config.schedule.warmup_steps=4",
    ]
    one = tmp_path / "one"
    train_and_evaluate(digits_config(*overrides), one)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    two = tmp_path / "two"
    result = subprocess.run(
        [sys.executable, str(EXPERIMENTS.parent / "launch.py"), "--exp", "digits_lenet",
         "--workdir", str(two), *overrides],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 cpu device(s)" in result.stdout
    a, b = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert a["steps"] == b["steps"] == 12
    assert b["final_test_loss"] == pytest.approx(a["final_test_loss"], rel=1e-3)
