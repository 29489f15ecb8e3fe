"""Getting examples to the jitted steps: the whole split on the device, or streamed.

The train step gathers its batch *inside* ``jit`` from ``(images, labels, order, start)``:
batch ``j`` of a call is ``images[order[(start + j) * B : (start + j + 1) * B]]``. Two
placements give it those arguments:

- **resident** (``dataset.placement="device"``, or ``"auto"`` when train + test images
  take at most ``dataset.max_device_bytes``): both splits are copied to the device once,
  as uint8 and replicated over the mesh; ``order`` is the epoch's permutation, computed on
  the device. A step then moves nothing from host to device.
- **streamed** (``"host"``, or ``"auto"`` above the limit): the splits stay in host memory;
  each call gathers its batches on the host and sends them (``order`` is then ``arange``).

Both run the same jitted code on the same examples in the same order, so the placement
changes speed and memory, never the result. The epoch's order depends only on
``(seed, epoch)``, which is what makes a resumed run see the same batches.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cnnjax.training.data import Dataset, Split

PLACEMENTS = ("auto", "device", "host")


def is_resident(dataset: Dataset, *, placement: str, max_device_bytes: int) -> bool:
    """Whether the dataset goes on the device (see the module docstring)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"dataset.placement must be one of {PLACEMENTS}, got {placement!r}")
    if placement != "auto":
        return placement == "device"
    size = dataset.train.images.nbytes + dataset.test.images.nbytes
    return size <= max_device_bytes


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
      mesh: the device mesh; data is replicated over it (the step shards each batch).
      batch_size: examples per step.
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
        self._replicated = NamedSharding(mesh, P())
        self._order: jax.Array | None = None
        self._host_order: np.ndarray | None = None
        if resident:
            self._images = jax.device_put(split.images, self._replicated)
            self._labels = jax.device_put(split.labels, self._replicated)

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
        """Arguments for steps ``start .. start + num_steps - 1`` of the current epoch."""
        if self.resident:
            return self._images, self._labels, self._order, start
        b = self.batch_size
        idx = self._host_order[..., start * b : (start + num_steps) * b]
        images = jax.device_put(self.split.images[idx], self._replicated)
        labels = jax.device_put(self.split.labels[idx], self._replicated)
        order = np.broadcast_to(np.arange(num_steps * b, dtype=np.int32), idx.shape)
        return images, labels, jax.device_put(order, self._replicated), 0


class EvalFeed:
    """The test split as padded chunks ``(images, labels, num_valid)`` for the eval chunk.

    Every chunk's length is a multiple of ``eval_batch_size``; entries at or past
    ``num_valid`` are padding, masked out of the sums, so each test example counts once.
    Resident: one chunk, the whole split, kept on the device. Streamed: one batch a chunk.
    """

    def __init__(self, split: Split, mesh: Mesh, *, eval_batch_size: int, resident: bool):
        self.split = split
        self.eval_batch_size = eval_batch_size
        self.resident = resident
        self._replicated = NamedSharding(mesh, P())
        if resident:
            self._chunks = [self._put(0, len(split))]

    def _put(self, lo: int, hi: int) -> tuple:
        b = self.eval_batch_size
        n = hi - lo
        padded = -(-n // b) * b
        images = np.zeros((padded, *self.split.images.shape[1:]), np.uint8)
        labels = np.zeros((padded,), np.int32)
        images[:n] = self.split.images[lo:hi]
        labels[:n] = self.split.labels[lo:hi]
        put = lambda a: jax.device_put(a, self._replicated)  # noqa: E731
        return put(images), put(labels), n

    def chunks(self) -> Iterator[tuple]:
        if self.resident:
            yield from self._chunks
            return
        n, b = len(self.split), self.eval_batch_size
        for lo in range(0, n, b):
            yield self._put(lo, min(lo + b, n))
