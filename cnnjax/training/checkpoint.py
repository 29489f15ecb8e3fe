"""Orbax checkpoints of a run, verified, and the protocol that makes resuming exact.

Protocol
--------
What a checkpoint holds. Checkpoint ``S`` (a directory ``checkpoints/S``) is the state
after ``S`` optimizer steps: the :class:`~cnnjax.training.step.TrainState` pytree (params,
batch statistics, optimizer state, step, and the running sums of the current epoch's
train metrics) plus a JSON ``meta`` item (epoch and position in it, wall seconds so far,
the resolved config, library versions, the metric that ranks it for keep-best). Nothing
else is needed to continue: every random choice is derived from ``(seed, step)`` (step
keys) or ``(seed, epoch)`` (data order).

Verification. ``meta`` also holds a SHA-256 digest of every array of the state (its dtype,
shape and bytes, computed from the host copy that is written) and a digest of ``meta``
itself. A checkpoint *verifies* when orbax reads it without error, every array's digest
matches, ``meta``'s own digest matches and the state is finite. A checkpoint that does
not verify (a flipped byte, a truncated, deleted or replaced file, a missing manifest or
metadata file, an empty step directory) is reported in one line and moved, never
deleted, to ``set_aside/checkpoint-S`` beside ``checkpoints/``; resuming then tries the
next older one (:func:`restore_newest_verified`).

When it is written. After the evaluation of every ``checkpoint.every_epochs``-th epoch
(tagged with the epoch's metric for keep-best), after the last step, every
``checkpoint.every_steps`` steps and every ``checkpoint.every_minutes`` minutes when set
(:class:`SaveSchedule`; untagged), and when SIGTERM/SIGINT asks the run to stop (untagged).
Only finite states are saved: :meth:`Checkpoints.save` refuses any other. Orbax writes
each checkpoint under a temporary name and renames it when complete, so a crash or a
second signal mid-write leaves the earlier checkpoints intact (the temporary directory is
cleaned up by the next launch).

Which are kept. This module prunes, not orbax: once a new checkpoint is on disk and
older ones are due for deletion, it is read back and verified, and only then are they
deleted (one that deletes nothing is verified when a resume reads it), keeping the latest
``checkpoint.keep`` and, with ``checkpoint.keep_best``, the one with the highest finite
metric (both metrics are better when higher; measured on the validation split when the
run has one, else on the test split). So retention never deletes the last verified
checkpoint, and a non-finite metric never makes a checkpoint "best".

Async. With ``checkpoint.async_save`` ``save`` returns once the arrays are copied off the
device; files are written in a background thread. The next save (or :meth:`close`)
waits for that write, verifies it and prunes; :meth:`close` is called before exit.

Resume. The trainer restores the newest verified checkpoint into the abstract state of a
fresh run (so shapes, dtypes and shardings come from the code, values from disk), drops
metric records written after that step, and continues from the step's epoch and position.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from cnnjax.training import distributed
from cnnjax.training.errors import NoVerifiedCheckpointError
from cnnjax.training.step import TrainState
from cnnjax.training.workdir import SET_ASIDE, is_local, unused_path

_DIGESTS, _META_DIGEST, _METRIC = "array_digests", "meta_digest", "best_metric"


class CorruptCheckpointError(Exception):
    """A checkpoint that does not verify; the message says what is wrong (one line)."""


def array_digests(tree: Any) -> dict[str, str]:
    """``{leaf path: SHA-256 hex}`` of every array of ``tree`` (dtype, shape and bytes)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(distributed.to_host(tree))
    return {jax.tree_util.keystr(path): _digest(np.asarray(leaf)) for path, leaf in leaves}


