"""Device mesh and shardings: steps are written for one device, batches are split at the boundary."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nasr.core.errors import ConfigError

DATA_AXIS = "data"


def maybe_initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> None:
  """Start jax.distributed for multi-host runs; return quietly on a single host."""
  if coordinator_address:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


def make_mesh(devices=None) -> Mesh:
  """Return a 1-D mesh over all (or the given) devices with the axis `data`."""
  devices = jax.devices() if devices is None else devices
  # A plain Mesh has Auto axis types; jax.make_mesh defaults to Explicit, which rejects the
  # reshapes of pixel shuffle with a ShardingTypeError.
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Return the sharding that keeps a full copy on every device (parameters, optimizer state)."""
  return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh: Mesh) -> NamedSharding:
  """Return the sharding that splits the leading (batch) axis over the `data` axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh) -> int:
  """Return the per-process batch size, or raise ConfigError if the batch does not split evenly."""
  n = mesh.devices.size
  if global_batch % n:
    raise ConfigError(f"batch_size {global_batch} is not divisible by the {n} devices of the mesh")
  return global_batch // jax.process_count()


def shard_batch(batch, mesh: Mesh):
  """Return the host-local numpy batch as global arrays split along the batch axis."""
  sharding = data_sharded(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
  )


def replicate(tree, mesh: Mesh):
  """Return `tree` placed as fully replicated global arrays."""
  return jax.device_put(tree, replicated(mesh))
