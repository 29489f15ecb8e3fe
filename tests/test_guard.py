"""The divergence guard: a non-finite step stops the run (nothing non-finite is saved) or,
with ``on_nonfinite="skip_step"``, is skipped and counted; seeds trained together are
guarded one by one."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from short_run import SHORT_RUN, digits_config

from cnnjax import models
from cnnjax.training import Interrupted, train_and_evaluate
from cnnjax.training.errors import DivergedError
from cnnjax.training.step import Preprocess, init_state, make_train_chunk, make_train_step
from cnnjax.training.tasks import Classification
from cnnjax.training.trainer import _raise_if_diverged

# Checkpoints after steps 22 (the end of epoch 1) and 30.
EXPLODING = "--config.optimizer.base_lr=1e30"

pytestmark = pytest.mark.usefixtures("compilation_cache")


def _config(*overrides: str):
    return digits_config(*SHORT_RUN, *overrides)


def _steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_divergence_stops_naming_the_step_and_the_last_good_checkpoint(tmp_path):
    with pytest.raises(Interrupted):
        train_and_evaluate(_config(), tmp_path, stop_at_step=5)
    with pytest.raises(DivergedError) as e:
        train_and_evaluate(_config(EXPLODING), tmp_path)  # a safe change: resumes at 5
    message = str(e.value)
    assert "non-finite loss, gradient norm and parameters after the update at step 7;" in message, (
        message
    )
    assert f"the last good checkpoint is step 5 in {tmp_path / 'checkpoints'}" in message
    assert "on_nonfinite=skip_step" in message
    assert _steps(tmp_path) == [5]  # nothing was saved after it
    assert (tmp_path / "metrics.jsonl").read_text() == ""
    assert not (tmp_path / "summary.json").exists()


def test_skip_step_skips_the_updates_and_counts_them(tmp_path):
    summary = train_and_evaluate(_config(EXPLODING, "--config.on_nonfinite=skip_step"), tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    skipped = [r["skipped_steps"] for r in records]
    assert skipped == [20, 8]  # the first two updates stay finite, every later one blows up
    assert np.isfinite(records[0]["train_loss"])  # over its two finite steps
    assert np.isnan(records[1]["train_loss"])  # no step of the epoch was applied
    assert summary["steps"] == 30 and _steps(tmp_path) == [22, 30]


def test_a_finite_run_skips_nothing(tmp_path):
    short = ("--config.total_steps=22", "--config.schedule.warmup_epochs=None",
             "--config.schedule.warmup_steps=4")  # fmt: skip
    train_and_evaluate(_config(*short), tmp_path)
    [record] = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert record["skipped_steps"] == 0


@pytest.mark.parametrize("on_nonfinite", ["stop", "skip_step"])
def test_seeds_trained_together_are_guarded_one_by_one(on_nonfinite):
    """Two seeds in one vmapped chunk, the second with a NaN weight: the first trains on,
    the second keeps its state and records the step; stopping names only that seed."""
    model = models.get("lenet5", num_classes=10)
    tx = optax.sgd(0.1)
    step = make_train_step(
        model,
        tx,
        task=Classification(),
        preprocess=Preprocess(0.5, 0.5, pad=4),
        augment=lambda key, x: x,
        on_nonfinite=on_nonfinite,
    )
    mesh = Mesh(np.array(jax.devices()), ("data",))
    chunk = make_train_chunk(
        step,
        batch_size=8,
        batch_sharding=NamedSharding(mesh, P("data")),
        seed_axes=(0, None, None, 0, None, 0),
    )
    states = [init_state(model, tx, jax.random.key(s), jnp.zeros((1, 16, 16, 1))) for s in (0, 1)]
    states[1] = states[1].replace(
        params=jax.tree.map(lambda a: a.at[(0,) * a.ndim].set(jnp.nan), states[1].params)
    )
    state = jax.tree.map(lambda *a: jnp.stack(a), *states)
    before = jax.device_get(state.params)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (32, 8, 8, 1)), jnp.uint8)
    labels = jnp.asarray(rng.integers(0, 10, 32), jnp.int32)
    order = jnp.stack([jnp.arange(32, dtype=jnp.int32)] * 2)
    keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
    state, steps = jax.device_get(chunk(state, images, labels, order, 0, keys, num_steps=3))
    assert list(state.step) == list(steps) == [3, 3]
    assert list(state.guard["nonfinite_step"]) == [-1, 0]
    assert list(state.sums["skipped"]) == [0, 3]
    assert list(state.sums["count"]) == [24, 0]
    kernel = lambda p: jax.tree.leaves(p)[0]  # noqa: E731
    assert not np.array_equal(kernel(state.params)[0], kernel(before)[0])  # trained on
    np.testing.assert_array_equal(kernel(state.params)[1], kernel(before)[1])  # kept

    class NoCheckpoints:
        directory = Path("ckpt")

        def all_steps(self):
            return []

    with pytest.raises(
        DivergedError,
        match="^seed 11: non-finite loss, gradient norm and parameters after the update at step 1;",
    ):
        _raise_if_diverged(state, [10, 11], [NoCheckpoints(), NoCheckpoints()])
