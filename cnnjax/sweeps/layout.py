"""Where a sweep's runs live and how their state is read from disk.

``SWEEPDIR/<point>/seed-<k>/`` is an ordinary run directory. Its state: *ok* when
``summary.json`` exists (the run finished), else *failed* when ``error.json`` exists (its
last attempt raised), else *missing* (not started, or interrupted: a relaunch resumes it).
"""

from __future__ import annotations

from pathlib import Path

from cnnjax.training.trainer import seed_dir

STATUSES = ("ok", "failed", "missing")


def run_dir(sweep_dir: str | Path, point: str, seed: int) -> Path:
    """``SWEEPDIR/<point>/seed-<k>``: the run directory of ``(point, seed)``."""
    return seed_dir(Path(sweep_dir) / point, seed)


def run_status(directory: Path) -> str:
    """``"ok"``, ``"failed"`` or ``"missing"`` (see the module docstring)."""
    if (directory / "summary.json").exists():
        return "ok"
    return "failed" if (directory / "error.json").exists() else "missing"
