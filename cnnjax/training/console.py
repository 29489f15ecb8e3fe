"""What a run prints: the progress bar's postfix, one line per epoch, the final report.

Each is a pure function of the numbers :mod:`cnnjax.training.metrics` records, formatted
with the task's metric (:meth:`cnnjax.training.tasks.Task.format`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from cnnjax.training.tasks import Reconstruction, Task


def train_postfix(sums: dict[str, jax.Array], task: Task, images: int, seconds: float) -> str:
    """The epoch's train loss and metric so far (``sums`` of the train state, summed over
    seeds when stacked) and the steady speed of ``images`` in ``seconds``."""
    sums = {k: np.sum(v) for k, v in jax.device_get(sums).items()}  # over seeds, if stacked
    count = max(int(sums["count"]), 1)
    speed = f", {images / seconds:,.0f} img/s" if seconds > 0 and images else ""
    return (
        f"loss {sums['loss'] / count:.4f}, {task.metric} "
        f"{task.format(sums['metric'] / count)}{speed}"
    )


def epoch_line(r: dict[str, Any], num_epochs: int, task: Task) -> str:
    """One line for the epoch record ``r`` (see :mod:`cnnjax.training.metrics`)."""
    speed = r["steady_images"] / r["steady_seconds"] if r["steady_seconds"] > 0 else 0.0
    m = task.metric
    splits = "  ".join(
        f"{split} loss {r[f'{split}_loss']:.4f} {m} {task.format(r[f'{split}_{m}'])}"
        for split in ("train", "val", "test")
        if f"{split}_loss" in r
    )
    return (
        f"epoch {r['epoch']:>3}/{num_epochs}  step {r['step']:>7,}  lr {r['lr']:.2e}  "
        f"{splits}  {speed:,.0f} img/s  {r['elapsed_seconds']:.1f}s"
    )


def final_report(s: dict[str, Any], workdir: Path, task: Task) -> str:
    """The end of a run: final and best metric, time, speed, and where the outputs are
    (``s``: the run's ``summary.json``)."""
    m = task.metric
    to_target = (
        f"{s['seconds_to_target']:.1f}s" if s["seconds_to_target"] is not None else "not reached"
    )
    target = s[f"target_{m}"]
    speed = s["train_images_per_second"]
    extra = ", reconstructions.png" if isinstance(task, Reconstruction) else ""
    lines = [
        f"Final test {m} {task.format(s[f'final_test_{m}'])} "
        f"(best {task.format(s[f'best_test_{m}'])} at epoch {s['best_epoch']})"
        if s[f"final_test_{m}"] is not None
        else "No epoch finished.",
        f"Trained {s['steps']:,} steps in {s['train_seconds']:.1f}s"
        + (f", {speed:,.0f} img/s steady state" if speed else "")
        + (f"; time to test {m} {task.format(target)}: {to_target}" if target else "")
        + ".",
        f"Outputs in {workdir}/: config.json, metrics.jsonl, summary.json, "
        f"learning_curves.png{extra}, tensorboard/, checkpoints/",
    ]
    return "\n".join(lines)
