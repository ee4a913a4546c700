"""Weight-sharing search with a sampling strategy (ENAS, DeCoNAS): supernet and policy alternate.

Each epoch (a) trains the shared weights for `train_steps_per_epoch` mini-batches, one freshly
sampled child per mini-batch, then (b) trains the strategy for `controller_steps_per_epoch` steps on
the reward R = PSNR(child, shared weights, validation split) - alpha * cb(child), where cb is the
child's parameter count over that of the most complex child. After the last epoch, `derive` samples
candidates from the trained policy, scores them and writes candidates.json, best.json and
candidates.png. Any space with a supernet and any strategy of `nasr.strategies` fit.
"""

import json
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
from nasr import experiment, parallel, spaces, strategies, writers
from nasr.checkpoint import Checkpointer
from nasr.core.errors import ConfigError
from nasr.estimation import cost, metrics
from nasr.estimation import train as train_lib

SETTINGS = ("CB0_FF0", "CB0_FF1", "CB1_FF0", "CB1_FF1")


def parse_setting(setting: str) -> tuple[bool, bool]:
  """Return (complexity_penalty, fusion_search) of a DeCoNAS setting such as "CB1_FF0"."""
  if setting not in SETTINGS:
    raise ConfigError(f"config.setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
  return setting.startswith("CB1"), setting.endswith("FF1")


def space_kwargs(config: ml_collections.ConfigDict) -> dict:
  """Return the keyword arguments of the searched space (fusion search from config.setting)."""
  kwargs = {k: v for k, v in config.space.items() if k != "name"}
  if "setting" in config:
    kwargs["fusion_search"] = parse_setting(config.setting)[1]
  return kwargs


def strategy_kwargs(config: ml_collections.ConfigDict, space, spec) -> dict:
  """Return the strategy's keyword arguments (0 means "off" for the optional temperature).

  `op_tanh_reduce` becomes the per-head divisor of the tanh constant on the heads that choose
  operations (space.op_heads(), ENAS/DeCoNAS: 1.1 / 2.5), 1 elsewhere.
  """
  kwargs = {k: v for k, v in config.strategy.items() if k not in ("name", "op_tanh_reduce")}
  if "temperature" in kwargs and not kwargs["temperature"]:
    kwargs["temperature"] = None
  reduce = config.strategy.get("op_tanh_reduce", 0.0)
  if reduce and hasattr(space, "op_heads"):
    ops = set(space.op_heads())
    kwargs["head_tanh_reduce"] = tuple(
      float(reduce) if h in ops else 1.0 for h in range(spec.num_heads)
    )
  return kwargs


def val_crops(pairs: data_lib.SRPairs, patch: int) -> dict[str, np.ndarray]:
  """Return centre crops (LR side `patch`) of every validation image, stacked as uint8 arrays.

  One fixed shape keeps the reward function compiled once; the crops come from the validation split
  carved from the training images, never from a benchmark test set.
  """
  s = pairs.scale
  lrs, hrs = [], []
  for name, lr, hr in zip(pairs.names, pairs.lr, pairs.hr, strict=True):
    h, w = lr.shape[:2]
    if min(h, w) < patch:
      raise ConfigError(f"validation image {name!r} LR {h}x{w} is smaller than val_patch={patch}")
    top, left = (h - patch) // 2, (w - patch) // 2
    lrs.append(lr[top : top + patch, left : left + patch])
    hrs.append(hr[top * s : (top + patch) * s, left * s : (left + patch) * s])
  return {"lr": np.stack(lrs), "hr": np.stack(hrs)}


class _Complexity:
  """cb(c) = params(c) / params(most complex child), exact, memoised per architecture."""

  def __init__(self, space, scale: int):
    self._space, self._scale = space, scale
    self._cache: dict[bytes, tuple[int, float]] = {}
    self.max_params = space.count_params(space.max_arch(), scale)

  def __call__(self, tokens: np.ndarray) -> tuple[int, float]:
    key = np.asarray(tokens, np.int32).tobytes()
    if key not in self._cache:
      n = self._space.count_params(self._space.decode(tokens), self._scale)
      self._cache[key] = (n, n / self.max_params)
    return self._cache[key]


def _make_reward_fn(supernet, scale: int):
  """Return psnr(params, lr, hr, tokens[B, L]) -> [B] mean validation PSNR per child (jit once)."""

  def one(params, lr, hr, tokens):
    sr = supernet.apply({"params": params}, train_lib.to_unit(lr), tokens)
    return jnp.mean(metrics.psnr_jax(sr, train_lib.to_unit(hr), scale))

  def many(params, lr, hr, tokens):
    return jax.lax.map(lambda t: one(params, lr, hr, t), tokens)

  return many


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Search, then derive; return a summary (best tokens, PSNR, params, wall time)."""
  # --- Set-up. -------------------------------------------------------------------------------------
  scale = experiment.check_scale(config.scale)
  complexity_penalty, _ = parse_setting(config.setting)
  alpha = float(config.reward.alpha) if complexity_penalty else 0.0
  workdir = experiment.prepare_workdir(workdir)
  space = spaces.get(config.space.name, **space_kwargs(config))
  spec = space.token_spec()
  strategy = strategies.get(config.strategy.name, spec, **strategy_kwargs(config, space, spec))
  loss_fn = experiment.make_loss(config)
  mesh = parallel.make_mesh()
  local_batch = parallel.check_batch_size(config.data.batch_size, mesh)

  # --- Input: training patches; reward on a validation split carved from the training images. -----
  train_pairs, val_pairs = experiment.load_train_val(config, scale)
  sampler = data_lib.PatchSampler(
    train_pairs, config.data.patch_size, config.data.batch_size, config.seed, config.data.augment
  )
  val = val_crops(val_pairs, config.val_patch)
  logging.info(
    "search space %s: %d decisions, %.3g architectures; %d training / %d validation images",
    config.space.name,
    len(spec),
    float(spec.size),
    len(train_pairs),
    len(val_pairs),
  )

  # --- Supernet, strategy and their optimisers. ----------------------------------------------------
  supernet = space.supernet(
    scale,
    skip_inactive=config.skip_inactive,
    remat=config.get("remat", False),
    shifted=config.get("shifted_depthwise", False),
  )
  max_tokens = jnp.asarray(space.encode(space.max_arch()), jnp.int32)
  rng = jax.random.PRNGKey(config.seed)
  w_rng, c_rng, d_rng = jax.random.split(rng, 3)
  x0 = jnp.zeros((1, config.data.patch_size, config.data.patch_size, 3), jnp.float32)
  params = jax.jit(supernet.init)(train_lib.init_key(config.seed), x0, max_tokens)["params"]
  total_w_steps = config.epochs * config.train_steps_per_epoch
  schedule = train_lib.make_schedule(
    config.optim.lr,
    config.optim.schedule,
    total_w_steps,
    config.optim.decay_every,
    config.optim.decay_factor,
  )
  tx = train_lib.make_adam(
    schedule, config.optim.b1, config.optim.b2, grad_clip=config.optim.grad_clip
  )
  w_state = train_lib.create_train_state(params, tx)
  s_state = strategy.init(train_lib.init_key(config.seed + 1))
  complexity = _Complexity(space, scale)
  logging.info(
    "supernet: %d shared parameters; most complex child %d parameters",
    cost.count_params(params),
    complexity.max_params,
  )

  # --- Checkpoint: the whole search state. ---------------------------------------------------------
  ckpt = Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  meta: dict[str, Any] = {"epoch": 0, "history": []}
  if ckpt.latest_step() is not None:
    restored, meta = ckpt.restore({"w": w_state, "strategy": s_state}, ckpt.latest_step())
    w_state, s_state = restored["w"], restored["strategy"]
    logging.info("resumed the search after epoch %d", meta["epoch"])
  repl = parallel.replicated(mesh)
  # Everything the steps touch lives on the same devices (restored arrays come back committed).
  w_state, s_state = jax.device_put((w_state, s_state), repl)

  # --- Steps, each compiled once for the whole run. ------------------------------------------------
  train_step = experiment.compile_train_step(supernet, tx, loss_fn, mesh, supernet=True)
  propose = jax.jit(strategy.propose, static_argnums=2)
  update = jax.jit(strategy.update)
  reward_fn = jax.jit(_make_reward_fn(supernet, scale))
  lo = jax.process_index() * local_batch

  writer = writers.MetricWriter(workdir, is_chief=jax.process_index() == 0)
  progress = writers.Progress(config.epochs, start_step=meta["epoch"], every_s=0, name="epoch")
  t0 = time.time()
  try:
    for epoch in range(meta["epoch"], config.epochs):
      # (a) Shared weights: one freshly sampled child per mini-batch.
      t_epoch = time.time()
      w_losses = []
      for i in range(config.train_steps_per_epoch):
        step = epoch * config.train_steps_per_epoch + i
        tokens, _ = propose(s_state, jax.random.fold_in(w_rng, step), 1)
        batch = {k: v[lo : lo + local_batch] for k, v in sampler.batch(step).items()}
        w_state, m = train_step(w_state, parallel.shard_batch(batch, mesh), w_rng, tokens[0])
        w_losses.append(m["loss"])
      w_loss = experiment.check_finite(w_losses, step - len(w_losses) + 1, ckpt.latest_step())
      t_w = time.time() - t_epoch
      # (b) Strategy: reward = validation PSNR with the shared weights - alpha * cb.
      t_c0 = time.time()
      rewards_seen, psnrs_seen, cbs_seen = [], [], []
      for j in range(config.controller_steps_per_epoch):
        cstep = epoch * config.controller_steps_per_epoch + j
        tokens, _ = propose(s_state, jax.random.fold_in(c_rng, cstep), config.controller_batch)
        psnr = np.asarray(reward_fn(w_state.params, val["lr"], val["hr"], tokens))
        cb = np.array([complexity(t)[1] for t in np.asarray(tokens)])
        reward = psnr - alpha * cb
        s_state, c_metrics = update(s_state, tokens, jnp.asarray(reward, jnp.float32))
        rewards_seen.append(reward.mean())
        psnrs_seen.append(psnr.mean())
        cbs_seen.append(cb.mean())
      t_c = time.time() - t_c0
      record = {
        "epoch": epoch + 1,
        "supernet_loss": w_loss,
        "reward": float(np.mean(rewards_seen)) if rewards_seen else float("nan"),
        "val_psnr": float(np.mean(psnrs_seen)) if psnrs_seen else float("nan"),
        "complexity": float(np.mean(cbs_seen)) if cbs_seen else float("nan"),
        "supernet_steps_per_sec": config.train_steps_per_epoch / max(t_w, 1e-9),
        "controller_steps_per_sec": config.controller_steps_per_epoch / max(t_c, 1e-9),
      }
      if config.controller_steps_per_epoch:
        record.update({f"controller_{k}": float(v) for k, v in c_metrics.items()})
      meta["history"].append(record)
      meta["epoch"] = epoch + 1
      writer.write_scalars(epoch + 1, {k: v for k, v in record.items() if k != "epoch"})
      progress.update(epoch + 1, {"reward": record["reward"], "psnr": record["val_psnr"]}, True)
      ckpt.save(epoch + 1, {"w": w_state, "strategy": s_state}, meta)
  finally:
    ckpt.close()
    writer.close()
  search_s = time.time() - t0

  summary = derive(
    space,
    propose,
    reward_fn,
    w_state.params,
    s_state,
    val,
    complexity,
    alpha,
    config,
    workdir,
    d_rng,
  )
  summary.update(search_wall_s=round(search_s, 1), epochs=config.epochs)
  if meta["history"]:
    last = meta["history"][-1]
    summary.update(
      supernet_steps_per_sec=round(last["supernet_steps_per_sec"], 3),
      controller_steps_per_sec=round(last["controller_steps_per_sec"], 3),
    )
  experiment.write_json(workdir / "search_result.json", summary)
  return summary


def derive(
  space, propose, reward_fn, params, s_state, val, complexity, alpha, config, workdir, rng
) -> dict:
  """Sample candidates from the trained policy, score them with the shared weights, write results.

  `propose` and `reward_fn` are the search's jitted functions; candidates are scored in chunks of
  the controller batch so the reward function compiled for the search is reused as it is.
  """
  scale = int(config.scale)
  tokens, _ = propose(s_state, rng, config.derive.candidates)
  tokens = np.unique(np.asarray(tokens), axis=0)  # a converged policy repeats itself
  chunk = int(config.controller_batch)
  padded = np.concatenate([tokens, np.repeat(tokens[:1], -len(tokens) % chunk, axis=0)])
  psnr = np.concatenate(
    [
      np.asarray(reward_fn(params, val["lr"], val["hr"], jnp.asarray(padded[i : i + chunk])))
      for i in range(0, len(padded), chunk)
    ]
  )[: len(tokens)]
  rows = []
  probe = (1, 32, 32, 3)
  for t, p in zip(tokens, psnr, strict=True):
    arch = space.decode(t)
    n_params, cb = complexity(t)
    child = space.build(arch, scale)
    child_params = jax.eval_shape(child.init, jax.random.PRNGKey(0), jnp.zeros(probe))
    macs = cost.count_macs(child, child_params, probe) / (probe[1] * probe[2])
    rows.append(
      {
        "tokens": [int(v) for v in t],
        "psnr": float(p),
        "params": int(n_params),
        "complexity": float(cb),
        "macs_per_lr_pixel": float(macs),
        "reward": float(p - alpha * cb),
      }
    )
  rows.sort(key=lambda r: -r["reward"])
  workdir = Path(workdir)
  experiment.write_json(workdir / "candidates.json", rows)
  best = rows[0]
  spaces.save_arch(
    workdir / "best.json",
    config.space.name,
    space_kwargs(config),
    space.decode(np.asarray(best["tokens"])),
    **{k: v for k, v in best.items() if k != "tokens"},
  )
  plot_candidates(rows, workdir / "candidates.png", title=f"{config.space.name} x{scale}")
  return {
    "best_tokens": best["tokens"],
    "best_psnr": round(best["psnr"], 4),
    "best_params": best["params"],
    "candidates": len(rows),
    "best_json": str(workdir / "best.json"),
  }


def plot_candidates(rows: list[dict], path: Path, title: str = "") -> None:
  """Draw validation PSNR against parameters for every candidate (the paper's Fig. 4)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  params = np.array([r["params"] for r in rows]) / 1e3
  psnr = np.array([r["psnr"] for r in rows])
  ax.scatter(params, psnr, s=14, alpha=0.7, label="candidates")
  ax.scatter(params[:1], psnr[:1], s=60, marker="*", color="crimson", label="best reward")
  ax.set_xlabel("parameters (K)")
  ax.set_ylabel("validation PSNR with shared weights (dB)")
  ax.set_title(title or "candidates")
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def load_summary(workdir: str | os.PathLike) -> dict:
  """Return the search_result.json of a finished search workdir."""
  path = Path(workdir) / "search_result.json"
  if not path.is_file():
    raise ConfigError(f"{workdir} has no search_result.json: the search has not finished")
  return json.loads(path.read_text())
