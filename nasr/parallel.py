"""Device mesh and shardings: steps are written for one device, batches are split at the boundary."""

import queue
import threading

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


class Prefetch:
  """Batches made ahead by a background thread and placed on the devices (double buffering).

  `make(step)` returns the device batch of `step` (host crops, then `shard_batch`); the thread
  runs up to `ahead` steps in front of the consumer, so the host prepares and transfers the next
  batch while the devices compute this one. Batches depend only on the step, so results do not
  depend on timing. Use as a context manager; `get(step)` returns the batches in order and
  re-raises an error of `make` where the consumer asks for that step.
  """

  def __init__(self, make, start: int, stop: int, ahead: int = 2):
    self._queue: queue.Queue = queue.Queue(maxsize=max(int(ahead), 1))
    self._stop = threading.Event()
    self._next = start
    self._thread = threading.Thread(
      target=self._work, args=(make, start, stop), daemon=True, name="nasr-prefetch"
    )
    self._thread.start()

  def _work(self, make, start: int, stop: int) -> None:
    for step in range(start, stop):
      try:
        item = (step, make(step), None)
      except BaseException as e:  # noqa: BLE001 - handed to the consumer at its step
        item = (step, None, e)
      while not self._stop.is_set():
        try:
          self._queue.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if self._stop.is_set() or item[2] is not None:
        return

  def get(self, step: int):
    """Return the batch of `step` (the steps must be asked for in order)."""
    if step != self._next:
      raise ValueError(f"Prefetch: asked for step {step}, the next one is {self._next}")
    got, batch, error = self._queue.get()
    self._next = step + 1
    if error is not None:
      raise error
    assert got == step
    return batch

  def close(self) -> None:
    """Stop the thread (batches made ahead are dropped)."""
    self._stop.set()
    self._thread.join()

  def __enter__(self) -> "Prefetch":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
