"""What a run writes besides checkpoints: metric records, TensorBoard, plots, summary.

``metrics.jsonl`` gets one JSON object per epoch, appended and flushed to disk as soon as
the epoch's evaluation ends, so a crash keeps every epoch already finished. The same
numbers go to TensorBoard event files (``tensorboard/``). The learning-curve PNG and
``summary.json`` are derived from the records, so they can always be rebuilt from
``metrics.jsonl``.

Record fields: ``epoch`` (1-based), ``step`` (optimizer steps so far), ``lr`` (at the last
step), ``train_loss``/``train_accuracy`` (over the epoch's steps), ``test_loss``/
``test_accuracy`` (over the whole test split), ``elapsed_seconds`` (wall time from the
run's first step to the end of this evaluation, compilation included, summed over
restarts), ``epoch_seconds``, and ``steady_images``/``steady_seconds`` (images trained and
seconds spent in train steps this epoch, leaving out each process's first call, which
includes compilation).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

Record = dict[str, Any]

_TENSORBOARD_TAGS = {
    "train_loss": "train/loss",
    "train_accuracy": "train/accuracy",
    "test_loss": "test/loss",
    "test_accuracy": "test/accuracy",
    "lr": "learning_rate",
}


def write_json(path: str | Path, obj: Any) -> None:
    """Writes ``obj`` as indented JSON, atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


class MetricsLog:
    """``metrics.jsonl`` and TensorBoard events in ``workdir``."""

    def __init__(self, workdir: str | Path):
        from tensorboardX import SummaryWriter

        self.path = Path(workdir) / "metrics.jsonl"
        self._tensorboard = SummaryWriter(logdir=str(Path(workdir) / "tensorboard"))

    def records(self) -> list[Record]:
        """Every record written so far, oldest first."""
        if not self.path.exists():
            return []
        with self.path.open() as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate(self, step: int) -> list[Record]:
        """Keeps only the records at or before ``step`` (those a resume from checkpoint
        ``step`` will not redo) and returns them."""
        kept = [r for r in self.records() if r["step"] <= step]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)
        return kept

    def append(self, record: Record) -> None:
        """Appends ``record`` to the file (flushed and synced) and to TensorBoard."""
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for key, tag in _TENSORBOARD_TAGS.items():
            self._tensorboard.add_scalar(tag, record[key], record["step"])
        self._tensorboard.flush()

    def close(self) -> None:
        self._tensorboard.close()


def plot_learning_curves(records: list[Record], path: str | Path) -> None:
    """Loss and accuracy per epoch, train and test, side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "test"):
        loss_ax.plot(epochs, [r[f"{split}_loss"] for r in records], "o-", label=split)
        acc_ax.plot(epochs, [100 * r[f"{split}_accuracy"] for r in records], "o-", label=split)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarize(
    records: list[Record], *, experiment: str, params: int, target_accuracy: float | None
) -> dict[str, Any]:
    """The ``summary.json`` of a run from its records (keys as in the SPEC).

    ``train_images_per_second`` is steady state: images over seconds of the train steps,
    leaving out each process's first call (compilation). ``seconds_to_target`` is the
    ``elapsed_seconds`` of the first evaluation that reached ``target_accuracy``, or None.
    """
    last = records[-1] if records else {}
    accuracies = [r["test_accuracy"] for r in records]
    steady_seconds = sum(r["steady_seconds"] for r in records)
    reached = [
        r["elapsed_seconds"]
        for r in records
        if target_accuracy is not None and r["test_accuracy"] >= target_accuracy
    ]
    best = max(range(len(records)), key=lambda i: accuracies[i]) if records else None
    return {
        "experiment": experiment,
        "params": params,
        "epochs": last.get("epoch", 0),
        "steps": last.get("step", 0),
        "final_test_accuracy": last.get("test_accuracy"),
        "final_test_loss": last.get("test_loss"),
        "best_test_accuracy": accuracies[best] if records else None,
        "best_epoch": records[best]["epoch"] if records else None,
        "train_seconds": last.get("elapsed_seconds", 0.0),
        "train_images_per_second": (
            sum(r["steady_images"] for r in records) / steady_seconds
            if steady_seconds > 0
            else None
        ),
        "target_accuracy": target_accuracy,
        "seconds_to_target": reached[0] if reached else None,
    }
