"""One-shot (weight-sharing) search for any SupernetSpace with any strategy: ENAS, DeCoNAS, HNAS.

Each epoch (a) trains the shared weights for `train_steps_per_epoch` mini-batches, one freshly
sampled child per mini-batch, then (b) trains the strategy for `controller_steps_per_epoch` steps on
the reward of `controller_batch` children, each scored with the shared weights on centre crops of
a validation split carved from the training images. The reward is a weighted sum of terms
(`config.reward.terms`, see nasr.searches.reward): DeCoNAS CB1 is {"psnr": 1, "params": -2}, HNAS
{"psnr": 0.6, "macs": -0.4}. After the last epoch, `derive` samples candidates from the trained
policy, scores them and writes candidates.json (sorted by reward), best.json (for
`launch.train --config.arch=W/best.json`) and candidates.png.

After every epoch a strategy with a learned policy is probed (`_policy_record`): its entropy
against the maximum (the uniform policy's) and its per-decision choice probabilities go into the
epoch's record, controller.png draws them, and a warning says when, after half the run, the
policy is still uniform (DeCoNAS's default CPU run: entropy 20.788 of 20.794 after 300 updates).

The supernet step and the scoring function are compiled once for the whole run: the sampled
architecture enters them as an int32 array. The whole state (shared weights, optimiser, strategy)
is checkpointed after every epoch; a killed search resumes and reaches the same result.

Few-shot NAS (Zhao et al. 2021) is two optional keys, absent from the presets: `init_from`, a
finished one-shot search's workdir whose final shared weights start this run's (the optimiser
starts afresh), and `sampling.fix`, "D=C": decision D always takes choice C in the shared-weight
steps, so the run trains the sub-supernet of the members with choice C at D (`nasr bench
evaluate`'s "few_shot=D" splits a search that way).

A paper's switches are plain keys of its config (DeCoNAS's CB0: reward.terms.params = 0; FF1:
space.fusion_search) or options of its strategy (ENAS's op_tanh_reduce): this loop knows none.
"""

import dataclasses
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

from nasr import compute, parallel, plots, spaces, strategies, writers
from nasr import data as data_lib
from nasr.core.checks import check_scale
from nasr.core.errors import ConfigError
from nasr.estimation import cost, metrics
from nasr.estimation import latency as latency_lib
from nasr.estimation import train as train_lib
from nasr.estimation.evaluate import score_images
from nasr.inference import bicubic_upscaler
from nasr.searches import loop
from nasr.searches.reward import COST_TERMS, Reward, child_macs_per_pixel
from nasr.spaces.base import SupernetSpace, require

# Samples drawn from the policy after every epoch (`_policy_record`); with 200 every frequency is a
# multiple of 0.005, exact at the 3 digits kept, so each decision's row sums to 1.
PROBE_SAMPLES = 200
# Folded into the seed's key for the probe: a stream of its own, so the run's three streams (split
# from the seed's key) and everything they decide are those of a run without diagnostics.
_PROBE_STREAM = 0x9B0BE
_FAIR_STREAM = 0xFA12  # the fair sampler's cycle orders: a stream of their own
# An entropy above this fraction of its maximum after half the run: the policy has not moved.
STUCK_RATIO = 0.999
# How the shared-weight steps pick their child (config.sampling.mode), by index in the step.
SAMPLING = ("policy", "uniform", "fair")


def fixed_choice(config: ml_collections.ConfigDict, spec) -> tuple[int, int] | None:
  """Return (decision, choice) of config.sampling.fix ("D=C"), or None when it is unset."""
  text = str(config.sampling.get("fix", "") or "")
  if not text:
    return None
  d, sep, c = text.partition("=")
  try:
    d, c = int(d), int(c)
  except ValueError:
    d = c = -1
  if not sep or not 0 <= d < len(spec) or not 0 <= c < spec.choices[d]:
    raise ConfigError(
      f"config.sampling.fix must be 'D=C', decision D's choice C (the space's {len(spec)} "
      f"decisions have {list(spec.choices)} choices), got {text!r}"
    )
  return d, c


