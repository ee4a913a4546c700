"""`nasr bench build`: train every member of the benchmark space stand-alone, and write the table.

One fixed protocol (config `bench`): each member, for each seed, trained from scratch with Adam
on LR patches of the training images, its validation Y-PSNR/SSIM measured at the steps of
`config.curve` (a learning curve, so a short run's score can be judged as a proxy of the long
one), and at the end on every test folder given (Set5, Set14, ...). Before training, the member's
zero-cost proxies are scored at its initial weights (`nasr.estimation.proxies`).

Resumable piece by piece: a finished (member, seed) is the file W/runs/<member>_<seed>.json,
written atomically; a killed build re-run with the same command trains only what is missing (at
most the runs in progress are lost). `config.workers` processes share the runs (each takes the next
one nobody has claimed); on a CPU each worker runs single-threaded on its own core, because XLA's
threads do not speed up these small convolutions (measured: the same ms per step on 1 or 2
threads), while two processes train two members at once. With accelerators each worker gets one.

At the end W/table.json gathers every run (`nasr.bench.table` reads it); with `config.check`, the
members that the shipped table also holds are compared with it, and the largest difference is
reported (bit-equality is not expected across machines; a rebuilt member should agree to about
the seed-to-seed spread).
"""

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from nasr import data as data_lib
from nasr import spaces, workdirs, writers
from nasr.bench import table as table_lib
from nasr.core.errors import ConfigError
from nasr.estimation import cost, proxies
from nasr.estimation import train as train_lib
from nasr.estimation.evaluate import score_images
from nasr.inference.tiling import upscale_tiled
from nasr.spaces import bench as bench_space

CONFIG_FILE = "bench_config.json"
RUNS = "runs"


def run_file(workdir: Path, member: int, seed: int) -> Path:
  """Return the path of the finished run of (member, seed)."""
  return workdir / RUNS / f"{member:03d}_{seed}.json"


def parse_members(spec, size: int) -> list[int]:
  """Return the member ids of `spec`: "" (all), "0,5,17", "0-9" or a mix, or raise ConfigError."""
  if spec in ("", None, "all"):
    return list(range(size))
  out = []
  for part in str(spec).split(","):
    part = part.strip()
    try:
      lo, _, hi = part.partition("-")
      ids = range(int(lo), int(hi) + 1) if hi else [int(lo)]
    except ValueError:
      raise ConfigError(f"config.members: {part!r} is not an id or a range such as 0-9") from None
    for i in ids:
      if not 0 <= i < size:
        raise ConfigError(f"config.members: id {i} is outside the space's [0, {size})")
      out.append(i)
  return sorted(set(out))


def _check(config: ml_collections.ConfigDict) -> None:
  for key in ("seeds", "steps"):
    v = config.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ConfigError(f"config.{key} must be a positive integer, got {v!r}")
  curve = list(config.curve)
  if not curve or sorted(set(curve)) != curve or curve[-1] != config.steps or curve[0] < 1:
    raise ConfigError(
      f"config.curve must be increasing steps ending at config.steps={config.steps}, got {curve}"
    )
  if config.space.name != "bench":
    raise ConfigError(f"the benchmark is built on the 'bench' space, got {config.space.name!r}")


def _space(config):
  kwargs = {k: v for k, v in config.space.items() if k != "name"}
  return spaces.get("bench", **kwargs)


def _test_sets(config, scale: int) -> dict[str, list]:
  """Return {folder name: [(name, lr, hr)]} of config.tests (comma-separated HR folders)."""
  out = {}
  for folder in [f.strip() for f in str(config.tests or "").split(",") if f.strip()]:
    pairs = data_lib.load_dataset(folder, scale, "test")
    out[Path(folder).name] = list(zip(pairs.names, pairs.lr, pairs.hr, strict=True))
  return out


