"""Wire the rooms together: train / evaluate / upscale / run_search (config, workdir) -> results.

Launchers only parse flags and call these; a Colab user calls the same functions:

  import nasr
  config = nasr.load_config("configs/train.py", "tiny")
  results = nasr.train(config, "/tmp/nasr/tiny")
"""

import functools
import importlib.util
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from nasr import data as data_lib
from nasr import inference, parallel, spaces, writers
from nasr.checkpoint import Checkpointer
from nasr.core.errors import ConfigError, DataError, DivergedError
from nasr.core.registry import Registry
from nasr.estimation import cost, losses
from nasr.estimation import evaluate as scoring
from nasr.estimation import train as train_lib

VALID_SCALES = (2, 3, 4)

# Search methods register a function (config, workdir) -> results here when their module is imported.
SEARCH_METHODS: Registry[Callable[[ml_collections.ConfigDict, str], dict]] = Registry(
  "search method"
)


# ---------------------------------------------------------------------------------------------------
# Configs and workdirs.
# ---------------------------------------------------------------------------------------------------
def load_config(
  path: str | os.PathLike, preset: str | None = None, lock: bool = True
) -> ml_collections.ConfigDict:
  """Return `get_config(preset)` of the config file at `path` ("file.py:preset" also works)."""
  path = str(path)
  if preset is None and ":" in Path(path).name:
    path, preset = path.rsplit(":", 1)
  file = Path(path)
  if not file.is_file():
    raise ConfigError(f"config file {path} does not exist")
  spec = importlib.util.spec_from_file_location(f"nasr_config_{file.stem}", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path} has no get_config(preset) function")
  config = module.get_config(preset) if preset is not None else module.get_config()
  if lock:
    config.lock()
  return config


def check_scale(scale: Any) -> int:
  """Return `scale` as an int, or raise ConfigError unless it is 2, 3 or 4."""
  if scale not in VALID_SCALES:
    raise ConfigError(f"config.scale must be one of 2, 3, 4, got {scale!r}")
  return int(scale)


def prepare_workdir(workdir: str | os.PathLike) -> Path:
  """Return `workdir` as an absolute Path after creating it and checking it is writable."""
  if not workdir:
    raise ConfigError("--workdir is required")
  path = Path(workdir).expanduser().absolute()
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / ".nasr_write_probe"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise ConfigError(f"workdir {workdir} is not writable: {e.strerror or e}") from None
  return path


def write_json(path: Path, obj: Any) -> None:
  """Write `obj` as indented JSON, atomically."""
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
  os.replace(tmp, path)  # atomic: a reader never sees half a file


# ---------------------------------------------------------------------------------------------------
# Data.
# ---------------------------------------------------------------------------------------------------
def load_dataset(
  spec: str, scale: int, split: str = "train", data_config: ml_collections.ConfigDict | None = None
) -> data_lib.SRPairs:
  """Return the SR pairs named by `spec`: "embedded", "tfds:<builder>/<config>" or a folder path."""
  spec = str(spec).format(scale=scale)
  if spec == "embedded":
    return data_lib.load_embedded(split, scale)
  if spec.startswith("tfds:"):
    dc = data_config or ml_collections.ConfigDict({"manual_dir": "", "tfds_dir": ""})
    tfds_split = {"train": "train", "val": "validation"}.get(split, split)
    return data_lib.load_tfds(
      spec[len("tfds:") :],
      tfds_split,
      scale,
      data_dir=dc.tfds_dir or None,
      manual_dir=dc.manual_dir or None,
    )
  pairs = data_lib.load_folder_or_pairs(spec, scale)
  threshold = float(data_config.get("ncc_threshold", 0) or 0) if data_config else 0.0
  if threshold > 0 and data_lib.is_paired_folder(spec, scale):
    pairs = filter_misaligned(pairs, threshold, spec)
  return pairs


