"""Sweeps end to end on scikit-learn's digits: sweep files and flags, the runner (resume
after a kill, failures, local workers, Ray), seeds trained together, the validation split.

Every sweep here is ``experiments/sweeps/digits_lr.py`` (2 learning rates) or a
:class:`Sweep` built in the test, shortened to a few dozen steps. Runs in other processes
(kills, ``--workers``, Ray) have hard timeouts and are marked slow (``.ci/run`` runs them
after the default suite).
"""

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from launcher import launch

from cnnjax.sweeps import Sweep, apply_sweep_flags, load_sweep, run_config, run_sweep
from cnnjax.sweeps.layout import run_dir
from cnnjax.training import ConfigError, Interrupted, load_experiment, train_and_evaluate
from cnnjax.training import data as data_lib
from cnnjax.training.signals import StopRequest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
SWEEPS = EXPERIMENTS / "sweeps"
# 36 steps of 32 digits per epoch; 2 epochs; a checkpoint after each.
SHORT = ["--config.batch_size=32", "--config.total_epochs=2", "--config.schedule.warmup_epochs=0.5"]
RUN_TIMEOUT = 300  # seconds for a subprocess sweep: a hang fails the test


pytestmark = pytest.mark.usefixtures("compilation_cache")


def _summary(directory: Path) -> dict:
    return json.loads((directory / "summary.json").read_text())


def _records(directory: Path) -> list[dict]:
    lines = (directory / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _params(directory: Path) -> list[np.ndarray]:
    steps = sorted(int(p.name) for p in (directory / "checkpoints").iterdir() if p.name.isdigit())
    with ocp.CheckpointManager((directory / "checkpoints").absolute()) as manager:
        state = manager.restore(
            steps[-1], args=ocp.args.Composite(state=ocp.args.StandardRestore())
        )
    return jax.tree.leaves(state.state["params"])


def _deterministic(records: list[dict]) -> list[dict]:
    timing = {"elapsed_seconds", "epoch_seconds", "steady_images", "steady_seconds"}
    return [{k: v for k, v in r.items() if k not in timing} for r in records]


def _sweep_command(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "launch.py"), "--sweep", "digits_lr", "--workdir",
            str(workdir), *SHORT, *args]  # fmt: skip


def _run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


# ------------------------------------------------------------------------- sweep files


def test_points_from_a_product_of_axes_and_from_a_list():
    product = Sweep(experiment="digits_lenet", axes={"a.x": [1, 2], "b.y": ["p", "q/r"]})
    assert product.point_values() == {
        "x=1,y=p": {"a.x": 1, "b.y": "p"},
        "x=1,y=q_r": {"a.x": 1, "b.y": "q/r"},
        "x=2,y=p": {"a.x": 2, "b.y": "p"},
        "x=2,y=q_r": {"a.x": 2, "b.y": "q/r"},
    }
    listed = Sweep(experiment="digits_lenet", points={"base": {}, "big": {"batch_size": 64}})
    assert listed.point_values() == {"base": {}, "big": {"batch_size": 64}}
    assert listed.baseline_label() == "base"
    with pytest.raises(ConfigError, match="exactly one of axes"):
        Sweep(experiment="digits_lenet").point_values()


def test_sweep_flags_narrow_and_extend():
    sweep = load_sweep("digits_lr", SWEEPS)
    assert sweep.seed_list() == [0, 1, 2]
    assert apply_sweep_flags(sweep, ["--sweep.seeds=5"]).seed_list() == [0, 1, 2, 3, 4]
    assert apply_sweep_flags(sweep, ["--sweep.seeds=[3, 7]"]).seed_list() == [3, 7]
    only = apply_sweep_flags(sweep, ["--sweep.only=0.003"])
    assert list(only.point_values()) == ["0.001", "0.003"]  # the baseline stays
    assert apply_sweep_flags(sweep, ["--sweep.vmap_seeds=false"]).vmap_seeds is False
    for flag, message in [
        ("--sweep.only=0.03", "no point '0.03'.* Did you mean '0.003'"),
        ("--sweep.seed=3", "unknown sweep flag.*Did you mean 'seeds'"),
        ("--sweep.seeds=three", "seeds is a count"),
        ("--sweep.baseline=nope", "baseline 'nope' is not a point"),
    ]:
        with pytest.raises(ConfigError, match=message):
            apply_sweep_flags(sweep, [flag])


def test_run_config_applies_overrides_in_order():
    sweep = Sweep(
        experiment="digits_lenet",
        axes={"optimizer.base_lr": [0.01]},
        overrides={"total_epochs": 3, "batch_size": 8},
    )
    config = run_config(sweep, "0.01", 4, experiments_dir=EXPERIMENTS,
                        overrides=["--config.batch_size=32"])  # fmt: skip
    assert (config.seed, config.total_epochs, config.batch_size) == (4, 3, 32)
    assert config.optimizer.base_lr == 0.01
    assert config.optimizer.lr == pytest.approx(0.01 * 32 / 16)  # the reference follows


