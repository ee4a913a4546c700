"""Device mesh and shardings: steps are written for one device, batches are split at the boundary."""

import os
import threading
from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nasr.core.errors import ConfigError

DATA_AXIS = "data"

# Where a process's place in a multi-process run comes from when the config leaves it unset,
# the first variable set wins. JAX_NUM_PROCESSES / JAX_PROCESS_ID are nasr's own (jax itself
# reads only JAX_COORDINATOR_ADDRESS); srun (SLURM) and mpirun (Open MPI) set theirs; a
# Kubernetes Indexed Job sets only JOB_COMPLETION_INDEX, so its pods get the count from the
# config or JAX_NUM_PROCESSES.
COUNT_ENV = ("JAX_NUM_PROCESSES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
ID_ENV = ("JAX_PROCESS_ID", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "JOB_COMPLETION_INDEX")
# jax.distributed derives the coordinator's address itself inside an srun step or an Open MPI
# (ORTE) job when these are set (jax/_src/clusters: slurm_cluster.py, ompi_cluster.py).
_SLURM_STEP = (
  "SLURM_JOB_ID",
  "SLURM_STEP_NODELIST",
  "SLURM_NTASKS",
  "SLURM_PROCID",
  "SLURM_LOCALID",
)
_OMPI_URI = "OMPI_MCA_orte_hnp_uri"
# jax.distributed's default: a process silent this long is dead, and the others stop with an
# error instead of waiting in a collective forever.
HEARTBEAT_TIMEOUT_S = 100
# How long a process waits for the run's other processes to connect before it gives up with one
# line (config.distributed.init_timeout_s); JAX's own wait is longer and ends in an abort.
INIT_TIMEOUT_S = 120


def _env_int(environ: Mapping[str, str], name: str | None) -> int | None:
  """Return the integer in environment variable `name`, None when unset or empty."""
  if not name or not environ.get(name, "").strip():
    return None
  try:
    return int(environ[name])
  except ValueError:
    raise ConfigError(f"environment variable {name}={environ[name]!r} is not an integer") from None


def distributed_settings(
  coordinator_address: str = "",
  num_processes: int = 0,
  process_id: int = 0,
  environ: Mapping[str, str] | None = None,
) -> dict | None:
  """Return jax.distributed.initialize's keyword arguments, or None for a single-process run.

  The config's values win; what it leaves unset (an empty address, num_processes=0) comes from
  the cluster environment (COUNT_ENV, ID_ENV, JAX_COORDINATOR_ADDRESS). A config process_id counts
  only with a config num_processes: on a cluster the id differs per process and comes from its
  environment. A coordinator left as None is derived by jax (an srun step, Open MPI).
  """
  environ = os.environ if environ is None else environ
  address = str(coordinator_address or "").strip() or environ.get("JAX_COORDINATOR_ADDRESS", "")
  count = int(num_processes or 0) or None
  pid = int(process_id) if count else None
  source, pid_source = "distributed.num_processes", "distributed.process_id"
  if count is None:
    var = next((v for v in COUNT_ENV if _env_int(environ, v) is not None), None)
    if var is not None:
      count, source = _env_int(environ, var), var
  if pid is None:
    var = next((v for v in ID_ENV if _env_int(environ, v) is not None), None)
    if var is not None:
      pid, pid_source = _env_int(environ, var), var
  if pid is None and process_id:
    raise ConfigError(
      f"distributed.process_id={process_id} needs distributed.num_processes (the process count)"
    )
  if count is None or count == 1:
    return None
  if pid is None:
    raise ConfigError(
      f"{count} processes ({source}) but no process id: set distributed.process_id on each "
      "process (0 on the coordinator's host)"
    )
  if not 0 <= pid < count:
    raise ConfigError(f"{pid_source}={pid} must be in [0, {source}={count})")
  jax_finds_it = all(v in environ for v in _SLURM_STEP) or _OMPI_URI in environ
  if not address and not jax_finds_it:
    raise ConfigError(
      f"{count} processes ({source}) need distributed.coordinator=HOST:PORT "
      "(process 0's host and a free port, the same on every process)"
    )
  if address and (":" not in address or not address.rsplit(":", 1)[1].isdigit()):
    raise ConfigError(f"distributed.coordinator={address!r} must be HOST:PORT (e.g. 10.0.0.1:1234)")
  settings = {"coordinator_address": address or None, "num_processes": count, "process_id": pid}
  if not jax_finds_it:
    # Everything is known: jax's own detection would only probe other clusters (on Kubernetes
    # it warns about a missing `kubernetes` package). Inside srun / mpirun it stays on, as it
    # gives each process its local GPU (SLURM_LOCALID; JAX_LOCAL_DEVICE_IDS overrides).
    settings["cluster_detection_method"] = "deactivate"
  return settings


def maybe_initialize_distributed(
  coordinator_address: str = "",
  num_processes: int = 0,
  process_id: int = 0,
  heartbeat_timeout_s: int = HEARTBEAT_TIMEOUT_S,
  init_timeout_s: int = INIT_TIMEOUT_S,
) -> bool:
  """Start jax.distributed when several processes run; return whether more than one does.

  Idempotent: a process that has started it (a search that trains sub-runs) returns at once.
  Must run before anything touches JAX's devices. A process whose peers have not all connected
  after `init_timeout_s` seconds ends with one `error:` line and exit code 2 (JAX's runtime would
  abort with a C++ stack after its own, longer timeout).
  """
  if jax.distributed.is_initialized():
    return jax.process_count() > 1
  settings = distributed_settings(coordinator_address, num_processes, process_id)
  if settings is None:
    return False
  # Cross-process collectives on CPU need an implementation; gloo is built into jaxlib (and is
  # the default of recent versions). A user's own choice (mpi) is kept.
  option = "jax_cpu_collectives_implementation"
  if hasattr(jax.config, option) and not getattr(jax.config, option):
    jax.config.update(option, "gloo")
  watchdog = threading.Timer(float(init_timeout_s), _peers_missing, (settings, init_timeout_s))
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(
      **settings,
      heartbeat_timeout_seconds=int(heartbeat_timeout_s),
      initialization_timeout=int(init_timeout_s) + 60,  # ours ends the wait first
    )
  except RuntimeError as e:
    if "must be called before" not in str(e):
      raise
    raise ConfigError(
      f"config.distributed asks for {settings['num_processes']} processes, but this process has "
      "used JAX already: start the run in a fresh process"
    ) from None
  finally:
    watchdog.cancel()
  return jax.process_count() > 1


def _peers_missing(settings: dict, timeout_s: int) -> None:
  """End the process with one line: the run's processes did not all connect in time."""
  n, i = settings["num_processes"], settings["process_id"]
  line = (
    f"error: process {i} waited {timeout_s} s (config.distributed.init_timeout_s) for the run's "
    f"{n} processes to connect to {settings['coordinator_address']}; not all {n} arrived: start "
    f"every process (process_id 0..{n - 1}) with the same command, or raise the timeout"
  )
  try:
    os.write(2, (line + "\n").encode())
  finally:
    os._exit(2)  # the runtime's connect is still blocking in C++: nothing else can end it


def _section(config) -> dict:
  """Return config.distributed as keyword arguments (empty without the section)."""
  dist = config.get("distributed") if config is not None else None
  if dist is None:  # configs without the section: the environment alone decides
    return {}
  return {
    "coordinator_address": dist.get("coordinator", ""),
    "num_processes": dist.get("num_processes", 0),
    "process_id": dist.get("process_id", 0),
  }


def _timeouts(config) -> dict:
  """Return the heartbeat and connect timeouts of config.distributed (defaults without it)."""
  dist = config.get("distributed") if config is not None else None
  get = (lambda k, d: dist.get(k, d) or d) if dist is not None else (lambda k, d: d)
  return {
    "heartbeat_timeout_s": get("heartbeat_timeout_s", HEARTBEAT_TIMEOUT_S),
    "init_timeout_s": get("init_timeout_s", INIT_TIMEOUT_S),
  }


def several_processes(config) -> bool:
  """Return whether `config.distributed` and the environment ask for more than one process."""
  if jax.distributed.is_initialized():
    return jax.process_count() > 1
  return distributed_settings(**_section(config)) is not None


def initialize_from_config(config) -> bool:
  """Start jax.distributed from `config.distributed` and the environment; return whether it runs."""
  return maybe_initialize_distributed(**_section(config), **_timeouts(config))


def is_chief() -> bool:
  """Return whether this process writes the run's files (process 0; True on a single host)."""
  # Without jax.distributed there is one process; asking JAX would start its backend, after
  # which jax.distributed can no longer start.
  return not jax.distributed.is_initialized() or jax.process_index() == 0


def chief_decides(value: bool) -> bool:
  """Return process 0's `value` on every process (one collective; no-op on a single process).

  For choices made from files (is the run finished?) that every process must make alike.
  """
  if not jax.distributed.is_initialized() or jax.process_count() == 1:
    return bool(value)
  from jax.experimental import multihost_utils  # noqa: PLC0415 - multi-process runs only

  return bool(multihost_utils.broadcast_one_to_all(np.asarray(bool(value))))


def any_process(value: bool) -> bool:
  """Return whether `value` is true on any process (one collective; no-op on a single process)."""
  if not jax.distributed.is_initialized() or jax.process_count() == 1:
    return bool(value)
  from jax.experimental import multihost_utils  # noqa: PLC0415 - multi-process runs only

  return bool(np.any(multihost_utils.process_allgather(np.asarray(bool(value)))))


# How many stop checks (one per step) pass between two agreements of a multi-process run: each
# agreement is a collective that waits for the steps in flight, so not every step pays for it.
AGREE_EVERY = 8


class AgreedInterrupts:
  """SIGINT / SIGTERM stops that every process of a run acts on at the same step.

  Wraps a `workdirs.Interrupts`. On one process it is that object. With several, a signal one
  process caught counts once the processes have agreed on it, every `every`-th `requested`
  check (the loops check once per step, identically on every process): acting on its own, a
  process would save a checkpoint the others never join and all would wait forever.
  """

  def __init__(self, interrupts, every: int = AGREE_EVERY):
    self._local, self._every = interrupts, max(int(every), 1)
    self._checks, self._agreed = 0, False

  def __enter__(self) -> "AgreedInterrupts":
    self._local.__enter__()
    return self

  def __exit__(self, *exc) -> None:
    self._local.__exit__(*exc)

  @property
  def requested(self) -> bool:
    """Return whether the run should stop now (the same answer on every process)."""
    if not jax.distributed.is_initialized() or jax.process_count() == 1:
      return self._local.requested
    if not self._agreed:
      self._checks += 1
      if self._checks % self._every == 0:
        self._agreed = any_process(self._local.requested)
    return self._agreed

  def name(self) -> str:
    """Return the signal's name ("SIGTERM"; or "a signal to another process")."""
    return self._local.name() or "a signal to another process"


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
  if jax.process_count() == 1:
    return jax.device_put(tree, replicated(mesh))
  # Across processes jax 0.10's device_put of a jax.Array (a fresh or restored state) to a
  # sharding spanning processes builds arrays that fail later (Orbax: "had 2 shard(s)"); built
  # from host copies, each process fills its own devices with the same values.
  sharding = replicated(mesh)

  def put(x):
    host = np.asarray(jax.device_get(x))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(put, tree)


class Prefetch:
  """Batches made ahead by worker threads and placed on the devices (double buffering).

  `make(step)` returns the device batch of `step` (host crops, then `shard_batch`); `workers`
  threads make different steps at the same time, at most `ahead` + `workers` steps in front of the
  consumer, so the host prepares and transfers the next batches while the devices compute this
  one. Batches depend only on the step, so results do not depend on timing
  or on the number of workers. Use as a context manager; `get(step)` returns the batches in order
  and re-raises an error of `make` where the consumer asks for that step; no step after a failed
  one is started.

  Threads, not processes: `make` ends with the device transfer, which only this process can do,
  and the crops' copies release the GIL (numpy copies of more than a few hundred elements do; the
  random draws and Python bookkeeping, a quarter of a batch's host time here, do not), so threads
  overlap them with each other and the training loop without pickling batches or copying the
  images. Forked processes that pickle their batches back were slower on the 2-core CPU
  (BENCHMARKS.md, input pipeline).
  """

  def __init__(self, make, start: int, stop: int, ahead: int = 2, workers: int = 1):
    if int(workers) < 0:
      raise ConfigError(f"data.workers must be >= 0, got {workers}")
    self._make, self._stop_at = make, int(stop)
    self._next = self._claim = int(start)
    # A worker may start step s only while s < next asked + window: `ahead` finished batches
    # wait besides the one each worker is making (one worker: a queue of `ahead` and the batch
    # being made, as before the pool).
    n = max(int(workers), 1)
    self._window = max(int(ahead), 1) + n
    self._done: dict = {}  # step -> (batch, error)
    self._failed_at: int | None = None
    self._closed = False
    self._cond = threading.Condition()
    self._threads = [
      threading.Thread(target=self._work, daemon=True, name=f"nasr-prefetch-{i}") for i in range(n)
    ]
    for t in self._threads:
      t.start()

  def _claim_step(self) -> int | None:
    """Return the next step to make once the window has room, or None when there is none."""
    with self._cond:
      while True:
        step = self._claim
        if self._closed or step >= self._stop_at:
          return None
        if self._failed_at is not None and step > self._failed_at:
          return None
        if step < self._next + self._window:
          self._claim = step + 1
          return step
        self._cond.wait()

  def _work(self) -> None:
    while (step := self._claim_step()) is not None:
      try:
        item = (self._make(step), None)
      except BaseException as e:  # noqa: BLE001 - handed to the consumer at its step
        item = (None, e)
      with self._cond:
        self._done[step] = item
        if item[1] is not None and (self._failed_at is None or step < self._failed_at):
          self._failed_at = step
        self._cond.notify_all()

  def get(self, step: int):
    """Return the batch of `step` (the steps must be asked for in order)."""
    if step != self._next:
      raise ValueError(f"Prefetch: asked for step {step}, the next one is {self._next}")
    if step >= self._stop_at:
      raise ValueError(f"Prefetch: asked for step {step}, past the last one {self._stop_at - 1}")
    if self._failed_at is not None and step > self._failed_at:
      raise ValueError(f"Prefetch: asked for step {step}, after the failed step {self._failed_at}")
    with self._cond:
      while step not in self._done:
        if self._closed:
          raise ValueError(f"Prefetch: asked for step {step} after close()")
        self._cond.wait()
      batch, error = self._done.pop(step)
      self._next = step + 1
      self._cond.notify_all()
    if error is not None:
      raise error
    return batch

  def close(self) -> None:
    """Stop the workers (batches made ahead are dropped; a `make` under way is finished)."""
    with self._cond:
      self._closed = True
      self._done.clear()
      self._cond.notify_all()
    for t in self._threads:
      t.join()

  def __enter__(self) -> "Prefetch":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
