"""Differentiable architecture search for SR (Improved DARTS): bilevel training, then derivation.

The training images are split in two halves: one trains the supernet weights w, the other the
architecture alpha. Every step updates alpha (first order, DARTS' finite-difference second order,
or the exact second order through the virtual step) and then w; the step is compiled once per
run. After every epoch the run records softmax(alpha) per edge, the derived genotype, its number
of skip-connects and the supernet's validation PSNR (on centre crops of the validation images),
checkpoints the whole state, and redraws `alpha.png` (skip-connects and PSNR over epochs: the
paper's Fig. 2 and Fig. 4). At the end it writes:

  genotype.json    the derived cell, for `launch.train --config.arch=W/genotype.json`; its
                   space_kwargs carry the retraining size (config.retrain.cells / channels), the
                   search network's are under "search_space_kwargs"
  alphas.json      the final alpha and softmax(alpha) per edge, with the edge and op names
  history.json     per epoch: losses, validation PSNR, softmax(alpha) per edge, the derived
                   genotype and its skip-connects (rewritten every epoch)
  search_result.json, alpha.png, metrics.jsonl
"""

import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from nasr import data as data_lib
from nasr import experiment, parallel, spaces, writers
from nasr.checkpoint import Checkpointer
from nasr.core.errors import ConfigError
from nasr.estimation import cost, losses, metrics
from nasr.estimation import darts as darts_lib
from nasr.estimation import train as train_lib
from nasr.searches.enas import val_crops

SPACE = "darts_sr"


def space_kwargs(config: ml_collections.ConfigDict) -> dict:
  """Return the keyword arguments of the searched space (config.space without its name)."""
  kwargs = {k: v for k, v in config.space.items() if k != "name"}
  name = config.space.get("name", SPACE)
  if name != SPACE:
    raise ConfigError(f"the darts_sr search needs config.space.name={SPACE!r}, got {name!r}")
  return kwargs


def retrain_kwargs(config: ml_collections.ConfigDict) -> dict:
  """Return the space keyword arguments genotype.json stores: the search's, at retraining size."""
  kwargs = space_kwargs(config)
  for key in ("cells", "channels"):
    value = config.retrain.get(key, 0)
    if value:
      kwargs[key] = int(value)
  return kwargs


