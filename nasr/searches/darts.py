"""Differentiable architecture search (Improved DARTS for SR): bilevel training, then derivation.

It runs any registered `DifferentiableSpace` (config.space.name; darts_sr is the paper's): what it
needs of the space's alpha (op and edge names, the one-hot alpha of an architecture, its
skip-connect count, derivation) is that protocol's.

The training images are split in two halves: one trains the supernet weights w, the other the
architecture alpha. Every step updates alpha (first order, DARTS' finite-difference second order,
or the exact second order through the virtual step) and then w; the step is compiled once per
run. After every epoch the run records softmax(alpha) per edge, the derived genotype, its number
of skip-connects and the supernet's validation PSNR (on centre crops of the validation images),
checkpoints the whole state, and redraws `alpha.png` (softmax(alpha) per op over epochs and per
edge at the last one, skip-connects and PSNR over epochs: the paper's Fig. 2 and Fig. 4). At the
end it writes:

  genotype.json    the derived cell, for `launch.train --config.arch=W/genotype.json`; its
                   space_kwargs carry the retraining size (config.retrain.cells / channels), the
                   search network's are under "search_space_kwargs"
  alphas.json      the final alpha and softmax(alpha) per edge, with the edge and op names
  history.json     per epoch: losses, validation PSNR, softmax(alpha) per edge, the derived
                   genotype and its skip-connects (rewritten every epoch)
  search_result.json, alpha.png, metrics.jsonl
"""

import numbers
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from nasr import compute, parallel, plots, spaces
from nasr import data as data_lib
from nasr.core.checks import check_scale
from nasr.core.errors import ConfigError
from nasr.estimation import cost, metrics
from nasr.estimation import darts as darts_lib
from nasr.estimation import train as train_lib
from nasr.searches import loop
from nasr.spaces.base import DifferentiableSpace, require


def space_kwargs(config: ml_collections.ConfigDict) -> dict:
  """Return the keyword arguments of the searched space (config.space without its name)."""
  return loop.space_kwargs(config)


def retrain_kwargs(config: ml_collections.ConfigDict) -> dict:
  """Return the space keyword arguments genotype.json stores: the search's, at retraining size.

  config.retrain holds space keywords (darts_sr: cells, channels); 0 keeps the search's value.
  """
  kwargs = space_kwargs(config)
  for key, value in (config.get("retrain") or {}).items():
    if not (isinstance(value, numbers.Real) and float(value).is_integer()):
      raise ConfigError(f"config.retrain.{key} must be an integer (0: the search's), got {value!r}")
    if value:
      kwargs[key] = int(value)
  return kwargs