def child_sampler(spec, propose: Callable, fix: tuple[int, int] | None = None) -> Callable:
  """Return sample(policy, key, num) -> (tokens [num, L], {}) for `compute.compile_sampled_step`.

  `policy` is (strategy state, mode, step, fair key): mode 0 samples from the strategy
  (`propose`), 1 uniformly, 2 fairly: within each cycle of `max(spec.choices)` steps each decision
  takes every choice index once in a random order per cycle, reduced modulo its own number of
  choices (exactly FairNAS's strict fairness where a decision has the most choices, nearly so
  elsewhere). The mode is data: one compiled step serves every mode of a run. `fix` (decision,
  choice) pins one decision whatever the mode (a few-shot sub-supernet).
  """
  # A numpy constant, not a device array: the step is compiled inside loop.on_device, and
  # lowering a closed-over device array reads it on the host (an error under the guard on GPUs).
  choices = np.asarray(spec.choices, np.int32)
  width, n = max(spec.choices), len(spec)

  def sample(policy, key, num):
    s_state, mode, step, fair_key = policy
    from_policy, _ = propose(s_state, key, num)
    uniform = jax.random.randint(jax.random.fold_in(key, 1), (num, n), 0, choices, jnp.int32)
    cycle = jax.random.fold_in(fair_key, step // width)
    orders = jax.vmap(lambda i: jax.random.permutation(jax.random.fold_in(cycle, i), width))(
      jnp.arange(n)
    )
    fair = jnp.broadcast_to(orders[:, step % width].astype(jnp.int32) % choices, (num, n))
    tokens = jnp.select([mode == 0, mode == 1], [from_policy.astype(jnp.int32), uniform], fair)
    if fix is not None:
      tokens = tokens.at[:, fix[0]].set(fix[1])
    return tokens, {}

  return sample


def sampling_mode(config: ml_collections.ConfigDict, epoch: int) -> str:
  """Return how epoch `epoch`'s shared-weight steps sample (uniform during the warm-up)."""
  s = config.sampling
  return "uniform" if epoch < int(s.warmup_epochs) else str(s.mode)


def make_psnr_fn(supernet, scale: int) -> Callable:
  """Return psnr(params, lr, hr, tokens[B, L]) -> [B] mean validation PSNR per child (jit once)."""

  def one(params, lr, hr, tokens):
    sr = supernet.apply({"params": params}, train_lib.to_unit(lr), tokens)
    return jnp.mean(metrics.psnr_jax(sr, train_lib.to_unit(hr), scale))

  def many(params, lr, hr, tokens):
    return jax.lax.map(lambda t: one(params, lr, hr, t), tokens)

  return many


@dataclasses.dataclass
class _Parts:
  """What a one-shot run is made of, built once by `_prepare`."""

  config: ml_collections.ConfigDict
  scale: int
  space: Any
  strategy: strategies.Strategy
  mesh: Any
  sampler: data_lib.PatchSampler
  val: dict
  supernet: Any
  tx: Any
  reward: Reward
  loss_fn: Callable
  local_batch: int


def _prepare(config: ml_collections.ConfigDict) -> _Parts:
  """Return the run's parts; everything a user can get wrong fails here, before a step runs."""
  scale = check_scale(config.scale, "config.scale")
  if config.sampling.mode not in SAMPLING:
    raise ConfigError(
      f"config.sampling.mode must be one of {', '.join(SAMPLING)}, got {config.sampling.mode!r}"
    )
  space = spaces.get(config.space.name, **loop.space_kwargs(config))
  require(space, SupernetSpace, "one-shot")
  spec = space.token_spec()
  fixed_choice(config, spec)  # a bad sampling.fix fails before any data is read
  strategy = strategies.get(config.strategy.name, spec, **loop.strategy_options(config))
  loss_fn = compute.make_config_loss(config)
  mesh = parallel.make_mesh()
  local_batch = parallel.check_batch_size(config.data.batch_size, mesh)
  train_pairs, val_pairs = data_lib.load_train_val(config.data, scale, config.seed)
  sampler = data_lib.PatchSampler(
    train_pairs, config.data.patch_size, config.data.batch_size, config.seed, config.data.augment
  )
  val = data_lib.center_crops(val_pairs, config.val_patch)
  logging.info(
    "search space %s: %d decisions, %.3g architectures; %d training / %d validation images",
    config.space.name,
    len(spec),
    float(spec.size),
    len(train_pairs),
    len(val_pairs),
  )
  supernet = space.supernet(scale, **compute.supernet_options(config, space))
  o = config.optim
  total_w_steps = config.epochs * config.train_steps_per_epoch
  schedule = train_lib.make_schedule(
    o.lr, o.schedule, total_w_steps, o.decay_every, o.decay_factor, lr_end=o.get("lr_end", 0.0)
  )
  tx = train_lib.make_adam(schedule, o.b1, o.b2, grad_clip=o.grad_clip)
  terms = {k: float(v) for k, v in config.reward.terms.items()}
  reward = Reward(
    terms,
    space,
    scale,
    config.reward.get("norm", "max"),
    latency_side=config.reward.get("latency_side", 128),
  )
  return _Parts(
    config, scale, space, strategy, mesh, sampler, val, supernet, tx, reward, loss_fn, local_batch
  )


def _init_state(p: _Parts) -> dict:
  """Return the initial search state: shared weights with their optimiser, and the strategy."""
  max_tokens = jnp.asarray(p.space.encode(p.space.max_arch()), jnp.int32)
  x0 = jnp.zeros((1, p.config.data.patch_size, p.config.data.patch_size, 3), jnp.float32)
  key = train_lib.init_key(p.config.seed)
  params = jax.jit(p.supernet.init)(key, x0, max_tokens)["params"]
  logging.info(
    "supernet: %d shared parameters; most complex child %d parameters",
    cost.count_params(params),
    p.reward.max_cost["params"],
  )
  state = {
    "w": train_lib.create_train_state(params, p.tx),
    "strategy": p.strategy.init(train_lib.init_key(p.config.seed + 1)),
  }
  parent = str(p.config.get("init_from", "") or "")
  if parent:  # few-shot: a sub-supernet starts from its parent's weights, its optimiser afresh
    params = loop.restore_final(parent, state)["w"].params
    logging.info("shared weights from %s", parent)
    state["w"] = train_lib.create_train_state(params, p.tx)
  return state


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Search, then derive; return a summary (best tokens, PSNR, params, wall time)."""
  p = _prepare(config)
  spec = p.space.token_spec()
  n_w, n_c = config.train_steps_per_epoch, config.controller_steps_per_epoch
  search = loop.SearchRun(config, workdir, total=config.epochs, steps_per_unit=n_w + n_c)
  state = search.resume(_init_state(p))
  # Everything the steps touch lives on the same devices (restored arrays come back committed).
  state = parallel.replicate(state, p.mesh)
  steps = {
    "train": compute.compile_sampled_step(
      p.supernet,
      p.tx,
      p.loss_fn,
      child_sampler(spec, p.strategy.propose, fixed_choice(config, spec)),
      p.mesh,
    ),
    "propose": jax.jit(p.strategy.propose, static_argnums=2),
    "update": jax.jit(p.strategy.update),
    "psnr": jax.jit(make_psnr_fn(p.supernet, p.scale)),
    "controller": make_controller_step(p),
  }
  # The validation crops go to the devices once, not with every controller step.
  p.val = {**p.val, **parallel.replicate({k: p.val[k] for k in ("lr", "hr")}, p.mesh)}
  w_rng, c_rng, d_rng = jax.random.split(jax.random.PRNGKey(config.seed), 3)
  probe_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), _PROBE_STREAM)
  # One warning per run: a resumed run that had warned before its stop does not warn again.
  warned = any(_stuck(h, config.epochs) for h in search.history)
  t0 = time.time()
  with search:
    for epoch in range(search.done, config.epochs):
      at, carry = search.resumed_at()  # a run stopped inside this epoch saved its position
      t_epoch = time.time()
      state, w_loss = _train_shared(p, steps, state, epoch, w_rng, search, at, carry)
      t_w = carry.get("t_w", time.time() - t_epoch)
      t_c0 = time.time()
      warmup = epoch < config.sampling.warmup_epochs  # the weights warm up; the strategy waits
      state, record = (
        (state, dict.fromkeys(("reward", "val_psnr", "complexity"), float("nan")))
        if warmup
        else _train_strategy(
          p,
          steps,
          state,
          epoch,
          c_rng,
          search,
          max(at - n_w, 0),
          {**carry, "t_w": t_w, "supernet_loss": w_loss},
        )
      )
      t_c = time.time() - t_c0
      record = {
        "epoch": epoch + 1,
        "supernet_loss": w_loss,
        **record,
        "supernet_steps_per_sec": n_w / max(t_w, 1e-9),
        "controller_steps_per_sec": (0 if warmup else n_c) / max(t_c, 1e-9),
        **_policy_record(p, steps, state["strategy"], probe_rng),
      }
      shown = {"reward": record["reward"], "psnr": record["val_psnr"]}
      # metrics.jsonl holds scalars: the probabilities stay in the history (checkpoint metadata).
      scalars = {k: v for k, v in record.items() if k not in ("epoch", "decision_probs")}
      search.end(epoch + 1, state, record, shown, scalars)
      if not warned and _stuck(record, config.epochs):
        warned = True
        _warn_stuck(record, config)
  summary = derive(p, steps, state, search.workdir, d_rng, search.history)
  summary.update(search_wall_s=round(time.time() - t0, 1), epochs=config.epochs)
  if any("entropy_ratio" in h for h in search.history):
    summary["policy_stuck"] = any(_stuck(h, config.epochs) for h in search.history)
  if search.history:
    last = search.history[-1]
    summary.update(
      supernet_steps_per_sec=round(last["supernet_steps_per_sec"], 3),
      controller_steps_per_sec=round(last["controller_steps_per_sec"], 3),
    )
  search.write_json(loop.RESULT_FILE, summary)
  return summary


def make_controller_step(p: _Parts) -> Callable | None:
  """Return step(strategy, params, lr, hr, key) -> (strategy, metrics), jitted: propose
  `controller_batch` children, score them with the shared weights, cost them from the space's
  cost table, reward and update the strategy, all in one call on the devices; None for a space
  without a cost table (the host computes the costs then, `_host_controller_step`)."""
  costs_fn = p.reward.device_costs()
  if costs_fn is None:
    return None
  psnr_fn, num = make_psnr_fn(p.supernet, p.scale), int(p.config.controller_batch)

  def step(s_state, params, lr, hr, key):
    tokens, aux = p.strategy.propose(s_state, key, num)
    psnr = psnr_fn(params, lr, hr, tokens)
    costs = costs_fn(tokens)
    reward = p.reward(psnr, costs, aux.get("entropy"))
    s_state, c_metrics = p.strategy.update(s_state, tokens, reward.astype(jnp.float32))
    seen = {"reward": reward, "val_psnr": psnr, "complexity": costs["params"]}
    return s_state, {"seen": {k: jnp.mean(v) for k, v in seen.items()}, "c_metrics": c_metrics}

  return jax.jit(step)


def _host_controller_step(p: _Parts, steps, s_state, params, key):
  """Return (strategy, metrics) as `make_controller_step`'s, the costs looked up on the host."""
  c = p.config
  tokens, aux = steps["propose"](s_state, key, c.controller_batch)
  psnr = np.asarray(steps["psnr"](params, p.val["lr"], p.val["hr"], tokens))
  costs = p.reward.batch_costs(tokens)
  entropy = np.asarray(aux["entropy"], np.float64) if "entropy" in aux else None
  reward = p.reward(np.asarray(psnr, np.float64), costs, entropy)
  s_state, c_metrics = steps["update"](s_state, tokens, jnp.asarray(reward, jnp.float32))
  seen = {"reward": reward.mean(), "val_psnr": psnr.mean(), "complexity": costs["params"].mean()}
  return s_state, {"seen": seen, "c_metrics": c_metrics}


def _train_shared(
  p: _Parts, steps, state, epoch: int, w_rng, search, at: int = 0, carry: dict | None = None
) -> tuple[dict, float]:
  """Return (state, mean loss) after one epoch of shared-weight steps, one child per batch.

  A run stopped inside this phase saved `at` steps and their losses (`carry`); it goes on from
  there. A stop request checkpoints before the next step (`search.pause`).
  """
  n = p.config.train_steps_per_epoch
  local_batch = p.local_batch
  lo = jax.process_index() * local_batch
  carry = carry or {}
  if "supernet_loss" in carry:  # the phase was over when the run stopped: its loss was saved
    return state, float(carry["supernet_loss"])
  w_state, losses = state["w"], list(carry.get("w_losses", []))
  mode = jnp.int32(SAMPLING.index(sampling_mode(p.config, epoch)))
  fair_key = jax.random.fold_in(w_rng, _FAIR_STREAM)

  def batch(step: int):
    local = p.sampler.batch(step, (lo, lo + local_batch))
    return parallel.shard_batch(local, p.mesh)

  # The child is sampled inside the step and the next batch is on the devices before it is asked
  # for: nothing waits for the host within the phase (the losses are read at its end).
  with parallel.Prefetch(
    batch, epoch * n + at, epoch * n + n, workers=p.config.data.workers
  ) as batches:
    for i in range(at, n):
      if search.stop_requested:
        search.pause(i, {**state, "w": w_state}, {"w_losses": loop.floats(losses)})
      step = epoch * n + i
      batch = batches.get(step)
      with loop.on_device():
        key = jax.random.fold_in(w_rng, step)
        policy = (state["strategy"], mode, jnp.int32(step), fair_key)
        w_state, m = steps["train"](w_state, policy, batch, w_rng, key)
      losses.append(m["loss"])
  loss = search.finite(losses, epoch * n) if n else float("nan")
  return {**state, "w": w_state}, loss


def _train_strategy(
  p: _Parts, steps, state, epoch: int, c_rng, search, at: int = 0, carry: dict | None = None
) -> tuple[dict, dict]:
  """Return (state, epoch record) after the strategy's steps on the children's rewards.

  `at` controller steps of this epoch were done before a stop; `carry` holds what they saw.
  """
  c, carry = p.config, carry or {}
  seen = {"reward": [], "val_psnr": [], "complexity": []}
  seen.update({k: list(v) for k, v in carry.get("seen", {}).items()})
  s_state, c_metrics = state["strategy"], dict(carry.get("c_metrics", {}))
  params = state["w"].params
  for j in range(at, c.controller_steps_per_epoch):
    if search.stop_requested:
      search.pause(
        c.train_steps_per_epoch + j,
        {**state, "strategy": s_state},
        {
          "supernet_loss": carry["supernet_loss"],
          "t_w": carry["t_w"],
          "seen": {k: loop.floats(v) for k, v in seen.items()},
          "c_metrics": {k: float(v) for k, v in c_metrics.items()},
        },
      )
    key = jax.random.fold_in(c_rng, epoch * c.controller_steps_per_epoch + j)
    if steps.get("controller") is None:
      s_state, m = _host_controller_step(p, steps, s_state, params, key)
    else:
      with loop.on_device():  # the step's values stay on the devices until the epoch ends
        s_state, m = steps["controller"](s_state, params, p.val["lr"], p.val["hr"], key)
    for k, v in m["seen"].items():
      seen[k].append(v)
    c_metrics = m["c_metrics"]
  # Python floats, as a resumed epoch restores them: its means come out the same.
  seen = {k: loop.floats(v) for k, v in seen.items()}
  record = {k: float(np.mean(v)) if v else float("nan") for k, v in seen.items()}
  record.update({f"controller_{k}": float(v) for k, v in c_metrics.items()})
  return {**state, "strategy": s_state}, record


def _policy_record(p: _Parts, steps, s_state, probe_rng) -> dict:
  """Return the policy's entropy, its maximum, their ratio and per-decision choice probabilities.

  Estimated from `PROBE_SAMPLES` sequences sampled from the policy as the epoch left it: the
  entropy is the mean of their summed per-step entropies, the probabilities ("decision_probs",
  one list per decision) the frequencies of their choices. Empty without a learned policy (random
  search, GP-NAS) or without a decision to learn (every position has one choice).
  """
  spec = p.space.token_spec()
  top = strategies.max_entropy(spec)
  if not p.strategy.policy or top <= 0:
    return {}
  # Sampled afresh rather than counted from the epoch's own children: those are few (DeCoNAS
  # default: 20 per epoch) and come from 20 successive policies; these come from the policy the
  # epoch ended with, depend on the checkpointed state alone (a stopped and resumed epoch records
  # the same numbers without carrying its samples) and, drawn with the same key every epoch, stay
  # identical while the policy does, so what changes between epochs is the policy, not the noise.
  tokens, aux = steps["propose"](s_state, probe_rng, PROBE_SAMPLES)
  if "entropy" not in aux:
    return {}
  entropy = float(np.mean(np.asarray(aux["entropy"], np.float64)))
  return {
    "entropy": entropy,
    "entropy_max": top,
    "entropy_ratio": entropy / top,
    "decision_probs": strategies.decision_frequencies(np.asarray(tokens), spec),
  }


def policy_stuck(epoch: int, epochs: int, entropy_ratio: float) -> bool:
  """Return whether, past half of `epochs`, the policy's entropy is above STUCK_RATIO of its max."""
  return epoch > epochs / 2 and entropy_ratio > STUCK_RATIO


def _stuck(record: dict, epochs: int) -> bool:
  """Return `policy_stuck` for an epoch's record (False when it holds no entropy)."""
  ratio = record.get("entropy_ratio")
  return ratio is not None and policy_stuck(record["epoch"], epochs, float(ratio))


def _warn_stuck(record: dict, config: ml_collections.ConfigDict) -> None:
  """Log that the controller's policy is still (almost) uniform, and what to change."""
  logging.warning(
    "the controller's policy has not moved: entropy %.4f of a maximum %.4f nats (ratio %.5f) "
    "after %d of %d epochs; try a higher strategy.%s.learning_rate, more controller updates per "
    "epoch (controller_steps_per_epoch=%d) or fewer supernet steps between them "
    "(train_steps_per_epoch=%d)",
    record["entropy"],
    record["entropy_max"],
    record["entropy_ratio"],
    record["epoch"],
    config.epochs,
    config.strategy.name,
    config.controller_steps_per_epoch,
    config.train_steps_per_epoch,
  )


def _score(p: _Parts, steps, params, tokens: np.ndarray) -> np.ndarray:
  """Return the shared-weight PSNR of each token row, in chunks of the controller batch.

  Chunks keep the scoring function's input shape, so the function compiled for the search is
  reused as it is.
  """
  chunk = int(p.config.controller_batch)
  padded = np.concatenate([tokens, np.repeat(tokens[:1], -len(tokens) % chunk, axis=0)])
  psnr = [
    np.asarray(steps["psnr"](params, p.val["lr"], p.val["hr"], jnp.asarray(padded[i : i + chunk])))
    for i in range(0, len(padded), chunk)
  ]
  return np.concatenate(psnr)[: len(tokens)]


def shared_weight_scorer(
  config: ml_collections.ConfigDict, workdir: str | os.PathLike, result: dict
) -> loop.Scorer:
  """Return a Scorer of the finished search in `workdir`: its supernet's PSNR for any tokens.

  The children are scored as the search scored them (the same validation crops, the scoring
  function compiled once); `result` (its search_result.json) names the chosen architecture.
  """
  p = _prepare(config)
  state = loop.restore_final(workdir, _init_state(p))
  steps = {"psnr": jax.jit(make_psnr_fn(p.supernet, p.scale))}
  params = state["w"].params
  return loop.Scorer(
    space=p.space,
    space_name=config.space.name,
    space_kwargs=loop.space_kwargs(config),
    scale=p.scale,
    searched=np.asarray(result["best_tokens"], np.int32),
    score=lambda tokens: _score(p, steps, params, np.asarray(tokens, np.int32)).astype(np.float64),
  )


def derive(p: _Parts, steps, state, workdir: Path, rng, history: list[dict] | None = None) -> dict:
  """Sample candidates from the trained policy, score them with the shared weights, write results."""
  c = p.config
  tokens, _ = steps["propose"](state["strategy"], rng, c.derive.candidates)
  tokens = np.unique(np.asarray(tokens), axis=0)  # a converged policy repeats itself
  psnr = _score(p, steps, state["w"].params, tokens)
  rows = []
  for t, ps in zip(tokens, psnr, strict=True):
    costs = p.reward.costs(t)
    row = {
      "tokens": [int(v) for v in t],
      "psnr": float(ps),
      "params": int(costs["params"]),
      "complexity": float(costs["params_ratio"]),
      "macs_per_lr_pixel": float(
        costs["macs"]
        if "macs" in costs
        else child_macs_per_pixel(p.space, p.space.decode(t), p.scale)
      ),
    }
    if "macs" in costs:
      row["macs_ratio"] = float(costs["macs_ratio"])
    if "latency" in costs:  # the prediction the reward used, beside a measurement of the network
      side = p.reward.latency_side
      child = p.space.build(p.space.decode(t), p.scale)
      row["latency_pred_ms"] = round(float(costs["latency"]), 4)
      row["latency_ms"] = latency_lib.network_ms(child, (1, side, side, 3))["median_ms"]
      row["latency_ratio"] = float(costs["latency_ratio"])
    terms = {k: costs[f"{k}_ratio"] for k in COST_TERMS if f"{k}_ratio" in costs}
    # Candidates are ranked without the exploration bonus: it rewards sampling, not networks.
    row["reward"] = float(p.reward(ps, terms, entropy=0.0))
    rows.append(row)
  rows.sort(key=lambda r: -r["reward"])
  if jax.process_index() == 0:
    _write_derived(p, rows, Path(workdir), history)
  best = rows[0]
  return {
    "best_tokens": best["tokens"],
    "best_psnr": round(best["psnr"], 4),
    "best_params": best["params"],
    "candidates": len(rows),
    "best_json": str(Path(workdir) / "best.json"),
  }


def _write_derived(
  p: _Parts, rows: list[dict], workdir: Path, history: list[dict] | None = None
) -> None:
  """Write candidates.json, best.json, candidates.png and (with a learned policy) controller.png."""
  writers.write_json(workdir / "candidates.json", rows)
  best = rows[0]
  spaces.save_arch(
    workdir / "best.json",
    p.config.space.name,
    loop.space_kwargs(p.config),
    p.space.decode(np.asarray(best["tokens"])),
    **{k: v for k, v in best.items() if k != "tokens"},
  )
  title = f"{p.config.space.name} x{p.scale}"
  # Bicubic on the same crops and metric as the children: the line a searched network must beat.
  crops = (
    (str(i), lr, hr) for i, (lr, hr) in enumerate(zip(p.val["lr"], p.val["hr"], strict=True))
  )
  bicubic = score_images(bicubic_upscaler(p.scale), crops, p.scale)["psnr"]
  plots.plot_candidates(
    rows,
    workdir / "candidates.png",
    title=title,
    cost="macs_per_lr_pixel" if "macs" in p.reward.weights else "params",
    bicubic_psnr=bicubic,
    history=history,
  )
  if history and any("decision_probs" in h for h in history):
    spec = p.space.token_spec()
    plots.plot_controller(
      history,
      workdir / "controller.png",
      title=title,
      decisions=[spec.name(i) for i in range(len(spec))],
      choices=[spec.choice_labels(i) for i in range(len(spec))],
      samples=PROBE_SAMPLES,
      threshold=STUCK_RATIO,
    )
