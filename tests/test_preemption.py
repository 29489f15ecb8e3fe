"""Prompt, safe preemption: SIGTERM/SIGINT is honoured after the train call that runs (not
after the epoch's queued work, its evaluation or a periodic save), one checkpoint is
written, a second signal during that save corrupts nothing, and periodic checkpoints in
steps or minutes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import pytest
from launcher import launch
from short_run import SHORT_RUN, digits_config

from cnnjax.training import Interrupted, train_and_evaluate
from cnnjax.training import augment as augment_lib
from cnnjax.training import trainer as trainer_lib
from cnnjax.training.checkpoint import SaveSchedule

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("compilation_cache")


def _steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _heavy(key, x):
    """No augmentation, but 30 ms of device work per step (matrix products whose result
    is folded in as 0), so that the host could queue many calls ahead of the device."""
    del key
    y = jnp.ones((256, 256), x.dtype)
    for _ in range(40):
        y = jnp.tanh(y @ y)
    return x + 0.0 * y[0, 0]


def test_at_most_one_train_call_waits_behind_the_running_one(tmp_path, monkeypatch):
    """What makes a stop prompt: when the loop dispatches a call, at most one earlier
    call is unfinished (the running one), so a stop waits for at most two calls, never
    for the rest of the epoch; SIGTERM, sent at the dispatch of the call of steps 63-72,
    saves at step 72 and stops before the epoch's end (89) and its evaluation."""
    unfinished, outputs = [], []
    make_chunk = trainer_lib.make_train_chunk

    def watched_chunk(*args, **kwargs):
        chunk = make_chunk(*args, **kwargs)

        def call(state, *call_args, num_steps):
            unfinished.append(sum(not done.is_ready() for done in outputs))
            if int(call_args[3]) == 63:  # the call's first step in the epoch
                os.kill(os.getpid(), signal.SIGTERM)
            state, done = chunk(state, *call_args, num_steps=num_steps)
            outputs.append(done)
            return state, done

        return call

    monkeypatch.setattr(trainer_lib, "make_train_chunk", watched_chunk)
    monkeypatch.setitem(augment_lib.AUGMENTATIONS, "heavy", _heavy)
    config = digits_config("--config.steps_per_call=9", "--config.augment.name=heavy")
    with pytest.raises(Interrupted) as e:
        train_and_evaluate(config, tmp_path)
    assert e.value.signum == signal.SIGTERM and e.value.step == 72
    assert _steps(tmp_path) == [72]  # one checkpoint
    assert _records(tmp_path) == []  # no evaluation was waited for
    assert max(unfinished) <= 1, unfinished


def test_a_stop_before_the_evaluation_resumes_with_it(tmp_path):
    """Stopped right at the end of epoch 1, before its evaluation: the resumed run
    evaluates epoch 1 first and ends with the records of an uninterrupted run."""
    whole = tmp_path / "whole"
    train_and_evaluate(digits_config(*SHORT_RUN), whole)
    cut = tmp_path / "cut"
    with pytest.raises(Interrupted):
        train_and_evaluate(digits_config(*SHORT_RUN), cut, stop_at_step=22)
    assert _records(cut) == []
    train_and_evaluate(digits_config(*SHORT_RUN), cut)
    keys = ("epoch", "step", "train_loss", "train_accuracy", "test_loss", "test_accuracy")
    assert [[r[k] for k in keys] for r in _records(cut)] == [
        [r[k] for k in keys] for r in _records(whole)
    ]


def test_periodic_checkpoints_in_steps(tmp_path):
    config = digits_config(
        *SHORT_RUN, "--config.checkpoint.every_steps=8", "--config.checkpoint.keep=9"
    )
    train_and_evaluate(config, tmp_path)
    assert _steps(tmp_path) == [8, 16, 22, 24, 30]


def test_periodic_checkpoints_in_minutes():
    now = [0.0]
    schedule = SaveSchedule(every_steps=None, every_minutes=0.5, step=0, clock=lambda: now[0])
    assert not schedule.due(5)
    now[0] = 29.0
    assert not schedule.due(6)
    now[0] = 30.0
    assert schedule.due(7)
    schedule.saved(7)
    now[0] = 59.0
    assert not schedule.due(8)


def test_a_second_signal_during_the_save_corrupts_nothing(tmp_path):
    """SIGTERM, then another as soon as the stop's checkpoint is being written (its
    temporary directory exists): the process dies at once; the next launch resumes from
    the newest complete checkpoint and finishes."""
    workdir = tmp_path / "run"
    command = ["--exp", "digits_lenet", "--workdir", str(workdir), "--config.batch_size=64"]
    process = subprocess.Popen(
        [sys.executable, "launch.py", *command, "--config.total_epochs=10000"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        checkpoints = workdir / "checkpoints"

        def writing() -> bool:
            return any("tmp" in p.name for p in checkpoints.iterdir())

        # The first epoch's checkpoint complete and no write in flight, so that the second
        # signal below lands on the stop's own save, not on that epoch's.
        while not checkpoints.exists() or not _steps(workdir) or writing():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        while process.poll() is None and not writing():
            time.sleep(0.001)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM)
    done = max(_steps(workdir))
    end = done + 3
    relaunch = [*command, "--config.total_epochs=None", f"--config.total_steps={end}"]
    assert launch.main(relaunch) == 0
    assert json.loads((workdir / "summary.json").read_text())["steps"] == end
    assert not any("tmp" in p.name for p in checkpoints.iterdir())  # cleaned up


def test_sigint_exits_130_with_one_line(tmp_path):
    """Ctrl-C through the real CLI: one line on stderr, exit 130, a checkpoint."""
    workdir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "launch.py", "--exp", "digits_lenet", "--workdir", str(workdir),
         "--config.batch_size=64", "--config.total_epochs=10000"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (workdir / "metrics.jsonl").exists() or not _records(workdir):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGINT
    [line] = err.strip().splitlines()
    assert line.startswith("SIGINT: saved a checkpoint at step")
    assert _steps(workdir)
