"""Damaged, foreign and busy workdirs: checkpoints fall back or fail by name, nothing is lost."""

import os
import re
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from nasr import workdirs
from nasr.checkpoint import Checkpointer
from nasr.core.errors import CheckpointError, CheckpointMismatchError, WorkdirError

REPO = Path(__file__).resolve().parents[1]


def _digest(folder: Path) -> dict:
  return {
    str(p.relative_to(folder)): zlib.crc32(p.read_bytes())
    for p in sorted(folder.rglob("*"))
    if p.is_file()
  }


def _damage(step_dir: Path) -> None:
  for p in step_dir.rglob("*"):
    if p.is_file():
      p.write_bytes(np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes())


def _saved(workdir: Path, steps=(1, 2, 3)) -> None:
  ckpt = Checkpointer(workdir, max_to_keep=3, async_save=False)
  for s in steps:
    ckpt.save(s, {"w": jnp.full((3,), float(s))}, {"step": s})
  ckpt.close()


def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path):
  _saved(tmp_path)
  _damage(tmp_path / "checkpoints" / "3")
  ckpt = Checkpointer(tmp_path, max_to_keep=3, async_save=False)
  # Evaluating names the damaged step and moves nothing.
  with pytest.raises(CheckpointError, match="step 3 .* damaged"):
    ckpt.restore_latest({"w": jnp.zeros(3)}, damaged_ok=False)
  assert (tmp_path / "checkpoints" / "3").is_dir()
  # Resuming moves it aside (kept for inspection) and restores step 2.
  step, state, meta = ckpt.restore_latest({"w": jnp.zeros(3)})
  assert step == 2 and meta == {"step": 2}
  np.testing.assert_array_equal(state["w"], np.full(3, 2.0))
  assert (tmp_path / "checkpoints" / "3.damaged").is_dir()
  # The run goes on: step 3 can be saved again.
  ckpt.save(3, {"w": jnp.full((3,), 30.0)}, {"step": 3})
  ckpt.wait()
  assert ckpt.restore_latest({"w": jnp.zeros(3)})[0] == 3
  ckpt.close()


def test_every_checkpoint_damaged_is_an_error_naming_them(tmp_path):
  _saved(tmp_path, (1, 2))
  for s in (1, 2):
    _damage(tmp_path / "checkpoints" / str(s))
  ckpt = Checkpointer(tmp_path, async_save=False)
  with pytest.raises(CheckpointError, match=r"every checkpoint .* damaged \(steps \[2, 1\]\)"):
    ckpt.restore_latest({"w": jnp.zeros(3)})
  ckpt.close()


def test_a_junk_step_folder_is_ignored_with_a_warning(tmp_path, caplog):
  _saved(tmp_path, (1, 2))
  junk = tmp_path / "checkpoints" / "9"
  (junk / "stuff").mkdir(parents=True)
  (junk / "notes.txt").write_text("mine")
  ckpt = Checkpointer(tmp_path, async_save=False)
  assert ckpt.latest_step() == 2
  assert (tmp_path / "checkpoints" / "9.not-a-checkpoint" / "notes.txt").read_text() == "mine"
  assert "checkpoints/9" in caplog.text
  ckpt.close()


def test_another_networks_checkpoint_is_a_mismatch_and_nothing_moves(tmp_path):
  _saved(tmp_path, (1, 2))
  before = _digest(tmp_path / "checkpoints")
  ckpt = Checkpointer(tmp_path, async_save=False)
  with pytest.raises(CheckpointMismatchError, match=r"float32\[3\].*float32\[4\]"):
    ckpt.restore_latest({"w": jnp.zeros(4)})
  ckpt.close()
  assert _digest(tmp_path / "checkpoints") == before


def test_a_workdir_holds_one_kind_of_run_and_the_diff_names_the_keys(tmp_path):
  assert workdirs.claim(tmp_path, "training", {"scale": 2, "m": {"c": 8}}) is None
  workdirs.release(tmp_path)
  with pytest.raises(WorkdirError, match="holds a training run, not a darts_sr search"):
    workdirs.claim(tmp_path, "darts_sr search", {})
  before = workdirs.claim(tmp_path, "training", {"scale": 2, "m": {"c": 16}})
  workdirs.release(tmp_path)
  assert workdirs.config_diff(before, {"scale": 2, "m": {"c": 16}}) == ["m.c: 8 -> 16"]


_HOLD = """
import sys, time
from pathlib import Path
from nasr import workdirs
workdirs.claim(Path(sys.argv[1]), "training", {})
print("held", flush=True)
time.sleep(60)
"""