@pytest.mark.parametrize(
    "sweep_kwargs, message",
    [
        (dict(axes={"optimizer.base_rl": [1e-3]}), "unknown config field 'optimizer.base_rl'"),
        (dict(axes={"batch_size": ["big"]}), "batch_size='big'"),
        (dict(axes={"model.kwargs.widht": [2]}), "bad arguments for model 'lenet5'"),
        (dict(axes={"model.kwargs.pool": [2]}), r"`pool` must be one of"),
        (dict(axes={"model.kwargs.num_classes": [1.5]}), "1.5 is of original type <class 'float'"),
        (dict(points={"a": {}}, baseline="b"), "baseline 'b' is not a point"),
    ],
)
def test_bad_sweeps_fail_before_any_training(tmp_path, sweep_kwargs, message):
    sweep = Sweep(experiment="digits_lenet", **sweep_kwargs)
    with pytest.raises(ConfigError, match=message):
        run_sweep(sweep, "bad", tmp_path / "sweep", experiments_dir=EXPERIMENTS)
    assert not (tmp_path / "sweep").exists()


def test_launch_exit_codes_for_bad_sweeps(tmp_path, capsys):
    assert launch.main(["--sweep", "digits_rl", "--workdir", str(tmp_path)]) == 2
    assert "unknown sweep 'digits_rl'. Did you mean 'digits_lr'" in capsys.readouterr().err
    assert launch.main(["--sweep", "digits_lr", "--workdir", str(tmp_path),
                        "--config.batch_sise=3"]) == 2  # fmt: skip
    assert "unknown config field 'batch_sise'" in capsys.readouterr().err
    assert launch.main(["--exp", "digits_lenet", "--sweep.seeds=2"]) == 2
    assert "--sweep.seeds=2 needs --sweep NAME" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_list_shows_sweeps_with_their_size(capsys):
    assert launch.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "digits_lr" in out and "2 x 3 = 6" in out
    assert "mnist_lenet" in out


# ------------------------------------------------------------------------- the runner


@pytest.fixture(scope="module")
def toy_sweep(tmp_path_factory) -> Path:
    """digits_lr with 2 seeds, vmapped (the default in one process), through the CLI."""
    sweep_dir = tmp_path_factory.mktemp("toy")
    argv = ["--sweep", "digits_lr", "--workdir", str(sweep_dir), "--sweep.seeds=2", *SHORT]
    assert launch.main(argv) == 0
    return sweep_dir


def test_toy_sweep_report_equals_the_runs_own_files(toy_sweep):
    with (toy_sweep / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["point"], r["seed"], r["status"]) for r in rows] == [
        ("0.001", "0", "ok"), ("0.001", "1", "ok"), ("0.003", "0", "ok"), ("0.003", "1", "ok")
    ]  # fmt: skip
    for row in rows:
        directory = run_dir(toy_sweep, row["point"], int(row["seed"]))
        summary = _summary(directory)
        assert float(row["final_test_accuracy"]) == summary["final_test_accuracy"]
        assert float(row["final_test_loss"]) == summary["final_test_loss"]
        assert int(row["params"]) == summary["params"] == 21_386
        # the summary's final accuracy is the last epoch's record
        assert summary["final_test_accuracy"] == _records(directory)[-1]["test_accuracy"]
        assert json.loads((directory / "config.json").read_text())["seed"] == int(row["seed"])
    text = (toy_sweep / "results.md").read_text()
    accuracies = [_summary(run_dir(toy_sweep, "0.003", s))["final_test_accuracy"] for s in (0, 1)]
    assert f"{100 * np.mean(accuracies):.2f} ± {100 * np.std(accuracies, ddof=1):.2f}" in text
    for png in ("final_test_accuracy.png", "learning_curves.png", "final_test_loss_vs_flops.png"):
        data = (toy_sweep / png).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000


def test_report_is_regenerated_from_disk(toy_sweep, capsys):
    (toy_sweep / "results.md").unlink()
    assert launch.main(["--report", str(toy_sweep)]) == 0
    assert "| 0.003 | 2/2 |" in (toy_sweep / "results.md").read_text()
    assert "| 0.003 | 2/2 |" in capsys.readouterr().out


