r"""HNAS step times at the authors' search size: supernet, controller, policy, HNAS-A retrain.

  python -m benchmarks.hnas_speed                          # the reference's sizes (below)
  python -m benchmarks.hnas_speed --parts=supernet,controller --repeats=10
  python -m benchmarks.hnas_speed --quick                  # tiny sizes: a smoke run, no comparison

Prints one JSON line per part with the median wall time of a step (each step synchronised; the
compiling call and `--warmup` more calls are not timed) and the compile time (+ one step):

  supernet    the supernet train step at the search size of HNAS (Supplementary B): L=12 layers,
              4 nodes, C=8, x2, batch 16 of 48x48 LR patches, Adam, L1; a fresh architecture
              every step (one compile serves them all), proposed inside the step by the
              controller, as the one-shot search compiles it (nasr.compute.compile_sampled_step)
  controller  one controller step as the reference's controller_trainer.py takes it: propose
              `--controller_batch` children, score them with the supernet's shared weights on a
              batch of `--batch` LR patches (Y-PSNR), cost them (the reward's exact multiply-adds,
              a new child each step, so not cached), then the REINFORCE update; jitted as the
              search jits them (supernet weights as initialised: the time does not depend on them)
  policy      the controller step without the children: propose, then the update on random
              rewards (what the LSTMs cost alone)
  retrain     the HNAS-A train step (configs/archs/hnas_a.json built at C=64), batch 16 of 48x48
              LR patches, Adam, L1

`--normal_ops=reference` keeps the normal cells to the released code's six ops (its
COMPACT_PRIMITIVES: the UDPB commented out) instead of all seven of Table I, the fair comparison
with the reference's step: a proposed UDPB edge becomes an RCAB (UDPB edges are the most expensive
op by far).

The authors' code is timed beside it, in one run, by benchmarks/side_by_side.py (a ratio against a
number from another day or machine means little: BENCHMARKS.md).
"""

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from nasr import compute, parallel, spaces, strategies
from nasr.estimation import losses
from nasr.estimation import train as train_lib
from nasr.searches import one_shot
from nasr.searches.reward import Reward
from nasr.spaces import hnas

PARTS = ("supernet", "controller", "policy", "retrain")
HNAS_A = Path(__file__).resolve().parents[1] / "configs" / "archs" / "hnas_a.json"
# --quick: every part at toy sizes, so a smoke run compiles in seconds.
QUICK = {"layers": 3, "nodes": 2, "channels": 4, "batch": 2, "patch": 12, "retrain_channels": 8}

_PARTS = flags.DEFINE_list(
  "parts", list(PARTS), "Which steps to time: supernet, controller, policy, retrain."
)
_NORMAL_OPS = flags.DEFINE_enum(
  "normal_ops",
  "all",
  ["all", "reference"],
  "Normal ops run: Table I's 7 or the released code's 6 (model/genotypes.py COMPACT_PRIMITIVES).",
)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed steps per part (the median is reported).")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed steps after the compiling one.")
_QUICK = flags.DEFINE_bool("quick", False, "Tiny sizes (no comparison with the reference).")
_LAYERS = flags.DEFINE_integer("layers", 12, "Layers L of the searched network.")
_NODES = flags.DEFINE_integer("nodes", 4, "Intermediate nodes per cell.")
_CHANNELS = flags.DEFINE_integer("channels", 8, "Width C of the supernet.")
_RETRAIN_CHANNELS = flags.DEFINE_integer("retrain_channels", 64, "Width C of the HNAS-A retrain.")
_BATCH = flags.DEFINE_integer("batch", 16, "Batch size (supernet and retrain).")
_PATCH = flags.DEFINE_integer("patch", 48, "LR patch side.")
_SCALE = flags.DEFINE_integer("scale", 2, "Upscaling factor.")
_CONTROLLER_BATCH = flags.DEFINE_integer("controller_batch", 1, "Children per controller step.")
_REMAT = flags.DEFINE_bool("remat", False, "Supernet: recompute each cell in the backward pass.")
_SHIFTED = flags.DEFINE_bool("shifted", False, "Depthwise convs as shifted multiply-adds.")
_UNROLL = flags.DEFINE_integer("unroll", 0, "Supernet layers per scan iteration (0: unrolled).")


def _sizes() -> dict:
  """Return the sizes of this run: the flags, or QUICK's with --quick."""
  sizes = {
    "layers": _LAYERS.value,
    "nodes": _NODES.value,
    "channels": _CHANNELS.value,
    "batch": _BATCH.value,
    "patch": _PATCH.value,
    "retrain_channels": _RETRAIN_CHANNELS.value,
  }
  return {**sizes, **QUICK} if _QUICK.value else sizes