def test_a_live_run_holds_the_workdir_and_a_killed_one_leaves_no_stale_lock(tmp_path):
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  holder = subprocess.Popen(
    [sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
  )
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(WorkdirError, match=f"in use by a running process \\(pid {holder.pid}\\)"):
      workdirs.claim(tmp_path, "training", {})
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  workdirs.claim(tmp_path, "training", {})  # the kernel released the killed run's lock
  workdirs.release(tmp_path)


def _mount_tmpfs(path: Path, size: str) -> bool:
  path.mkdir(parents=True, exist_ok=True)
  opts = f"size={size}" if not os.path.ismount(path) else f"remount,size={size}"
  return (
    subprocess.run(
      ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True
    ).returncode
    == 0
  )


def test_a_full_disk_while_checkpointing_is_one_line_and_loses_nothing(tmp_path):
  from tests.launch_utils import run_launcher

  disk = tmp_path / "disk"
  if not _mount_tmpfs(disk, "8m"):
    pytest.skip("needs to mount a small tmpfs (root) to fill a disk")
  try:
    w = disk / "w"
    tiny = "--config=configs/train.py:tiny"
    assert run_launcher("train", tiny, f"--workdir={w}").returncode == 0
    kept = {p: _digest(w / "checkpoints" / p) for p in ("4", "6")}
    used = int(
      subprocess.run(
        ["df", "-k", "--output=used", str(disk)], capture_output=True, text=True
      ).stdout.split()[-1]
    )
    assert _mount_tmpfs(disk, f"{used + 100}k")  # room for less than one more checkpoint
    r = run_launcher("train", tiny, "--config.steps=8", f"--workdir={w}")
    err = r.stderr.strip()
    # No traceback: neither ours nor the "Event loop is closed" ones tensorstore's writer threads
    # raise after a failed write (they go to error.log, where they cannot cut into the last line).
    assert r.returncode == 2 and "Traceback" not in err, err[-3000:]
    last = err.splitlines()[-1]
    assert last.startswith("error: ") and "No space left on device" in last, last
    assert {p: _digest(w / "checkpoints" / p) for p in ("4", "6")} == kept
    # With room again, the same command cleans the partial save up and finishes.
    assert _mount_tmpfs(disk, "8m")
    r = run_launcher("train", tiny, "--config.steps=8", f"--workdir={w}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from the checkpoint at step 6" in r.stderr
    assert sorted(p.name for p in (w / "checkpoints").iterdir()) == ["6", "8"]
  finally:
    subprocess.run(["umount", str(disk)], capture_output=True)


# Runs argv[2:] with a file-size limit of argv[1] bytes: a write past it fails with EFBIG ("File
# too large"), as a full disk fails one with ENOSPC. SIGXFSZ would kill the process instead of
# failing the write; Python ignores it already, ignoring it here does not rely on that.
_FILE_SIZE_LIMIT = """
import os, resource, signal, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
os.execv(sys.argv[2], sys.argv[2:])
"""
_LIMIT = 4096  # below a tiny checkpoint's array files, above run.json and config.json


def test_a_failed_checkpoint_write_is_one_line_and_loses_nothing_on_every_host(tmp_path):
  # The full-disk test above needs root to mount a tmpfs; a file-size limit fails the
  # checkpoint's writes the same way (an OSError inside Orbax's writer threads) anywhere.
  from tests.launch_utils import REPO, launch_cmd, launch_env, run_launcher

  w = tmp_path / "w"
  tiny = "--config=configs/train.py:tiny"
  assert run_launcher("train", tiny, f"--workdir={w}").returncode == 0
  kept = {p: _digest(w / p) for p in ("checkpoints/4", "checkpoints/6", "best/6")}
  biggest = max(f.stat().st_size for f in (w / "checkpoints" / "6").rglob("*") if f.is_file())
  assert biggest > _LIMIT, "the limit no longer stops a checkpoint: lower it"
  env = launch_env()
  # Its own compilation cache: a cache entry cut at the limit must not reach the other runs.
  env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "xla")
  r = subprocess.run(
    [sys.executable, "-c", _FILE_SIZE_LIMIT, str(_LIMIT)]
    + launch_cmd("train", tiny, "--config.steps=8", f"--workdir={w}"),
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  err = r.stderr.strip()
  assert r.returncode == 2 and "Traceback" not in err, err[-3000:]
  last = err.splitlines()[-1]
  assert last.startswith("error: ") and "File too large" in last, last
  # ... and where: a file of step 8's save (the checkpoint or the best weights), not run.json.
  assert re.search(rf"{re.escape(str(w))}/(checkpoints|best)/8\b", last), last
  assert {p: _digest(w / p) for p in kept} == kept
  # Without the limit, the same command cleans the partial save up and finishes.
  r = run_launcher("train", tiny, "--config.steps=8", f"--workdir={w}")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "resumed from the checkpoint at step 6" in r.stderr
  assert sorted(p.name for p in (w / "checkpoints").iterdir()) == ["6", "8"]
