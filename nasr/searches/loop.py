"""What every search run shares: workdir, resume, metric writer, progress line, NaN stop, history.

A search method builds its state, then

  run = SearchRun(config, workdir, total=config.epochs, unit="epoch", steps_per_unit=n)
  state = run.resume(state)                  # the latest checkpoint's state, or `state` as given
  with run:                                  # writer, progress line, SIGINT/SIGTERM caught
    for epoch in range(run.done, config.epochs):
      at, carry = run.resumed_at()           # steps of this epoch a stopped run had done
      for i in range(at, n):
        if run.stop_requested:
          run.pause(i, state, carry)         # checkpoint at this step, then raise Interrupted
        ...
      loss = run.finite(pending_losses, first_step)       # DivergedError names the step
      run.end(epoch + 1, state, record, shown={"psnr": p})  # history, metrics, progress, checkpoint

The checkpoint holds the whole state pytree plus `run.meta` (the unit's count, the history and
anything the method keeps there), so a run killed at any moment resumes from its last `end`, and a
run stopped by Ctrl-C or SIGTERM resumes from the step it stopped at. Checkpoints are numbered by
steps, `units * steps_per_unit + steps into the unit`, so the one a stop saves sorts between the
unit ends around it.
"""

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import jax
import ml_collections
import numpy as np
from absl import logging

from nasr import parallel, strategies, training, workdirs, writers
from nasr.checkpoint import Checkpointer
from nasr.core.errors import CheckpointMismatchError, ConfigError, DivergedError, Interrupted
from nasr.estimation import train as train_lib