def filter_misaligned(pairs: data_lib.SRPairs, threshold: float, source: str) -> data_lib.SRPairs:
  """Return `pairs` without those whose NCC is below `threshold`; log each excluded one."""
  kept, excluded = data_lib.filter_pairs(pairs, threshold)
  for name, value in excluded:
    logging.warning(
      "%s: excluded %s, NCC %.4f < %.4f (misaligned pair)", source, name, value, threshold
    )
  if excluded:
    logging.warning(
      "%s: excluded %d of %d pairs with NCC < %g", source, len(excluded), len(pairs), threshold
    )
  if not len(kept):
    raise DataError(
      f"{source}: every pair has NCC < {threshold} (data.ncc_threshold); nothing is left to use"
    )
  return kept


def load_train_val(
  config: ml_collections.ConfigDict, scale: int
) -> tuple[data_lib.SRPairs, data_lib.SRPairs]:
  """Return (train, validation) pairs; validation is carved from train when data.val is empty."""
  d = config.data
  train = load_dataset(d.train, scale, "train", d)
  if d.val:
    val = load_dataset(d.val, scale, "val", d)
  else:
    if d.num_val < 1 or d.num_val >= len(train):
      raise ConfigError(
        f"data.num_val={d.num_val} must be between 1 and {len(train) - 1} "
        f"(the training set has {len(train)} images)"
      )
    train, val = train.split(d.num_val, seed=config.seed)
  if d.max_val_images and len(val) > d.max_val_images:
    val = val.subset(range(d.max_val_images))
  return train, val


def _triples(pairs: data_lib.SRPairs):
  return zip(pairs.names, pairs.lr, pairs.hr, strict=True)


# ---------------------------------------------------------------------------------------------------
# Networks.
# ---------------------------------------------------------------------------------------------------
def _shifted_depthwise(config: ml_collections.ConfigDict) -> bool:
  """Return whether `config.depthwise` (conv | shifted) asks for shifted depthwise convs."""
  mode = config.get("depthwise", "conv")
  if mode not in ("shifted", "conv"):
    raise ConfigError(f"config.depthwise must be conv or shifted, got {mode!r}")
  return mode == "shifted"


def build_network(config: ml_collections.ConfigDict, scale: int):
  """Return the Flax module the config names: `config.arch` (a search result) or `config.model`."""
  if config.get("arch"):
    return spaces.build_from_file(config.arch, scale=scale, shifted=_shifted_depthwise(config))
  kwargs = dict(config.get("model_kwargs", {}) or {})
  return spaces.build_model(config.model, scale=scale, **kwargs)


def _apply_fn(network) -> Callable:
  def apply(params, x, rng, arch):
    del rng  # the baselines and searched networks are deterministic
    if arch is None:
      return network.apply({"params": params}, x)
    return network.apply({"params": params}, x, arch)  # a supernet: the architecture is data

  return apply


def _init_params(network, patch: int, seed: int):
  x = jnp.zeros((1, patch, patch, 3), jnp.float32)
  return jax.jit(network.init)(train_lib.init_key(seed), x).get("params", {})


def _make_tx(config: ml_collections.ConfigDict, total_steps: int):
  o = config.optim
  schedule = train_lib.make_schedule(
    o.lr, o.schedule, total_steps, o.decay_every, o.decay_factor, o.warmup_steps
  )
  return train_lib.make_adam(
    schedule, o.b1, o.b2, weight_decay=o.weight_decay, grad_clip=o.grad_clip
  ), schedule


