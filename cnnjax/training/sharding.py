"""How arrays are placed on the devices: one mesh, a ``data`` axis, batch and parameter
shardings.

The mesh spans every device of every process (``jax.devices()``, each process's devices
together), on one axis, ``data``. Batches are split along it (:func:`batch_sharding`).
The train state is placed by ``sharding.params`` (:func:`state_shardings`):

- ``"replicate"``: every device holds all of it; the step's gradient is all-reduced.
- ``"fsdp"``: each array is split along its largest dimension that the number of devices
  divides (arrays with none stay replicated), so each device holds a share of the
  parameters and of the optimizer state; XLA gathers a layer's parameters where they are
  used and reduce-scatters their gradients.

Both compute the same step; only memory and communication differ.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

PARAM_SHARDINGS = ("replicate", "fsdp")


def make_mesh() -> Mesh:
    """The mesh of every device of every process, on one axis ``data``."""
    return Mesh(np.array(jax.devices()), ("data",))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """A batch's leading axis split over ``data``."""
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def fsdp_spec(shape: tuple[int, ...], num_devices: int) -> P:
    """The spec that splits ``shape`` along its largest dimension divisible by
    ``num_devices`` (the first such, on ties); ``P()`` when none is."""
    candidates = [i for i, n in enumerate(shape) if n % num_devices == 0 and n >= num_devices]
    if num_devices == 1 or not candidates:
        return P()
    axis = max(candidates, key=lambda i: (shape[i], -i))
    return P(*([None] * axis), "data")


def state_shardings(abstract_state: Any, mesh: Mesh, params: str) -> Any:
    """A sharding for every leaf of ``abstract_state`` (leaves with ``.shape``), by
    ``params`` (one of :data:`PARAM_SHARDINGS`)."""
    if params not in PARAM_SHARDINGS:
        raise ValueError(f"sharding.params must be one of {PARAM_SHARDINGS}, got {params!r}")
    if params == "replicate":
        return jax.tree.map(lambda _: replicated(mesh), abstract_state)
    return jax.tree.map(
        lambda a: NamedSharding(mesh, fsdp_spec(tuple(a.shape), mesh.size)), abstract_state
    )
