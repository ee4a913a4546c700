"""A run's workdir: claimed for one kind of run, locked to one live process, its run.json, its
checkpoints, and the signals that stop the run there.

The trainer and every search open their workdir through `RunWorkdir`: `prepare` checks it can be
written, `claim` locks it and records the run (refusing another kind of run or a live process),
and a checkpoint that does not fit the run is explained by the config keys that differ
(`explain_mismatch`). `Interrupts` turns SIGINT / SIGTERM into a checkpoint and a clean stop.
"""

import fcntl
import json
import os
import signal
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
from absl import logging

from nasr import writers
from nasr.checkpoint import Checkpointer
from nasr.core.errors import CheckpointMismatchError, ConfigError, WorkdirError


def prepare(workdir: str | os.PathLike, what: str = "workdir") -> Path:
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


RUN_FILE = "run.json"  # {"kind": "train" | "<method> search", "config": {...}}
_LOCKS: dict[Path, int] = {}  # workdir -> the open lock file this process holds


def claim(workdir: Path, kind: str, config: Any, record: bool = True) -> dict | None:
  """Lock `workdir` for this process and record the run; return the config it held before.

  Raises WorkdirError when the workdir holds another kind of run (a training run's workdir given
  to a search) or a live process holds its lock. The lock is an OS file lock: a killed run
  leaves none behind. Release it with `release`. With `record=False` run.json is left as it was
  (`record_run` writes it once the run is known to fit the workdir): a refused run changes
  nothing, so a second attempt names the same differing keys.
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
  run_file = workdir / RUN_FILE
  if run_file.is_file():
    try:
      previous = json.loads(run_file.read_text())
    except (OSError, ValueError):
      previous = None  # unreadable: the checkpoints themselves still say whether they fit
  if isinstance(previous, dict) and previous.get("kind") not in (None, kind):
    release(workdir)
    raise WorkdirError(
      f"workdir {workdir} holds a {previous['kind']} run, not a {kind}; use another --workdir"
    )
  if record:
    record_run(workdir, kind, config)
  return previous.get("config") if isinstance(previous, dict) else None


def record_run(workdir: Path, kind: str, config: Any) -> None:
  """Write <workdir>/run.json: the kind of run that holds the workdir and its config."""
  writers.write_json(Path(workdir) / RUN_FILE, {"kind": kind, "config": config})


def release(workdir: Path) -> None:
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


def length_notice(
  workdir: Path, before: Mapping | None, after: Mapping, key: str, done: int, unit: str
) -> str | None:
  """Return the line that says a resume changes the run's length (config `key`, counted in
  `unit`s, `done` of them finished), or None when the length is unchanged or unknown."""
  if not before or key not in before or key not in after or before[key] == after[key]:
    return None
  new = after[key]
  where = f"at {unit} {done}" if unit == "step" else f"after {unit} {done}"
  line = f"resuming {workdir} {where} of a run now {new} {unit}s long (was {before[key]}): "
  if done >= new:
    return line + "it is past its new end, so nothing more is run"
  # A learning-rate schedule over the whole run bends where it resumes: the result is neither
  # that of the old length nor that of a fresh run of the new one.
  return (
    line + "it goes on to the new end, and a schedule over the run's length changes from here; "
    f"use a new --workdir for a fresh run of {new} {unit}s"
  )


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


class RunWorkdir:
  """A workdir this process holds for one run: claimed (its kind checked, locked) with its
  checkpoints. Training and every search open theirs through it."""

  def __init__(self, workdir: Path, kind: str, config: dict, keep: int):
    self.workdir, self.config, self.kind = Path(workdir), config, kind
    self.is_chief = jax.process_index() == 0
    # run.json is written once the checkpoints are known to fit (restore_latest): not before
    self.saved_config = claim(self.workdir, kind, config, record=False) if self.is_chief else None
    try:
      self.ckpt = Checkpointer(self.workdir, max_to_keep=keep)
    except BaseException:
      release(self.workdir)
      raise

  def restore_latest(
    self, target: Any, check_meta: Callable[[dict], None] | None = None
  ) -> tuple[int, Any, dict] | None:
    """Return (step, state, meta) of the newest intact checkpoint restored into `target`'s
    structure, or None when there is none.

    `check_meta(meta)` runs on the saved metadata before the arrays are read, so a workdir that
    holds an incompatible run fails with the caller's own message rather than a shape error. A
    checkpoint that does not fit `target` raises ConfigError naming the config keys that differ.
    On any error the workdir is released.
    """
    try:
      step = self.ckpt.latest_step()
      if step is not None and check_meta is not None:
        try:
          saved = self.ckpt.restore_meta(step)
        except Exception:  # noqa: BLE001 - damage: restore_latest names it and falls back
          saved = None
        if saved is not None:
          check_meta(saved)
      found = self.ckpt.restore_latest(target)
      if self.is_chief:
        record_run(self.workdir, self.kind, self.config)
      return found
    except CheckpointMismatchError as e:
      self.close()
      msg = explain_mismatch(self.workdir, self.saved_config, self.config, e)
      raise ConfigError(msg) from None
    except BaseException:
      self.close()
      raise

  def close(self) -> None:
    """Finish pending checkpoint saves and release the workdir."""
    try:
      self.ckpt.close()
    finally:
      release(self.workdir)