def network_upscaler(
  network, params, tile: int = 0, stride: int = 0, self_ensemble: bool = False
) -> Callable[[np.ndarray], np.ndarray]:
  """Return upscale(lr_uint8) -> SR floats in [0, 1]: the network's multi-level ensemble.

  Args:
    network: a Flax SR module with a `scale` field.
    params: its parameters.
    tile: LR tile side of the patch ensemble (0 = the whole image at once).
    stride: LR pixels between tile starts (0 = tile // 2); tiles are blended by distance weights.
    self_ensemble: average each tile over its 8 flips/transposes.
  """
  tile, stride = inference.check_tiling(tile or None, stride or None)
  predict = jax.jit(lambda p, x: network.apply({"params": p}, x))
  fn = lambda x: np.asarray(predict(params, jnp.asarray(x, jnp.float32)))
  if self_ensemble:
    fn = inference.self_ensemble(fn)
  scale = network.scale
  return lambda lr: inference.upscale_tiled(fn, lr, scale, tile=tile, stride=stride)


def bicubic_upscaler(scale: int) -> Callable[[np.ndarray], np.ndarray]:
  """Return upscale(lr_uint8) -> MATLAB-bicubic floats in [0, 1] (the published baseline).

  The LR image is 8-bit (MATLAB `imresize` on uint8 rounds after each axis, as DIV2K's LR files
  were made); the upscaling is an SR method like any other, so it runs in float64 and is
  quantised once, when scored.
  """
  return lambda lr: data_lib.imresize(np.asarray(lr, np.float64), scale=scale) / 255.0


# ---------------------------------------------------------------------------------------------------
# Training.
# ---------------------------------------------------------------------------------------------------
def check_finite(losses_pending: list, first_step: int, last_good: int | None) -> float:
  """Return the mean of the pending losses; raise DivergedError at the first non-finite one."""
  values = np.asarray(jax.device_get(losses_pending), np.float64)
  bad = np.flatnonzero(~np.isfinite(values))
  if bad.size:
    step = first_step + int(bad[0]) + 1
    where = f"step {last_good}" if last_good is not None else "none yet"
    raise DivergedError(
      f"loss became {values[bad[0]]} at step {step}; training stopped. "
      f"The last good checkpoint ({where}) is kept."
    )
  return float(values.mean()) if values.size else float("nan")


def make_loss(config: ml_collections.ConfigDict) -> Callable:
  """Return the loss `config.loss` names; "ms_ssim_l1" mixes by `config.ms_ssim_weight` if set.

  ms_ssim_l1 = w * (1 - MS-SSIM) + (1 - w) * L1, w = 0.84 (Zhao et al. 2017) unless configured.
  """
  loss_fn = losses.LOSSES.get(config.loss)
  weight = config.get("ms_ssim_weight", None)
  if config.loss == "ms_ssim_l1" and weight is not None:
    if not 0.0 <= float(weight) <= 1.0:
      raise ConfigError(f"config.ms_ssim_weight must be in [0, 1], got {weight}")
    loss_fn = functools.partial(loss_fn, alpha=float(weight))
  return loss_fn