def _digest(a: np.ndarray) -> str:
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _meta_digest(meta: dict[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != _META_DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def is_finite(tree: Any) -> bool:
    """Whether every floating-point entry of ``tree`` is finite."""
    return all(
        bool(np.isfinite(leaf).all())
        for leaf in jax.tree.leaves(distributed.to_host(tree))
        if np.issubdtype(np.asarray(leaf).dtype, np.inexact)
    )


def verify(state: Any, meta: dict[str, Any]) -> None:
    """Raises CorruptCheckpointError unless ``state`` and ``meta`` are what was saved."""
    if _META_DIGEST not in meta or _DIGESTS not in meta:
        raise CorruptCheckpointError("no digests recorded, cannot be verified")
    if meta[_META_DIGEST] != _meta_digest(meta):
        raise CorruptCheckpointError("its meta item does not match its digest")
    expected, got = meta[_DIGESTS], array_digests(state)
    if expected.keys() != got.keys():
        raise CorruptCheckpointError("its arrays are not those that were saved")
    bad = [path for path in expected if expected[path] != got[path]]
    if bad:
        raise CorruptCheckpointError(
            f"{len(bad)} array(s) do not match their digest (first: state{bad[0]})"
        )
    if not is_finite(state):
        raise CorruptCheckpointError("its state is not finite")


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def _abstract(tree: Any) -> Any:
    """Shapes, dtypes and shardings of ``tree`` (host arrays: none, read back to host)."""
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)),
        tree,
    )


class Checkpoints:
    """The checkpoints of one work directory.

    Args:
      directory: where checkpoints live (created if missing); what does not verify goes
        to ``directory.parent / "set_aside"``.
      keep: how many of the most recent checkpoints to keep.
      keep_best: also keep the checkpoint with the highest finite metric.
      async_save: write in a background thread.
    """

    def __init__(self, directory: str | Path, *, keep: int, keep_best: bool, async_save: bool):
        self.directory = epath.Path(directory)
        if is_local(self.directory):
            self.directory = self.directory.absolute()
        self._keep, self._keep_best = keep, keep_best
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True
        )
        self._manager = ocp.CheckpointManager(
            self.directory, item_names=("state", "meta"), options=options
        )
        self._metrics: dict[int, float | None] = {}  # each step's ranking metric, when read
        self._unverified: tuple[int, Any] | None = None  # (step, abstract state) being written

    def all_steps(self) -> list[int]:
        """The steps of every complete checkpoint, ascending (verified or not yet)."""
        return sorted(self._manager.all_steps())

    def save(
        self, state: TrainState, *, step: int, meta: dict[str, Any], best_metric: float | None
    ) -> None:
        """Saves ``state`` (after ``step`` steps, finite) with ``meta`` and the digests;
        returns before it is on disk when async. ``best_metric`` ranks the checkpoint for
        keep-best (None or non-finite: never "best").

        A checkpoint of ``step`` that exists already is kept as it is: training is
        deterministic, so it holds this same state (this happens when runs trained
        together resume from the newest step they all have).

        Raises:
          ValueError: ``state`` is not finite (the trainer never gets here with one).
        """
        if not is_finite(state):
            raise ValueError(f"refusing to save the non-finite state of step {step}")
        self._finish_pending()
        if step in self._manager.all_steps():
            return
        if best_metric is not None and not math.isfinite(best_metric):
            best_metric = None
        meta = {**meta, _METRIC: best_metric, _DIGESTS: array_digests(state)}
        meta[_META_DIGEST] = _meta_digest(meta)
        self._metrics[step] = best_metric
        self._unverified = (step, _abstract(state))
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )

    def restore(self, abstract_state: TrainState, step: int) -> tuple[TrainState, dict]:
        """The verified state and meta of checkpoint ``step``.

        ``abstract_state`` gives the structure, shapes, dtypes and shardings (leaves are
        ``jax.ShapeDtypeStruct`` with ``sharding`` set).

        Raises:
          CorruptCheckpointError: it cannot be read or does not verify.
        """
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
                ),
            )
        except Exception as e:  # orbax/tensorstore raise many types for unreadable files
            raise CorruptCheckpointError(f"cannot be read ({_first_line(e)})") from e
        if not isinstance(restored.meta, dict):
            raise CorruptCheckpointError("its meta item is missing")
        verify(restored.state, restored.meta)
        self._metrics[step] = restored.meta.get(_METRIC)
        return restored.state, restored.meta

    def set_aside(self, step: int, reason: str) -> Path:
        """Moves checkpoint ``step`` to ``set_aside/checkpoint-STEP[.k]`` and says so on
        stderr, in one line with ``reason``; returns the new path."""
        target = unused_path(self.directory.parent / SET_ASIDE / f"checkpoint-{step}")
        if distributed.is_primary():
            target.parent.mkdir(parents=True, exist_ok=True)
            (self.directory / str(step)).rename(target)
        distributed.barrier(f"cnnjax: set aside {self.directory}/{step}")
        self._manager.reload()
        self._metrics.pop(step, None)
        if distributed.is_primary():
            print(
                f"Checkpoint {step} in {self.directory} {reason}; set aside as {target}",
                file=sys.stderr,
                flush=True,
            )
        return target

    def _finish_pending(self) -> None:
        """Waits for the write in flight, reads it back, then prunes (see the protocol)."""
        pending, self._unverified = self._unverified, None
        self._manager.wait_until_finished()  # raises if that write failed
        if pending is None:
            return
        step, abstract = pending
        doomed = self._prunable(newest=step)
        if not doomed:  # nothing to delete: resuming verifies it when it is needed
            return
        try:
            self.restore(abstract, step)
        except CorruptCheckpointError as e:
            self.set_aside(step, f"does not verify after writing: {e}")
            return
        for old in doomed:
            self._manager.delete(old)
            self._metrics.pop(old, None)

    def _prunable(self, *, newest: int) -> list[int]:
        """The steps retention deletes once checkpoint ``newest`` verifies."""
        steps = self.all_steps()
        keep = set(steps[-self._keep :]) | {newest}
        if self._keep_best:
            ranked = [(m, s) for s in steps if (m := self._metric(s)) is not None]
            if ranked:
                keep.add(max(ranked)[1])
        return [s for s in steps if s not in keep and s < newest]

    def _metric(self, step: int) -> float | None:
        """The ranking metric of checkpoint ``step`` (read from its meta once)."""
        if step not in self._metrics:
            try:
                meta = self._manager.restore(
                    step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
                ).meta
                self._metrics[step] = meta.get(_METRIC)
            except Exception:  # unreadable: not a candidate for best; resuming will say so
                self._metrics[step] = None
        value = self._metrics[step]
        return value if value is not None and math.isfinite(value) else None

    def close(self) -> None:
        """Waits for pending writes, verifies and prunes, then releases the manager."""
        try:
            self._finish_pending()
        finally:
            self._manager.close()


