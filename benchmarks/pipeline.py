r"""Training-patch rate of the input pipeline: crops, flips and transfers per second, before and after.

  python -m benchmarks.pipeline                           # 16 DIV2K-sized images, x2, 48x48 LR
  python -m benchmarks.pipeline --workers=1,2,4,8 --rounds=9 --out=/tmp/pipeline.json

Issue 15 asks for 3,000 LR patches/s of 48x48 (x2, augmented) per host: EDSR 16x64 at batch 16
runs 187 steps/s on one H200. `--images` synthetic DIV2K-sized HR images (2040x1356, blocky noise,
made in memory in about a second) and LR images of the right shape (every second HR pixel: the
LR content does not change the rate) feed a PatchSampler (`--patch`, `--batch`, augmentation on).

Variants (each counts `--steps` batches):
  serial_before     the sampler's crop loop as it was before the per-channel copy, host only
  serial            PatchSampler.batch(step) in a loop, host only
  prefetch_before   the single-thread Prefetch as it was, with the old crops, + shard_batch
  threads_N         Prefetch(workers=N): N threads make PatchSampler.batch + shard_batch
  processes_N       reference: N forked processes make PatchSampler.batch (the images shared by
                    fork, each batch pickled back), the consumer calls shard_batch

The variants with shard_batch put every batch on all local devices (jax.devices()) and wait for
it (block_until_ready), so the host-to-device copy is counted. The variants alternate within each
of `--rounds` rounds (each round starting one variant later) and the table shows the median round
(min and max beside it), so load from other jobs on a shared machine hits every variant alike.
JSON to `--out`: the setup and one row per variant with every round's rate.
"""

import json
import multiprocessing
import os
import platform
import queue
import statistics
import threading
import time

import jax
import numpy as np
from absl import app, flags

from nasr import parallel
from nasr.data import PatchSampler, SRPairs

HR_SIZE = (1356, 2040)  # DIV2K's typical HR image (rows, columns)
GOAL = 3000  # patches/s: 187 steps/s of EDSR 16x64 at batch 16 on one H200

_IMAGES = flags.DEFINE_integer("images", 16, "Synthetic DIV2K-sized HR images.")
_SCALE = flags.DEFINE_integer("scale", 2, "Upscaling factor (HR = scale x LR).")
_PATCH = flags.DEFINE_integer("patch", 48, "LR patch side.")
_BATCH = flags.DEFINE_integer("batch", 16, "Patches per batch.")
_AUGMENT = flags.DEFINE_bool("augment", True, "Random flips and transposes.")
_STEPS = flags.DEFINE_integer("steps", 200, "Batches per variant and round.")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Rounds; each runs every variant once.")
_WORKERS = flags.DEFINE_list("workers", ["1", "2", "4"], "Thread counts of the pooled Prefetch.")
_PROCESSES = flags.DEFINE_list(
  "processes", ["2"], "Process counts of the forked reference variant (empty: none)."
)
_OUT = flags.DEFINE_string("out", "benchmark_pipeline.json", "Where to write the rows (JSON).")

_SAMPLER: PatchSampler | None = None  # the forked processes' sampler (shared by fork, not copied)