def _median_time(fn, repeats: int, warmup: int) -> tuple[float, float, list[float]]:
  """Return (first call's seconds, median seconds, timed seconds) of fn(i) -> array to sync on."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(0))
  first = time.perf_counter() - t0
  for i in range(warmup):
    jax.block_until_ready(fn(1 + i))
  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(1 + warmup + i))
    times.append(time.perf_counter() - t0)
  return first, float(np.median(times)), times


def _normal_op_columns(space) -> list[int]:
  """Return the token positions of the normal cell's ops (per node: input, op, input, op)."""
  return [4 * j + k for j in range(space.nodes) for k in (1, 3)]


def _as_reference(space, tokens: jax.Array) -> jax.Array:
  """Return token rows [n, T] with --normal_ops=reference's children: UDPB edges become RCABs."""
  if _NORMAL_OPS.value != "reference":
    return tokens
  udpb, rcab = hnas.NORMAL_OPS.index("udpb"), hnas.NORMAL_OPS.index("rcab")
  cols = np.array(_normal_op_columns(space))
  ops = tokens[:, cols]
  return jnp.asarray(tokens).at[:, cols].set(jnp.where(ops == udpb, rcab, ops))


def _batches(n: int, batch: int, patch: int, scale: int, rng) -> list[dict]:
  return [
    {
      "lr": rng.integers(0, 256, (batch, patch, patch, 3), np.uint8),
      "hr": rng.integers(0, 256, (batch, patch * scale, patch * scale, 3), np.uint8),
    }
    for _ in range(n)
  ]


def _train_timer(network, params, sizes: dict, space=None):
  """Return fn(i) running train step i; with `space`, a supernet's as the search runs it (the
  controller proposes step i's architecture inside the step, from the step's folded key)."""
  mesh = parallel.make_mesh()
  repl = parallel.replicated(mesh)
  tx = train_lib.make_adam(train_lib.make_schedule(1e-3, "constant"))
  state = jax.device_put(train_lib.create_train_state(params, tx), repl)
  n = 1 + _WARMUP.value + _REPEATS.value
  rng = np.random.default_rng(0)
  batches = [
    parallel.shard_batch(b, mesh)
    for b in _batches(n, sizes["batch"], sizes["patch"], _SCALE.value, rng)
  ]
  key = jax.random.PRNGKey(0)
  box = {"state": state}
  if space is None:
    step = compute.compile_train_step(network, tx, losses.l1, mesh)
    args = [(batches[i], key) for i in range(n)]
  else:
    strategy = _strategy(space)

    def propose(policy, k, num):
      tokens, aux = strategy.propose(policy, k, num)
      return _as_reference(space, tokens), aux

    step = compute.compile_sampled_step(network, tx, losses.l1, propose, mesh)
    policy = jax.device_put(strategy.init(train_lib.init_key(1)), repl)
    args = [(policy, batches[i], key, jax.random.fold_in(key, i)) for i in range(n)]

  def run(i):
    box["state"], m = step(box["state"], *args[i])
    return m["loss"]

  return run


def _supernet(sizes: dict):
  """Return (space, supernet, its initialised params) at `sizes` with the supernet flags."""
  space = spaces.get(
    "hnas", layers=sizes["layers"], nodes=sizes["nodes"], channels=sizes["channels"]
  )
  net = space.supernet(
    _SCALE.value, remat=_REMAT.value, shifted=_SHIFTED.value, unroll=_UNROLL.value
  )
  x0 = jnp.zeros((1, sizes["patch"], sizes["patch"], 3), jnp.float32)
  max_tokens = jnp.asarray(space.encode(space.max_arch()), jnp.int32)
  return space, net, jax.jit(net.init)(train_lib.init_key(0), x0, max_tokens)["params"]


def _supernet_part(sizes: dict):
  space, net, params = _supernet(sizes)
  setup = {k: sizes[k] for k in ("layers", "nodes", "channels", "batch", "patch")}
  setup.update(remat=_REMAT.value, shifted=_SHIFTED.value, unroll=_UNROLL.value)
  setup["normal_ops"] = _NORMAL_OPS.value
  return _train_timer(net, params, sizes, space), setup


def _strategy(space):
  """Return configs/hnas.py's strategy for `space`."""
  return strategies.get(
    "hierarchical",
    space.token_spec(),
    hidden=100,
    layers=1,
    tanh_constant=1.1,
    learning_rate=3e-4,
    lr_end=1.5e-4,
    decay_steps=40_000,
    baseline_decay=0.99,
    entropy_weight=0.0,
  )