def _score(apply, params, images, scale: int, tile: int) -> list[float]:
  # tiles overlapping by a quarter: 1.8x the pixels of the image (half-tile strides: 4x)
  stride = max(1, tile - tile // 4)
  fn = lambda lr: np.clip(  # noqa: E731
    upscale_tiled(lambda x: apply(params, jnp.asarray(x)), lr, scale, tile, stride), 0.0, 1.0
  )
  r = score_images(fn, images, scale)
  return [round(r["psnr"], 4), round(r["ssim"], 5)]


@functools.lru_cache(maxsize=2)
def _compiled(space, member: int, scale: int, shifted: bool, lr: float, schedule: str, steps: int):
  """Return (arch, net, init, apply, step, tx) of `member`: compiled once for all its seeds."""
  arch = space.decode(bench_space.from_id(member))
  net = space.build(arch, scale, shifted=shifted)
  tx = train_lib.make_adam(train_lib.make_schedule(lr, schedule, steps))

  @jax.jit
  def step(params, opt_state, lr, hr):
    def loss(q):
      return jnp.mean(jnp.abs(net.apply(q, train_lib.to_unit(lr)) - train_lib.to_unit(hr)))

    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return jax.tree.map(jnp.add, params, updates), opt_state, value

  return arch, net, jax.jit(net.init), jax.jit(net.apply), step, tx


def train_member(config, space, member: int, seed: int, parts: dict) -> dict:
  """Return the record of one stand-alone training of `member` with `seed` (see the module doc)."""
  scale = int(config.scale)
  o = config.optim
  arch, net, init, apply, step, tx = _compiled(
    space, member, scale, bool(config.shifted), float(o.lr), str(o.schedule), int(config.steps)
  )
  p = config.data.patch_size
  params = init(train_lib.init_key(seed), jnp.zeros((1, p, p, 3)))
  sampler = data_lib.PatchSampler(
    parts["train"], p, config.data.batch_size, seed, config.data.augment
  )
  first = sampler.batch(0)
  lr0, hr0 = train_lib.to_unit(first["lr"]), train_lib.to_unit(first["hr"])
  record = {
    "member": member,
    "seed": seed,
    "ops": list(arch.ops),
    "params": cost.count_params(params),
    # the XLA form: shifted depthwise multiply-adds are elementwise, invisible to the count
    "macs": round(cost.macs_per_pixel(space.build(arch, scale), params, (1, 32, 32, 3)), 1),
    "proxies": proxies.all_proxies(apply, params, lr0, hr0),
  }
  opt_state = tx.init(params)
  curve, t0, train_s = [], time.perf_counter(), 0.0
  points = set(config.curve)
  for i in range(config.steps):
    b = sampler.batch(i)
    params, opt_state, loss = step(params, opt_state, b["lr"], b["hr"])
    if i + 1 in points:
      if not np.isfinite(float(loss)):
        record["diverged_at"] = i + 1
        break
      train_s += time.perf_counter() - t0
      curve.append([i + 1, *_score(apply, params, parts["val"], scale, config.eval_tile)])
      t0 = time.perf_counter()
  record["train_s"] = round(train_s, 2)
  record["curve"] = curve
  record["tests"] = {
    name: _score(apply, params, images, scale, config.eval_tile)
    for name, images in parts["tests"].items()
  }
  return record


def _parts(config) -> dict:
  scale = int(config.scale)
  train = data_lib.load_dataset(config.data.train, scale, "train", config.data)
  val = data_lib.load_dataset(config.data.val, scale, "val", config.data)
  return {
    "train": train,
    "val": list(zip(val.names, val.lr, val.hr, strict=True)),
    "tests": _test_sets(config, scale),
  }


def claim_file(workdir: Path, member: int, seed: int) -> Path:
  """Return the file a worker creates to take (member, seed): the first to create it trains it."""
  return workdir / RUNS / f"{member:03d}_{seed}.claim"


def _claim(workdir: Path, member: int, seed: int) -> bool:
  """Return whether this process took (member, seed): created its claim file, atomically."""
  try:
    os.close(os.open(claim_file(workdir, member, seed), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
  except FileExistsError:
    return False
  return True


def work(workdir: str | os.PathLike, index: int = 0, count: int = 1) -> int:
  """Train missing runs until none is left untaken; return how many this worker trained.

  Workers share the runs dynamically: each takes the next missing run nobody has claimed (a
  claim file, created atomically), so a worker never idles while another still has a queue (a
  static split by member id put every member ending in RCAB on one worker of two).
  """
  workdir = Path(workdir)
  config = ml_collections.ConfigDict(json.loads((workdir / CONFIG_FILE).read_text()))
  space = _space(config)
  members = parse_members(config.members, space.size)
  runs = [(m, s) for m in members for s in range(config.seeds)]
  if all(run_file(workdir, m, s).exists() for m, s in runs):
    return 0
  parts = _parts(config)
  (workdir / RUNS).mkdir(exist_ok=True)
  done = 0
  for m, s in runs:
    if run_file(workdir, m, s).exists() or not _claim(workdir, m, s):
      continue
    if run_file(workdir, m, s).exists():  # finished (and its claim removed) since the check
      claim_file(workdir, m, s).unlink(missing_ok=True)
      continue
    t = time.perf_counter()
    record = train_member(config, space, m, s, parts)
    writers.write_json(run_file(workdir, m, s), record)
    claim_file(workdir, m, s).unlink(missing_ok=True)
    done += 1
    final = record["curve"][-1][1] if record["curve"] else float("nan")
    left = sum(not run_file(workdir, *r).exists() for r in runs)
    logging.info(
      "worker %d/%d: member %d seed %d (%s) %.3f dB, %.0f s [%d trained here, %d runs left]",
      index, count, m, s, "|".join(record["ops"]), final, time.perf_counter() - t, done, left,
    )  # fmt: skip
  return done


def _read(path: Path) -> dict | None:
  return json.loads(path.read_text()) if path.exists() else None


def _workers(config) -> int:
  n = int(config.workers)
  if n > 0:
    return n
  if jax.default_backend() == "cpu":
    return max(1, len(os.sched_getaffinity(0)))
  return jax.local_device_count()


def _worker_env(index: int, count: int) -> dict:
  env = dict(os.environ)
  if jax.default_backend() == "cpu":
    flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flags}".strip()
    env["NASR_BENCH_CORE"] = str(sorted(os.sched_getaffinity(0))[index % os.cpu_count()])
  else:
    env["CUDA_VISIBLE_DEVICES"] = str(index)
  return env


def _spawn(workdir: Path, count: int) -> None:
  """Run `count` worker processes and wait; report progress from the finished run files."""
  procs = []
  for k in range(count):
    log = (workdir / f"worker{k}.log").open("a")
    cmd = [sys.executable, "-m", "nasr.bench.worker", str(workdir), str(k), str(count)]
    procs.append(subprocess.Popen(cmd, env=_worker_env(k, count), stdout=log, stderr=log))
  try:
    while any(p.poll() is None for p in procs):
      time.sleep(5)
  except KeyboardInterrupt:
    for p in procs:
      p.terminate()
    raise
  bad = [k for k, p in enumerate(procs) if p.returncode != 0]
  if bad:
    raise RuntimeError(
      f"bench worker(s) {bad} failed; see {', '.join(str(workdir / f'worker{k}.log') for k in bad)}"
    )


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Build (or finish building) the table in `workdir`; return its summary."""
  _check(config)
  workdir = workdirs.prepare(workdir)
  space = _space(config)
  members = parse_members(config.members, space.size)
  saved = workdir / CONFIG_FILE
  protocol = table_lib.protocol(config)
  if saved.exists():
    before = table_lib.protocol(ml_collections.ConfigDict(json.loads(saved.read_text())))
    if before != protocol:
      diff = workdirs.config_diff(before, protocol)
      raise ConfigError(
        f"{workdir} holds runs of another protocol ({'; '.join(diff)}); use a new workdir"
      )
  writers.write_json(saved, config.to_dict())
  pending = sum(not run_file(workdir, m, s).exists() for m in members for s in range(config.seeds))
  count = min(_workers(config), max(1, len(members)))
  logging.info(
    "bench build: %d members x %d seeds, %d runs to train, %d worker(s)",
    len(members), config.seeds, pending, count,
  )  # fmt: skip
  t0 = time.perf_counter()
  # No worker runs now: a claim left by a killed build is stale, its run is trained again.
  for stale in (workdir / RUNS).glob("*.claim") if (workdir / RUNS).is_dir() else ():
    stale.unlink()
  if pending:
    if count == 1:
      work(workdir)
    else:
      _spawn(workdir, count)
  runs = {m: [_read(run_file(workdir, m, s)) for s in range(config.seeds)] for m in members}
  table = table_lib.assemble({m: [r for r in rs if r] for m, rs in runs.items()}, config)
  writers.write_json(workdir / "table.json", table)
  summary = table_lib.summary(table)
  summary["wall_s"] = round(time.perf_counter() - t0, 1)
  if config.check:
    summary.update(table_lib.compare(table, table_lib.load()))
  writers.write_json(workdir / "summary.json", summary)
  return summary
