"""Several processes, one run: JAX's distributed runtime.

A run is one process on a laptop or a GPU box, and one process per host on a Cloud TPU
pod slice or a multi-node cluster. :func:`initialize` starts ``jax.distributed`` when the
process is one of several, before anything touches the devices:

- given ``coordinator_address``, ``num_processes`` and ``process_id`` (``launch.py
  --coordinator_address HOST:PORT --num_processes N --process_id K``, any cluster);
- under SLURM with more than one task (``srun``): JAX reads the rest from SLURM;
- on a Cloud TPU VM (``libtpu`` installed, the ``tpu`` extra): JAX reads the slice's hosts
  from the VM's metadata; a single-host VM becomes a group of one.

Otherwise nothing is started and the run sees the local devices only. After it,
``jax.devices()`` are the devices of every process and ``jax.process_index()`` says
which process this is. The helpers below let the processes agree on host-side decisions
(stopping, for one) with one collective each; with a single process they cost nothing.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from cnnjax.training.errors import ConfigError

# Seconds a process waits for the others to join before it gives up.
INITIALIZATION_TIMEOUT = 300


def environment() -> str | None:
    """The multi-process launcher this process runs under: ``"slurm"``, ``"tpu"`` (a
    Cloud TPU VM), or None (a single process)."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return "slurm"
    if importlib.util.find_spec("libtpu") is not None:
        return "tpu"
    return None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_seconds: int = INITIALIZATION_TIMEOUT,
) -> bool:
    """Starts ``jax.distributed`` when this process is one of several (see the module
    docstring); returns whether it did. Call before anything else uses JAX's devices.

    Raises:
      ConfigError: only some of the three arguments are given, or they are inconsistent.
    """
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
             "process_id": process_id}  # fmt: skip
    if any(v is not None for v in given.values()):
        missing = [f"--{k}" for k, v in given.items() if v is None]
        if missing:
            raise ConfigError(
                f"{', '.join(missing)} missing: give --coordinator_address HOST:PORT, "
                "--num_processes N and --process_id K together (or none, to detect them)"
            )
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ConfigError(
                f"--process_id={process_id} must be in 0..{num_processes - 1} "
                f"(--num_processes={num_processes})"
            )
        if ":" not in coordinator_address:
            raise ConfigError(f"--coordinator_address={coordinator_address!r} must be HOST:PORT")
    elif environment() is None:
        return False
    jax.distributed.initialize(
        coordinator_address, num_processes, process_id, initialization_timeout=timeout_seconds
    )
    return True


def is_primary() -> bool:
    """Whether this process writes the run's files (logs, plots, summaries): process 0."""
    return jax.process_index() == 0


def agree_max(value: int) -> int:
    """The largest ``value`` any process passed, on every process (a collective: every
    process must call it, in the same order)."""
    if jax.process_count() == 1:
        return value
    return int(np.max(multihost_utils.process_allgather(np.int32(value))))


def barrier(name: str) -> None:
    """Waits until every process got here (``name`` must be the same on all)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def to_host(tree: Any) -> Any:
    """``tree``'s arrays as NumPy arrays on every process: copied off the devices, and
    gathered from the other processes where this one holds only a share (a collective
    then: every process must call it)."""

    def one(a: Any) -> Any:
        if not isinstance(a, jax.Array) or a.is_fully_addressable or a.is_fully_replicated:
            return np.asarray(jax.device_get(a))
        return np.asarray(multihost_utils.process_allgather(a, tiled=True))

    return jax.tree.map(one, tree)
