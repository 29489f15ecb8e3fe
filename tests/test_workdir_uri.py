"""A work directory given as a URI (``gs://bucket/run``) stays one: every file the trainer
writes goes through ``etils.epath`` to that backend, never to a local ``gs:/bucket/run``.

Offline, ``gs://`` is served by a backend that keeps each object under a local folder
(``epath.testing.mock_epath`` with every file operation redirected), so what lands where
is real; TensorBoard's own GCS client (``google-cloud-storage``) is replaced by a
recorder of the log directory it is given.
"""

import json
import os
from pathlib import Path

import orbax.checkpoint as ocp
import pytest
import tensorboardX
from etils import epath

from cnnjax.training import metrics, trainer, workdir
from cnnjax.training.checkpoint import Checkpoints

BUCKET = "gs://bucket/runs/exp"


@pytest.fixture
def gcs(tmp_path, monkeypatch):
    """``gs://`` backed by ``tmp_path / "gcs"``; the cwd is an empty folder, which must
    stay empty (a mangled URI would become a local ``gs:`` folder there)."""
    root = tmp_path / "gcs"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    def local(path):
        text = os.fspath(path)
        return str(root / text.removeprefix("gs://")) if text.startswith("gs://") else text

    def one(fn, path, *args, **kwargs):
        return fn(local(path), *args, **kwargs)

    def two(fn, src, dst, *args, **kwargs):
        return fn(local(src), local(dst), *args, **kwargs)

    one_path = ("exists", "glob", "isdir", "listdir", "makedirs", "mkdir", "open", "remove",
                "rmtree", "stat", "walk")  # fmt: skip
    mocks = {name: one for name in one_path} | {name: two for name in ("rename", "replace")}
    logdirs = []
    monkeypatch.setattr(tensorboardX, "SummaryWriter", lambda logdir: _Recorder(logdirs, logdir))
    with epath.testing.mock_epath(**mocks):
        yield root, logdirs
    assert not any(cwd.iterdir())


class _Recorder:
    def __init__(self, logdirs: list, logdir: str):
        logdirs.append(logdir)

    def add_scalar(self, *args):
        pass

    def flush(self):
        pass

    def close(self):
        pass


def test_run_files_land_in_the_bucket(gcs):
    root, logdirs = gcs
    run = trainer.seed_dir(BUCKET, 3)
    assert str(run) == f"{BUCKET}/seed-3"
    with workdir.locked([run]):  # object storage: created, not locked
        metrics.write_json(run / "config.json", {"seed": 3})
        log = metrics.MetricsLog(run, metric="accuracy")
        records = [{"epoch": e, "step": 10 * e, "lr": 0.1, "skipped_steps": 0,
                    "train_loss": 1.0 / e, "train_accuracy": 0.5, "test_loss": 1.0 / e,
                    "test_accuracy": 0.5} for e in (1, 2, 3)]  # fmt: skip
        for record in records:
            log.append(record)  # object storage cannot append: written anew each time
        assert log.records() == records
        assert log.truncate(20) == records[:2]
        metrics.plot_learning_curves(
            records[:2], run / "learning_curves.png", metric="accuracy", loss_name="loss"
        )
        log.close()
    local = root / "bucket" / "runs" / "exp" / "seed-3"
    assert json.loads((local / "config.json").read_text()) == {"seed": 3}
    lines = (local / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records[:2]
    assert (local / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (local / workdir.LOCK).exists()
    assert logdirs == [f"{BUCKET}/seed-3/tensorboard"]


def test_checkpoints_hand_orbax_the_uri(gcs, monkeypatch):
    """Orbax writes ``gs://`` itself (TensorStore's GCS driver, which needs the network):
    what matters here is that it is given the URI, not a local path."""
    given = []
    monkeypatch.setattr(ocp, "CheckpointManager", lambda directory, **kw: given.append(directory))
    checkpoints = Checkpoints(f"{BUCKET}/checkpoints", keep=2, keep_best=False, async_save=False)
    assert [str(d) for d in given] == [str(checkpoints.directory)] == [f"{BUCKET}/checkpoints"]
    assert isinstance(given[0], epath.Path) and not isinstance(given[0], Path)
