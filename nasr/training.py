"""The trainer: train a network from a config, resumably and data-parallel; load a trained one.

`experiment.train` (the launcher's entry point) and the from-scratch searches (which train every
candidate) both call `train(config, workdir)`. What the trainer shares with the searches lives in
rooms of its own: the compute dtype, kernels, loss, optimiser and compiled steps in
`nasr.compute`, the workdir's claim, lock and signals in `nasr.workdirs`.
"""

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from absl import logging

from nasr import compute, inference, parallel, spaces, workdirs, writers
from nasr import data as data_lib
from nasr.checkpoint import Checkpointer
from nasr.core.checks import check_numbers, check_scale
from nasr.core.errors import CheckpointMismatchError, ConfigError, DivergedError, Interrupted
from nasr.estimation import cost
from nasr.estimation import evaluate as scoring
from nasr.estimation import train as train_lib


# ---------------------------------------------------------------------------------------------------
# Networks.
# ---------------------------------------------------------------------------------------------------
def _shifted_depthwise(config: ml_collections.ConfigDict) -> bool:
  """Return whether `config.depthwise` (conv | shifted) asks for shifted depthwise convs."""
  mode = config.get("depthwise", "conv")
  if mode not in ("shifted", "conv"):
    raise ConfigError(f"config.depthwise must be conv or shifted, got {mode!r}")
  return mode == "shifted"


RESULT_FILE = "train_result.json"  # <workdir>/train_result.json: written when a run ends


def build_network(config: ml_collections.ConfigDict, scale: int):
  """Return the Flax module the config names: `config.arch` (a search result) or `config.model`."""
  dtype = compute.compute_dtype(config)
  shifted = _shifted_depthwise(config) and compute.kernels(config) == "cpu"
  if config.get("arch"):
    width = int(config.get("arch_channels", 0) or 0)
    if width < 0:
      raise ConfigError(f"config.arch_channels must be >= 0 (0: the file's width), got {width}")
    overrides = {"channels": width} if width else {}
    return spaces.build_from_file(
      config.arch, scale=scale, shifted=shifted, dtype=dtype, **overrides
    )
  kwargs = dict(config.get("model_kwargs", {}) or {})
  if "dtype" in spaces.model_fields(config.model):
    kwargs.setdefault("dtype", dtype)  # model_kwargs.dtype, if given, wins
  return spaces.build_model(config.model, scale=scale, **kwargs)


def _triples(pairs: data_lib.SRPairs):
  return zip(pairs.names, pairs.lr, pairs.hr, strict=True)


# ---------------------------------------------------------------------------------------------------
# Training.
# ---------------------------------------------------------------------------------------------------
def _start(config: ml_collections.ConfigDict, workdir) -> tuple[int, Path, Callable]:
  """Return (scale, workdir, loss) after checking everything a user can get wrong."""
  check_numbers(config)
  scale = check_scale(config.scale, "config.scale")
  if config.get("model") == "bicubic" and not config.get("arch"):
    raise ConfigError("config.model=bicubic has no parameters to train; use launch.evaluate")
  # Several processes (config.distributed or a cluster's environment) start before any JAX call.
  parallel.initialize_from_config(config)
  workdir = workdirs.prepare(workdir)
  return scale, workdir, compute.make_config_loss(config)


