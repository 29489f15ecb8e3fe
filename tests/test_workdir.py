"""One run per work directory, resumed only by a compatible config, and a work directory
that cannot be written: each provoked for real through ``launch.main``."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from launcher import launch
from short_run import SHORT_RUN

from cnnjax.training import workdir as workdir_lib
from cnnjax.training.errors import (
    IncompatibleResumeError,
    WorkdirError,
    WorkdirLockedError,
)

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("compilation_cache")


def _snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``directory`` with its mtime and content."""
    return {
        str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _launch(workdir: Path, *extra: str) -> int:
    return launch.main(["--exp", "digits_lenet", "--workdir", str(workdir), *SHORT_RUN, *extra])


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_a_second_launch_on_a_locked_workdir_fails_at_once_touching_nothing(tmp_path, capsys):
    workdir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from cnnjax.training.workdir import locked
            with locked([Path({str(workdir)!r})]):
                Path({str(workdir)!r}, "metrics.jsonl").write_text("{{}}\\n")
                print("locked", flush=True)
                time.sleep(120)
        """)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _snapshot(workdir)
        assert _launch(workdir) == launch.EXIT_CODES[WorkdirLockedError] == 7
        line = _one_error_line(capsys.readouterr().err)
        assert f"in use by process {holder.pid} on host {socket.gethostname()}" in line
        assert _snapshot(workdir) == before
    finally:
        holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()


def test_the_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    (tmp_path / workdir_lib.LOCK).write_text(
        json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": 0})
    )
    with workdir_lib.locked([tmp_path]):
        holder = json.loads((tmp_path / workdir_lib.LOCK).read_text())
        assert holder["pid"] == os.getpid()
    assert "taking over the lock" in capsys.readouterr().err
    assert not (tmp_path / workdir_lib.LOCK).exists()  # released


def test_a_run_refused_in_a_new_directory_leaves_no_trace(tmp_path, capsys):
    config = ["--config.batch_size=2000"]  # more than the training examples: refused late
    assert _launch(tmp_path / "new", *config) == 2
    _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "new").exists()


def test_an_incompatible_relaunch_is_refused_before_anything_is_written(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert _launch(workdir) == 0
    before = _snapshot(workdir)
    capsys.readouterr()
    changes = ("--config.batch_size=32", "--config.seed=1", "--config.model.name=nin")
    for change in changes:
        assert _launch(workdir, change) == launch.EXIT_CODES[IncompatibleResumeError] == 8
        line = _one_error_line(capsys.readouterr().err)
        assert "--restart" in line and change.split("=")[0].removeprefix("--config.") in line
        assert _snapshot(workdir) == before
    # A safe change resumes and is listed; the metrics keep one record per epoch (the
    # record of the partial epoch 2 that ended the first run is replaced).
    assert _launch(workdir, "--config.total_steps=40", "--config.steps_per_call=4") == 0
    out = capsys.readouterr().out
    assert "safe config changes: steps_per_call: 1 -> 4, total_steps: 30 -> 40" in out
    assert "Resumed from checkpoint at step 30" in out
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in records] == [(1, 22), (2, 40)]


def test_restart_sets_an_incompatible_run_aside_and_starts_afresh(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert _launch(workdir) == 0
    assert _launch(workdir, "--config.seed=1", "--restart") == 0
    [before] = (workdir / "set_aside").glob("run-*")
    assert json.loads((before / "config.json").read_text())["seed"] == 0
    assert json.loads((workdir / "config.json").read_text())["seed"] == 1


def test_a_workdir_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert _launch(tmp_path / "file" / "run") == launch.EXIT_CODES[WorkdirError] == 6
    assert "cannot use" in _one_error_line(capsys.readouterr().err)


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (needs root; skipped elsewhere), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                      capture_output=True).returncode:  # fmt: skip
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_is_one_line_and_keeps_what_was_written(small_disk):
    """The checkpoints do not fit on 256 KiB: the real CLI stops with one line on stderr,
    and the files written before (config.json, metrics.jsonl) are intact."""
    workdir = small_disk / "run"
    result = subprocess.run(
        [sys.executable, "launch.py", "--exp", "digits_lenet", "--workdir", str(workdir),
         *SHORT_RUN],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == launch.EXIT_CODES[WorkdirError]
    assert "No space left on device" in _one_error_line(result.stderr)
    assert json.loads((workdir / "config.json").read_text())["experiment"] == "digits_lenet"
    for record in (workdir / "metrics.jsonl").read_text().splitlines():
        json.loads(record)


def test_a_read_only_workdir_is_one_line(small_disk, capsys):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert _launch(small_disk / "run") == launch.EXIT_CODES[WorkdirError]
    assert "Read-only file system" in _one_error_line(capsys.readouterr().err)


def test_check_resumable_returns_the_safe_changes_and_prints_nothing(tmp_path, capsys):
    """The trainer prints the line on process 0 only; the check itself says nothing."""
    saved = {"total_steps": 30, "steps_per_call": 1, "batch_size": 64}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert workdir_lib.check_resumable(tmp_path, saved) is None
    line = workdir_lib.check_resumable(tmp_path, {**saved, "total_steps": 40})
    assert line == f"Resuming {tmp_path} with safe config changes: total_steps: 30 -> 40"
    assert workdir_lib.check_resumable(tmp_path / "none", saved) is None  # no earlier run
    assert capsys.readouterr() == ("", "")