class SaveSchedule:
    """When to save besides epoch ends: each time the step passes a multiple of
    ``every_steps``, and once ``every_minutes`` of wall time passed since the last save
    (each None: never).

    Args:
      step: the step training starts from (a resumed run counts from there).
      clock: seconds, monotonic (a parameter for tests).
    """

    def __init__(
        self,
        *,
        every_steps: int | None,
        every_minutes: float | None,
        step: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._every_steps, self._every_minutes, self._clock = every_steps, every_minutes, clock
        self.saved(step)

    def due(self, step: int) -> bool:
        """Whether to save after ``step`` steps."""
        by_steps = self._every_steps and step // self._every_steps > self._last // self._every_steps
        by_time = self._every_minutes and self._clock() - self._when >= 60 * self._every_minutes
        return bool(by_steps or by_time)

    def saved(self, step: int) -> None:
        """Records a save after ``step`` steps (of any kind)."""
        self._last, self._when = step, self._clock()


def restore_newest_verified(
    checkpoints: Sequence[Checkpoints], abstract_state: TrainState
) -> tuple[int, list[tuple[TrainState, dict]]] | None:
    """The newest step that every run has a verified checkpoint of, with each run's state
    and meta; None when the runs share no checkpoint (a fresh start).

    Runs trained together are saved one after another, so a stop in between can leave
    the last seeds one checkpoint behind; all of them continue from the step they share.
    A checkpoint that does not verify is set aside (:meth:`Checkpoints.set_aside`) and
    the next older common step is tried.

    Raises:
      NoVerifiedCheckpointError: checkpoints existed but none verified (all set aside).
    """
    set_aside = False
    while common := set.intersection(*(set(c.all_steps()) for c in checkpoints)):
        step = max(common)
        restored = []
        for c in checkpoints:
            try:
                restored.append(c.restore(abstract_state, step))
            except CorruptCheckpointError as e:
                c.set_aside(step, str(e))
                set_aside = True
                break
        else:
            return step, restored
    if set_aside:
        raise NoVerifiedCheckpointError(
            f"no checkpoint in {checkpoints[0].directory} verifies (each was set aside); "
            "relaunch with --restart to start afresh"
        )
    return None
