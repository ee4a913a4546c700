r"""Controller-step time of the one-shot search, costs looked up on the host vs on the device.

  python -m benchmarks.controller_speed --config=deconas:default --steps=20
  python -m benchmarks.controller_speed --config=deconas:paper --costs_only

Prints, for the config's space and strategy: the cost of a new child from one trace of the whole
network (what every new child cost before the space had cost pieces) and from cached pieces; and
the median time of a controller step (propose `controller_batch` children, score them with the
shared weights on the validation crops, cost, reward, update), synchronised after each step, in
the host path (`one_shot._host_controller_step`: scores read back, costs looked up, reward on the
host) and in the device path (`one_shot.make_controller_step`: one jitted call). Compilation and
a first step are untimed. The shared weights are the supernet's initial ones (the time does not
depend on them).
"""

import statistics
import time

import jax
import numpy as np
from absl import app, flags

from nasr import parallel, spaces
from nasr.experiment import load_config
from nasr.searches import loop, one_shot
from nasr.searches.reward import Reward, _module_cost

_CONFIG = flags.DEFINE_string("config", "deconas:default", "Search config as name:preset.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed controller steps per path.")
_CHILDREN = flags.DEFINE_integer("children", 5, "New children to cost both ways.")
_COSTS_ONLY = flags.DEFINE_bool("costs_only", False, "Stop after costing the new children.")


def _median_ms(fn, steps: int) -> float:
  """Return the median milliseconds of fn(i) over `steps` calls after one untimed call."""
  jax.block_until_ready(fn(-1))
  times = []
  for i in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(i))
    times.append((time.perf_counter() - t0) * 1e3)
  return statistics.median(times)


def main(argv):
  del argv
  name, _, preset = _CONFIG.value.partition(":")
  config = load_config(name, preset or None, lock=False)
  space = spaces.get(config.space.name, **loop.space_kwargs(config))
  norm = config.reward.get("norm", "max")
  reward = Reward(dict(config.reward.terms), space, config.scale, norm)
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()})")
  print(
    f"config {_CONFIG.value}: space {config.space.name}, strategy {config.strategy.name}, "
    f"controller_batch {config.controller_batch}, reward terms {dict(config.reward.terms)}"
  )
  rng = np.random.default_rng(0)
  tokens = space.token_spec().sample(rng, _CHILDREN.value)
  whole, pieces = [], []
  for t in tokens:
    arch = space.decode(t)
    t0 = time.perf_counter()
    _module_cost(space.build(arch, config.scale), (1, 32, 32, 3))
    whole.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    reward.costs(t)
    pieces.append(time.perf_counter() - t0)
  print(
    f"cost of a new child: one trace of the whole network {statistics.median(whole) * 1e3:9.1f} ms;"
    f" cached pieces {statistics.median(pieces) * 1e3:7.2f} ms (median of {len(tokens)})"
  )
  if _COSTS_ONLY.value:
    return
  p = one_shot._prepare(config)
  state = parallel.replicate(one_shot._init_state(p), p.mesh)
  p.val = {**p.val, **parallel.replicate({k: p.val[k] for k in ("lr", "hr")}, p.mesh)}
  steps = {
    "propose": jax.jit(p.strategy.propose, static_argnums=2),
    "update": jax.jit(p.strategy.update),
    "psnr": jax.jit(one_shot.make_psnr_fn(p.supernet, p.scale)),
  }
  params, s0 = state["w"].params, state["strategy"]
  key = jax.random.PRNGKey(1)

  def host(i):
    k = jax.random.fold_in(key, i + 1)
    return one_shot._host_controller_step(p, steps, s0, params, k)

  device_step = one_shot.make_controller_step(p)
  rows = {"host": _median_ms(host, _STEPS.value)}
  if device_step is not None:

    def device(i):
      return device_step(s0, params, p.val["lr"], p.val["hr"], jax.random.fold_in(key, i + 1))

    rows["device"] = _median_ms(device, _STEPS.value)
  for path, ms in rows.items():
    print(f"controller step, costs on the {path:<6}  median {ms:9.2f} ms over {_STEPS.value} steps")
  if len(rows) == 2:
    print(f"host / device time ratio: {rows['host'] / rows['device']:.2f}")


if __name__ == "__main__":
  app.run(main)
