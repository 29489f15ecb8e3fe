"""A run's work directory: one process at a time, resumed only by a compatible config,
and what is moved out of the way (never deleted).

- **Lock.** ``cnnjax.lock`` (the holder's pid, host and start time) is created atomically
  before anything else is written and removed at exit; a second launch on the directory
  fails at once without touching anything. The lock of a process that is dead (same
  host, no such pid) is taken over with a warning. Object storage (``gs://``) offers no
  atomic create, so a work directory there is not locked.
- **Resume.** A relaunch whose config changes the train state's structure or the data
  order is refused before anything is written; other changes are listed and allowed.
- **Set aside.** ``set_aside/`` holds what a run will not use again: checkpoints that do
  not verify (``checkpoint-STEP``) and, after ``--restart``, the files of the run before
  (``run-DATE-TIME``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from etils import epath

from cnnjax.training.errors import IncompatibleResumeError, WorkdirError, WorkdirLockedError

SET_ASIDE = "set_aside"
LOCK = "cnnjax.lock"


def as_path(workdir: str | os.PathLike) -> epath.Path:
    """``workdir`` as an ``etils.epath`` path: local, or a URI (``gs://bucket/run``) kept
    as one."""
    return epath.Path(workdir)


def is_local(path: str | os.PathLike) -> bool:
    """Whether ``path`` is on a local file system (not an object store URI)."""
    return "://" not in str(path)


def unused_path(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2``, ... : the first that does not exist."""
    candidate, k = path, 0
    while candidate.exists():
        k += 1
        candidate = path.with_name(f"{path.name}.{k}")
    return candidate


def set_aside_run(run_dir: Path) -> Path | None:
    """Moves everything in ``run_dir`` except ``set_aside/`` and the lock into
    ``run_dir/set_aside/run-DATE-TIME``; returns that directory (None: nothing to move)."""
    if not run_dir.is_dir():
        return None
    entries = [p for p in run_dir.iterdir() if p.name not in (SET_ASIDE, LOCK)]
    if not entries:
        return None
    target = unused_path(run_dir / SET_ASIDE / f"run-{time.strftime('%Y%m%d-%H%M%S')}")
    target.mkdir(parents=True)
    for path in entries:
        path.rename(target / path.name)
    return target


# ----------------------------------------------------------------------------- the lock


def _holder() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def _read_holder(path: Path) -> dict[str, Any] | None:
    """The lock's holder, or None when the file is gone or unreadable (a torn write)."""
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) and {"pid", "host"} <= holder.keys() else None
    except (OSError, ValueError):
        return None


def _acquire(directory: Path) -> Path:
    """Creates ``directory/LOCK`` holding this process's pid and host (``O_EXCL``, so of
    two processes exactly one succeeds); takes over the lock of a dead process on this
    host with a warning. Raises WorkdirLockedError when a live process holds it."""
    path = directory / LOCK
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_holder(path)
            here = holder is not None and holder["host"] == socket.gethostname()
            if holder is not None and not (here and not _alive(holder["pid"])):
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
                raise WorkdirLockedError(
                    f"{directory} is in use by process {holder['pid']} on host "
                    f"{holder['host']} (since {since}): wait for it to finish, or use another "
                    f"--workdir (if that process is gone, delete {path})"
                ) from None
            what = "of a dead process" if holder else "that cannot be read"
            print(f"Warning: taking over the lock {path} {what} ({holder})", file=sys.stderr)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(_holder(), f)
        return path


@contextlib.contextmanager
def locked(directories: Sequence[Path]) -> Iterator[None]:
    """Holds the lock of every directory in ``directories`` (created if missing) while
    the block runs; a directory this created and that holds nothing else afterwards is
    removed again, so a run refused for its config leaves no trace.

    Raises:
      WorkdirLockedError: another live process holds one of the locks (nothing changed).
      WorkdirError: a directory cannot be created or written.
    """
    with contextlib.ExitStack() as stack:
        for directory in directories:
            created = not directory.exists()
            try:
                directory.mkdir(parents=True, exist_ok=True)
                if not is_local(directory):
                    print(f"Note: {directory} is on object storage, where no lock can be "
                          "taken: run one job at a time in it", flush=True)  # fmt: skip
                    continue
                lock = _acquire(directory)
            except OSError as e:
                raise WorkdirError(f"cannot use {directory} as a work directory: {e}") from e
            stack.callback(_release, lock, created)
        yield


# A write that failed for want of room or permission (RLIMIT_FSIZE gives EFBIG).
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)
# TensorStore (orbax's writer) raises ValueError with the errno only in its text.
_TENSORSTORE_ERRNO = re.compile(r"\[os_error_code='(\d+)'\]")


@contextlib.contextmanager
def write_errors() -> Iterator[None]:
    """Re-raises an error caused by a write that failed for want of room or permission
    (found anywhere in its chain of causes, as orbax wraps them) as WorkdirError."""
    try:
        yield
    except Exception as e:
        message = _write_failure(e)
        if message is None:
            raise
        raise WorkdirError(f"cannot write in the work directory: {message}") from e


def _write_failure(error: BaseException | None) -> str | None:
    """What failed to be written, if ``error`` or one of its causes is such a failure."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in _WRITE_ERRNOS:
            return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
        code = _TENSORSTORE_ERRNO.search(str(error))
        if code and int(code.group(1)) in _WRITE_ERRNOS:
            return f"{os.strerror(int(code.group(1)))} (while writing a checkpoint)"
        error = error.__cause__ or error.__context__
    return None


def _release(lock: Path, created: bool) -> None:
    lock.unlink(missing_ok=True)
    if created and not any(lock.parent.iterdir()):
        lock.parent.rmdir()


# ----------------------------------------------------------------------------- resuming

# Config fields that fix the train state's structure or the data order: a run may not be
# resumed with any of them changed (dotted prefixes; a field under one is covered).
_FIXED = ("experiment", "seed", "task", "model.", "batch_size", "optimizer.name",
          "optimizer.momentum", "augment.", "dataset.name", "dataset.train_split",
          "dataset.pad", "dtype")  # fmt: skip


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple]:
    """``{dotted field: (saved value, current value)}`` for every field that differs."""
    a, b = _flatten(saved), _flatten(current)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def check_resumable(run_dir: Path, config: dict[str, Any]) -> str | None:
    """Refuses to resume the run in ``run_dir`` (its ``config.json``) with ``config`` if
    a field in ``_FIXED`` changed; returns a line naming the other changes, which are
    safe (None if there are none, or no run to resume).

    Raises:
      IncompatibleResumeError: naming the changed fields, before anything is written.
    """
    path = run_dir / "config.json"
    if not path.exists():
        return None
    changes = config_changes(json.loads(path.read_text()), config)
    unsafe = {k: v for k, v in changes.items() if k.startswith(_FIXED)}
    listed = lambda c: ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in c.items())  # noqa: E731
    if unsafe:
        raise IncompatibleResumeError(
            f"{run_dir} holds a run whose train state or data order this config changes "
            f"({listed(unsafe)}); relaunch with --restart to set that run aside and start "
            "afresh, or use another --workdir"
        )
    return f"Resuming {run_dir} with safe config changes: {listed(changes)}" if changes else None


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
