"""Getting examples to the jitted steps: the whole split on the device, or streamed.

Batch ``j`` of an epoch is ``images[order[j * B : (j + 1) * B]]``, ``order`` the epoch's
permutation, a function of ``(seed, epoch)`` only (which is what makes a resumed run see
the same batches). Every batch is sharded over the mesh's ``data`` axis: device ``d`` of
``D`` computes on rows ``d * B / D ..`` of it. Two placements get the batches there:

- **resident** (``dataset.placement="device"``, or ``"auto"`` when train + test images
  take at most ``dataset.max_device_bytes``; one process only): the split is copied to the
  devices once, as uint8 and replicated; the train chunk gathers its batches *inside*
  ``jit`` from ``(images, labels, order, start)``. A step then moves nothing from host to
  device.
- **streamed** (``"host"``, ``"auto"`` above the limit, and always when several processes
  train together): the split stays in host memory; each call's batches are gathered on
  the host, laid out ``(num_steps, B, ...)``, and each process reads and sends only its
  own rows of every batch (those of its devices), from which
  ``jax.make_array_from_process_local_data`` assembles the global batch. The global batch
  is the same however many processes share it, so the result does not depend on how
  many hosts ran the run.

Both run the same steps on the same examples in the same order, so the placement changes
speed and memory, never the result. Evaluation batches are laid out ``(batches, E, ...)``
the same way (padded to whole batches; the padding is masked out).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cnnjax.training.data import Dataset, Split
from cnnjax.training.sharding import batch_sharding, replicated

PLACEMENTS = ("auto", "device", "host")


def is_resident(dataset: Dataset, *, placement: str, max_device_bytes: int) -> bool:
    """Whether the dataset goes on the device (see the module docstring)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"dataset.placement must be one of {PLACEMENTS}, got {placement!r}")
    if jax.process_count() > 1:  # each process holds only its rows of each batch
        return False
    if placement != "auto":
        return placement == "device"
    size = dataset.train.images.nbytes + dataset.test.images.nbytes
    return size <= max_device_bytes


def process_rows(mesh: Mesh, batch_size: int) -> slice:
    """The rows of a ``batch_size`` batch sharded over ``mesh``'s ``data`` axis that this
    process's devices hold (one span: the mesh lists each process's devices together)."""
    spans = batch_sharding(mesh).addressable_devices_indices_map((batch_size,))
    bounds = sorted({(s[0].start or 0, batch_size if s[0].stop is None else s[0].stop)
                     for s in spans.values()})  # fmt: skip
    if any(a[1] != b[0] for a, b in itertools.pairwise(bounds)):
        raise ValueError(f"this process's devices hold rows {bounds} of a batch, not one span")
    return slice(bounds[0][0], bounds[-1][1])


def _put_batches(mesh: Mesh, images: np.ndarray, labels: np.ndarray, batch_size: int) -> tuple:
    """Global ``(..., batch_size, ...)`` arrays sharded over ``data`` on the batch axis
    (the last axis of ``labels``), from this process's rows of it (``images``,
    ``labels``: those rows only)."""
    axis = labels.ndim - 1
    sharding = NamedSharding(mesh, P(*([None] * axis), "data"))

    def put(local: np.ndarray) -> jax.Array:
        shape = (*local.shape[:axis], batch_size, *local.shape[axis + 1 :])
        return jax.make_array_from_process_local_data(sharding, local, shape)

    return put(images), put(labels)


@functools.partial(jax.jit, static_argnames="num_examples")
def epoch_order(data_key: jax.Array, epoch: int, *, num_examples: int) -> jax.Array:
    """The permutation of ``range(num_examples)`` for ``epoch``, a function of (key, epoch).

    Returns ``(num_examples,)`` int32.
    """
    key = jax.random.fold_in(data_key, epoch)
    return jax.random.permutation(key, num_examples).astype(jnp.int32)