def split_halves(pairs: data_lib.SRPairs, seed: int) -> tuple[data_lib.SRPairs, data_lib.SRPairs]:
  """Return (w half, alpha half) of the training pairs, drawn with `seed`."""
  if len(pairs) < 2:
    raise ConfigError(
      f"the darts search splits the training images in two halves; it needs at least 2, "
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


def _prepare(config: ml_collections.ConfigDict) -> dict:
  """Return the run's parts; everything a user can get wrong fails here, before a step runs."""
  scale = check_scale(config.scale, "config.scale")
  mode = darts_lib.check_mode(config.alpha_mode)
  darts_lib.check_exact_form(config.exact_form)
  name = config.space.name
  space = require(spaces.get(name, **space_kwargs(config)), DifferentiableSpace, "darts")
  spaces.get(name, **retrain_kwargs(config))  # a bad retrain size fails now, not at the end
  loss_fn = compute.make_config_loss(config)
  mesh = parallel.make_mesh()
  local_batch = parallel.check_batch_size(config.data.batch_size, mesh)
  if config.epochs < 1 or config.steps_per_epoch < 1:
    raise ConfigError(
      f"config.epochs ({config.epochs}) and config.steps_per_epoch ({config.steps_per_epoch}) "
      "must be positive"
    )
  # Two halves of the training images (w, alpha); validation crops for the PSNR.
  train_pairs, val_pairs = data_lib.load_train_val(config.data, scale, config.seed)
  w_pairs, a_pairs = split_halves(train_pairs, config.seed)
  p, b = config.data.patch_size, config.data.batch_size
  logging.info(
    "%s (%d ops): %d images train w, %d train alpha, %d validate; alpha mode %s",
    name,
    len(space.op_names),
    len(w_pairs),
    len(a_pairs),
    len(val_pairs),
    mode,
  )
  return {
    "scale": scale,
    "mode": mode,
    "space_name": name,
    "space": space,
    "loss_fn": loss_fn,
    "mesh": mesh,
    "local_batch": local_batch,
    "w_sampler": data_lib.PatchSampler(w_pairs, p, b, config.seed, config.data.augment),
    "a_sampler": data_lib.PatchSampler(a_pairs, p, b, config.seed + 1, config.data.augment),
    "val": data_lib.center_crops(val_pairs, config.val_patch),
  }


def _init(config: ml_collections.ConfigDict, parts: dict) -> tuple[Any, dict, Any]:
  """Return (supernet, {"search": state, "rng": rng}, bilevel step function)."""
  space, p = parts["space"], config.data.patch_size
  supernet = space.supernet(parts["scale"], **compute.supernet_options(config, space))
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
    "supernet: %s, %d weights, alpha %s",
    ", ".join(f"{k} {v}" for k, v in space_kwargs(config).items()),
    cost.count_params(w),
    space.alpha_shape,
  )
  apply = lambda w, x, a: supernet.apply({"params": w}, x, a)  # noqa: E731
  step_fn = darts_lib.make_bilevel_step(
    darts_lib.make_loss(apply, parts["loss_fn"]),
    w_tx,
    alpha_tx,
    parts["mode"],
    schedule,
    wo.momentum,
    wo.weight_decay,
    xi=None if config.xi < 0 else float(config.xi),
    fd_scale=config.fd_scale,
    exact_form=config.exact_form,
  )
  return supernet, {"search": state, "rng": rng}, step_fn


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Search, derive and write genotype.json; return a summary (genotype, PSNR, skips, wall time)."""
  parts = _prepare(config)
  search = loop.SearchRun(
    config, workdir, total=config.epochs, steps_per_unit=config.steps_per_epoch
  )
  supernet, state, step_fn = _init(config, parts)
  state = search.resume(state)
  mesh, space, scale = parts["mesh"], parts["space"], parts["scale"]
  state = parallel.replicate(state, mesh)
  bilevel_step = compile_bilevel_step(step_fn, mesh)
  psnr_fn = jax.jit(_make_psnr_fn(supernet, scale))
  t0, start_epoch = time.time(), search.done
  with search:
    for epoch in range(start_epoch, config.epochs):
      state, record = _epoch(config, parts, bilevel_step, state, epoch, start_epoch, search)
      record["val_psnr"] = float(
        psnr_fn(state["search"].w, state["search"].alpha, parts["val"]["lr"], parts["val"]["hr"])
      )
      record = _alpha_record(space, state["search"].alpha, record)
      scalars = {k: record[k] for k in ("train_loss", "val_loss", "val_psnr", "num_skip", "xi")}
      shown = {
        "psnr": record["val_psnr"],
        "skips": record["num_skip"],
        "loss": record["train_loss"],
      }
      search.end(
        epoch + 1, state, record, shown, {**scalars, "steps_per_sec": record["steps_per_sec"]}
      )
      search.write_json("history.json", search.history)
      if search.is_chief:
        _plot(search, parts)
  summary = _finish(config, parts, search, state["search"].alpha, time.time() - t0)
  summary["step_compiles"] = _cache_size(bilevel_step)
  search.write_json(loop.RESULT_FILE, summary)
  return summary


def shared_weight_scorer(
  config: ml_collections.ConfigDict, workdir: str | os.PathLike, result: dict
) -> loop.Scorer:
  """Return a Scorer of the finished search in `workdir`: the supernet's PSNR at a genotype.

  A genotype is scored as the supernet at its one-hot alpha (`space.one_hot_alpha`: the derived
  network with the shared weights), on the search's validation crops; the step is compiled once.
  The chosen architecture is the one derived from the final alpha (genotype.json's).
  """
  del result  # the final alpha says what genotype.json holds
  parts = _prepare(config)
  supernet, state, _ = _init(config, parts)
  state = loop.restore_final(workdir, state)["search"]
  space, val = parts["space"], parts["val"]
  psnr_fn = jax.jit(_make_psnr_fn(supernet, parts["scale"]))

  def score(tokens) -> np.ndarray:
    alphas = [space.one_hot_alpha(space.decode(t)) for t in np.asarray(tokens)]
    return np.asarray(loop.floats([psnr_fn(state.w, a, val["lr"], val["hr"]) for a in alphas]))

  return loop.Scorer(
    space=space,
    space_name=parts["space_name"],
    space_kwargs=space_kwargs(config),
    scale=parts["scale"],
    searched=space.encode(space.derive(np.asarray(jax.device_get(state.alpha)))),
    score=score,
  )


def _epoch(config, parts, bilevel_step, state, epoch: int, start_epoch: int, search):
  """Return (state, record) after one epoch of bilevel steps (alpha, then w, per step).

  A run stopped inside this epoch saved its position and losses; the epoch goes on from there. A
  stop request checkpoints before the next step (`search.pause`).
  """
  mesh, lo, n = parts["mesh"], jax.process_index() * parts["local_batch"], parts["local_batch"]
  at, carry = search.resumed_at()
  t_epoch, timed = time.time(), config.steps_per_epoch - at
  pending = {k: list(carry.get(k, [])) for k in ("train_loss", "val_loss")}
  xi = carry.get("xi")
  first = epoch * config.steps_per_epoch
  search_state, rng = state["search"], state["rng"]

  def batches(step: int):
    tb = parts["w_sampler"].batch(step, (lo, lo + n))
    vb = parts["a_sampler"].batch(step, (lo, lo + n))
    return parallel.shard_batch(tb, mesh), parallel.shard_batch(vb, mesh)

  prefetch = parallel.Prefetch(
    batches, first + at, first + config.steps_per_epoch, workers=config.data.workers
  )
  with prefetch:  # the next two batches are on the devices before they are asked for
    for i in range(at, config.steps_per_epoch):
      if search.stop_requested:
        saved = {k: loop.floats(v) for k, v in pending.items()}
        xi_saved = None if xi is None else float(xi)
        search.pause(i, {"search": search_state, "rng": rng}, {**saved, "xi": xi_saved})
      tb, vb = prefetch.get(first + i)
      search_state, m = bilevel_step(search_state, tb, vb, rng)
      pending["train_loss"].append(m["train_loss"])
      pending["val_loss"].append(m["val_loss"])
      xi = m["xi"]
      if i == at and epoch == start_epoch and config.steps_per_epoch - at > 1:
        jax.block_until_ready(m)  # steps/s leaves the compilation out
        t_epoch, timed = time.time(), config.steps_per_epoch - at - 1
  record = {
    "epoch": epoch + 1,
    "train_loss": search.finite(pending["train_loss"], first),
    "val_loss": search.finite(pending["val_loss"], first),
  }
  jax.block_until_ready(search_state.alpha)
  record["steps_per_sec"] = timed / max(time.time() - t_epoch, 1e-9)
  record["xi"] = float(xi)
  return {"search": search_state, "rng": rng}, record


def _alpha_record(space, alpha, record: dict) -> dict:
  """Return the epoch record with the derived genotype and softmax(alpha), in the history's order."""
  alpha_np = np.asarray(jax.device_get(alpha))
  genotype = space.derive(alpha_np)
  return {
    "epoch": record["epoch"],
    "train_loss": record["train_loss"],
    "val_loss": record["val_loss"],
    "val_psnr": record["val_psnr"],
    "num_skip": space.num_skip(genotype),
    "genotype": genotype.to_dict(),
    "alpha_softmax": np.round(softmax(alpha_np), 6).tolist(),
    "xi": record["xi"],
    "steps_per_sec": record["steps_per_sec"],
  }


def _finish(config, parts, search, alpha, search_s: float) -> dict:
  """Derive the genotype, write genotype.json, alphas.json and alpha.png; return the summary."""
  space, scale, mode = parts["space"], parts["scale"], parts["mode"]
  alpha_np = np.asarray(jax.device_get(alpha))
  genotype = space.derive(alpha_np)
  num_skip = space.num_skip(genotype)
  last = search.history[-1]
  rkw = retrain_kwargs(config)
  n_params = spaces.get(parts["space_name"], **rkw).count_params(genotype, scale)
  summary = {
    "genotype": genotype.to_dict(),
    "num_skip": num_skip,
    "val_psnr": round(last["val_psnr"], 4),
    "alpha_mode": mode,
    "ops": list(space.op_names),
    "epochs": config.epochs,
    "search_wall_s": round(search_s, 1),
    "steps_per_sec": round(last["steps_per_sec"], 3),
    "retrain_space_kwargs": rkw,
    "retrain_params": n_params,
    "genotype_json": str(search.workdir / "genotype.json"),
  }
  if search.is_chief:
    spaces.save_arch(
      search.workdir / "genotype.json",
      parts["space_name"],
      rkw,
      genotype,
      search_space_kwargs=space_kwargs(config),
      num_skip=num_skip,
      val_psnr=summary["val_psnr"],
      params=n_params,
      alpha_mode=mode,
    )
    search.write_json(
      "alphas.json",
      {
        "ops": list(space.op_names),
        "edges": space.edge_names(),
        "alpha": alpha_np.tolist(),
        "softmax": softmax(alpha_np).tolist(),
      },
    )
    _plot(search, parts)
  return summary


def _plot(search, parts: dict) -> None:
  """Redraw alpha.png from the search history."""
  space = parts["space"]
  plots.plot_history(
    search.history,
    search.workdir / "alpha.png",
    title=f"DARTS on {parts['space_name']} ({len(space.op_names)} ops) x{parts['scale']}",
    ops=space.op_names,
    edges=space.edge_names(),
    max_skip=space.max_skip(),
  )


def _cache_size(jitted) -> int:
  """Return how many times `jitted` was compiled in this process (-1 if JAX does not say)."""
  size = getattr(jitted, "_cache_size", None)
  return int(size()) if callable(size) else -1
