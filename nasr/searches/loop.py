"""What every search run shares: workdir, resume, metric writer, progress line, NaN stop, history.

A search method builds its state, then

  run = SearchRun(config, workdir, total=config.epochs, unit="epoch")
  state = run.resume(state)                  # the latest checkpoint's state, or `state` as given
  with run:                                  # opens the writer and the progress line
    for epoch in range(run.done, config.epochs):
      ...
      loss = run.finite(pending_losses, first_step)       # DivergedError names the step
      run.end(epoch + 1, state, record, shown={"psnr": p})  # history, metrics, progress, checkpoint

The checkpoint holds the whole state pytree plus `run.meta` (the unit's count, the history and
anything the method keeps there), so a run killed at any moment resumes from its last `end`.
"""

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
from absl import logging

from nasr import writers
from nasr.checkpoint import Checkpointer
from nasr.core.errors import CheckpointMismatchError, ConfigError
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
  ):
    self.workdir: Path = writers.prepare_workdir(workdir)
    self.is_chief = jax.process_index() == 0
    self.total, self.unit = int(total), unit
    self.meta: dict[str, Any] = {unit: 0, "history": [], **(meta or {})}
    self._config = json.loads(config.to_json_best_effort())
    kind = f"{config.get('method') or 'one-shot'} search"
    self._saved_config = (
      writers.claim_workdir(self.workdir, kind, self._config) if self.is_chief else None
    )
    try:
      self.ckpt = Checkpointer(self.workdir, max_to_keep=config.keep_checkpoints)
    except BaseException:
      writers.release_workdir(self.workdir)
      raise
    self.writer: writers.MetricWriter | None = None
    self.progress: writers.Progress | None = None

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
    step = self.ckpt.latest_step()
    if step is None:
      return state
    try:
      if check_meta is not None:
        try:
          saved = self.ckpt.restore_meta(step)
        except Exception:  # noqa: BLE001 - damage: restore_latest names it and falls back
          saved = None
        if saved is not None:
          check_meta(saved)
      found = self.ckpt.restore_latest(state)
    except CheckpointMismatchError as e:
      self.close()
      msg = writers.explain_mismatch(self.workdir, self._saved_config, self._config, e)
      raise ConfigError(msg) from None
    except BaseException:
      self.close()
      raise
    if found is None:
      return state
    _, restored, meta = found
    self.meta.update(meta)
    writers.truncate_metrics(self.workdir, self.done)
    logging.info("resumed the search after %s %d", self.unit, self.done)
    return restored

  def __enter__(self) -> "SearchRun":
    self.writer = writers.MetricWriter(self.workdir, is_chief=self.is_chief)
    self.progress = writers.Progress(self.total, start_step=self.done, every_s=0, name=self.unit)
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    """Finish pending checkpoint saves, close the writer and release the workdir."""
    try:
      self.ckpt.close()
      if self.writer is not None:
        self.writer.close()
    finally:
      writers.release_workdir(self.workdir)

  def finite(self, pending: list, first_step: int) -> float:
    """Return the mean of per-step losses; raise DivergedError naming the first bad step."""
    return train_lib.check_finite(pending, first_step, self.ckpt.latest_step())

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
    if scalars is None:
      scalars = {k: v for k, v in record.items() if k != self.unit}
    self.writer.write_scalars(step, scalars)
    self.progress.update(step, shown, True)
    self.ckpt.save(step, state, self.meta)

  def write_json(self, name: str, obj: Any) -> Path:
    """Write `obj` to `<workdir>/name` (on the chief process only); return the path."""
    path = self.workdir / name
    if self.is_chief:
      writers.write_json(path, obj)
    return path


def space_kwargs(config: ml_collections.ConfigDict) -> dict:
  """Return the keyword arguments of the searched space: config.space without its name."""
  return {k: _plain(v) for k, v in config.space.items() if k != "name"}


def _plain(v):
  if isinstance(v, list | tuple):
    return [_plain(x) for x in v]
  return v


def strategy_kwargs(
  config: ml_collections.ConfigDict, spec, op_heads: tuple[int, ...] = ()
) -> dict:
  """Return the strategy's keyword arguments from config.strategy (a temperature of 0 is none).

  `op_tanh_reduce` becomes the per-head divisor of the tanh constant on the heads that choose
  operations (`op_heads`; ENAS/DeCoNAS: 1.1 / 2.5), 1 on the other heads of `spec`.
  """
  kwargs = {k: v for k, v in config.strategy.items() if k not in ("name", "op_tanh_reduce")}
  if "temperature" in kwargs and not kwargs["temperature"]:
    kwargs["temperature"] = None
  reduce = config.strategy.get("op_tanh_reduce", 0.0)
  if reduce:
    ops = set(op_heads)
    kwargs["head_tanh_reduce"] = tuple(
      float(reduce) if h in ops else 1.0 for h in range(spec.num_heads)
    )
  return kwargs
