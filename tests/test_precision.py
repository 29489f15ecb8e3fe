"""Mixed precision: compute in bfloat16/float16 with float32 state, float16 loss scaling.

The loss-scale rules are checked against sequences worked out by hand; the runs use
scikit-learn's real 8x8 digits (``experiments/digits_lenet.py``), so they need no
download; every zoo model takes one train step in each reduced dtype on generated inputs.
"""

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from short_run import SHORT_RUN, digits_config
from zoo_helpers import MODEL_INPUTS, by_model, rbg_keys  # noqa: F401 (rbg_keys: a fixture)

from cnnjax import models
from cnnjax.training import precision, train_and_evaluate
from cnnjax.training.errors import DivergedError
from cnnjax.training.step import Preprocess, init_state, make_train_step
from cnnjax.training.tasks import Classification, Reconstruction

pytestmark = pytest.mark.usefixtures("compilation_cache")


def _records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _checkpointed_state(workdir: Path) -> dict:
    """The newest checkpoint's state as saved: ``{"params": ..., ...}`` of NumPy arrays."""
    manager = ocp.CheckpointManager(workdir.absolute() / "checkpoints", item_names=("state",))
    step = manager.latest_step()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        manager.item_metadata(step).state,
    )
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
    )
    manager.close()
    return jax.tree.map(np.asarray, dict(restored.state))


# ------------------------------------------------------------------------- pieces


def test_cast_floating_casts_only_floating_leaves():
    tree = {
        "w": jnp.ones((2, 3), jnp.float32),
        "step": jnp.zeros((), jnp.int32),
        "flag": jnp.ones((), bool),
        "h": jnp.ones(4, jnp.float16),
    }
    got = jax.tree.map(lambda a: a.dtype, precision.cast_floating(tree, jnp.bfloat16))
    assert got == {"w": jnp.bfloat16, "step": jnp.int32, "flag": jnp.bool_, "h": jnp.bfloat16}


def test_loss_scale_exists_for_float16_only():
    assert precision.init_loss_scale("float32") == {}
    assert precision.init_loss_scale("bfloat16") == {}
    state = precision.init_loss_scale("float16")
    assert float(state["scale"]) == 2.0**15 and state["scale"].dtype == jnp.float32
    assert int(state["counter"]) == 0 and state["counter"].dtype == jnp.int32


def test_loss_scale_halves_on_overflow_and_doubles_after_a_period_of_finite_steps():
    # period 3, factor 2, minimum 1, from 8: worked out by hand from the rules (double on
    # the 3rd consecutive finite step, halve on a non-finite one, never below 1).
    finite = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1]
    expected = [8, 8, 16, 8, 8, 8, 4, 2, 1, 1, 1, 1, 2, 2]
    counters = [1, 2, 0, 0, 1, 2, 0, 0, 0, 0, 1, 2, 0, 1]
    state = {"scale": jnp.float32(8.0), "counter": jnp.int32(0)}
    adjust = jax.jit(functools.partial(precision.next_loss_scale, period=3, min_scale=1.0))
    scales, counts = [], []
    for f in finite:
        state = adjust(state, jnp.asarray(bool(f)))
        scales.append(float(state["scale"]))
        counts.append(int(state["counter"]))
    assert scales == expected
    assert counts == counters
    assert state["scale"].dtype == jnp.float32 and state["counter"].dtype == jnp.int32


def test_loss_scale_growth_stops_at_the_largest_float32():
    top = float(np.finfo(np.float32).max)
    state = {"scale": jnp.float32(top / 1.5), "counter": jnp.int32(1)}
    state = precision.next_loss_scale(state, jnp.asarray(True), period=2)
    assert float(state["scale"]) == top


def test_gradients_of_the_scaled_loss_unscale_to_the_loss_gradients():
    w = jnp.asarray([0.5, -2.0, 3.0])
    scale = {"scale": jnp.float32(2.0**12), "counter": jnp.int32(0)}
    loss = lambda w: jnp.sum(w**3)  # noqa: E731
    grads = jax.grad(lambda w: precision.scale_loss(loss(w), scale))(w)
    # 3 w^2, exactly: scaling by a power of two is exact in floating point
    np.testing.assert_array_equal(precision.unscale_grads(grads, scale), 3 * w**2)
    assert precision.scale_loss(jnp.float32(1.5), {}) == 1.5


@pytest.mark.parametrize(
    ("scale", "loss_finite", "grads_finite", "expected"),
    [
        (1024.0, True, False, True),  # the scaler's case: it halves and skips
        (1024.0, True, True, False),  # nothing overflowed
        (1024.0, False, False, False),  # the forward pass itself overflowed: divergence
        (1.0, True, False, False),  # at the minimum scale no smaller scale helps
    ],
)
def test_overflowed_is_what_the_scaler_can_cure(scale, loss_finite, grads_finite, expected):
    state = {"scale": jnp.float32(scale), "counter": jnp.int32(0)}
    got = precision.overflowed(
        state, loss_finite=jnp.asarray(loss_finite), grads_finite=jnp.asarray(grads_finite)
    )
    assert bool(got) is expected