def compile_train_step(network, tx, loss_fn, mesh, supernet: bool = False) -> Callable:
  """Return the jitted step(state, batch, rng[, arch]): params replicated, batch split, state donated.

  With `supernet=True` the step takes the sampled architecture as a fourth (replicated) array.
  """
  repl, split = parallel.replicated(mesh), parallel.data_sharded(mesh)
  return jax.jit(
    train_lib.make_train_step(_apply_fn(network), tx, loss_fn),
    in_shardings=(repl, split, repl, repl) if supernet else (repl, split, repl),
    out_shardings=(repl, repl),
    donate_argnums=(0,),
  )


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Train the configured network, resuming from `<workdir>/checkpoints`; return final metrics."""
  # --- Set-up: everything a user can get wrong is checked before any long computation. ---------
  scale = check_scale(config.scale)
  if config.get("model") == "bicubic" and not config.get("arch"):
    raise ConfigError("config.model=bicubic has no parameters to train; use launch.evaluate")
  workdir = prepare_workdir(workdir)
  dist = config.get("distributed")
  if dist is not None and dist.coordinator_address:
    parallel.maybe_initialize_distributed(
      dist.coordinator_address, dist.num_processes or None, dist.process_id
    )
  loss_fn = make_loss(config)

  # --- Mesh. -------------------------------------------------------------------------------------
  mesh = parallel.make_mesh()
  local_batch = parallel.check_batch_size(config.data.batch_size, mesh)

  # --- Input. ------------------------------------------------------------------------------------
  train_pairs, val_pairs = load_train_val(config, scale)
  sampler = data_lib.PatchSampler(
    train_pairs,
    config.data.patch_size,
    config.data.batch_size,
    seed=config.seed,
    augment=config.data.augment,
  )
  logging.info(
    "data: %d training images, %d validation images, LR patch %d, batch %d on %d device(s)",
    len(train_pairs),
    len(val_pairs),
    config.data.patch_size,
    config.data.batch_size,
    mesh.devices.size,
  )

  # --- Model and optimizer. ----------------------------------------------------------------------
  network = build_network(config, scale)
  params = _init_params(network, config.data.patch_size, config.seed)
  tx, schedule = _make_tx(config, config.steps)
  state = train_lib.create_train_state(params, tx)
  rng = jax.random.PRNGKey(config.seed)
  n_params = cost.count_params(params)
  logging.info("network: %s, %d parameters", type(network).__name__, n_params)

  # --- Checkpoint: resume from the latest complete one. ------------------------------------------
  ckpt = Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  meta = {"best_psnr": -math.inf, "best_step": -1, "val": {}}
  start = ckpt.latest_step()
  if start is not None:
    restored, meta = ckpt.restore({"train": state, "rng": rng}, start)
    state, rng = restored["train"], restored["rng"]
    writers.truncate_metrics(workdir, start)
    logging.info("resumed from the checkpoint at step %d", start)
  start = int(start or 0)
  is_chief = jax.process_index() == 0
  if is_chief:
    write_json(workdir / "config.json", json.loads(config.to_json_best_effort()))

  # --- Steps: compiled once, state donated, batch split over the data axis. ------------------------
  repl = parallel.replicated(mesh)
  state = jax.device_put(state, repl)
  rng = jax.device_put(rng, repl)
  train_step = compile_train_step(network, tx, loss_fn, mesh)
  lo = jax.process_index() * local_batch

  def validate(params) -> dict:
    upscale = network_upscaler(network, jax.device_get(params), tile=config.eval_tile)
    return scoring.score_images(upscale, _triples(val_pairs), scale)

  # --- Loop. -------------------------------------------------------------------------------------
  writer = writers.MetricWriter(workdir, is_chief=is_chief)
  progress = writers.Progress(config.steps, start_step=start)
  pending, pending_from = [], start
  last_saved = start if ckpt.latest_step() is not None else None
  result = {"params": n_params}
  t_start = time.time()
  try:
    for step in range(start, config.steps):
      batch = sampler.batch(step)
      batch = {k: v[lo : lo + local_batch] for k, v in batch.items()}
      state, metrics = train_step(state, parallel.shard_batch(batch, mesh), rng)
      pending.append(metrics["loss"])
      done = step + 1
      if step == start:
        progress.reset_clock(done)  # exclude compilation from steps/s
      is_last = done == config.steps
      if done % config.log_every == 0 or is_last:
        loss = check_finite(pending, pending_from, last_saved)
        pending, pending_from = [], done
        scalars = {
          "loss": loss,
          "lr": float(schedule(done - 1)),
          "steps_per_sec": progress.steps_per_sec(done),
        }
        writer.write_scalars(done, scalars)
        progress.update(done, {"loss": loss}, force=True)
      if done % config.eval_every == 0 or is_last:
        val = validate(state.params)
        if val["psnr"] > meta["best_psnr"]:
          meta["best_psnr"], meta["best_step"] = val["psnr"], done
        meta["val"] = val
        writer.write_scalars(done, {"val_psnr": val["psnr"], "val_ssim": val["ssim"]})
      if done % config.checkpoint_every == 0 or is_last:
        check_finite(pending, pending_from, last_saved)
        if not bool(train_lib.all_finite(state.params)):
          raise DivergedError(
            f"parameters became non-finite by step {done}; the last good "
            f"checkpoint (step {last_saved}) is kept."
          )
        ckpt.save(done, {"train": state, "rng": rng}, meta)
        last_saved = done
  finally:
    ckpt.close()
    writer.close()
  result.update(
    step=config.steps,
    best_psnr=meta["best_psnr"],
    best_step=meta["best_step"],
    val=meta.get("val", {}),
    wall_s=time.time() - t_start,
  )
  if is_chief:
    write_json(workdir / "train_result.json", result)
  return result


def load_trained(workdir: str | os.PathLike):
  """Return (network, params, config) of the latest checkpoint of a `train` workdir."""
  workdir = Path(workdir)
  cfg_file = workdir / "config.json"
  if not cfg_file.is_file():
    raise ConfigError(f"{workdir} is not a training workdir: {cfg_file.name} is missing")
  config = ml_collections.ConfigDict(json.loads(cfg_file.read_text()))
  scale = check_scale(config.scale)
  network = build_network(config, scale)
  params = _init_params(network, config.data.patch_size, config.seed)
  tx, _ = _make_tx(config, config.steps)
  state = train_lib.create_train_state(params, tx)
  ckpt = Checkpointer(workdir, async_save=False)
  if ckpt.latest_step() is None:
    raise ConfigError(f"no checkpoint in {workdir}/checkpoints")
  restored, _ = ckpt.restore({"train": state, "rng": jax.random.PRNGKey(0)})
  ckpt.close()
  return network, restored["train"].params, config


# ---------------------------------------------------------------------------------------------------
# Evaluation and upscaling.
# ---------------------------------------------------------------------------------------------------
def _checkpoints(config) -> list[str]:
  return [c.strip() for c in str(config.get("checkpoint", "") or "").split(",") if c.strip()]


def make_upscaler(config: ml_collections.ConfigDict) -> tuple[Callable, int, dict]:
  """Return (upscale_fn, scale, cost) for config.model=bicubic or config.checkpoint=W[,W2,...].

  The multi-level ensemble of Yu et al. (2020): `config.checkpoint=W1,W2,...` averages the SR
  outputs of several trained networks of any families (model ensemble); `config.tile` and
  `config.stride` run each network in overlapping tiles blended by distance-to-centre weights
  (patch ensemble); `config.self_ensemble` averages each tile over its 8 flips/transposes.
  """
  ckpts = _checkpoints(config)
  tile, stride = inference.check_tiling(config.get("tile", 0), config.get("stride", 0))
  ensemble = config.get("self_ensemble", False)
  if config.get("model") == "bicubic":
    if ckpts:
      raise ConfigError("set either config.model=bicubic or config.checkpoint, not both")
    scale = check_scale(config.scale)
    return bicubic_upscaler(scale), scale, {"params": 0, "macs_per_lr_pixel": 0.0}
  if not ckpts:
    raise ConfigError(
      "nothing to run: set config.checkpoint=<train workdir> "
      "(comma-separated for a model ensemble) or config.model=bicubic"
    )
  fns, scales, n_params, macs = [], set(), 0, 0.0
  for ck in ckpts:
    network, params, tcfg = load_trained(ck)
    scales.add(int(tcfg.scale))
    fns.append(network_upscaler(network, params, tile=tile, stride=stride, self_ensemble=ensemble))
    n_params += cost.count_params(params)
    macs += cost.macs_per_pixel(network, params, (1, 32, 32, 3))
  if len(scales) != 1:
    raise ConfigError(f"checkpoints {ckpts} were trained for different scales {sorted(scales)}")
  scale = scales.pop()
  if config.get("scale") and config.scale != scale:
    raise ConfigError(f"config.scale={config.scale} but the checkpoint was trained for x{scale}")
  if ensemble:
    macs *= 8
  # Model ensemble: the networks may be of any families; their SR outputs are averaged.
  upscale = fns[0] if len(fns) == 1 else inference.model_ensemble(fns)
  return upscale, scale, {"params": n_params, "macs_per_lr_pixel": macs}


def evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Score a checkpoint (or bicubic) on each benchmark; write `<workdir>/eval.json` and return it."""
  if config.get("model") == "bicubic":
    check_scale(config.scale)
  benchmarks = [b.strip() for b in str(config.benchmarks).split(",") if b.strip()]
  if not benchmarks:
    raise ConfigError("config.benchmarks is empty: give one or more folders (comma-separated)")
  workdir = prepare_workdir(workdir)
  upscale, scale, model_cost = make_upscaler(config)
  datasets = {}
  for spec in benchmarks:  # load (and so validate) every benchmark before scoring any
    name = "embedded_val" if spec == "embedded" else Path(spec).name
    datasets[name] = load_dataset(spec, scale, "val")
  results = {}
  for name, pairs in datasets.items():
    results[name] = scoring.score_images(upscale, _triples(pairs), scale)
    logging.info(
      "%s x%d: PSNR %.4f dB, SSIM %.4f over %d images",
      name,
      scale,
      results[name]["psnr"],
      results[name]["ssim"],
      results[name]["images"],
    )
  out = {
    "params": int(model_cost["params"]),
    "macs_per_lr_pixel": float(model_cost["macs_per_lr_pixel"]),
    "scale": scale,
    "results": results,
  }
  write_json(workdir / "eval.json", out)
  return out


