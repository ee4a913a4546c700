"""Orbax checkpoints of a whole run: array state plus JSON metadata, written atomically.

Damage is survivable: a numbered folder under `checkpoints/` that is not a checkpoint is moved
aside (`<name>.not-a-checkpoint`) with a warning, and `restore_latest` moves a checkpoint that
cannot be read aside (`<step>.damaged`) and falls back to the newest intact one. A checkpoint
whose arrays have other shapes than the state being restored (another network) is not damage:
it raises CheckpointMismatchError and nothing is moved.
"""

import collections
import hashlib
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from nasr.core.errors import CheckpointError, CheckpointMismatchError

_ITEMS = ("state", "meta")


class Checkpointer:
  """Save and restore (state pytree, JSON metadata) pairs under `<workdir>/<subdir>`.

  Orbax writes each step into a temporary folder and renames it when complete, so a run killed
  mid-save leaves the previous checkpoint intact and the partial one is ignored on restore.
  """

  def __init__(
    self,
    workdir: str | os.PathLike,
    max_to_keep: int = 2,
    async_save: bool = True,
    subdir: str = "checkpoints",
  ):
    self.directory = Path(workdir).absolute() / subdir
    self._options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      create=True,
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=True,
      # Orbax names its cross-process barriers by step alone: a run's latest and best managers
      # saving the same step would meet at each other's barriers. One prefix per folder (the
      # same on every process: they run the same command on one shared filesystem).
      multiprocessing_options=ocp.options.MultiprocessingOptions(
        barrier_sync_key_prefix="nasr" + hashlib.sha1(str(self.directory).encode()).hexdigest()[:12]
      ),
    )
    if self.directory.is_dir() and jax.process_index() == 0:
      for path in sorted(self.directory.iterdir()):
        if path.name.isdigit() and not _is_checkpoint(path):
          self._move_aside(int(path.name), "not-a-checkpoint", "it is not a checkpoint")
    # Several processes save and restore together (Orbax: every process calls save/restore;
    # process 0 writes the shared files). The others list the steps after process 0 has
    # cleaned up, so every process sees the same checkpoints.
    _sync("nasr-checkpoint-open")
    self._manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
      self.directory,
      item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
      options=self._options,
    )

  def _move_aside(self, step: int, suffix: str, why: str) -> Path | None:
    """Rename checkpoints/<step> to <step>.<suffix>[.n] (kept for inspection); return the path.

    Only process 0 renames (None elsewhere): the folder is shared by every process of a run.
    """
    if jax.process_index() != 0:
      return None
    src = self.directory / str(step)
    dst = self.directory / f"{step}.{suffix}"
    n = 1
    while dst.exists():
      dst, n = self.directory / f"{step}.{suffix}.{n}", n + 1
    src.rename(dst)
    logging.warning("checkpoints/%d: %s; moved it to %s and ignored it", step, why, dst.name)
    return dst

  def latest_step(self) -> int | None:
    """Return the newest complete checkpoint step, or None when there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Return the steps of all complete checkpoints, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict | None = None, force: bool = False) -> bool:
    """Save `state` (a pytree of arrays) and JSON-serialisable `meta`; return whether it was saved."""
    return self._manager.save(
      int(step),
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta or {})
      ),
      force=force,
    )

  def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
    """Return (state, meta) of `step` (default: latest), restored into the structure of `target`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
      ),
    )
    return restored["state"], dict(restored["meta"] or {})

  def check_shapes(self, target: Any, step: int) -> None:
    """Raise CheckpointMismatchError when `step`'s arrays are not the shapes of `target`'s.

    Reads only the array metadata. Leaves are compared as a multiset of (shape, dtype), so the
    containers Orbax writes (namedtuples become dicts) do not matter.
    """
    metadata = self._manager.item_metadata(step)["state"]
    tree = getattr(metadata, "tree", metadata)
    if not tree:
      raise CheckpointError(f"checkpoints/{step} has no array metadata")
    saved = _shapes(tree)
    wanted = _shapes(jax.tree.map(ocp.utils.to_shape_dtype_struct, target))
    if saved != wanted:
      extra = sorted((saved - wanted).elements())[:3]
      missing = sorted((wanted - saved).elements())[:3]
      raise CheckpointMismatchError(
        f"checkpoints/{step} holds arrays of other shapes than this run's (saved, not expected: "
        f"{_fmt_shapes(extra)}; expected, not saved: {_fmt_shapes(missing)})"
      )

  def restore_latest(self, target: Any, damaged_ok: bool = True) -> tuple[int, Any, dict] | None:
    """Return (step, state, meta) of the newest intact checkpoint, or None when there is none.

    A checkpoint that cannot be read is moved aside with a warning naming its step and the next
    older one is tried (`damaged_ok=False`: raise CheckpointError naming the step instead).
    Raises CheckpointMismatchError, moving nothing, when the arrays have other shapes (another
    run's checkpoint), and CheckpointError when every checkpoint is damaged.
    """
    damaged = []
    for step in reversed(self.all_steps()):
      try:
        self.check_shapes(target, step)
        state, meta = self.restore(target, step)
        if damaged:
          self._manager.close()
          self._manager = self._open()
        return step, state, meta
      except CheckpointMismatchError:
        raise
      except Exception as e:  # noqa: BLE001 - any read failure of a checkpoint is damage
        why = f"{type(e).__name__}: {_first_line(e)}"
        if not damaged_ok:
          raise CheckpointError(
            f"checkpoint step {step} in {self.directory} is damaged ({why})"
          ) from None
        damaged.append(step)
        self._move_aside(step, "damaged", f"cannot be read ({why})")
    self._manager.close()
    self._manager = self._open()
    if damaged:
      raise CheckpointError(
        f"every checkpoint in {self.directory} is damaged (steps {damaged}); start a new run "
        "with a new --workdir"
      )
    return None

  def restore_meta(self, step: int | None = None) -> dict:
    """Return only the JSON metadata of `step` (default: latest)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"] or {})

  def wait(self) -> None:
    """Block until any asynchronous save has finished."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Finish pending saves and release the manager."""
    self._manager.wait_until_finished()
    self._manager.close()


def _sync(name: str) -> None:
  """Wait until every process of a multi-process run reaches this point (no-op for one)."""
  if jax.distributed.is_initialized() and jax.process_count() > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415 - multi-process runs only

    multihost_utils.sync_global_devices(name)


def _is_checkpoint(path: Path) -> bool:
  """Return whether a numbered step folder looks like an Orbax checkpoint of this class."""
  return (path / "_CHECKPOINT_METADATA").is_file() and all((path / i).is_dir() for i in _ITEMS)


def _shapes(tree) -> collections.Counter:
  leaves = jax.tree.leaves(tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))
  return collections.Counter((tuple(x.shape), np.dtype(x.dtype).name) for x in leaves)


def _fmt_shapes(items) -> str:
  return ", ".join(f"{d}{list(s)}" for s, d in items) or "none"


def _first_line(error: Exception) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return (lines[0] if lines else "")[:200]
