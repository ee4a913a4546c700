r"""Peak resident memory of training on a large folder: decoded into memory vs the decode cache.

  python -m benchmarks.data_memory                          # 200 DIV2K-sized images (~2 GB decoded)
  python -m benchmarks.data_memory --num_images=20 --steps=50 --workdir=/tmp/nasr-datamem

Generates `--num_images` synthetic RGB PNGs of 2040x1356 (DIV2K's usual size; smooth random
content) once under `--workdir`, then trains configs/train.py:tiny on that folder in a subprocess
(`python -m launch.train`, validation on one embedded image) under `/usr/bin/time -v`, three ways:

  memory       data.cache_dir = "": every image decoded into memory (the path before the cache)
  cache-cold   a fresh data.cache_dir: every image decoded once into the cache, then memory-mapped
  cache-warm   the same data.cache_dir again: nothing decoded, every image memory-mapped

and prints each run's peak resident set size ("Maximum resident set size") and wall time. Without
/usr/bin/time, a small wrapper process reports `resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` of
its only child instead (the same number: the kernel's peak RSS of that process).
Not a test: it decodes ~2 GB of pixels and takes minutes on the 2-core CPU.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TIME = "/usr/bin/time"
SIZE = (1356, 2040)  # H, W of most DIV2K HR images

_NUM = flags.DEFINE_integer(
  "num_images", 200, "How many 2040x1356 images to generate and train on."
)
_WORKDIR = flags.DEFINE_string(
  "workdir", "/tmp/nasr-data-memory", "Where the images, the cache and the runs go."
)
_STEPS = flags.DEFINE_integer("steps", 200, "Training steps of each run.")
_BATCH = flags.DEFINE_integer("batch", 16, "Batch size (data.batch_size).")
_PATCH = flags.DEFINE_integer("patch", 48, "LR patch side (data.patch_size).")
_MODES = flags.DEFINE_list("modes", ["memory", "cache-cold", "cache-warm"], "Which runs to make.")
_TIMEOUT = flags.DEFINE_integer("timeout_s", 3600, "Time limit of each run.")


def _image(rng: np.random.Generator) -> np.ndarray:
  """Return a smooth random uint8 image of SIZE: a coarse random grid, bilinearly upsampled."""
  h, w = SIZE
  grid = rng.integers(0, 256, (h // 64 + 2, w // 64 + 2, 3), dtype=np.uint8)
  img = Image.fromarray(grid).resize((w, h), Image.BILINEAR)
  fine = rng.integers(-6, 7, (h // 4, w // 4, 1), dtype=np.int16)  # some texture for the PNG
  arr = np.asarray(img, np.int16) + np.repeat(np.repeat(fine, 4, 0), 4, 1)[:h, :w]
  return np.clip(arr, 0, 255).astype(np.uint8)


def make_images(folder: Path, n: int) -> Path:
  """Return `folder` holding n generated PNGs, generating (only) what a previous call did not."""
  marker = folder / "complete.json"
  if marker.is_file() and json.loads(marker.read_text()).get("n") == n:
    return folder
  folder.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  for i in range(n):
    path = folder / f"{i + 1:04d}.png"
    if path.is_file():
      continue
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(_image(np.random.default_rng(i))).save(tmp, format="PNG", compress_level=1)
    os.replace(tmp, path)  # a stopped run leaves no half image behind
  marker.write_text(json.dumps({"n": n, "size": SIZE}))
  print(f"generated {n} images in {folder} in {time.perf_counter() - t0:.0f} s", flush=True)
  return folder


def _measure(cmd: list[str], env: dict, log: Path) -> tuple[int, float, int]:
  """Run `cmd`; return (exit code, wall seconds, peak RSS in KiB), its output saved to `log`."""
  if os.access(TIME, os.X_OK):
    wrapped = [TIME, "-v", *cmd]
  else:
    probe = (
      "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]).returncode; "
      "print(f'Maximum resident set size (kbytes): "
      "{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); sys.exit(r)"
    )
    wrapped = [sys.executable, "-c", probe, *cmd]
  t0 = time.perf_counter()
  with open(log, "w") as out:
    proc = subprocess.run(
      wrapped, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=_TIMEOUT.value
    )
  wall = time.perf_counter() - t0
  found = re.findall(r"Maximum resident set size \(kbytes\): (\d+)", log.read_text())
  return proc.returncode, wall, int(found[-1]) if found else -1


def main(argv):
  del argv
  root = Path(_WORKDIR.value).expanduser()
  images = make_images(root / f"images-{_NUM.value}", _NUM.value)
  cache = root / f"cache-{_NUM.value}"
  env = dict(os.environ)
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  steps = _STEPS.value
  how = (
    "/usr/bin/time -v"
    if os.access(TIME, os.X_OK)
    else "getrusage(RUSAGE_CHILDREN) (no /usr/bin/time)"
  )
  print(
    f"peak RSS measured with {how}; {steps} steps, batch {_BATCH.value}, LR patch {_PATCH.value}"
  )
  rows = []
  for mode in _MODES.value:
    if mode not in ("memory", "cache-cold", "cache-warm"):
      raise app.UsageError(f"unknown mode {mode!r}: memory, cache-cold or cache-warm")
    if mode == "cache-cold":
      shutil.rmtree(cache, ignore_errors=True)
    run_dir = root / "runs" / mode
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, not a resume
    cmd = [
      sys.executable,
      "-m",
      "launch.train",
      "--config=configs/train.py:tiny",
      f"--workdir={run_dir}",
      f"--config.data.train={images}",
      "--config.data.val=embedded",
      "--config.data.max_val_images=1",
      f"--config.data.cache_dir={'' if mode == 'memory' else cache}",
      f"--config.data.batch_size={_BATCH.value}",
      f"--config.data.patch_size={_PATCH.value}",
      f"--config.steps={steps}",
      f"--config.log_every={steps}",
      f"--config.eval_every={steps}",
      f"--config.checkpoint_every={steps}",
    ]
    log = root / f"{mode}.log"
    code, wall, rss_kib = _measure(cmd, env, log)
    cache_line = next(
      (line.split("] ", 1)[-1] for line in log.read_text().splitlines() if "data cache" in line), ""
    )
    rows.append((mode, code, wall, rss_kib))
    print(
      f"{mode:<11} exit {code}  peak RSS {rss_kib / 1024:8.1f} MiB  wall {wall:7.1f} s"
      + (f"  ({cache_line})" if cache_line else ""),
      flush=True,
    )
    if code != 0:
      print(f"  failed; the last lines of {log}:\n" + "\n".join(log.read_text().splitlines()[-15:]))
  decoded_gib = _NUM.value * SIZE[0] * SIZE[1] * 3 * 1.25 / 2**30  # HR + x2 LR
  print(f"decoded data set: {decoded_gib:.2f} GiB (HR + x2 LR, uint8)")
  if any(code for _, code, _, _ in rows):
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
