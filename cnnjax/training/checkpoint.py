"""Orbax checkpoints of a run, and the protocol that makes resuming exact.

Protocol
--------
What a checkpoint holds. Checkpoint ``S`` (a directory ``checkpoints/S``) is the state
after ``S`` optimizer steps: the :class:`~cnnjax.training.step.TrainState` pytree (params,
batch statistics, optimizer state, step, and the running sums of the current epoch's
train metrics) plus a JSON ``meta`` item (epoch and position in it, wall seconds so far,
the resolved config, library versions). Nothing else is needed to continue: every random
choice is derived from ``(seed, step)`` (step keys) or ``(seed, epoch)`` (data order).

When it is written. After the evaluation of every ``checkpoint.every_epochs``-th epoch
(tagged with that epoch's test metric: accuracy, or PSNR for reconstruction), after the
last step, and when SIGTERM/SIGINT asks the run to stop (untagged). Orbax writes each
checkpoint under a temporary name and renames it when complete, so a crash mid-write
leaves the previous checkpoints intact.

Which are kept. The latest ``checkpoint.keep`` and, with ``checkpoint.keep_best``, the one
with the best metric (both metrics are better when higher), measured on the validation
split when the run has one, else on the test split.

Async. With ``checkpoint.async_save`` ``save`` returns once the arrays are copied off the
device; files are written in a background thread. A new save waits for the previous one,
and :meth:`Checkpoints.close` waits for the last before the process exits.

Resume. The trainer restores the latest checkpoint into the abstract state of a fresh run
(so shapes, dtypes and shardings come from the code, values from disk), drops metric
records written after that step, and continues from the step's epoch and position.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from cnnjax.training.step import TrainState

_BEST_METRIC = "test_metric"  # its key in the metrics orbax stores beside each checkpoint


class Checkpoints:
    """The checkpoints of one work directory.

    Args:
      directory: where checkpoints live (created if missing).
      keep: how many of the most recent checkpoints to keep.
      keep_best: also keep the checkpoint with the highest test metric.
      async_save: write in a background thread.
    """

    def __init__(self, directory: str | Path, *, keep: int, keep_best: bool, async_save: bool):
        policies = [ocp.checkpoint_managers.LatestN(keep)]
        if keep_best:
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda metrics: metrics[_BEST_METRIC],
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            Path(directory).absolute(), item_names=("state", "meta"), options=options
        )

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """The steps of every complete checkpoint, ascending."""
        return sorted(self._manager.all_steps())

    def save(
        self, state: TrainState, *, step: int, meta: dict[str, Any], best_metric: float | None
    ) -> None:
        """Saves ``state`` (after ``step`` steps) with ``meta``; returns before it is on disk
        when async. ``best_metric`` tags the checkpoint for keep-best (None: untagged).

        A checkpoint of ``step`` that exists already is kept as it is: training is
        deterministic, so it holds this same state (this happens when runs trained
        together resume from the newest step they all have).
        """
        if step in self._manager.all_steps():
            return
        metrics = None if best_metric is None else {_BEST_METRIC: best_metric}
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            metrics=metrics,
            force=True,
        )

    def restore(self, abstract_state: TrainState, step: int) -> tuple[TrainState, dict]:
        """The state and meta of checkpoint ``step``.

        ``abstract_state`` gives the structure, shapes, dtypes and shardings (leaves are
        ``jax.ShapeDtypeStruct`` with ``sharding`` set).
        """
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return restored.state, restored.meta

    def close(self) -> None:
        """Waits for pending writes, then releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
