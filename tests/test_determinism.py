"""The same command twice on CPU: bitwise-identical metrics and parameters, each run in
its own process (so nothing may depend on the process: hash seeds, start-up order)."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

ROOT = Path(__file__).resolve().parents[1]
# Wall-clock fields of a record; everything else must match bit for bit.
TIMES = {"elapsed_seconds", "epoch_seconds", "steady_seconds"}


def _run(workdir: Path) -> None:
    command = [sys.executable, "launch.py", "--exp", "digits_lenet", "--workdir", str(workdir),
               "--config.batch_size=64", "--config.total_epochs=None",
               "--config.total_steps=30"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def _metrics(workdir: Path) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMES} for line in lines]


def _arrays(checkpoint: Path) -> list[np.ndarray]:
    with ocp.StandardCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(checkpoint / "state").item_metadata
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata
        )
        state = checkpointer.restore(checkpoint / "state", abstract)
    return [np.asarray(leaf) for leaf in jax.tree.leaves(state)]


def test_the_same_command_twice_gives_bitwise_identical_metrics_and_params(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _run(a)
    _run(b)
    assert _metrics(a) == _metrics(b)
    steps = sorted(p.name for p in (a / "checkpoints").iterdir())
    assert steps == sorted(p.name for p in (b / "checkpoints").iterdir()) == ["22", "30"]
    for step in steps:
        for x, y in zip(_arrays(a / "checkpoints" / step), _arrays(b / "checkpoints" / step),
                        strict=True):  # fmt: skip
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
