"""Ablation sweeps: many runs of one experiment over config points and seeds.

``python launch.py --sweep NAME`` loads ``experiments/sweeps/NAME.py`` (:mod:`.spec`),
trains every (point, seed) with :func:`cnnjax.training.train_and_evaluate` into
``SWEEPDIR/<point>/seed-<k>/`` (:mod:`.runner`), and writes the report (:mod:`.report`,
statistics in :mod:`.stats`).
"""

from cnnjax.sweeps.report import write_report
from cnnjax.sweeps.runner import EXECUTORS, Stopped, run_sweep
from cnnjax.sweeps.spec import Sweep, apply_sweep_flags, available_sweeps, load_sweep, run_config

__all__ = [
    "EXECUTORS",
    "Stopped",
    "Sweep",
    "apply_sweep_flags",
    "available_sweeps",
    "load_sweep",
    "run_config",
    "run_sweep",
    "write_report",
]