def _controller_part(sizes: dict):
  space, net, params = _supernet(sizes)
  psnr = jax.jit(one_shot.make_psnr_fn(net, _SCALE.value))
  # configs/hnas.py's reward (lam = 0.6, the released code's units).
  reward = Reward({"psnr": 0.6, "macs": -0.4}, space, _SCALE.value, norm="reference")
  batch = _batches(1, sizes["batch"], sizes["patch"], _SCALE.value, np.random.default_rng(1))[0]
  lr, hr = jnp.asarray(batch["lr"]), jnp.asarray(batch["hr"])
  strategy = _strategy(space)
  propose = jax.jit(strategy.propose, static_argnums=2)
  update = jax.jit(strategy.update)
  num = _CONTROLLER_BATCH.value
  box = {"state": strategy.init(train_lib.init_key(1))}

  def run(i):
    tokens, _ = propose(box["state"], jax.random.PRNGKey(i), num)
    tokens = np.asarray(_as_reference(space, tokens))
    ps = np.asarray(psnr(params, lr, hr, jnp.asarray(tokens)))
    costs = reward.batch_costs(tokens)
    r = reward(ps, costs).astype(np.float32)
    box["state"], m = update(box["state"], jnp.asarray(tokens), jnp.asarray(r))
    return m

  setup = {
    "layers": sizes["layers"],
    "nodes": sizes["nodes"],
    "channels": sizes["channels"],
    "batch": sizes["batch"],
    "patch": sizes["patch"],
    "children": _CONTROLLER_BATCH.value,
    "hidden": 100,
    "normal_ops": _NORMAL_OPS.value,
  }
  return run, setup


def _policy_part(sizes: dict):
  space = spaces.get(
    "hnas", layers=sizes["layers"], nodes=sizes["nodes"], channels=sizes["channels"]
  )
  strategy = _strategy(space)
  propose = jax.jit(strategy.propose, static_argnums=2)
  update = jax.jit(strategy.update)
  num = _CONTROLLER_BATCH.value
  rewards = np.random.default_rng(0).normal(30.0, 1.0, (64, num)).astype(np.float32)
  box = {"state": strategy.init(train_lib.init_key(1))}

  def run(i):
    tokens, _ = propose(box["state"], jax.random.PRNGKey(i), num)
    box["state"], m = update(box["state"], tokens, jnp.asarray(rewards[i % len(rewards)]))
    return m

  setup = {"layers": sizes["layers"], "nodes": sizes["nodes"], "children": num, "hidden": 100}
  return run, setup


def _retrain_part(sizes: dict):
  if _QUICK.value:
    space = spaces.get(
      "hnas", layers=sizes["layers"], nodes=sizes["nodes"], channels=sizes["retrain_channels"]
    )
    arch, name = space.max_arch(), "max_arch (quick)"
  else:
    space, arch = spaces.load_arch(HNAS_A, channels=sizes["retrain_channels"])
    name = "HNAS-A"
  net = space.build(arch, _SCALE.value, shifted=_SHIFTED.value)
  params = compute.init_params(net, sizes["patch"], 0)
  setup = {
    "arch": name,
    "channels": sizes["retrain_channels"],
    "batch": sizes["batch"],
    "patch": sizes["patch"],
    "params": space.count_params(arch, _SCALE.value),
  }
  return _train_timer(net, params, sizes), setup


def main(argv):
  del argv
  unknown = sorted(set(_PARTS.value) - set(PARTS))
  if unknown:
    raise app.UsageError(f"--parts: unknown part(s) {unknown}; the parts are {', '.join(PARTS)}")
  sizes = _sizes()
  backend = jax.default_backend()
  device = f"{jax.devices()[0].device_kind} x{jax.device_count()} ({backend})"
  makers = {
    "supernet": _supernet_part,
    "controller": _controller_part,
    "policy": _policy_part,
    "retrain": _retrain_part,
  }
  for part in PARTS:
    if part not in _PARTS.value:
      continue
    run, setup = makers[part](sizes)
    first, median, times = _median_time(run, _REPEATS.value, _WARMUP.value)
    row = {
      "part": part,
      "median_s": round(median, 5),
      "times_s": [round(t, 5) for t in times],
      "first_call_s": round(first, 2),  # compile + one step
      "device": device,
      "scale": _SCALE.value,
      "quick": _QUICK.value,
      **setup,
    }
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
  app.run(main)