def split_halves(pairs: data_lib.SRPairs, seed: int) -> tuple[data_lib.SRPairs, data_lib.SRPairs]:
  """Return (w half, alpha half) of the training pairs, drawn with `seed`."""
  if len(pairs) < 2:
    raise ConfigError(
      f"the darts_sr search splits the training images in two halves; it needs at least 2, "
      f"got {len(pairs)}"
    )
  return pairs.split(len(pairs) // 2, seed=seed)


def softmax(alpha) -> np.ndarray:
  """Return the row-wise softmax of alpha [edges, ops] as float64 numpy."""
  a = np.asarray(alpha, np.float64)
  p = np.exp(a - a.max(axis=1, keepdims=True))
  return p / p.sum(axis=1, keepdims=True)


def _make_psnr_fn(supernet, scale: int):
  """Return psnr(w, alpha, lr, hr) -> mean Y-PSNR of the supernet on the validation crops."""

  def psnr(w, alpha, lr, hr):
    sr = supernet.apply({"params": w}, train_lib.to_unit(lr), alpha)
    return jnp.mean(metrics.psnr_jax(sr, train_lib.to_unit(hr), scale))

  return psnr


def compile_bilevel_step(step, mesh) -> Any:
  """Return `step` jitted once: state replicated and donated, both batches split over `data`."""
  repl, split = parallel.replicated(mesh), parallel.data_sharded(mesh)
  return jax.jit(
    step,
    in_shardings=(repl, split, split, repl),
    out_shardings=(repl, repl),
    donate_argnums=(0,),
  )


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Search, derive and write genotype.json; return a summary (genotype, PSNR, skips, wall time)."""
  # --- Set-up: everything a user can get wrong is checked before any long computation. ----------
  scale = experiment.check_scale(config.scale)
  mode = darts_lib.check_mode(config.alpha_mode)
  darts_lib.check_exact_form(config.exact_form)
  workdir = experiment.prepare_workdir(workdir)
  space = spaces.get(SPACE, **space_kwargs(config))
  spaces.get(SPACE, **retrain_kwargs(config))  # a bad retrain size fails now, not at the end
  loss_fn = losses.LOSSES.get(config.loss)
  mesh = parallel.make_mesh()
  local_batch = parallel.check_batch_size(config.data.batch_size, mesh)
  if config.epochs < 1 or config.steps_per_epoch < 1:
    raise ConfigError(
      f"config.epochs ({config.epochs}) and config.steps_per_epoch ({config.steps_per_epoch}) "
      "must be positive"
    )

  # --- Input: two halves of the training images (w, alpha); validation crops for PSNR. ----------
  train_pairs, val_pairs = experiment.load_train_val(config, scale)
  w_pairs, a_pairs = split_halves(train_pairs, config.seed)
  p, b = config.data.patch_size, config.data.batch_size
  w_sampler = data_lib.PatchSampler(w_pairs, p, b, config.seed, config.data.augment)
  a_sampler = data_lib.PatchSampler(a_pairs, p, b, config.seed + 1, config.data.augment)
  val = val_crops(val_pairs, config.val_patch)
  logging.info(
    "darts_sr (%s ops): %d images train w, %d train alpha, %d validate; alpha mode %s",
    space.ops,
    len(w_pairs),
    len(a_pairs),
    len(val_pairs),
    mode,
  )

  # --- Supernet, alpha and both optimisers. ------------------------------------------------------
  supernet = space.supernet(scale, remat=config.remat, shifted=config.shifted_depthwise)
  rng = jax.random.PRNGKey(config.seed)
  alpha = space.init_alpha(jax.random.fold_in(rng, 1), config.alpha_init_std)
  x0 = jnp.zeros((1, p, p, 3), jnp.float32)
  w = jax.jit(supernet.init)(train_lib.init_key(config.seed), x0, alpha)["params"]
  total_steps = config.epochs * config.steps_per_epoch
  wo, ao = config.w_optim, config.alpha_optim
  schedule = darts_lib.make_w_schedule(wo.lr, wo.schedule, total_steps, wo.lr_min)
  w_tx = darts_lib.make_w_optimizer(schedule, wo.momentum, wo.weight_decay, wo.grad_clip)
  alpha_tx = darts_lib.make_alpha_optimizer(ao.lr, ao.b1, ao.b2, ao.weight_decay)
  state = darts_lib.create_state(w, alpha, w_tx, alpha_tx)
  logging.info(
    "supernet: %d cells x %d channels, %d weights, alpha %s",
    space.cells,
    space.channels,
    cost.count_params(w),
    space.alpha_shape,
  )

  # --- Checkpoint: the whole search state (w, alpha, both optimizers, RNG, epoch, history). -----
  ckpt = Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  meta: dict[str, Any] = {"epoch": 0, "history": []}
  if ckpt.latest_step() is not None:
    restored, meta = ckpt.restore({"search": state, "rng": rng}, ckpt.latest_step())
    state, rng = restored["search"], restored["rng"]
    writers.truncate_metrics(workdir, meta["epoch"])
    logging.info("resumed the search after epoch %d", meta["epoch"])
  repl = parallel.replicated(mesh)
  state, rng = jax.device_put((state, rng), repl)

  # --- Steps, each compiled once for the whole run. ----------------------------------------------
  apply = lambda w, x, a: supernet.apply({"params": w}, x, a)  # noqa: E731
  step_fn = darts_lib.make_bilevel_step(
    darts_lib.make_loss(apply, loss_fn),
    w_tx,
    alpha_tx,
    mode,
    schedule,
    wo.momentum,
    wo.weight_decay,
    xi=None if config.xi < 0 else float(config.xi),
    fd_scale=config.fd_scale,
    exact_form=config.exact_form,
  )
  bilevel_step = compile_bilevel_step(step_fn, mesh)
  psnr_fn = jax.jit(_make_psnr_fn(supernet, scale))
  lo = jax.process_index() * local_batch
  is_chief = jax.process_index() == 0

  writer = writers.MetricWriter(workdir, is_chief=is_chief)
  progress = writers.Progress(config.epochs, start_step=meta["epoch"], every_s=0, name="epoch")
  t0, start_epoch = time.time(), meta["epoch"]
  try:
    for epoch in range(start_epoch, config.epochs):
      t_epoch, timed = time.time(), config.steps_per_epoch
      pending: dict[str, list] = {"train_loss": [], "val_loss": []}
      first = epoch * config.steps_per_epoch
      for i in range(config.steps_per_epoch):
        step = first + i
        tb = {k: v[lo : lo + local_batch] for k, v in w_sampler.batch(step).items()}
        vb = {k: v[lo : lo + local_batch] for k, v in a_sampler.batch(step).items()}
        state, m = bilevel_step(
          state, parallel.shard_batch(tb, mesh), parallel.shard_batch(vb, mesh), rng
        )
        pending["train_loss"].append(m["train_loss"])
        pending["val_loss"].append(m["val_loss"])
        if i == 0 and epoch == start_epoch and config.steps_per_epoch > 1:
          jax.block_until_ready(m)  # steps/s leaves the compilation out
          t_epoch, timed = time.time(), config.steps_per_epoch - 1
      last_good = ckpt.latest_step()
      train_loss = experiment.check_finite(pending["train_loss"], first, last_good)
      val_loss = experiment.check_finite(pending["val_loss"], first, last_good)
      jax.block_until_ready(state.alpha)
      t_train = time.time() - t_epoch
      psnr = float(psnr_fn(state.w, state.alpha, val["lr"], val["hr"]))
      alpha_np = np.asarray(jax.device_get(state.alpha))
      genotype = space.derive(alpha_np)
      record = {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_psnr": psnr,
        "num_skip": genotype.num_skip(),
        "genotype": genotype.to_dict()["edges"],
        "alpha_softmax": np.round(softmax(alpha_np), 6).tolist(),
        "xi": float(m["xi"]),
        "steps_per_sec": timed / max(t_train, 1e-9),
      }
      meta["history"].append(record)
      meta["epoch"] = epoch + 1
      scalars = {k: record[k] for k in ("train_loss", "val_loss", "val_psnr", "num_skip", "xi")}
      writer.write_scalars(epoch + 1, {**scalars, "steps_per_sec": record["steps_per_sec"]})
      progress.update(
        epoch + 1, {"psnr": psnr, "skips": record["num_skip"], "loss": train_loss}, True
      )
      ckpt.save(epoch + 1, {"search": state, "rng": rng}, meta)
      if is_chief:
        experiment.write_json(workdir / "history.json", meta["history"])
        plot_history(
          meta["history"], workdir / "alpha.png", title=f"darts_sr ({space.ops}) x{scale}"
        )
  finally:
    ckpt.close()
    writer.close()
  search_s = time.time() - t0

  # --- Derive: the genotype and its retraining network. ------------------------------------------
  alpha_np = np.asarray(jax.device_get(state.alpha))
  genotype = space.derive(alpha_np)
  last = meta["history"][-1]
  rkw = retrain_kwargs(config)
  retrain_space = spaces.get(SPACE, **rkw)
  n_params = retrain_space.count_params(genotype, scale)
  summary = {
    "genotype": genotype.to_dict()["edges"],
    "num_skip": genotype.num_skip(),
    "val_psnr": round(last["val_psnr"], 4),
    "alpha_mode": mode,
    "ops": space.ops,
    "epochs": config.epochs,
    "search_wall_s": round(search_s, 1),
    "steps_per_sec": round(last["steps_per_sec"], 3),
    # Compilations of the bilevel step in this process (1: alpha is data, nothing retraces).
    "step_compiles": _cache_size(bilevel_step),
    "retrain_cells": retrain_space.cells,
    "retrain_channels": retrain_space.channels,
    "retrain_params": n_params,
    "genotype_json": str(workdir / "genotype.json"),
  }
  if is_chief:
    spaces.save_arch(
      workdir / "genotype.json",
      SPACE,
      rkw,
      genotype,
      search_space_kwargs=space_kwargs(config),
      num_skip=genotype.num_skip(),
      val_psnr=summary["val_psnr"],
      params=n_params,
      alpha_mode=mode,
    )
    experiment.write_json(
      workdir / "alphas.json",
      {
        "ops": list(space.op_names),
        "edges": space.edge_names(),
        "alpha": alpha_np.tolist(),
        "softmax": softmax(alpha_np).tolist(),
      },
    )
    plot_history(meta["history"], workdir / "alpha.png", title=f"darts_sr ({space.ops}) x{scale}")
    experiment.write_json(workdir / "search_result.json", summary)
  return summary


def _cache_size(jitted) -> int:
  """Return how many times `jitted` was compiled in this process (-1 if JAX does not say)."""
  size = getattr(jitted, "_cache_size", None)
  return int(size()) if callable(size) else -1


def plot_history(history: list[dict], path: Path, title: str = "") -> None:
  """Draw skip-connects in the derived cell and validation PSNR per epoch (paper Fig. 2 / 4)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib.ticker import MaxNLocator

  epochs = [h["epoch"] for h in history]
  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  ax.plot(epochs, [h["num_skip"] for h in history], "o-", color="tab:red", label="skip-connects")
  ax.set_xlabel("epoch")
  ax.set_ylabel("skip-connects in the derived cell", color="tab:red")
  ax.set_ylim(0, max(len(h["genotype"]) for h in history) + 0.5)  # up to every kept edge
  ax.yaxis.set_major_locator(MaxNLocator(integer=True))
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax2 = ax.twinx()
  ax2.plot(epochs, [h["val_psnr"] for h in history], "s-", color="tab:blue", label="val PSNR")
  ax2.set_ylabel("validation PSNR of the supernet (dB)", color="tab:blue")
  ax.set_title(title or "darts_sr search")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
