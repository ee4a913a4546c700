"""Metric writers (JSONL, TensorBoard event files, absl logging), a progress reporter, and the
workdir's claim: one kind of run per workdir, one live process per workdir."""

import fcntl
import json
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from absl import logging

from nasr.core.checks import finite_json
from nasr.core.errors import ConfigError, WorkdirError


def _scalar(v: Any) -> float:
  try:
    return float(v)
  except (TypeError, ValueError):
    return float("nan")


class MetricWriter:
  """Write scalars per step to `<workdir>/metrics.jsonl`, TensorBoard (`<workdir>/tb`) and the log.

  Runs that show a progress line pass `log=False`: the line carries the few metrics worth
  reading, the files carry all of them.
  """

  def __init__(
    self,
    workdir: str | os.PathLike,
    log: bool = True,
    tensorboard: bool = True,
    is_chief: bool = True,
  ):
    self.path = Path(workdir) / "metrics.jsonl"
    self._log = log
    self._chief = is_chief
    self._tb = _tensorboard_writer(Path(workdir) / "tb") if (tensorboard and is_chief) else None

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Append one record {"step": step, **scalars}."""
    if not self._chief:
      return
    record = {"step": int(step), **{k: _scalar(v) for k, v in scalars.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(finite_json(record), allow_nan=False) + "\n")
    if self._log:
      logging.info(
        "step %d: %s", step, ", ".join(f"{k}={_fmt(v)}" for k, v in record.items() if k != "step")
      )
    if self._tb is not None:
      self._tb(step, record)

  def close(self) -> None:
    """Flush TensorBoard events."""
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
  """Return the records of `<workdir>/metrics.jsonl` (empty when missing)."""
  path = Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(workdir: str | os.PathLike, after_step: int) -> None:
  """Drop records newer than `after_step`, so a resumed run does not log a step twice."""
  path = Path(workdir) / "metrics.jsonl"
  if path.exists():
    keep = [r for r in read_metrics(workdir) if r["step"] <= after_step]
    path.write_text("".join(json.dumps(r) + "\n" for r in keep))


def _fmt(v: float) -> str:
  if math.isnan(v) or math.isinf(v):
    return str(v)
  return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"


class _TB:
  """TensorBoard scalars through tensorboardX: event files without TensorFlow."""

  def __init__(self, logdir: Path):
    from tensorboardX import SummaryWriter  # noqa: PLC0415 - imported by the chief only

    self._w = SummaryWriter(str(logdir), flush_secs=30)

  def __call__(self, step, record):
    wall = time.time()
    for k, v in record.items():
      if k != "step" and math.isfinite(v):
        self._w.add_scalar(k, v, int(step), walltime=wall)
    self._w.flush()

  def close(self):
    self._w.close()


def _tensorboard_writer(logdir: Path):
  logdir.mkdir(parents=True, exist_ok=True)
  return _TB(logdir)


def _rate(rate: float, unit: str, per_unit: bool) -> str:
  """Return "2.31 steps/s", or "48.2 s/epoch" (`per_unit`: seconds per unit)."""
  if unit == "train":  # the trainer's progress counts optimisation steps
    unit = "step"
  if per_unit:
    return f"{1 / rate:.1f} s/{unit}" if rate > 0 else f"? s/{unit}"
  return f"{rate:.2f} {unit}s/s"


class Progress:
  """Log a progress line (steps/s, ETA and chosen metrics) at most every `every_s` seconds."""

  def __init__(
    self, total_steps: int, start_step: int = 0, every_s: float = 10.0, name: str = "train"
  ):
    self.total = total_steps
    self.name = name
    self.every_s = every_s
    self._t0 = self._last = time.monotonic()
    self._s0 = self._slast = start_step
    # The first line picks the unit (s/epoch when slower than one a second) and the run keeps it.
    self._per_unit: bool | None = None

  def steps_per_sec(self, step: int) -> float:
    """Return the average speed since the last reset."""
    dt = time.monotonic() - self._t0
    return (step - self._s0) / dt if dt > 0 else 0.0

  def update(self, step: int, metrics: Mapping[str, Any] | None = None, force: bool = False) -> str:
    """Log and return a progress line when due (or forced); otherwise return ''."""
    now = time.monotonic()
    if not force and now - self._last < self.every_s:
      return ""
    rate = (step - self._slast) / max(now - self._last, 1e-9)
    self._last, self._slast = now, step
    eta = (self.total - step) / rate if rate > 0 else float("inf")
    if self._per_unit is None:
      self._per_unit = 0 < rate < 1
    speed = _rate(rate, self.name, self._per_unit)
    parts = [f"{self.name} {step}/{self.total}", speed, f"ETA {_duration(eta)}"]
    parts += [f"{k} {_fmt(_scalar(v))}" for k, v in (metrics or {}).items()]
    line = " | ".join(parts)
    logging.info("%s", line)
    return line

  def reset_clock(self, step: int) -> None:
    """Restart timing at `step` (call after compilation so it does not count)."""
    self._t0 = self._last = time.monotonic()
    self._s0 = self._slast = step


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class _DropChattyInfo:
  """A logging filter that keeps warnings and errors from libraries that log every save at INFO,
  without the tracebacks they attach (three per failed Orbax save)."""

  # (jax's xla_bridge says at INFO that it found no TPU on every CPU/GPU host.)
  PATHS = ("/orbax/", "/tensorflow_datasets/", "/etils/", "/jax/_src/xla_bridge.py")

  def filter(self, record) -> bool:
    import logging as std_logging

    library = any(p in record.pathname for p in self.PATHS)
    if record.levelno >= std_logging.WARNING:
      if library:  # one line: a failed save's traceback reaches the launcher's error line anyway
        record.exc_info, record.exc_text = None, None
      return True
    return not library


def quiet_library_logs() -> None:
  """Hide INFO lines of Orbax/TFDS (dozens per checkpoint) while keeping nasr's own progress."""
  import logging as std_logging

  handler = logging.get_absl_handler()
  if not any(isinstance(f, _DropChattyInfo) for f in handler.filters):
    handler.addFilter(_DropChattyInfo())
  std_logging.getLogger("absl").addFilter(_DropChattyInfo())