class SearchRun:
  """One resumable search run under `workdir`: checkpoint, metrics, progress and history."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    total: int,
    unit: str = "epoch",
    meta: dict | None = None,
    steps_per_unit: int = 1,
  ):
    self.workdir: Path = workdirs.prepare(workdir)
    self.is_chief = parallel.is_chief()
    self.total, self.unit = int(total), unit
    self.steps_per_unit = max(int(steps_per_unit), 1)
    self.meta: dict[str, Any] = {unit: 0, "history": [], **(meta or {})}
    kind = _kind(config)
    config_dict = json.loads(config.to_json_best_effort())
    self._run_dir = workdirs.RunWorkdir(self.workdir, kind, config_dict, config.keep_checkpoints)
    self.ckpt = self._run_dir.ckpt
    self.writer: writers.MetricWriter | None = None
    self.progress: writers.Progress | None = None
    # Several processes stop at the same step; one process stops at once (nasr.parallel).
    self.interrupts = parallel.AgreedInterrupts(workdirs.Interrupts())

  @property
  def done(self) -> int:
    """Return how many units (epochs, rounds) the checkpointed state has finished."""
    return int(self.meta[self.unit])

  @property
  def history(self) -> list[dict]:
    """Return the per-unit records so far (restored with the checkpoint)."""
    return self.meta["history"]

  def resume(self, state: Any, check_meta: Callable[[dict], None] | None = None) -> Any:
    """Return the latest checkpoint's state restored into `state`'s structure (or `state`).

    `check_meta(meta)` runs on the saved metadata before the arrays are read, so a workdir that
    holds an incompatible run fails with the method's own message rather than a shape error.
    """
    found = self._run_dir.restore_latest(state, check_meta)
    if found is None:
      if self.is_chief:  # a run killed before its first checkpoint left records: not this one's
        writers.truncate_metrics(self.workdir, -1)
      return state
    _, restored, meta = found
    self.meta.update(meta)
    if self.is_chief:
      writers.truncate_metrics(self.workdir, self.done)
    at, _ = self.resumed_at()
    within = f" and {at} steps of the next" if at else ""
    logging.info("resumed the search after %s %d%s", self.unit, self.done, within)
    # A run's length is the config key named by its unit (epochs, rounds): changed, it says so.
    run_dir = self._run_dir
    notice = workdirs.length_notice(
      self.workdir, run_dir.saved_config, run_dir.config, f"{self.unit}s", self.done, self.unit
    )
    if notice:
      logging.warning("%s", notice)
    return restored

  def __enter__(self) -> "SearchRun":
    self.writer = writers.MetricWriter(self.workdir, log=False, is_chief=self.is_chief)
    self.progress = writers.Progress(self.total, start_step=self.done, every_s=0, name=self.unit)
    self.interrupts.__enter__()
    return self

  def __exit__(self, exc_type, *exc) -> None:
    self.interrupts.__exit__()
    self.close()
    if exc_type is None and self.stop_requested:
      # The signal came after the last step: every unit is saved; what follows (deriving,
      # reports) is quick to redo, and a run that was asked to stop should not go on.
      raise Interrupted(
        f"{self.interrupts.name()} after {self.unit} {self.done} of {self.total}: checkpoint "
        "saved; run the same command to finish"
      )

  @property
  def stop_requested(self) -> bool:
    """Return whether SIGINT or SIGTERM asked the run to stop (checked between steps)."""
    return self.interrupts.requested

  def resumed_at(self) -> tuple[int, dict]:
    """Return (steps done, carry) of the current unit that a stopped run saved; (0, {}) if none."""
    partial = self.meta.get("partial")
    if not partial:
      return 0, {}
    return int(partial["at"]), dict(partial.get("carry", {}))

  def pause(self, at: int, state: Any, carry: Mapping[str, Any] | None = None) -> NoReturn:
    """Checkpoint `state` `at` steps into the current unit (with `carry`), raise Interrupted.

    `carry` holds what the unit has accumulated so far (JSON: per-step losses as floats), so the
    resumed unit ends with the record an unstopped one would have.
    """
    where = f"{self.unit} {self.done + 1} of {self.total}"
    if self.steps_per_unit > 1:
      where += f", step {at} of {self.steps_per_unit}"
    step = self.done * self.steps_per_unit + at
    if at > 0 and step != self.ckpt.latest_step():
      self.meta["partial"] = {"at": int(at), "carry": dict(carry or {})}
      self.ckpt.save(step, state, self.meta, force=True)
      self.ckpt.wait()
      saved = "checkpoint saved"
    else:  # nothing done since the last checkpoint (a method's sub-runs keep their own)
      saved = "the last checkpoint holds it"
    raise Interrupted(
      f"{self.interrupts.name()} in {where}: {saved}; run the same command to resume"
    )

  def close(self) -> None:
    """Finish pending checkpoint saves, close the writer and release the workdir."""
    try:
      if self.writer is not None:
        self.writer.close()
    finally:
      self._run_dir.close()

  def finite(self, pending: list, first_step: int) -> float:
    """Return the mean of per-step losses; raise DivergedError naming the first bad step."""
    last = f"after {self.unit} {self.done}" if self.ckpt.latest_step() is not None else None
    return train_lib.check_finite(pending, first_step, last)

  def end(
    self,
    step: int,
    state: Any,
    record: dict,
    shown: Mapping[str, Any],
    scalars: Mapping[str, Any] | None = None,
  ) -> None:
    """Close unit `step`: keep `record` in the history, write metrics, show progress, checkpoint.

    Args:
      step: the number of finished units.
      state: the whole array state to checkpoint (restored by `resume`).
      record: this unit's JSON record (kept in the checkpoint metadata).
      shown: the few metrics of the progress line.
      scalars: the metrics written to metrics.jsonl (default: the record's numbers).
    """
    self.meta["history"].append(record)
    self.meta[self.unit] = step
    self.meta.pop("partial", None)
    if scalars is None:
      scalars = {k: v for k, v in record.items() if k != self.unit}
    self.writer.write_scalars(step, scalars)
    self.progress.update(step, shown, True)
    self.ckpt.save(step * self.steps_per_unit, state, self.meta)

  def write_json(self, name: str, obj: Any) -> Path:
    """Write `obj` to `<workdir>/name` (on the chief process only); return the path."""
    path = self.workdir / name
    if self.is_chief:
      writers.write_json(path, obj)
    return path


RESULT_FILE = "search_result.json"  # each method's summary, written last
TRAIN_RESULT_FILE = training.RESULT_FILE  # what `training.train` writes when a run ends


def train_from_scratch(
  train_config: ml_collections.ConfigDict, workdir: str | os.PathLike
) -> tuple[dict | None, bool]:
  """Return (training result, False) of a stand-alone sub-run, or (None, True) if it diverged.

  A sub-run that finished before (its train_result.json is there) is read, not retrained; one that
  was stopped resumes from its own checkpoints. GP-NAS candidates and the diagnostics' stand-alone
  architectures are trained this way.
  """
  done = Path(workdir) / TRAIN_RESULT_FILE
  if done.is_file():  # finished before a kill: the record is final
    return json.loads(done.read_text()), False
  try:
    return training.train(train_config, workdir), False
  except DivergedError as e:
    logging.warning("%s diverged (%s)", workdir, e)
    return None, True


@dataclasses.dataclass
class Scorer:
  """A finished search's shared weights, ready to score any architecture of its space."""

  space: Any
  space_name: str
  space_kwargs: dict  # the searched space's (what stand-alone architecture files are built with)
  scale: int
  searched: np.ndarray  # the tokens of the architecture the search chose
  score: Callable[[np.ndarray], np.ndarray]  # tokens [N, L] -> shared-weight PSNR [N] (float64)


def restore_final(workdir: str | os.PathLike, target: Any) -> Any:
  """Return the state of a finished run's newest checkpoint, read without claiming the workdir."""
  ckpt = Checkpointer(workdir, async_save=False)
  try:
    found = ckpt.restore_latest(target, damaged_ok=False)
  except CheckpointMismatchError as e:
    raise ConfigError(f"{workdir}: the checkpoint does not fit its run.json config ({e})") from None
  finally:
    ckpt.close()
  if found is None:
    raise ConfigError(f"{workdir}: no checkpoint in {Path(workdir) / 'checkpoints'}")
  return found[1]


def val_psnr(result: dict | None) -> float:
  """Return a training result's final validation PSNR (NaN when it diverged or was not finite)."""
  psnr = (result or {}).get("val", {}).get("psnr")  # null in strict JSON when not finite
  return float("nan") if psnr is None else float(psnr)


def _kind(config: ml_collections.ConfigDict) -> str:
  """Return the run kind a search of `config` records in its workdir."""
  return f"{config.get('method') or 'one-shot'} search"


def finished(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict | None:
  """Return the summary of a search that already finished in `workdir` with this very config.

  None when there is none: no summary, another config (more epochs continue the run), or a
  checkpoint newer than the summary (a longer run was stopped before its end). The workdir is
  claimed and released on the way, so a live run or another kind of run is refused as always.
  In a multi-process run process 0 decides (it alone claims workdirs) and the others follow.
  """
  workdir = Path(workdir)
  found = _finished_here(config, workdir) if parallel.is_chief() else None
  if not parallel.chief_decides(found is not None):
    return None
  return found if found is not None else json.loads((workdir / RESULT_FILE).read_text())


def _without_layout(config_dict: Any) -> Any:
  """Return a config dict without its `distributed` section (how many processes ran it)."""
  if not isinstance(config_dict, dict):
    return config_dict
  return {k: v for k, v in config_dict.items() if k != "distributed"}


def _finished_here(config: ml_collections.ConfigDict, workdir: Path) -> dict | None:
  """Return `finished`'s answer as read from this process's view of the workdir."""
  result = workdir / RESULT_FILE
  if not result.is_file():
    return None
  config_dict = json.loads(config.to_json_best_effort())
  before = workdirs.claim(workdir, _kind(config), config_dict, record=False)  # only reads
  workdirs.release(workdir)
  checkpoints = [p.stat().st_mtime for p in (workdir / "checkpoints").glob("[0-9]*")]
  # The process layout does not change what a search computes: a finished search is finished
  # whether it is asked again by one process or by several.
  if _without_layout(before) != _without_layout(config_dict):
    return None
  if max(checkpoints, default=0.0) > result.stat().st_mtime:
    return None
  try:
    return json.loads(result.read_text())
  except ValueError:
    return None  # a damaged summary: run again, which rewrites it


def on_device():
  """Return a context in which reading a device value on the host raises (jax's transfer guard).

  The searches dispatch their steps in it: a step's results stay on the devices until the phase
  ends, so the host never waits for the devices inside an epoch (a stray float() or np.asarray in
  the loop would make every step wait; this makes it an error instead).
  """
  return jax.transfer_guard_device_to_host("disallow")


def floats(values: list) -> list[float]:
  """Return device scalars as Python floats (exact: float32 -> float64), fetched together."""
  return [float(v) for v in np.asarray(jax.device_get(values), np.float64)]


def space_kwargs(config: ml_collections.ConfigDict) -> dict:
  """Return the keyword arguments of the searched space: config.space without its name."""
  return {k: _plain(v) for k, v in config.space.items() if k != "name"}


def _plain(v):
  if isinstance(v, list | tuple):
    return [_plain(x) for x in v]
  return v


def strategy_options(config: ml_collections.ConfigDict) -> dict:
  """Return the options of the strategy config.strategy.name: its section config.strategy.<name>.

  Each strategy's options live in a section of their own (config.strategy.reinforce.hidden), so
  a config can carry several and switching is one override (--config.strategy.name=random): the
  chosen strategy without a section runs with its defaults, the other sections are not used.

  Raises:
    ConfigError: the strategy is unknown, an option sits outside a section, or the chosen
      strategy's section holds a key that is not one of its options.
  """
  name = config.strategy.name
  allowed = strategies.options(name)
  for key, value in config.strategy.items():
    if key != "name" and not isinstance(value, ml_collections.ConfigDict):
      raise ConfigError(
        f"config.strategy.{key}: strategy options live in a section per strategy, "
        f"config.strategy.<name>.<option> (here config.strategy.{name}.{key})"
      )
  unused = [f"config.strategy.{k}" for k in config.strategy if k not in ("name", name)]
  if unused:
    logging.info("strategy %s: not using %s (another strategy's options)", name, ", ".join(unused))
  section = config.strategy.get(name) or {}
  for key in section:
    if key not in allowed:
      raise ConfigError(
        f"config.strategy.{name}.{key} is not an option of strategy {name!r}; its options are "
        f"{', '.join(allowed) or 'none'}"
      )
  return dict(section.items())
