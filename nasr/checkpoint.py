"""Orbax checkpoints of a whole run: array state plus JSON metadata, written atomically."""

import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Save and restore (state pytree, JSON metadata) pairs under `<workdir>/checkpoints`.

  Orbax writes each step into a temporary folder and renames it when complete, so a run killed
  mid-save leaves the previous checkpoint intact and the partial one is ignored on restore.
  """

  def __init__(self, workdir: str | os.PathLike, max_to_keep: int = 2, async_save: bool = True):
    self.directory = Path(workdir).absolute() / "checkpoints"
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=True,
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True,
      ),
    )

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

  def restore_arrays(self, step: int | None = None) -> Any:
    """Return the state of `step` (default: latest) as nested dicts of arrays, without a target.

    Optax state types are lost (Orbax cannot know them); use `restore` to resume a run and this to
    inspect or compare checkpoints.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    restored = self._manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore())
    )
    return restored["state"]

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