def prepare_workdir(workdir: str | os.PathLike, what: str = "workdir") -> Path:
  """Return `workdir` as an absolute Path after creating it and checking it is writable.

  `what` names it in errors ("workdir", "config.output").
  """
  if not workdir:
    raise ConfigError(f"--{what} is required" if what == "workdir" else f"{what} is empty")
  path = Path(workdir).expanduser().absolute()
  if path.exists() and not path.is_dir():
    raise ConfigError(f"{what} {workdir} is a file, not a folder")
  try:
    path.mkdir(parents=True, exist_ok=True)
    # One name per process: the processes of a multi-host run probe the same (shared) folder.
    probe = path / f".nasr_write_probe.{socket.gethostname()}.{os.getpid()}"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise ConfigError(f"{what} {workdir} is not writable: {e.strerror or e}") from None
  return path


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Write `obj` as indented JSON, atomically."""
  path = Path(path)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(finite_json(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")
  os.replace(tmp, path)  # atomic: a reader never sees half a file


RUN_FILE = "run.json"  # {"kind": "train" | "<method> search", "config": {...}}
_LOCKS: dict[Path, int] = {}  # workdir -> the open lock file this process holds


def claim_workdir(workdir: Path, kind: str, config: Any) -> dict | None:
  """Lock `workdir` for this process and record the run; return the config it held before.

  Raises WorkdirError when the workdir holds another kind of run (a training run's workdir given
  to a search) or a live process holds its lock. The lock is an OS file lock: a killed run
  leaves none behind. Release it with `release_workdir`.
  """
  workdir = Path(workdir)
  if workdir not in _LOCKS:
    fd = os.open(workdir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
      os.close(fd)
      raise WorkdirError(
        f"workdir {workdir} is in use by a running process (pid {pid}); wait for it to finish "
        "or use another --workdir"
      ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _LOCKS[workdir] = fd
  previous = None
  record = workdir / RUN_FILE
  if record.is_file():
    try:
      previous = json.loads(record.read_text())
    except (OSError, ValueError):
      previous = None  # unreadable: the checkpoints themselves still say whether they fit
  if isinstance(previous, dict) and previous.get("kind") not in (None, kind):
    release_workdir(workdir)
    raise WorkdirError(
      f"workdir {workdir} holds a {previous['kind']} run, not a {kind}; use another --workdir"
    )
  write_json(record, {"kind": kind, "config": config})
  return previous.get("config") if isinstance(previous, dict) else None


def release_workdir(workdir: Path) -> None:
  """Release this process's lock on `workdir` (if it holds one)."""
  fd = _LOCKS.pop(Path(workdir), None)
  if fd is not None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def config_diff(before: Mapping | None, after: Mapping) -> list[str]:
  """Return "key: old -> new" for every dotted config key whose value differs."""
  if not before:
    return []
  flat_a, flat_b = _flatten(before), _flatten(after)
  keys = sorted(set(flat_a) | set(flat_b))
  missing = "(unset)"
  return [
    f"{k}: {flat_a.get(k, missing)!r} -> {flat_b.get(k, missing)!r}"
    for k in keys
    if flat_a.get(k, missing) != flat_b.get(k, missing)
  ]


def _flatten(d: Mapping, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def explain_mismatch(
  workdir: Path, before: Mapping | None, after: Mapping, error: Exception
) -> str:
  """Return the one-line message for a workdir whose checkpoints do not fit this run's state."""
  diff = [d for d in config_diff(before, after) if not d.startswith("workdir")]
  if diff:
    shown = "; ".join(diff[:6]) + ("; ..." if len(diff) > 6 else "")
    return (
      f"workdir {workdir} holds checkpoints of another config ({shown}): they do not fit this "
      "run's network; use a new --workdir, or the saved config to resume"
    )
  return f"workdir {workdir}: {error}; use a new --workdir"


class Interrupts:
  """While active, SIGINT and SIGTERM set `signal` instead of killing the run (main thread only).

  A loop checks `requested` between steps, saves a checkpoint and stops; a second signal
  before that raises KeyboardInterrupt at once (the user insists).
  """

  def __init__(self):
    self.signal: int | None = None
    self._previous: dict = {}

  @property
  def requested(self) -> bool:
    """Return whether a signal came."""
    return self.signal is not None

  def name(self) -> str:
    """Return the signal's name ("SIGINT")."""
    return signal.Signals(self.signal).name if self.signal else ""

  def _handle(self, signum, frame):
    if self.signal is not None:
      raise KeyboardInterrupt
    self.signal = signum
    logging.warning("%s: saving a checkpoint and stopping", signal.Signals(signum).name)

  def __enter__(self) -> "Interrupts":
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()