def _input(config: ml_collections.ConfigDict, scale: int, mesh):
  """Return (patch sampler, validation pairs) and log what the run reads."""
  train_pairs, val_pairs = data_lib.load_train_val(config.data, scale, config.seed)
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
  return sampler, val_pairs


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Train the configured network, resuming from `<workdir>/checkpoints`; return final metrics."""
  scale, workdir, loss_fn = _start(config, workdir)
  mesh = parallel.make_mesh()
  local_batch = parallel.check_batch_size(config.data.batch_size, mesh)
  sampler, val_pairs = _input(config, scale, mesh)

  # --- Model and optimizer. ----------------------------------------------------------------------
  network = build_network(config, scale)
  compute.log_compute(config)
  params = compute.init_params(network, config.data.patch_size, config.seed)
  tx, schedule = compute.make_tx(config, config.steps)
  state = train_lib.create_train_state(params, tx)
  rng = jax.random.PRNGKey(config.seed)
  n_params = cost.count_params(params)
  logging.info("network: %s, %d parameters", type(network).__name__, n_params)

  # --- Checkpoint: resume from the newest intact one. --------------------------------------------
  is_chief = jax.process_index() == 0
  config_dict = json.loads(config.to_json_best_effort())
  run_dir = workdirs.RunWorkdir(workdir, "training", config_dict, config.keep_checkpoints)
  ckpt = run_dir.ckpt
  meta = {"best_psnr": -math.inf, "best_step": -1, "val": {}}
  found = run_dir.restore_latest({"train": state, "rng": rng})
  # The parameters of the best validation PSNR so far, beside the latest (evaluate which=best);
  # opened after the restore, so a refused resume leaves the workdir as it was.
  best_ckpt = Checkpointer(workdir, max_to_keep=1, subdir=BEST_DIR)
  start = 0
  if found is not None:
    start, restored, meta = found
    state, rng = restored["train"], restored["rng"]
    logging.info("resumed from the checkpoint at step %d", start)
    notice = workdirs.length_notice(
      workdir, run_dir.saved_config, config_dict, "steps", start, "step"
    )
    if notice:
      logging.warning("%s", notice)
  if is_chief:  # records past the restored step (all, from scratch) are a killed run's
    writers.truncate_metrics(workdir, start if found is not None else -1)
  if is_chief:
    writers.write_json(workdir / "config.json", config_dict)

  # --- Steps: compiled once, state donated, batch split over the data axis. ------------------------
  state, rng = parallel.replicate((state, rng), mesh)
  train_step = compute.compile_train_step(network, tx, loss_fn, mesh)
  lo = jax.process_index() * local_batch

  def validate(params) -> dict:
    upscale = inference.network_upscaler(network, jax.device_get(params), tile=config.eval_tile)
    return scoring.score_images(upscale, _triples(val_pairs), scale)

  def next_batch(step: int):
    return parallel.shard_batch(sampler.batch(step, (lo, lo + local_batch)), mesh)

  writer = writers.MetricWriter(workdir, log=False, is_chief=is_chief)
  t_start = time.time()
  try:
    with (
      parallel.AgreedInterrupts(workdirs.Interrupts()) as interrupts,
      parallel.Prefetch(next_batch, start, config.steps, workers=config.data.workers) as batches,
    ):
      state = _loop(
        config,
        state,
        rng,
        train_step,
        batches.get,
        validate,
        schedule,
        ckpt,
        meta,
        writer,
        start,
        interrupts,
        best_ckpt,
      )
  finally:
    writer.close()
    best_ckpt.close()
    run_dir.close()
  # The line a trained network must beat, on the same validation images and metric.
  bicubic = scoring.score_images(inference.bicubic_upscaler(scale), _triples(val_pairs), scale)
  result = {
    "params": n_params,
    "step": config.steps,
    "best_psnr": meta["best_psnr"],
    "best_step": meta["best_step"],
    "val": meta.get("val", {}),
    "val_bicubic": {"psnr": bicubic["psnr"], "ssim": bicubic["ssim"]},
    "wall_s": time.time() - t_start,
  }
  if is_chief:
    writers.write_json(workdir / RESULT_FILE, result)
  return result


def _loop(
  config,
  state,
  rng,
  train_step,
  next_batch,
  validate,
  schedule,
  ckpt,
  meta,
  writer,
  start,
  interrupts,
  best_ckpt=None,
):
  """Run steps start..config.steps with logging, validation and checkpoints; return the state.

  On SIGINT / SIGTERM (`interrupts`) it saves a checkpoint at the current step and raises
  Interrupted.
  """
  progress = writers.Progress(config.steps, start_step=start)
  pending, pending_from = [], start
  last_saved = start if ckpt.latest_step() is not None else None
  for step in range(start, config.steps):
    state, metrics = train_step(state, next_batch(step), rng)
    pending.append(metrics["loss"])
    done = step + 1
    if step == start:
      progress.reset_clock(done)  # exclude compilation from steps/s
    is_last = done == config.steps
    if done % config.log_every == 0 or is_last:
      loss = train_lib.check_finite(pending, pending_from, last_saved)
      pending, pending_from = [], done
      scalars = {
        "loss": loss,
        "lr": float(schedule(done - 1)),
        "steps_per_sec": progress.steps_per_sec(done),
      }
      writer.write_scalars(done, scalars)
      shown = {"loss": loss}
    else:
      shown = None
    if done % config.eval_every == 0 or is_last:
      val = validate(state.params)
      if val["psnr"] > meta["best_psnr"]:
        meta["best_psnr"], meta["best_step"] = val["psnr"], done
        # A resumed run replays the steps after its checkpoint bit-identically: a best already
        # saved at this step holds these very parameters.
        if best_ckpt is not None and done not in best_ckpt.all_steps():
          best_ckpt.save(done, {"params": state.params}, {"psnr": val["psnr"]}, force=True)
      meta["val"] = val
      writer.write_scalars(done, {"val_psnr": val["psnr"], "val_ssim": val["ssim"]})
    if shown is not None:  # one line per interval: the loss and the latest validation PSNR
      if meta["val"]:
        shown["val_psnr"] = meta["val"]["psnr"]
      progress.update(done, shown, force=True)
    if done % config.checkpoint_every == 0 or is_last:
      train_lib.check_finite(pending, pending_from, last_saved)
      if not bool(train_lib.all_finite(state.params)):
        raise DivergedError(
          f"parameters became non-finite by step {done}; the last good "
          f"checkpoint (step {last_saved}) is kept."
        )
      ckpt.save(done, {"train": state, "rng": rng}, meta)
      last_saved = done
    if interrupts.requested:
      if last_saved != done:
        train_lib.check_finite(pending, pending_from, last_saved)
        ckpt.save(done, {"train": state, "rng": rng}, meta, force=True)
      raise Interrupted(
        f"{interrupts.name()} at step {done} of {config.steps}: checkpoint saved; run the same "
        "command to resume"
      )
  return state


def time_step(
  config: ml_collections.ConfigDict, batch: int, patch: int, budget_s: float = 5.0
) -> float:
  """Return the seconds a training step of `config`'s network takes here on `batch` LR patches
  of side `patch`: the median of up to three steps within `budget_s` (at least one), after an
  untimed first one; compile excluded, no data read, no workdir touched."""
  scale = check_scale(config.scale, "config.scale")
  network = build_network(config, scale)
  params = compute.init_params(network, patch, config.seed)
  tx, _ = compute.make_tx(config, config.steps)
  devices = jax.local_devices()
  mesh = parallel.make_mesh(devices if batch % len(devices) == 0 else devices[:1])
  step = compute.compile_train_step(network, tx, compute.make_config_loss(config), mesh)
  state = jax.device_put(train_lib.create_train_state(params, tx), parallel.replicated(mesh))
  # A step's time does not depend on the pixels: zeros stand in for patches.
  hr = patch * scale
  arrays = {"lr": np.zeros((batch, patch, patch, 3), np.uint8)}
  arrays["hr"] = np.zeros((batch, hr, hr, 3), np.uint8)
  arrays = jax.device_put(arrays, parallel.data_sharded(mesh))
  rng = jax.random.PRNGKey(config.seed)
  compiled = step.lower(state, arrays, rng).compile()
  times = []
  # The first run after compiling pays one-time costs (buffers, threads): up to 10x a small step.
  for _ in range(4):
    t0 = time.perf_counter()
    state, metrics = compiled(state, arrays, rng)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
    if len(times) > 1 and sum(times[1:]) >= budget_s:
      break
  return float(np.median(times[1:]))


BEST_DIR = "best"  # <workdir>/best: the parameters of the best validation PSNR
WHICH = ("latest", "best")


class Trained(NamedTuple):
  """A trained network read back from a `train` workdir."""

  network: Any  # the Flax module its config.json builds
  params: Any  # the checkpoint's parameters
  config: ml_collections.ConfigDict  # the run's config (config.json)
  step: int  # the training step of that checkpoint


def load_trained(workdir: str | os.PathLike, which: str = "latest"):
  """Return (network, params, config) of a `train` workdir's latest (or best) checkpoint."""
  return tuple(load_checkpoint(workdir, which)[:3])


