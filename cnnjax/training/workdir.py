"""A run's work directory: what is moved out of the way (never deleted).

``set_aside/`` in a run directory holds what a run will not use again: checkpoints that do
not verify (``checkpoint-STEP``) and, after ``--restart``, the files of the run before
(``run-DATE-TIME``).
"""

from __future__ import annotations

import time
from pathlib import Path

SET_ASIDE = "set_aside"


def unused_path(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2``, ... : the first that does not exist."""
    candidate, k = path, 0
    while candidate.exists():
        k += 1
        candidate = path.with_name(f"{path.name}.{k}")
    return candidate


def set_aside_run(run_dir: Path, *, keep: tuple[str, ...] = ()) -> Path | None:
    """Moves everything in ``run_dir`` except ``set_aside/`` and the names in ``keep`` into
    ``run_dir/set_aside/run-DATE-TIME``; returns that directory (None: nothing to move)."""
    if not run_dir.is_dir():
        return None
    entries = [p for p in run_dir.iterdir() if p.name not in (SET_ASIDE, *keep)]
    if not entries:
        return None
    target = unused_path(run_dir / SET_ASIDE / f"run-{time.strftime('%Y%m%d-%H%M%S')}")
    target.mkdir(parents=True)
    for path in entries:
        path.rename(target / path.name)
    return target