def test_relaunching_a_finished_sweep_trains_nothing(toy_sweep):
    mtimes = {p: p.stat().st_mtime_ns for p in toy_sweep.glob("*/seed-*/summary.json")}
    counts = run_sweep(
        apply_sweep_flags(load_sweep("digits_lr", SWEEPS), ["--sweep.seeds=2"]),
        "digits_lr", toy_sweep, experiments_dir=EXPERIMENTS, overrides=SHORT,
    )  # fmt: skip
    assert counts == {"ok": 4, "failed": 0, "missing": 0}
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_vmapped_seeds_equal_separate_runs(toy_sweep, tmp_path):
    """Each seed of the vmapped toy sweep is the run of that seed alone, up to float32
    rounding; and distinct seeds give distinct results."""
    sweep = load_sweep("digits_lr", SWEEPS)
    for seed in (0, 1):
        config = run_config(sweep, "0.003", seed, experiments_dir=EXPERIMENTS, overrides=SHORT)
        alone = tmp_path / f"alone-{seed}"
        train_and_evaluate(config, alone)
        together = run_dir(toy_sweep, "0.003", seed)
        assert _summary(together)["seeds_trained_together"] == [0, 1]
        for a, b in zip(_records(alone), _records(together), strict=True):
            for key in ("train_loss", "test_loss", "test_accuracy"):
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
        for x, y in zip(_params(alone), _params(together), strict=True):
            # atol: JAX 0.12's XLA rounds one in ~10^4 parameters 5e-6 apart here.
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    first, second = (_params(run_dir(toy_sweep, "0.003", s)) for s in (0, 1))
    assert not np.allclose(first[0], second[0])
    assert _records(run_dir(toy_sweep, "0.003", 0)) != _records(run_dir(toy_sweep, "0.003", 1))


def test_a_broken_point_fails_alone(tmp_path, capsys):
    # lenet5_classic takes 32x32 inputs only; the digits are 16x16: fails when traced.
    sweep = Sweep(
        experiment="digits_lenet",
        points={"modern": {}, "classic": {"model.name": "lenet5_classic"}},
        seeds=1,
    )
    counts = run_sweep(sweep, "broken", tmp_path, experiments_dir=EXPERIMENTS, overrides=SHORT)
    assert counts == {"ok": 1, "failed": 1, "missing": 0}
    error = json.loads((run_dir(tmp_path, "classic", 0) / "error.json").read_text())
    assert error["type"] == "ModelInputError" and "32" in error["error"]
    assert "Traceback" in (run_dir(tmp_path, "classic", 0) / "train.log").read_text()
    assert (run_dir(tmp_path, "modern", 0) / "summary.json").exists()
    assert "FAILED ModelInputError" in capsys.readouterr().out


def test_launch_exits_3_when_a_run_failed(tmp_path, monkeypatch):
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "broken.py").write_text(
        "from cnnjax.sweeps import Sweep\n"
        "def get_sweep():\n"
        "    return Sweep(experiment='digits_lenet', seeds=1,\n"
        "                 points={'classic': {'model.name': 'lenet5_classic'}})\n"
    )
    monkeypatch.setattr(launch, "SWEEPS_DIR", tmp_path / "sweeps")
    assert launch.main(["--sweep", "broken", "--workdir", str(tmp_path / "s"), *SHORT]) == 3
    assert "ModelInputError" in (tmp_path / "s" / "results.md").read_text()


def _wait_for_checkpoint(process: subprocess.Popen, directory: Path) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT
    while not any(p.name.isdigit() for p in directory.glob("checkpoints/*")):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("vmap", [False, True], ids=["one-by-one", "vmapped"])