def format_table(eval_result: dict) -> str:
  """Return the eval results as a fixed-width text table."""
  lines = [f"{'dataset':<16}{'scale':>6}{'PSNR':>10}{'SSIM':>9}{'images':>8}"]
  for name, r in eval_result["results"].items():
    lines.append(
      f"{name:<16}{'x' + str(eval_result['scale']):>6}{r['psnr']:>10.4f}"
      f"{r['ssim']:>9.4f}{r['images']:>8d}"
    )
  lines.append(
    f"params {eval_result['params']:,}  multiply-adds per LR pixel "
    f"{eval_result['macs_per_lr_pixel']:,.0f}"
  )
  return "\n".join(lines)


def upscale(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> list[Path]:
  """Upscale an image file or every image of a folder; return the written PNG paths."""
  src = Path(str(config.input))
  if not str(config.input):
    raise ConfigError("config.input is empty: give an image file or a folder")
  if src.is_dir():
    files = data_lib.list_images(src)
  elif src.is_file():
    files = [src]
  else:
    raise DataError(f"input {src} does not exist")
  images = [(f, data_lib.read_image(f)) for f in files]  # read all first: fail before any work
  workdir = prepare_workdir(workdir)
  out_dir = Path(config.output) if config.get("output") else workdir / "sr"
  upscale_fn, scale, _ = make_upscaler(config)
  written = []
  for f, img in images:
    sr = upscale_fn(img)
    path = out_dir / f"{f.stem}_x{scale}.png"
    data_lib.write_png(path, np.clip(np.round(sr * 255.0), 0, 255).astype(np.uint8))
    logging.info(
      "wrote %s (%dx%d -> %dx%d)", path, img.shape[1], img.shape[0], sr.shape[1], sr.shape[0]
    )
    written.append(path)
  return written


# ---------------------------------------------------------------------------------------------------
# Search.
# ---------------------------------------------------------------------------------------------------
def run_search(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Run the search method named by `config.method`; return its results."""
  import nasr.searches  # noqa: F401 - registers the search methods (they import this module)

  method = config.get("method") if config is not None else None
  if not method:
    raise ConfigError(
      f"config.method is not set; available search methods: "
      f"{', '.join(SEARCH_METHODS.names()) or '(none yet)'}"
    )
  return SEARCH_METHODS.get(method)(config, prepare_workdir(workdir))
