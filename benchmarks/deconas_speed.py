r"""Supernet train-step speed and compile time of the DeCoNAS space, masked vs skip_inactive.

  python -m benchmarks.deconas_speed                       # paper size: N=16, M=8, C=64, 16 x 64x64
  python -m benchmarks.deconas_speed --blocks=4 --nodes=4 --batch=4 --patch=32 --steps=3   # CPU-sized

Prints, on the current device: compile time, steps/s and peak memory of the supernet train step
(one freshly sampled architecture per step, as the search does) for the masking and the lax.cond
(skip_inactive) supernet, with `--depthwise` convs as shifted multiply-adds and/or as
conv_general_dilated, and of the stand-alone DeCoNASNet (the paper's tokens at N=4, M=4, C=64)
train step at the same batch. The step is compiled ahead of time (compile time alone), run once
untimed, then timed. Peak memory is the device's measured peak where it reports one (GPU), else
XLA's compile-time estimate of the step's buffers (CPU). `--remat` recomputes each DNB in the
backward pass (needed for the paper size on a 24 GB host).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from nasr import spaces
from nasr.estimation import losses
from nasr.estimation import train as train_lib

_BLOCKS = flags.DEFINE_integer("blocks", 16, "DNBs N of the searched space.")
_NODES = flags.DEFINE_integer("nodes", 8, "Mix nodes M per DNB.")
_CHANNELS = flags.DEFINE_integer("channels", 64, "Feature width C.")
_BATCH = flags.DEFINE_integer("batch", 16, "Batch size.")
_PATCH = flags.DEFINE_integer("patch", 64, "LR patch side.")
_SCALE = flags.DEFINE_integer("scale", 2, "Upscaling factor.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps after the compiling one.")
_VARIANTS = flags.DEFINE_list("variants", ["mask", "skip", "child"], "mask, skip and/or child.")
_WARMUP = flags.DEFINE_bool("warmup", True, "Run one untimed step after compiling.")
_REMAT = flags.DEFINE_bool("remat", False, "Recompute each DNB in the supernet's backward pass.")
_UNROLL = flags.DEFINE_integer(
  "unroll",
  0,
  "DNBs per scan iteration of the supernet; 0 = its default (1 with remat or shifted, else N).",
)
_DEPTHWISE = flags.DEFINE_list(
  "depthwise",
  ["shifted"],
  "Supernet depthwise convs: shifted (multiply-adds of shifted slices) and/or conv "
  "(conv_general_dilated); each variant is timed with each.",
)

PAPER_TOKENS = [7, 6, 4, 3, 0, 2, 2, 3, 4, 1]


def _peak_bytes(compiled) -> tuple[float, str]:
  """Return (bytes, source): the device's measured peak, else XLA's compile-time estimate."""
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return float(stats["peak_bytes_in_use"]), "measured peak"
  mem = compiled.memory_analysis()
  total = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
  return float(total - mem.alias_size_in_bytes), "XLA estimate"


def _time_steps(step, state, batches, archs):
  """Return (compile_s, steps_per_s, peak bytes, source): compile ahead, then time the steps."""
  rngs = [jax.random.PRNGKey(i) for i in range(len(batches))]
  t0 = time.perf_counter()
  compiled = step.lower(state, batches[0], rngs[0], *archs[0]).compile()
  compile_s = time.perf_counter() - t0
  if _WARMUP.value:  # first-run allocations stay out of the timing
    state, m = compiled(state, batches[0], rngs[0], *archs[0])
    jax.block_until_ready(m["loss"])
  t0 = time.perf_counter()
  for i in range(1, len(batches)):
    state, m = compiled(state, batches[i], rngs[i], *archs[i])
  jax.block_until_ready(m["loss"])
  sps = (len(batches) - 1) / (time.perf_counter() - t0)
  return (compile_s, sps, *_peak_bytes(compiled))


def _bench(network, params, batches, archs, supernet):
  tx = optax.adam(1e-4)
  apply = (
    (lambda p, x, rng, arch: network.apply({"params": p}, x, arch))
    if supernet
    else (lambda p, x, rng, arch: network.apply({"params": p}, x))
  )
  step = jax.jit(train_lib.make_train_step(apply, tx, losses.l1), donate_argnums=(0,))
  return _time_steps(step, train_lib.create_train_state(params, tx), batches, archs)


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  s, b, p = _SCALE.value, _BATCH.value, _PATCH.value
  n = _STEPS.value + 1
  batches = [
    {
      "lr": jnp.asarray(rng.integers(0, 256, (b, p, p, 3), np.uint8)),
      "hr": jnp.asarray(rng.integers(0, 256, (b, p * s, p * s, 3), np.uint8)),
    }
    for _ in range(n)
  ]
  space = spaces.get("deconas", blocks=_BLOCKS.value, nodes=_NODES.value, channels=_CHANNELS.value)
  spec = space.token_spec()
  archs = [(jnp.asarray(spec.sample(rng)),) for _ in range(n)]
  x0 = jnp.zeros((1, p, p, 3), jnp.float32)
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()})")
  print(
    f"space: N={space.blocks} M={space.nodes} C={space.channels}, batch {b} of {p}x{p} LR, x{s}, "
    f"{_STEPS.value} timed steps, one random architecture per step"
  )
  for impl in _DEPTHWISE.value:
    if impl not in ("shifted", "conv"):
      raise app.UsageError(f"--depthwise: unknown implementation {impl!r} (shifted or conv)")
  runs = [(v, d) for v in _VARIANTS.value for d in _DEPTHWISE.value if v != "child"]
  runs += [("child", "conv")] if "child" in _VARIANTS.value else []
  rows = {}
  for variant, impl in runs:
    if variant in ("mask", "skip"):
      net = space.supernet(
        s,
        skip_inactive=variant == "skip",
        remat=_REMAT.value,
        shifted=impl == "shifted",
        unroll=_UNROLL.value or None,
      )
      params = jax.jit(net.init)(train_lib.init_key(0), x0, archs[0][0])["params"]
      rows[variant, impl] = _bench(net, params, batches, archs, supernet=True)
      label = "supernet, masks" if variant == "mask" else "supernet, lax.cond"
      label += f", {impl}, unroll {net.blocks_per_iteration()}"
      label += ", remat" if _REMAT.value else ""
    elif variant == "child":
      paper = spaces.get("deconas", blocks=4, nodes=4, channels=64)
      net = paper.build(paper.decode(PAPER_TOKENS), s)
      params = jax.jit(net.init)(train_lib.init_key(0), x0)["params"]
      rows[variant, impl] = _bench(net, params, batches, [()] * n, supernet=False)
      label = "stand-alone DeCoNASNet (N=4, M=4, C=64)"
    else:
      raise app.UsageError(f"--variants: unknown variant {variant!r} (mask, skip or child)")
    compile_s, sps, peak, source = rows[variant, impl]
    print(
      f"{label:<49} compile {compile_s:7.1f} s  {sps:8.3f} steps/s ({1 / sps:7.2f} s/step)  "
      f"{peak / 2**30:6.2f} GiB ({source})",
      flush=True,
    )
  for impl in _DEPTHWISE.value:
    if ("mask", impl) in rows and ("skip", impl) in rows:
      ratio = rows["skip", impl][1] / rows["mask", impl][1]
      print(f"lax.cond / masks speed ratio ({impl}): {ratio:.2f}")
  if len(_DEPTHWISE.value) == 2:
    for v in ("mask", "skip"):
      if (v, "shifted") in rows and (v, "conv") in rows:
        ratio = rows[v, "shifted"][1] / rows[v, "conv"][1]
        print(f"shifted / conv depthwise speed ratio ({v}): {ratio:.2f}")


if __name__ == "__main__":
  app.run(main)
