"""Data parallelism over a 1-D device mesh: the batch is sharded, parameters are replicated.

One code path for one device or many: every data-parallel function takes a `jax.sharding.Mesh`
with a single axis named `"batch"`, places batch-leading arrays with `shard_batch` (split along
axis 0 over the mesh) and everything else with `replicate`, and lets `jax.jit` (GSPMD) insert
the cross-device reductions (e.g. the mean of a loss over the batch and so the gradient
all-reduce). With one device the mesh has one entry and the placements are no-ops.

Many hosts: call `jax.distributed.initialize()` first in every process (one process per host);
`jax.devices()` then lists the devices of all hosts and `batch_mesh()` spans them all (see the
README section "Many GPUs and many hosts").

The axis type is `AxisType.Auto` on purpose: jax 0.10's `jax.make_mesh` defaults to explicit
axes, under which sharding becomes part of every array's type; the library code is written for
automatic (GSPMD) propagation, which needs no change to the models or losses.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rgdiff.errors import RgdiffError

AXIS = "batch"


class InvalidMeshError(RgdiffError):
    """A mesh or a batch that cannot be split over it (the batch must divide evenly)."""


def batch_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named "batch" over `devices` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise InvalidMeshError("a mesh needs at least one device")
    return jax.make_mesh((len(devices),), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def mesh_for_batch(batch: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The mesh over the largest number of `devices` (default: all) that divides `batch` evenly."""
    devices = list(jax.devices() if devices is None else devices)
    n = max(k for k in range(1, len(devices) + 1) if batch % k == 0)
    return batch_mesh(devices[:n])


def mesh_size(mesh: Mesh) -> int:
    return int(np.prod(mesh.devices.shape))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Split axis 0 over the mesh; all other axes whole on each device."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def check_divisible(batch: int, mesh: Mesh, what: str = "batch") -> None:
    n = mesh_size(mesh)
    if batch % n:
        raise InvalidMeshError(f"the {what} of {batch} does not split evenly over {n} devices; use a multiple of {n}")


def shard_batch(tree, mesh: Mesh):
    """Place every array leaf of `tree` split along its leading (batch) axis over the mesh."""
    sharding = batch_sharding(mesh)

    def put(x):
        if not hasattr(x, "shape") or np.ndim(x) == 0:
            return x
        check_divisible(np.shape(x)[0], mesh)
        return jax.device_put(x, sharding)

    return jax.tree.map(put, tree)


def replicate(tree, mesh: Mesh):
    """Place every array leaf of `tree` (parameters, optimizer state, data tables) on every device."""
    sharding = replicated_sharding(mesh)
    return jax.tree.map(lambda x: jax.device_put(x, sharding) if isinstance(x, (jax.Array, np.ndarray)) else x, tree)


def constrain_batch(x, mesh: Mesh):
    """Inside `jit`: ask for `x` split along axis 0 over the mesh (e.g. a batch gathered from replicated data)."""
    return jax.lax.with_sharding_constraint(x, batch_sharding(mesh))


def describe(mesh: Mesh) -> dict:
    return {"axis": AXIS, "devices": mesh_size(mesh), "platform": mesh.devices.flat[0].platform}
