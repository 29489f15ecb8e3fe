"""What a run writes besides checkpoints: metric records, TensorBoard, plots, summary.

``metrics.jsonl`` gets one JSON object per epoch, appended and flushed to disk as soon as
the epoch's evaluation ends, so a crash keeps every epoch already finished. The same
numbers go to TensorBoard event files (``tensorboard/``). The learning-curve PNG and
``summary.json`` are derived from the records, so they can always be rebuilt from
``metrics.jsonl``.

Record fields: ``epoch`` (1-based), ``step`` (optimizer steps so far), ``lr`` (at the last
step), ``train_loss``/``train_<metric>`` (over the epoch's steps), ``test_loss``/
``test_<metric>`` (over the whole test split), where ``<metric>`` is the task's
(``accuracy`` for classifiers, ``psnr`` for reconstruction; :mod:`cnnjax.training.tasks`),
``elapsed_seconds`` (wall time from the run's first step to the end of this evaluation,
compilation included, summed over restarts), ``epoch_seconds``, and
``steady_images``/``steady_seconds`` (images trained and seconds spent in train steps this
epoch, leaving out each process's first call, which includes compilation), and
``skipped_steps`` (steps of the epoch whose update was skipped as non-finite, with
``on_nonfinite="skip_step"``).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from etils import epath

from cnnjax.training.workdir import is_local

Record = dict[str, Any]


def write_json(path: str | os.PathLike, obj: Any, *, sort_keys: bool = True) -> None:
    """Writes ``obj`` as indented JSON, atomically (temporary file, then rename); keys
    sorted unless their order means something (``sort_keys=False``)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` (local or an ``epath`` URI such as ``gs://``) through a
    temporary file renamed over it, so a reader never sees half of it."""
    path = epath.Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def save_figure(fig: Any, path: str | os.PathLike) -> None:
    """Saves the matplotlib ``fig`` as a PNG at ``path`` (local or an ``epath`` URI)."""
    with epath.Path(path).open("wb") as f:
        fig.savefig(f, format="png", dpi=100)


class MetricsLog:
    """``metrics.jsonl`` and TensorBoard events in ``workdir``, for a task's ``metric`` on
    ``splits`` (``"train"``, ``"val"``, ``"test"``). With ``write=False`` (the processes
    other than 0 of a multi-process run) it only reads: appending does nothing."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        metric: str,
        splits: tuple[str, ...] = ("train", "test"),
        write: bool = True,
    ):
        self._tags = {"lr": "learning_rate", "skipped_steps": "train/skipped_steps"}
        for split in splits:
            for name in ("loss", metric):
                self._tags[f"{split}_{name}"] = f"{split}/{name}"
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self._write = write
        if write:
            self._tensorboard = _summary_writer(str(epath.Path(workdir) / "tensorboard"))

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
        if not self._write:
            return kept
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        return kept

    def append(self, record: Record) -> None:
        """Appends ``record`` to the file (flushed and synced; on object storage, which
        cannot append, the file is written anew) and to TensorBoard."""
        if not self._write:
            return
        if is_local(self.path):
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
        else:
            write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records() + [record]))
        for key, tag in self._tags.items():
            self._tensorboard.add_scalar(tag, record[key], record["step"])
        self._tensorboard.flush()

    def close(self) -> None:
        if self._write:
            self._tensorboard.close()


def _summary_writer(logdir: str) -> Any:
    """A tensorboardX ``SummaryWriter`` for ``logdir``, imported without torch.

    tensorboardX imports torch whenever it is installed, only to accept torch tensors,
    which adds over a second to every process start; the values written here are floats.
    """
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide:
            del sys.modules["torch"]
    return SummaryWriter(logdir=logdir)


def plot_learning_curves(
    records: list[Record], path: str | os.PathLike, *, metric: str, loss_name: str
) -> None:
    """Loss and ``metric`` per epoch, train and test, side by side, as a PNG
    (accuracy is drawn in %)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    scale, label = (100, "accuracy (%)") if metric == "accuracy" else (1, metric)
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for split in [s for s in ("train", "val", "test") if f"{s}_loss" in records[0]]:
        loss_ax.plot(epochs, [r[f"{split}_loss"] for r in records], "o-", label=split)
        metric_ax.plot(epochs, [scale * r[f"{split}_{metric}"] for r in records], "o-", label=split)
    loss_ax.set(xlabel="epoch", ylabel=loss_name, title="loss")
    metric_ax.set(xlabel="epoch", ylabel=label, title=metric)
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def summarize(
    records: list[Record],
    *,
    experiment: str,
    params: int,
    metric: str = "accuracy",
    target: float | None,
    select: str = "test",
) -> dict[str, Any]:
    """The ``summary.json`` of a run from its records (keys as in the SPEC).

    ``final_test_<metric>``/``best_test_<metric>``/``target_<metric>`` name the task's
    metric; ``final_test_accuracy`` and ``best_test_accuracy`` are always present (None for
    a task without accuracy). The best epoch is the one with the highest ``select``
    (``"val"`` or ``"test"``) metric, and ``best_test_<metric>`` is the test metric of that
    epoch: selected on the validation split it is an unbiased estimate, selected on the
    test split an optimistic one. With ``select="val"``, ``final_val_<metric>`` and
    ``best_val_<metric>`` are added. ``train_images_per_second`` is steady state: images
    over seconds of the train steps, leaving out each process's first call (compilation).
    ``seconds_to_target`` is the ``elapsed_seconds`` of the first evaluation whose test
    metric reached ``target``, or None.
    """
    last = records[-1] if records else {}
    scores = [r[f"{select}_{metric}"] for r in records]
    steady_seconds = sum(r["steady_seconds"] for r in records)
    reached = [
        r["elapsed_seconds"]
        for r in records
        if target is not None and r[f"test_{metric}"] >= target
    ]
    best = max(range(len(records)), key=lambda i: scores[i]) if records else None
    summary = {
        "experiment": experiment,
        "params": params,
        "epochs": last.get("epoch", 0),
        "steps": last.get("step", 0),
        "metric": metric,
        "final_test_accuracy": None,
        "best_test_accuracy": None,
        f"final_test_{metric}": last.get(f"test_{metric}"),
        "final_test_loss": last.get("test_loss"),
        f"best_test_{metric}": records[best][f"test_{metric}"] if records else None,
        "best_epoch": records[best]["epoch"] if records else None,
        "best_selected_on": select,
        "train_seconds": last.get("elapsed_seconds", 0.0),
        "train_images_per_second": (
            sum(r["steady_images"] for r in records) / steady_seconds
            if steady_seconds > 0
            else None
        ),
        f"target_{metric}": target,
        "seconds_to_target": reached[0] if reached else None,
    }
    if select == "val":
        summary[f"final_val_{metric}"] = last.get(f"val_{metric}")
        summary[f"best_val_{metric}"] = scores[best] if records else None
    return summary