def test_killed_sweep_resumes_without_rerunning_finished_runs(tmp_path, vmap):
    """SIGKILL while the second point trains (after its first checkpoint, step 9); the relaunch
    leaves the finished point's files untouched (one trainer start in its logs, same
    summary.json mtimes) and ends bitwise equal to an uninterrupted sweep."""
    # A save every 9 steps: the kill lands a few steps into the point's 72, not in a race
    # with its last epoch (one epoch of these digits takes well under a second).
    flags = [
        "--sweep.seeds=2",
        f"--sweep.vmap_seeds={str(vmap).lower()}",
        "--config.checkpoint.every_steps=9",
    ]
    whole = tmp_path / "whole"
    _run(_sweep_command(whole, *flags))
    killed = tmp_path / "killed"
    process = subprocess.Popen(_sweep_command(killed, *flags), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:  # vmapped seeds are saved one after the other, but asynchronously: either one's
        # write can finish first, so wait for each seed that is to resume
        for seed in (0, 1) if vmap else (0,):
            _wait_for_checkpoint(process, run_dir(killed, "0.003", seed))
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    assert not (run_dir(killed, "0.003", 0) / "summary.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in killed.glob("0.001/seed-*/summary.json")}
    assert len(finished) == 2
    _run(_sweep_command(killed, *flags))
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    for seed in (0, 1):
        log = (run_dir(killed, "0.001", seed) / "train.log").read_text()
        assert log.count("Experiment 'digits_lenet'") == 1
    # killed in seed 0's run (one by one, seed 1 had not started) or in both (vmapped)
    resumed = [
        (run_dir(killed, "0.003", seed) / "train.log").read_text().count("Resumed from checkpoint")
        for seed in (0, 1)
    ]
    assert resumed == ([1, 1] if vmap else [1, 0])
    for point in ("0.001", "0.003"):
        for seed in (0, 1):
            a, b = run_dir(whole, point, seed), run_dir(killed, point, seed)
            assert _deterministic(_records(a)) == _deterministic(_records(b))
            for x, y in zip(_params(a), _params(b), strict=True):
                assert np.array_equal(x, y)


@pytest.mark.slow
def test_sigterm_stops_a_sweep_with_checkpoints(tmp_path):
    command = _sweep_command(tmp_path, "--sweep.seeds=1", "--sweep.vmap_seeds=false")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    try:
        _wait_for_checkpoint(process, run_dir(tmp_path, "0.001", 0))
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
        process.communicate(timeout=60)
    assert process.returncode in (0, 143)  # 0 when the sweep ended before the signal landed
    if process.returncode == 143:
        assert "SIGTERM: sweep stopped" in err
    _run(command)
    assert (run_dir(tmp_path, "0.003", 0) / "summary.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "executor", [["--workers", "2"], ["--executor", "ray"]], ids=["workers", "ray"]
)
def test_other_executors_give_the_sequential_results(tmp_path, executor):
    flags = ["--sweep.seeds=2", "--sweep.vmap_seeds=false"]
    sequential = tmp_path / "sequential"
    run_sweep(
        apply_sweep_flags(load_sweep("digits_lr", SWEEPS), flags),
        "digits_lr", sequential, experiments_dir=EXPERIMENTS, overrides=SHORT,
    )  # fmt: skip
    if executor[1] == "ray":
        pytest.importorskip("ray")
    other = tmp_path / "other"
    env_note = _run(_sweep_command(other, *flags, *executor)).stdout
    assert "4 runs finished, 0 failed" in env_note
    for point in ("0.001", "0.003"):
        for seed in (0, 1):
            a, b = run_dir(sequential, point, seed), run_dir(other, point, seed)
            for x, y in zip(_records(a), _records(b), strict=True):
                for key in ("train_loss", "test_loss", "test_accuracy"):
                    assert y[key] == pytest.approx(x[key], rel=1e-6), key


# ------------------------------------------------------------------------- validation


def test_in_memory_splits_slice_like_tfds():
    whole = data_lib.sklearn_digits()
    named = {"train": whole.train, "test": whole.test}
    head = data_lib._slice_split(named, "train[:1150]")
    tail = data_lib._slice_split(named, "train[80%:]")
    np.testing.assert_array_equal(head.images, whole.train.images[:1150])
    np.testing.assert_array_equal(tail.labels, whole.train.labels[round(0.8 * 1437) :])
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        data_lib._slice_split(named, "valid")


def test_best_epoch_is_selected_on_the_validation_split(tmp_path, capsys):
    config = load_experiment("digits_lenet", EXPERIMENTS)
    config.dataset.train_split = "train[:1150]"
    config.dataset.validation_split = "train[1150:]"
    config.batch_size = 32
    config.total_epochs = 3
    summary = train_and_evaluate(config, tmp_path)
    assert "Data: sklearn_digits, 1,150 train / 287 validation / 360 test" in (
        capsys.readouterr().out
    )
    records = _records(tmp_path)
    assert all("val_accuracy" in r and "test_accuracy" in r for r in records)
    best = max(records, key=lambda r: r["val_accuracy"])
    assert summary["best_selected_on"] == "val"
    assert summary["best_epoch"] == best["epoch"]
    assert summary["best_val_accuracy"] == best["val_accuracy"]
    assert summary["best_test_accuracy"] == best["test_accuracy"]  # reported, not selected on
    assert summary["final_val_accuracy"] == records[-1]["val_accuracy"]


def test_a_signal_before_a_run_starts_stops_it_after_its_first_call(tmp_path):
    """A sweep's SIGTERM between runs reaches the next run's loop (nested StopRequest):
    it trains one call, saves a checkpoint and stops."""
    config = load_experiment("digits_lenet", EXPERIMENTS)
    config.batch_size = 32
    with StopRequest() as sweep_level:
        signal.raise_signal(signal.SIGTERM)
        assert sweep_level.requested
        with pytest.raises(Interrupted) as stopped:
            train_and_evaluate(config, tmp_path)
    assert (stopped.value.step, stopped.value.signum) == (1, signal.SIGTERM)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()] == ["1"]