class TrainFeed:
    """Arguments ``(images, labels, order, start)`` of the jitted train chunk.

    Args:
      split: the training split.
      mesh: the device mesh; batches are sharded over its ``data`` axis.
      batch_size: examples per step (the global batch).
      resident: keep the split on the device (else stream from host memory).
      num_seeds: feed that many runs at once (each with its own data key and order):
        ``order`` gets a leading seed axis, and so do streamed images and labels
        (:meth:`data_axis`). ``None``: one run.
    """

    def __init__(
        self,
        split: Split,
        mesh: Mesh,
        *,
        batch_size: int,
        resident: bool,
        num_seeds: int | None = None,
    ):
        self.split = split
        self.batch_size = batch_size
        self.resident = resident
        self.num_seeds = num_seeds
        self._mesh = mesh
        self._rows = process_rows(mesh, batch_size)
        self._order: jax.Array | None = None
        self._host_order: np.ndarray | None = None
        if resident:
            everywhere = replicated(mesh)
            self._images = jax.device_put(split.images, everywhere)
            self._labels = jax.device_put(split.labels, everywhere)

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per epoch; the remainder (fewer than one batch) is left out, and
        which examples those are changes every epoch."""
        return len(self.split) // self.batch_size

    @property
    def data_axis(self) -> int | None:
        """The seed axis of the images and labels :meth:`chunk` returns (for ``vmap``):
        None when they are shared by all seeds (resident, or a single run)."""
        return None if self.resident or self.num_seeds is None else 0

    def start_epoch(self, data_key: jax.Array, epoch: int) -> None:
        """Fixes the order of ``epoch`` (0-based); ``data_key`` is ``(num_seeds,)`` keys
        when feeding several seeds."""
        order = functools.partial(epoch_order, num_examples=len(self.split))
        if self.num_seeds is not None:
            order = jax.vmap(order, in_axes=(0, None))
        self._order = order(data_key, epoch)
        if not self.resident:
            self._host_order = np.asarray(self._order)

    def chunk(self, start: int, num_steps: int) -> tuple:
        """Arguments for steps ``start .. start + num_steps - 1`` of the current epoch:
        resident, the whole split, ``order`` and ``start``; streamed, the batches
        ``(..., num_steps, B, ...)`` themselves, ``order`` None and ``start`` 0."""
        if self.resident:
            return self._images, self._labels, self._order, start
        b = self.batch_size
        idx = self._host_order[..., start * b : (start + num_steps) * b]
        mine = idx.reshape(*idx.shape[:-1], num_steps, b)[..., self._rows]
        images, labels = self.split.images[mine], self.split.labels[mine]
        return (*_put_batches(self._mesh, images, labels, b), None, 0)


class EvalFeed:
    """A split as padded chunks ``(images, labels, num_valid)`` for the eval chunk.

    ``images`` is ``(batches, E, ...)`` uint8 and ``labels`` ``(batches, E)``, sharded on
    the ``E`` axis (each process reads and holds only its rows of each batch); of the
    chunk's ``batches * E`` examples in order only the first ``num_valid`` are real, the
    rest is padding, masked out of the sums, so each example counts once. Resident: one
    chunk, the whole split, kept on the device. Streamed: one batch a chunk.
    """

    def __init__(self, split: Split, mesh: Mesh, *, eval_batch_size: int, resident: bool):
        self.split = split
        self.eval_batch_size = eval_batch_size
        self.resident = resident
        self._mesh = mesh
        self._rows = process_rows(mesh, eval_batch_size)
        if resident:
            self._chunks = [self._put(0, len(split))]

    def _put(self, lo: int, hi: int) -> tuple:
        e = self.eval_batch_size
        batches = -(-(hi - lo) // e)
        rows = np.arange(e)[self._rows]
        position = lo + np.arange(batches)[:, None] * e + rows  # (batches, this process's E)
        real = position < hi
        index = np.where(real, position, lo)
        images, labels = self.split.images[index], self.split.labels[index]
        images = images * real.reshape(*real.shape, *[1] * (images.ndim - real.ndim))
        labels = labels * real
        return (*_put_batches(self._mesh, images, labels, e), hi - lo)

    def chunks(self) -> Iterator[tuple]:
        if self.resident:
            yield from self._chunks
            return
        n, e = len(self.split), self.eval_batch_size
        for lo in range(0, n, e):
            yield self._put(lo, min(lo + e, n))
