"""Bad inputs end with a one-line error naming the culprit, a non-zero exit, no JAX traceback,
and leave existing checkpoints untouched."""

import json
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nasr
from nasr import data as data_lib
from nasr import spaces
from tests.launch_utils import REPO, launch_env, run_launcher

TINY = "--config=configs/train.py:tiny"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
  """A tiny finished run whose checkpoints must survive every bad command below."""
  w = tmp_path_factory.mktemp("trained")
  r = run_launcher("train", TINY, f"--workdir={w}")
  assert r.returncode == 0, r.stderr[-2000:]
  return w


def _snapshot(workdir: Path) -> dict:
  return {
    str(p.relative_to(workdir)): (p.stat().st_mtime_ns, zlib.crc32(p.read_bytes()))
    for p in sorted((workdir / "checkpoints").rglob("*"))
    if p.is_file()
  }


def _images(folder: Path, n: int, size: int) -> Path:
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  for i in range(n):
    data_lib.write_png(
      folder / f"img{i}.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    )
  return folder


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
  """Return name -> (extra launcher args, text the error must contain)."""
  cases = {}
  unreadable = _images(tmp / "unreadable", 3, 64)
  (unreadable / "broken.png").write_bytes(b"this is not an image")
  cases["unreadable file"] = ([f"--config.data.train={unreadable}"], "broken.png")

  truncated = _images(tmp / "truncated", 3, 64)
  good = (truncated / "img0.png").read_bytes()
  (truncated / "cut.png").write_bytes(good[: len(good) // 2])
  cases["truncated png"] = ([f"--config.data.train={truncated}"], "cut.png")

  small = _images(tmp / "small", 2, 64)
  _images(tmp / "small_extra", 1, 16)
  (tmp / "small_extra" / "img0.png").rename(small / "tiny.png")
  cases["image smaller than the patch"] = ([f"--config.data.train={small}"], "tiny.png")

  (tmp / "empty").mkdir()
  cases["empty folder"] = ([f"--config.data.train={tmp / 'empty'}"], "empty")

  pairs = tmp / "pairs"
  _images(pairs / "HR", 2, 64)
  _images(pairs / "LR", 2, 32)
  data_lib.write_png(pairs / "LR" / "img1.png", np.zeros((30, 32, 3), np.uint8))
  cases["mismatched LR/HR pair"] = ([f"--config.data.train={pairs}"], "img1.png")

  nan_tiff = _images(tmp / "nan_tiff", 3, 64)
  pixels = np.full((64, 64), 100.0, np.float32)
  pixels[5, 7] = np.nan
  Image.fromarray(pixels, mode="F").save(nan_tiff / "float.tif")
  cases["NaN in a float TIFF"] = ([f"--config.data.train={nan_tiff}"], "float.tif")

  space_kwargs = {"cells": 1, "channels": 4, "nodes": 2}
  space = spaces.get("darts_sr", **space_kwargs)
  genotype = space.derive(np.random.default_rng(0).normal(size=space.alpha_shape))
  spaces.save_arch(tmp / "genotype.json", "darts_sr", space_kwargs, genotype)
  record = json.loads((tmp / "genotype.json").read_text())
  wrapped = dict(record, tokens=[2**32 + t for t in record["tokens"]])  # wraps in int32
  (tmp / "wrapped.json").write_text(json.dumps(wrapped))
  cases["token of 2^32 + t"] = ([f"--config.arch={tmp / 'wrapped.json'}"], "token 429496729")
  edges = record["arch"]["edges"]
  edges[1][0] = next(op for op in space.op_names if op not in ("none", edges[1][0]))
  (tmp / "edited.json").write_text(json.dumps(record))
  cases["genotype ops disagree with tokens"] = (
    [f"--config.arch={tmp / 'edited.json'}"],
    "disagree at arch.edges[1]",
  )

  cases["unknown config key"] = (["--config.no_such_key=1"], "no_such_key")
  cases["scale not in 2, 3, 4"] = (["--config.scale=5"], "scale")
  cases["negative steps"] = (["--config.steps=-5"], "config.steps")
  cases["negative learning rate"] = (["--config.optim.lr=-1"], "config.optim.lr")
  return cases


def test_bad_inputs_fail_cleanly(trained, tmp_path):
  before = _snapshot(trained)
  assert before, "the fixture run wrote no checkpoint"
  failures = []
  for name, (args, culprit) in _bad_inputs(tmp_path).items():
    r = run_launcher("train", TINY, *args, f"--workdir={trained}")
    err = r.stderr.strip()
    last = err.splitlines()[-1] if err else ""
    if r.returncode == 0:
      failures.append(f"{name}: exit code 0")
    elif "Traceback" in err:
      failures.append(f"{name}: traceback\n{err[-1500:]}")
    elif culprit not in last:
      failures.append(f"{name}: last line {last!r} does not name {culprit!r}")
  assert not failures, "\n".join(failures)
  assert _snapshot(trained) == before


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  r = run_launcher("train", TINY, f"--workdir={blocker / 'run'}")
  assert r.returncode != 0
  assert "Traceback" not in r.stderr
  assert "not writable" in r.stderr.strip().splitlines()[-1]


def test_search_without_method_lists_what_is_available(tmp_path):
  r = run_launcher("search", TINY, f"--workdir={tmp_path / 's'}")
  assert r.returncode == 2
  last = r.stderr.strip().splitlines()[-1]
  assert "available search methods" in last and "Traceback" not in r.stderr


def _no_traceback_one_line(r, *words) -> str:
  err = r.stderr.strip()
  assert r.returncode == 2, err[-2000:]
  assert "Traceback" not in err, err[-2000:]
  last = err.splitlines()[-1]
  for word in words:
    assert word in last, last
  return last


def test_damaged_checkpoints_evaluate_names_the_step_and_a_resume_falls_back(trained, tmp_path):
  w = tmp_path / "run"
  shutil.copytree(trained, w)
  steps = sorted(int(p.name) for p in (w / "checkpoints").iterdir() if p.name.isdigit())
  newest, older = steps[-1], steps[-2]
  for p in (w / "checkpoints" / str(newest)).rglob("*"):
    if p.is_file():
      p.write_bytes(b"\xc0garbage" * 8)
  (w / "checkpoints" / "99" / "junk").mkdir(parents=True)
  r = run_launcher(
    "evaluate",
    "--config=configs/evaluate.py:tiny",
    f"--config.checkpoint={w}",
    f"--workdir={tmp_path / 'eval'}",
  )
  _no_traceback_one_line(r, f"step {newest}", "damaged")
  r = run_launcher("train", TINY, f"--config.steps={newest + 2}", f"--workdir={w}")
  assert r.returncode == 0, r.stderr[-2000:]
  assert f"checkpoints/{newest}: cannot be read" in r.stderr
  assert f"resumed from the checkpoint at step {older}" in r.stderr
  names = {p.name for p in (w / "checkpoints").iterdir()}
  assert {f"{newest}.damaged", "99.not-a-checkpoint", str(newest + 2)} <= names


def test_a_workdir_of_another_network_or_method_is_refused_by_name(trained):
  before = _snapshot(trained)
  r = run_launcher("train", TINY, "--config.model_kwargs.channels=16", f"--workdir={trained}")
  _no_traceback_one_line(r, "model_kwargs.channels: 8 -> 16", "new --workdir")
  r = run_launcher("search", "--config=configs/darts_sr.py:tiny", f"--workdir={trained}")
  _no_traceback_one_line(r, "holds a training run")
  assert _snapshot(trained) == before
  assert "Traceback" in (trained / "error.log").read_text()  # the full story, for a bug report


def test_a_search_of_zero_epochs_is_refused_by_name(tmp_path):
  r = run_launcher(
    "search", "--config=configs/darts_sr.py:tiny", "--config.epochs=0", f"--workdir={tmp_path}"
  )
  _no_traceback_one_line(r, "config.epochs must be an integer > 0")


def test_an_upscale_output_that_is_a_file_is_refused_before_any_work(trained, tmp_path):
  photo = _images(tmp_path / "in", 1, 16) / "img0.png"
  (tmp_path / "out").write_text("a file")
  r = run_launcher(
    "upscale",
    "--config=configs/upscale.py",
    f"--config.checkpoint={trained}",
    f"--config.input={photo}",
    f"--config.output={tmp_path / 'out'}",
    f"--workdir={tmp_path / 'w'}",
  )
  _no_traceback_one_line(r, "config.output", "is a file, not a folder")
  assert "wrote" not in r.stderr


def test_upscale_writes_every_readable_image_and_names_each_unreadable_one(trained, tmp_path):
  folder = _images(tmp_path / "in", 2, 16)
  good = (folder / "img0.png").read_bytes()
  (folder / "cut.png").write_bytes(good[: len(good) // 2])
  (folder / "empty.png").write_bytes(b"")
  r = run_launcher(
    "upscale",
    "--config=configs/upscale.py",
    f"--config.checkpoint={trained}",
    f"--config.input={folder}",
    f"--workdir={tmp_path / 'w'}",
  )
  last = _no_traceback_one_line(r, "2 of 4 images could not be read", "cut.png", "empty.png")
  assert "the 2 others were written" in last
  written = sorted(p.name for p in (tmp_path / "w" / "sr").iterdir())
  assert written == ["img0_x2.png", "img1_x2.png"]


def test_evaluating_weights_that_do_not_fit_their_config_names_the_mismatch(trained, tmp_path):
  w = tmp_path / "run"
  shutil.copytree(trained, w)
  cfg = json.loads((w / "config.json").read_text())
  cfg["model_kwargs"]["channels"] = 16  # edited by hand after training
  (w / "config.json").write_text(json.dumps(cfg))
  r = run_launcher(
    "evaluate",
    "--config=configs/evaluate.py:tiny",
    f"--config.checkpoint={w}",
    f"--workdir={tmp_path / 'eval'}",
  )
  _no_traceback_one_line(r, "does not match its config.json", "other shapes")


_NOISY = """
import atexit, os, sys, threading
from launch import common
from nasr.core.errors import NasrError

def main(config, workdir):
  # A failed background writer prints before the error, and again after the error line is out
  # (its thread outlives the run; interpreter teardown prints more). Each step is handed over
  # by an event, not left to a race: the late lines are written once the launcher is about to
  # exit, after the error line, and must not reach the terminal.
  early, late, written = threading.Event(), threading.Event(), threading.Event()

  def writer():
    sys.stderr.write("background writer noise\\n")
    early.set()
    late.wait()
    for _ in range(3):
      sys.stderr.write("late background writer noise\\n")
    written.set()

  threading.Thread(target=writer, daemon=True).start()
  early.wait()
  exit_now = os._exit

  def exit_after_late_noise(code):
    late.set()
    written.wait(30)
    exit_now(code)

  os._exit = exit_after_late_noise
  atexit.register(lambda: sys.stderr.write("teardown noise\\n"))
  raise {error}("the save failed")

common.run(main, needs_config=False)
"""


@pytest.mark.parametrize("error", ["NasrError", "RuntimeError"])
def test_the_error_is_the_last_line_though_background_threads_still_print(error, tmp_path):
  r = subprocess.run(
    [sys.executable, "-c", _NOISY.replace("{error}", error), f"--workdir={tmp_path}"],
    cwd=REPO,
    env=launch_env(),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert r.returncode == 2, r.stderr[-2000:]
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "the save failed" in last, last
  assert "background writer noise" in r.stderr  # before the error, the terminal has it
  assert "late background writer noise" not in r.stderr and "teardown noise" not in r.stderr
  assert "late background writer noise" in (tmp_path / "error.log").read_text()


@pytest.mark.parametrize(
  ("code", "line", "kind"),
  [
    ("import ml_collections\ndef get_config(:\n  return 1\n", 2, "SyntaxError: invalid syntax"),
    (
      "import ml_collections\n\ndef get_config():\n  return ml_collections.ConfigDict({'a': nope})\n",
      4,
      "NameError: name 'nope' is not defined",
    ),
  ],
  ids=["syntax", "name"],
)
def test_a_config_file_whose_code_fails_ends_in_one_line_naming_file_and_line(
  tmp_path, code, line, kind
):
  cfg = tmp_path / "my_cfg.py"
  cfg.write_text(code)
  r = run_launcher("train", f"--config={cfg}", f"--workdir={tmp_path / 'w'}")
  assert r.returncode == 2
  assert r.stderr.strip().splitlines() == [f"error: config file {cfg}, line {line}: {kind}"]
  # `nasr config` and nasr.load_config (Colab) say the same
  with pytest.raises(nasr.ConfigError, match=f"line {line}: {kind.split(':')[0]}"):
    nasr.load_config(str(cfg))


def test_a_refused_resume_changes_nothing_and_names_the_keys_every_time(trained, tmp_path):
  w = tmp_path / "run"
  shutil.copytree(trained, w)
  before = (w / "run.json").read_bytes()
  for _ in range(2):
    r = run_launcher("train", TINY, "--config.model_kwargs.channels=16", f"--workdir={w}")
    _no_traceback_one_line(r, "model_kwargs.channels: 8 -> 16")
    assert (w / "run.json").read_bytes() == before


def test_a_refused_search_resume_changes_nothing_and_names_the_keys_every_time(tmp_path):
  w = tmp_path / "search"
  args = ("--config=configs/deconas.py:tiny", f"--workdir={w}")
  r = run_launcher("search", *args)
  assert r.returncode == 0, r.stderr[-2000:]
  before = (w / "run.json").read_bytes()
  for _ in range(2):
    r = run_launcher("search", *args, "--config.space.channels=4")
    _no_traceback_one_line(r, "space.channels: 8 -> 4")
    assert (w / "run.json").read_bytes() == before


def test_a_rerun_after_a_kill_before_the_first_checkpoint_logs_each_step_once(trained, tmp_path):
  # What a SIGKILL during the first checkpoint's write leaves behind it: the records so far, and
  # no intact checkpoint (Orbax removes its own half-written one).
  w = tmp_path / "w"
  w.mkdir()
  (w / "metrics.jsonl").write_text('{"step": 2, "loss": 0.5}\n')
  r = run_launcher("train", TINY, f"--workdir={w}")
  assert r.returncode == 0, r.stderr[-2000:]
  records = [json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()]
  clean = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
  # the same records as an untroubled run: the killed run's step-2 record is gone
  assert [sorted(r) for r in records] == [sorted(r) for r in clean]
  assert all(r.get("loss") != 0.5 for r in records)