def synthetic_pairs(n: int, scale: int, seed: int = 0) -> SRPairs:
  """Return `n` DIV2K-sized HR images of blocky noise and LR images of the matching shape."""
  rng = np.random.default_rng(seed)
  h, w = HR_SIZE
  block = 8
  lrs, hrs = [], []
  h, w = h // scale * scale, w // scale * scale
  for _ in range(n):
    small = rng.integers(0, 256, (-(-h // block), -(-w // block), 3), dtype=np.uint8)
    hrs.append(np.ascontiguousarray(np.repeat(np.repeat(small, block, 0), block, 1)[:h, :w]))
    # Any LR of the right shape gives the same rate; a bicubic of 2K images would take minutes.
    lrs.append(np.ascontiguousarray(hrs[-1][::scale, ::scale]))
  names = tuple(f"synthetic_{i:04d}" for i in range(n))
  return SRPairs(names, tuple(lrs), tuple(hrs), scale)


def legacy_batch(sampler: PatchSampler, step: int) -> dict:
  """Return `sampler.batch(step)` made as before the per-channel copy (the "before" rate)."""
  rng = np.random.default_rng([sampler.seed, int(step)])
  p, s, b = sampler.patch_size, sampler.pairs.scale, sampler.batch_size
  lr_out = np.empty((b, p, p, 3), np.uint8)
  hr_out = np.empty((b, p * s, p * s, 3), np.uint8)
  for k, i in enumerate(rng.integers(0, len(sampler.pairs), size=b)):
    lr, hr = sampler.pairs.lr[i], sampler.pairs.hr[i]
    y = int(rng.integers(0, lr.shape[0] - p + 1))
    x = int(rng.integers(0, lr.shape[1] - p + 1))
    lr_patch = lr[y : y + p, x : x + p]
    hr_patch = hr[y * s : (y + p) * s, x * s : (x + p) * s]
    if sampler.augment:
      flips = rng.integers(0, 2, size=3)
      lr_patch, hr_patch = _legacy_augment(lr_patch, *flips), _legacy_augment(hr_patch, *flips)
    lr_out[k] = lr_patch
    hr_out[k] = hr_patch
  return {"lr": lr_out, "hr": hr_out}


def _legacy_augment(img, hflip, vflip, rot):
  img = img[:, ::-1] if hflip else img
  img = img[::-1] if vflip else img
  return img.transpose(1, 0, 2) if rot else img


class LegacyPrefetch:
  """The single-thread Prefetch as it was before the worker pool (the "before" rate)."""

  def __init__(self, make, start: int, stop: int, ahead: int = 2):
    self._queue: queue.Queue = queue.Queue(maxsize=max(int(ahead), 1))
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._work, args=(make, start, stop), daemon=True)
    self._thread.start()

  def _work(self, make, start: int, stop: int) -> None:
    for step in range(start, stop):
      item = (step, make(step))
      while not self._stop.is_set():
        try:
          self._queue.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if self._stop.is_set():
        return

  def get(self, step: int):
    """Return the batch of `step`."""
    got, batch = self._queue.get()
    assert got == step
    return batch

  def close(self) -> None:
    """Stop the thread."""
    self._stop.set()
    self._thread.join()


def _fork_batch(step: int) -> dict:
  return _SAMPLER.batch(step)


def _time_serial(make, start: int, steps: int) -> float:
  t0 = time.perf_counter()
  for step in range(start, start + steps):
    make(step)
  return time.perf_counter() - t0


def _time_prefetch(prefetch_cls, make, start: int, steps: int, **kwargs) -> float:
  t0 = time.perf_counter()
  batches = prefetch_cls(make, start, start + steps, **kwargs)
  try:
    for step in range(start, start + steps):
      jax.block_until_ready(batches.get(step))
  finally:
    batches.close()
  return time.perf_counter() - t0


def _time_processes(pool, mesh, start: int, steps: int) -> float:
  t0 = time.perf_counter()
  for batch in pool.imap(_fork_batch, range(start, start + steps)):
    jax.block_until_ready(parallel.shard_batch(batch, mesh))
  return time.perf_counter() - t0


def main(argv):
  del argv
  global _SAMPLER
  t0 = time.perf_counter()
  pairs = synthetic_pairs(_IMAGES.value, _SCALE.value)
  made_s = time.perf_counter() - t0
  sampler = PatchSampler(pairs, _PATCH.value, _BATCH.value, seed=0, augment=_AUGMENT.value)
  _SAMPLER = sampler
  # Fork before JAX starts its runtime threads: a fork after that may deadlock in the child.
  pools = {int(n): multiprocessing.get_context("fork").Pool(int(n)) for n in _PROCESSES.value if n}
  mesh = parallel.make_mesh()
  steps, b = _STEPS.value, _BATCH.value

  def on_device(make):
    return lambda step: parallel.shard_batch(make(step), mesh)

  variants = {
    "serial_before": lambda s: _time_serial(lambda t: legacy_batch(sampler, t), s, steps),
    "serial": lambda s: _time_serial(sampler.batch, s, steps),
    "prefetch_before": lambda s: _time_prefetch(
      LegacyPrefetch, on_device(lambda t: legacy_batch(sampler, t)), s, steps
    ),
  }
  for n in (int(w) for w in _WORKERS.value if w):
    variants[f"threads_{n}"] = lambda s, n=n: _time_prefetch(
      parallel.Prefetch, on_device(sampler.batch), s, steps, workers=n
    )
  for n, pool in pools.items():
    variants[f"processes_{n}"] = lambda s, pool=pool: _time_processes(pool, mesh, s, steps)

  hr = pairs.hr[0].shape
  print(
    f"devices: {len(mesh.devices.flat)} x {jax.devices()[0].device_kind} "
    f"({jax.default_backend()}); {os.cpu_count()} CPUs; JAX {jax.__version__}, "
    f"numpy {np.__version__}, Python {platform.python_version()}"
  )
  print(
    f"{len(pairs)} synthetic HR images {hr[1]}x{hr[0]} (made in {made_s:.1f} s), x{pairs.scale}, "
    f"batch {b} of {_PATCH.value}x{_PATCH.value} LR, augment {_AUGMENT.value}, "
    f"{steps} batches per variant, {_ROUNDS.value} rounds",
    flush=True,
  )
  for run in variants.values():  # warm-up: first transfers, thread start-up, page faults
    run(0)
  rates: dict[str, list[float]] = {name: [] for name in variants}
  for r in range(_ROUNDS.value):
    start = (r + 1) * steps  # fresh batches each round, the same ones for every variant
    names = list(variants)
    for name in names[r % len(names) :] + names[: r % len(names)]:  # each round starts elsewhere
      rates[name].append(steps * b / variants[name](start))
    print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:.0f}" for n, v in rates.items()), flush=True)
  for pool in pools.values():
    pool.terminate()

  rows = []
  base = statistics.median(rates["serial_before"])
  print(f"\n{'variant':<18}{'patches/s':>11}{'min':>9}{'max':>9}{'x serial_before':>17}")
  for name, values in rates.items():
    med = statistics.median(values)
    rows.append(
      {
        "variant": name,
        "patches_per_s": med,
        "min": min(values),
        "max": max(values),
        "rounds": values,
        "vs_serial_before": med / base,
      }
    )
    print(f"{name:<18}{med:>11.0f}{min(values):>9.0f}{max(values):>9.0f}{med / base:>16.2f}x")
  print(f"goal: {GOAL} patches/s")
  setup = {
    "images": len(pairs),
    "hr_size": list(hr[:2]),
    "scale": pairs.scale,
    "patch": _PATCH.value,
    "batch": b,
    "augment": _AUGMENT.value,
    "steps": steps,
    "rounds": _ROUNDS.value,
    "devices": f"{len(mesh.devices.flat)} x {jax.devices()[0].device_kind}",
    "cpus": os.cpu_count(),
    "jax": jax.__version__,
    "numpy": np.__version__,
  }
  with open(_OUT.value, "w") as f:
    json.dump({"setup": setup, "rows": rows}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
