"""Metric writers (JSONL, TensorBoard event files, absl logging), a progress reporter, atomic JSON
files, and quieter library logs. (A workdir's claim, lock and signals: `nasr.workdirs`.)"""

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from absl import logging

from nasr.core.checks import finite_json


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


def rough_duration(seconds: float) -> str:
  """Return a duration as a person would say it of an estimate: "about 12 min", "about 2.7 h"."""
  if not math.isfinite(seconds) or seconds < 0:
    raise ValueError(f"a duration must be a finite number of seconds >= 0, got {seconds}")
  if seconds < 60:
    return "under a minute"
  if seconds < 3600:
    return f"about {round(seconds / 60)} min"
  if seconds < 48 * 3600:
    return f"about {seconds / 3600:.1f} h"
  return f"about {seconds / 86400:.1f} days"


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


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Write `obj` as indented JSON, atomically."""
  path = Path(path)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(finite_json(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")
  os.replace(tmp, path)  # atomic: a reader never sees half a file