# ------------------------------------------------------------------------- runs


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_learns_digits_with_float32_state(dtype, tmp_path):
    """60 steps of digits_lenet (float32 reaches 90 %); the checkpoint holds float32
    parameters and optimizer state whatever the compute dtype."""
    config = digits_config(*SHORT_RUN[:2], "--config.total_steps=60", f"--config.dtype={dtype}")
    summary = train_and_evaluate(config, tmp_path)
    records = _records(tmp_path)
    losses = [r["train_loss"] for r in records] + [r["test_loss"] for r in records]
    assert np.all(np.isfinite(losses))
    assert records[-1]["train_loss"] < records[0]["train_loss"] / 4
    assert summary["final_test_accuracy"] >= 0.85
    assert [r["skipped_steps"] for r in records] == [0, 0, 0]
    state = _checkpointed_state(tmp_path)
    floats = jax.tree.leaves((state["params"], state["opt_state"]))
    assert floats and all(a.dtype == np.float32 for a in floats if a.dtype.kind == "f")
    if dtype == "float16":
        assert state["loss_scale"]["scale"].dtype == np.float32
        assert float(state["loss_scale"]["scale"]) == 2.0**15  # no overflow, no growth yet
    else:
        assert not state.get("loss_scale")


def test_float16_overflow_halves_the_scale_and_skips_without_stopping(tmp_path, monkeypatch):
    """A loss scale of 2^30 overflows float16 gradients: with on_nonfinite="stop" the run
    still finishes; each overflow halves the scale and skips its step (the skipped steps
    are the halvings), and training goes on once the scale fits."""
    monkeypatch.setattr(
        precision, "init_loss_scale", functools.partial(precision.init_loss_scale, scale=2.0**30)
    )
    summary = train_and_evaluate(digits_config(*SHORT_RUN, "--config.dtype=float16"), tmp_path)
    assert summary["steps"] == 30
    records = _records(tmp_path)
    skipped = sum(r["skipped_steps"] for r in records)
    assert 1 <= skipped < 22  # the scale came down within the first epoch
    scale = _checkpointed_state(tmp_path)["loss_scale"]
    assert float(scale["scale"]) == 2.0 ** (30 - skipped)
    assert np.isfinite(records[-1]["train_loss"])
    assert records[-1]["train_loss"] < records[0]["train_loss"]


def test_float16_divergence_still_stops_the_run(tmp_path):
    with pytest.raises(DivergedError, match="non-finite loss"):
        train_and_evaluate(
            digits_config(*SHORT_RUN, "--config.dtype=float16", "--config.optimizer.base_lr=1e30"),
            tmp_path,
        )
    assert not (tmp_path / "summary.json").exists()


# ------------------------------------------------------------------------- every model


def _matmul_dtypes(jaxpr, found: set) -> set:
    """The operand dtypes of every conv and dot in ``jaxpr`` and the jaxprs inside it."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
            found.update(str(v.aval.dtype) for v in eqn.invars)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    _matmul_dtypes(inner, found)
    return found


# Most XLA optimisations off: the programs compile about twice as fast, and the test
# checks dtypes and finiteness, not speed.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _compiled(f, *args):
    return jax.jit(f).lower(*args).compile(FAST_COMPILE)


@pytest.mark.parametrize("name", by_model(sorted(MODEL_INPUTS)))
def test_every_model_trains_in_bfloat16_and_float16(name, rbg_keys):  # noqa: F811
    """Forward and backward convs and dots run in the compute dtype, the state stays
    float32, and a step's loss is finite."""
    model = models.get(name)
    task = Reconstruction(std=0.5) if name == "conv_autoencoder" else Classification()
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, MODEL_INPUTS[name]), jnp.uint8)
    labels = jnp.asarray(rng.integers(0, 10, images.shape[0]), jnp.int32)
    tx = optax.adam(1e-3)
    init = functools.partial(init_state, model, tx, x=jnp.zeros(images.shape, jnp.float32))
    key = jax.random.key(0)
    fresh = _compiled(init, key)(key)
    for dtype in ("bfloat16", "float16"):
        state = fresh.replace(loss_scale=precision.init_loss_scale(dtype))
        step = make_train_step(
            model,
            tx,
            task=task,
            preprocess=Preprocess(0.5, 0.5),
            augment=lambda k, x: x,
            dtype=dtype,
        )
        args = (state, images, labels, key)
        assert _matmul_dtypes(jax.make_jaxpr(step)(*args).jaxpr, set()) == {dtype}, dtype
        new = _compiled(step, *args)(*args)
        assert int(new.guard["nonfinite_step"]) == -1 and int(new.sums["skipped"]) == 0
        assert np.isfinite(float(new.sums["loss"]))
        stored = jax.tree.leaves((new.params, new.batch_stats, new.opt_state))
        assert all(a.dtype == jnp.float32 for a in stored if jnp.issubdtype(a.dtype, jnp.floating))
