"""``launch.py`` end to end: outputs of a run, errors, and SIGTERM through the real CLI."""

import importlib.util
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tensorflow_datasets as tfds
from launcher import launch

ROOT = Path(__file__).resolve().parents[1]


def _tensorboard_scalars(directory: Path) -> dict[str, list[float]]:
    """Scalars in TensorBoard event files, read from the TFRecord framing directly."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[float]] = {}
    for path in directory.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4  # length, its crc, the record, its crc
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append(value.simple_value)
    return scalars


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_tensorboard_events_without_importing_torch(tmp_path):
    """tensorboardX imports torch whenever it is installed (over a second of every start);
    a run's writer leaves it out, still writes events, and torch stays importable."""
    code = (
        "import sys; from cnnjax.training.metrics import MetricsLog\n"
        "log = MetricsLog(sys.argv[1], metric='accuracy')\n"
        "log.append(dict(epoch=1, step=3, lr=0.5, train_loss=1.0, train_accuracy=0.25,"
        " test_loss=2.0, test_accuracy=0.75, skipped_steps=0))\n"
        "log.close()\n"
        "print('torch' in sys.modules)\n"
        "import torch; print(torch.ones(2).sum().item())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "2.0"]
    scalars = _tensorboard_scalars(tmp_path / "tensorboard")
    assert scalars["test/accuracy"] == [0.75] and scalars["learning_rate"] == [0.5]


# Mock MNIST: 64 random 28x28 examples per split; 4 steps of 16 per epoch.
MOCK_RUN = [
    "--config.batch_size=16",
    "--config.eval_batch_size=32",
    "--config.total_epochs=2",
    "--config.schedule.warmup_epochs=0.5",
]


def test_mnist_lenet_writes_every_output(tmp_path, capsys):
    workdir = tmp_path / "run"
    cache = f"--config.dataset.cache_dir={tmp_path / 'cache'}"
    with tfds.testing.mock_data(num_examples=64):
        status = launch.main(["--exp", "mnist_lenet", "--workdir", str(workdir), cache, *MOCK_RUN])
    assert status == 0
    out = capsys.readouterr().out
    assert "LeNet5" in out and "61,706" in out  # the model table
    assert "epoch   2/2" in out and "Final test accuracy" in out

    config = json.loads((workdir / "config.json").read_text())
    assert config["experiment"] == "mnist_lenet" and config["batch_size"] == 16
    assert config["optimizer"]["lr"] == pytest.approx(config["optimizer"]["base_lr"] / 8)

    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in records] == [(1, 4), (2, 8)]
    for r in records:
        assert 0 <= r["test_accuracy"] <= 1 and r["train_loss"] > 0 and r["lr"] > 0

    summary = json.loads((workdir / "summary.json").read_text())
    for key in ("experiment", "params", "epochs", "steps", "final_test_accuracy",
                "best_test_accuracy", "train_seconds", "train_images_per_second",
                "seconds_to_target"):  # fmt: skip
        assert key in summary
    assert summary["params"] == 61_706 and summary["steps"] == 8 and summary["epochs"] == 2
    assert summary["final_test_accuracy"] == records[-1]["test_accuracy"]
    assert summary["train_images_per_second"] > 0

    assert (workdir / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scalars = _tensorboard_scalars(workdir / "tensorboard")
    assert scalars["test/accuracy"] == pytest.approx([r["test_accuracy"] for r in records])
    assert {"train/loss", "train/accuracy", "test/loss", "learning_rate"} <= set(scalars)
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [4, 8]


def test_list_shows_each_experiment_with_its_description(capsys):
    assert launch.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "mnist_lenet" in out and "LeNet-5" in out and "digits_lenet" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--exp", "mnist_lenettt"],
            "unknown experiment 'mnist_lenettt'. Did you mean 'mnist_lenet'",
        ),
        (["--exp", "mnist_lenet", "--config.optimizr.lr=1"], "Did you mean 'optimizer.lr'"),
        (["--exp", "mnist_lenet", "--config.batch_size=big"], "holds an int"),
        (["--exp", "mnist_lenet", "--bogus"], "--config.FIELD=VALUE"),
        ([], "--exp NAME, --sweep NAME or --report SWEEPDIR is required"),
    ],
)
def test_bad_command_lines_fail_at_once_with_a_clear_message(argv, message, capsys, tmp_path):
    assert launch.main([*argv, "--workdir", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was started


def test_missing_data_offline_explains_where_to_point(tmp_path, capsys):
    empty = tmp_path / "tfds"
    empty.mkdir()
    argv = [
        *("--exp", "mnist_lenet", "--workdir", str(tmp_path / "run"), "--data_dir", str(empty)),
        f"--config.dataset.cache_dir={tmp_path / 'cache'}",
        "--config.dataset.download=False",  # never try the network from a test
    ]
    assert launch.main(argv) == launch.EXIT_CODES[launch.DatasetUnavailableError] == 4
    err = capsys.readouterr().err
    assert "TFDS_DATA_DIR" in err and str(empty) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def _wait_for(predicate, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, "launch.py exited early"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_sigterm_saves_a_checkpoint_and_the_same_command_resumes(tmp_path, capsys):
    """The real CLI in a subprocess: SIGTERM mid-run -> checkpoint, exit 143; relaunch."""
    workdir = tmp_path / "run"
    command = ["--exp", "digits_lenet", "--workdir", str(workdir), "--config.batch_size=64"]
    with (tmp_path / "stdout").open("w") as stdout:
        process = subprocess.Popen(
            [sys.executable, "launch.py", *command, "--config.total_epochs=10000"],
            cwd=ROOT,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )
        try:
            metrics = workdir / "metrics.jsonl"
            _wait_for(lambda: metrics.exists() and metrics.read_text(), 300, process)
            # A second launch on the same work directory is refused at once, touching
            # nothing: the running one's metrics keep what they had (and may grow, as
            # that run goes on appending epochs).
            before = metrics.read_text()
            assert launch.main(command) == launch.EXIT_CODES[launch.WorkdirLockedError]
            assert f"in use by process {process.pid}" in capsys.readouterr().err
            assert metrics.read_text().startswith(before)
        except BaseException:
            process.kill()
            process.communicate(timeout=60)
            raise
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert "SIGTERM: saved a checkpoint at step" in err
    assert "Traceback" not in err
    steps = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    stopped_at = max(steps)
    assert stopped_at >= 22  # at least the first epoch (22 steps of 64)

    # Relaunch (shorter, so that the test ends): it resumes from the saved step.
    end = stopped_at + 3
    relaunch = [*command, "--config.total_epochs=None", f"--config.total_steps={end}"]
    assert launch.main(relaunch) == 0
    assert f"Resumed from checkpoint at step {stopped_at:,}" in capsys.readouterr().out
    assert json.loads((workdir / "summary.json").read_text())["steps"] == end


DIGITS = ["--exp", "digits_lenet", "--config.total_epochs=None", "--config.total_steps=3"]


@pytest.mark.parametrize(
    ("argv", "error", "message"),
    [
        (
            ["--config.dataset.name=mnistt", "--config.dataset.download=False"],
            "ConfigError",
            "unknown dataset 'mnistt'. Did you mean 'mnist'",
        ),
        (
            ["--config.model.name=conv3d_clips"],
            "ModelInputError",
            "model 'conv3d_clips' cannot take the inputs of dataset 'sklearn_digits', shaped "
            "(1, 16, 16, 1): `x` must be a batch of clips (N, T, H, W, C); got shape "
            "(1, 16, 16, 1)",
        ),
        (
            ["--config.model.name=conv3d_clips", "--summary"],
            "ModelInputError",
            "shaped (1, 16, 16, 1): `x` must be a batch of clips (N, T, H, W, C)",
        ),
        (
            ["--config.model.kwargs.num_classes=7"],
            "ModelInputError",
            "model outputs (1, 7) for input (1, 16, 16, 1), but the dataset has 10 classes",
        ),
        (["--config.label_smoothing=2.0"], "ConfigError", "label_smoothing must be a finite"),
        (
            ["--config.optimizer.base_lr=1e30", "--config.schedule.warmup_epochs=None"],
            "DivergedError",
            "non-finite loss, gradient norm and parameters after the update at step 2;",
        ),
    ],
)
def test_each_user_error_is_one_line_with_its_exit_status(argv, error, message, tmp_path, capsys):
    workdir = tmp_path / "run"
    status = launch.main([*DIGITS, "--workdir", str(workdir), *argv])
    assert status == launch.EXIT_CODES[getattr(launch, error)]
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]


def test_debug_adds_the_traceback(tmp_path, capsys):
    argv = [*DIGITS, "--workdir", str(tmp_path / "run"), "--config.model.name=conv3d_clips"]
    assert launch.main([*argv, "--debug"]) == launch.EXIT_CODES[launch.ModelInputError]
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: model")


def test_a_failed_gradient_check_has_its_own_exit_status(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(launch.analysis, "run_tools", lambda *a, **k: 1)
    argv = [*DIGITS, "--workdir", str(tmp_path / "run"), "--gradcheck"]
    assert launch.main(argv) == launch.EXIT_CODES[launch.GradcheckFailedError] == 11
    assert "gradient check of 'lenet5' failed" in capsys.readouterr().err


def test_every_error_type_has_one_exit_status_and_the_readme_prints_the_table():
    from cnnjax.training import errors

    kinds = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert set(kinds) == set(launch.EXIT_CODES)
    codes = [*launch.EXIT_CODES.values(), 0, launch.INTERNAL_ERROR, launch.SWEEP_FAILED]
    assert len(set(codes)) == len(codes)
    assert launch.exit_status_table() in (ROOT / "README.md").read_text()
