"""Verified checkpoints: every kind of damage is provoked on real orbax files.

A damaged newest checkpoint is reported in one line, set aside (moved, never deleted) and
the next older one restored; when none verifies, that is an error of its own. Retention
deletes nothing before the new checkpoint has been read back, and never ranks a
non-finite metric "best".
"""

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.training.checkpoint import (
    SET_ASIDE,
    Checkpoints,
    CorruptCheckpointError,
    restore_newest_verified,
)
from cnnjax.training.errors import NoVerifiedCheckpointError

# After a failed read, orbax's reader leaves futures behind whose collection Python reports
# as "Exception ignored in: None", at some later point in the process.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _state(value: float) -> dict:
    """Random weights (incompressible, so the data files are large) seeded by ``value``."""
    w = np.random.default_rng(int(value)).normal(size=(64, 64)).astype(np.float32)
    return {"params": {"w": jnp.asarray(w) * value, "b": jnp.arange(8.0) + value}}


def _abstract() -> dict:
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), _state(0.0)
    )


def _checkpoints(directory: Path, keep: int = 5, keep_best: bool = False) -> Checkpoints:
    return Checkpoints(directory, keep=keep, keep_best=keep_best, async_save=True)


def _saved(directory: Path, steps=(10, 20), **kwargs) -> Path:
    ckpt = _checkpoints(directory, **kwargs)
    for step in steps:
        ckpt.save(_state(step), step=step, meta={"step": step}, best_metric=None)
    ckpt.close()
    return directory


def _largest_data_file(step_dir: Path) -> Path:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)]
    return max(files, key=lambda p: p.stat().st_size)


def _flip_byte(step_dir: Path) -> None:
    path = _largest_data_file(step_dir)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(step_dir: Path) -> None:
    path = _largest_data_file(step_dir)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(step_dir: Path) -> None:
    path = _largest_data_file(step_dir)
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def _empty(step_dir: Path) -> None:
    shutil.rmtree(step_dir)
    step_dir.mkdir()


DAMAGE = {
    "flipped byte": _flip_byte,
    "truncated file": _truncate,
    "deleted file": lambda d: _largest_data_file(d).unlink(),
    "garbage file": _garbage,
    "missing manifest": lambda d: (d / "state" / "manifest.ocdbt").unlink(),
    "missing meta item": lambda d: shutil.rmtree(d / "meta"),
    "meta edited": lambda d: (d / "meta" / "metadata").write_text('{"step": 21}'),
    "empty step dir": _empty,
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_newest_is_set_aside_and_the_older_one_restored(tmp_path, damage, capsys):
    directory = _saved(tmp_path / "checkpoints")
    DAMAGE[damage](directory / "20")
    ckpt = _checkpoints(directory)
    step, [(state, meta)] = restore_newest_verified([ckpt], _abstract())
    ckpt.close()
    assert step == 10 and meta["step"] == 10
    np.testing.assert_array_equal(state["params"]["w"], _state(10)["params"]["w"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"Checkpoint 20 in {directory}"), err
    assert "set aside as" in err[0]
    assert ckpt.all_steps() == [10]
    assert (tmp_path / SET_ASIDE / "checkpoint-20").is_dir()  # moved, not deleted


@pytest.mark.parametrize(
    "name", ["_CHECKPOINT_METADATA", "state/_METADATA", "state/array_metadatas/process_0"]
)
def test_a_metadata_file_orbax_can_do_without_still_restores_verified_arrays(
    tmp_path, name, capsys
):
    directory = _saved(tmp_path / "checkpoints")
    (directory / "20" / name).unlink()
    step, [(state, _)] = restore_newest_verified([_checkpoints(directory)], _abstract())
    assert step == 20  # every array matched its digest
    np.testing.assert_array_equal(state["params"]["w"], _state(20)["params"]["w"])
    assert capsys.readouterr().err == ""


def test_when_none_verifies_that_is_its_own_error(tmp_path, capsys):
    directory = _saved(tmp_path / "checkpoints")
    _flip_byte(directory / "10")
    _truncate(directory / "20")
    with pytest.raises(NoVerifiedCheckpointError, match="--restart"):
        restore_newest_verified([_checkpoints(directory)], _abstract())
    assert sorted(p.name for p in (tmp_path / SET_ASIDE).iterdir()) == [
        "checkpoint-10",
        "checkpoint-20",
    ]
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


def test_no_checkpoint_is_a_fresh_start(tmp_path):
    assert restore_newest_verified([_checkpoints(tmp_path / "c")], _abstract()) is None


def test_runs_trained_together_fall_back_to_the_newest_step_all_verify(tmp_path, capsys):
    a, b = _saved(tmp_path / "a" / "checkpoints"), _saved(tmp_path / "b" / "checkpoints")
    _flip_byte(b / "20")
    ckpts = [_checkpoints(a), _checkpoints(b)]
    step, restored = restore_newest_verified(ckpts, _abstract())
    assert step == 10 and [m["step"] for _, m in restored] == [10, 10]
    assert ckpts[0].all_steps() == [10, 20]  # the intact one stays (saving 20 again skips it)
    assert "Checkpoint 20" in capsys.readouterr().err


def test_a_non_finite_state_is_never_saved(tmp_path):
    ckpt = _checkpoints(tmp_path / "c")
    with pytest.raises(ValueError, match="non-finite"):
        ckpt.save({"w": jnp.array([1.0, jnp.nan])}, step=1, meta={}, best_metric=None)
    ckpt.close()
    assert ckpt.all_steps() == []


def test_retention_keeps_the_best_finite_and_the_latest(tmp_path):
    ckpt = _checkpoints(tmp_path / "c", keep=1, keep_best=True)
    for step, metric in ((1, 0.5), (2, 0.9), (3, float("nan")), (4, 0.7), (5, float("inf"))):
        ckpt.save(_state(step), step=step, meta={}, best_metric=metric)
    ckpt.close()
    assert ckpt.all_steps() == [2, 5]  # the best finite metric, and the newest


def test_retention_deletes_nothing_until_the_new_checkpoint_verifies(tmp_path, capsys):
    directory = tmp_path / "c"
    ckpt = _checkpoints(directory, keep=1)
    ckpt.save(_state(1), step=1, meta={}, best_metric=None)
    ckpt.save(_state(2), step=2, meta={}, best_metric=None)
    ckpt._manager.wait_until_finished()
    _flip_byte(directory / "2")  # damaged on disk before it was read back
    ckpt.save(_state(3), step=3, meta={}, best_metric=None)  # reads 2 back first
    assert ckpt.all_steps() == [1, 3]  # 1 is still the last verified one
    assert "does not verify after writing" in capsys.readouterr().err
    ckpt.close()
    assert ckpt.all_steps() == [3]


def test_restore_raises_on_digest_mismatch(tmp_path):
    directory = _saved(tmp_path / "c", steps=(1,))
    _flip_byte(directory / "1")
    with pytest.raises(CorruptCheckpointError):
        _checkpoints(directory).restore(_abstract(), 1)