def load_checkpoint(workdir: str | os.PathLike, which: str = "latest") -> Trained:
  """Return the `Trained` network of a `train` workdir's latest (or best) checkpoint, with its step."""
  if which not in WHICH:
    raise ConfigError(f"config.which must be one of {', '.join(WHICH)}, got {which!r}")
  workdir = Path(workdir)
  cfg_file = workdir / "config.json"
  if not cfg_file.is_file():
    raise ConfigError(f"{workdir} is not a training workdir: {cfg_file.name} is missing")
  config = ml_collections.ConfigDict(json.loads(cfg_file.read_text()))
  scale = check_scale(config.scale, "config.scale")
  network = build_network(config, scale)
  params = compute.init_params(network, config.data.patch_size, config.seed)
  tx, _ = compute.make_tx(config, config.steps)
  state = train_lib.create_train_state(params, tx)
  if which == "best":
    step, best = _load_best(workdir, params)
    return Trained(network, best, config, step)
  ckpt = Checkpointer(workdir, async_save=False)
  try:
    # A damaged newest checkpoint is named, not skipped: evaluating an older one unasked would
    # report numbers of another step.
    found = ckpt.restore_latest({"train": state, "rng": jax.random.PRNGKey(0)}, damaged_ok=False)
  except CheckpointMismatchError as e:
    raise ConfigError(
      f"{workdir}: the checkpoint does not match its {cfg_file.name} ({e})"
    ) from None
  finally:
    ckpt.close()
  if found is None:
    raise ConfigError(f"no checkpoint in {workdir}/checkpoints")
  return Trained(network, found[1]["train"].params, config, int(found[0]))


def _load_best(workdir: Path, params: Any) -> tuple[int, Any]:
  """Return (step, parameters) kept at the best validation PSNR of a `train` workdir."""
  best = Checkpointer(workdir, async_save=False, subdir=BEST_DIR)
  try:
    found = best.restore_latest({"params": params}, damaged_ok=False)
  except CheckpointMismatchError as e:
    raise ConfigError(f"{workdir}/{BEST_DIR}: does not match its config.json ({e})") from None
  finally:
    best.close()
  if found is None:
    raise ConfigError(
      f"no best checkpoint in {workdir}/{BEST_DIR} (the run has not validated yet, or it was "
      "trained before best checkpoints were kept): use config.which=latest"
    )
  logging.info("the best checkpoint: step %d, validation PSNR %.4f dB", found[0], found[2]["psnr"])
  return int(found[0]), found[1]["params"]
