r"""Supernet train-step speed, compile time and FLOPs of the DeCoNAS space, per supernet form.

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

Forms (`--variants`): `mask` (every input slot computed, unselected ones zeroed), `skip` (a
lax.cond per input slot), `gather` (per op, the selected slots gathered into one buffer and one
conv over them picked by their count with lax.switch), `child` (the stand-alone network).

  python -m benchmarks.deconas_speed --cost_only --variants=mask,skip,gather --children=4

--cost_only compiles without running and prints each form's train-step FLOPs and bytes from
`cost_analysis()` (each loop body counted per iteration, benchmarks.hlo_cost): as the search
compiles it (the tokens an argument; XLA counts a conditional as its dearest branch), and
specialised to each of --children sampled architectures (their tokens constants: XLA folds the
conditionals away and what is left is the work that runs for that child), beside the stand-alone
child of the same tokens; and the conditionals and convolutions in the compiled search step.
"""

import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from benchmarks.hlo_cost import per_step_cost
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
_VARIANTS = flags.DEFINE_list(
  "variants", ["mask", "skip", "child"], "mask, skip, gather and/or child."
)
_COST_ONLY = flags.DEFINE_bool(
  "cost_only", False, "Compile only: print cost_analysis() FLOPs per form (module docstring)."
)
_CHILDREN = flags.DEFINE_integer("children", 4, "--cost_only: sampled architectures to cost.")
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
FORMS = {
  "mask": {},
  "skip": {"skip_inactive": True},
  "gather": {"skip_inactive": True, "gathered": True},
}
LABELS = {"mask": "masks", "skip": "lax.cond per slot", "gather": "gathered, lax.switch per op"}


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


def _compile(network, params, batch, tokens, supernet: bool):
  """Return the compiled train step: tokens an argument (None: a constant, or no supernet)."""
  tx = optax.adam(1e-4)
  if not supernet:
    apply = lambda p, x, rng, arch: network.apply({"params": p}, x)  # noqa: E731
  elif tokens is None:
    apply = lambda p, x, rng, arch: network.apply({"params": p}, x, arch)  # noqa: E731
  else:
    const = np.asarray(tokens, np.int32)  # baked into the program: XLA folds what it decides
    apply = lambda p, x, rng, arch: network.apply({"params": p}, x, const)  # noqa: E731
  step = train_lib.make_train_step(apply, tx, losses.l1)
  state = train_lib.create_train_state(params, tx)
  key = jax.random.PRNGKey(0)
  if supernet and tokens is None:
    return jax.jit(step).lower(state, batch, key, jnp.zeros(params_len(network), jnp.int32))
  return jax.jit(lambda st, b, r: step(st, b, r, None)).lower(state, batch, key)


def params_len(network) -> int:
  """Return the number of tokens the supernet takes."""
  g = network.nodes * (network.nodes + 1) // 2
  return 3 * g + (network.nodes + network.blocks if network.fusion_search else 0)


def _gflop(lowered) -> tuple[float, float, str]:
  """Return (GFLOP per step, GiB accessed per step, compiled HLO text) of a lowered step."""
  compiled = lowered.compile()
  _, cost, _ = per_step_cost(compiled)
  return cost["flops"] / 1e9, cost["bytes accessed"] / 2**30, compiled.as_text()


def _costs(space, batch, tokens0, rng) -> None:
  """Print each form's FLOPs per step: generic, per sampled child, and the stand-alone child."""
  s = _SCALE.value
  x0 = jnp.zeros((1, _PATCH.value, _PATCH.value, 3), jnp.float32)
  spec = space.token_spec()
  children = [spec.sample(rng) for _ in range(_CHILDREN.value)]
  for impl in _DEPTHWISE.value:
    shifted = impl == "shifted"
    alone = []
    for tokens in children:
      net = space.build(space.decode(tokens), s, shifted=shifted)
      shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), x0)["params"]
      alone.append(_gflop(_compile(net, _zeros(shapes), batch, None, supernet=False))[0])
    print(
      f"{impl} depthwise: stand-alone children {' '.join(f'{f:.4g}' for f in alone)} GFLOP "
      f"(mean {np.mean(alone):.4g})",
      flush=True,
    )
    for variant in [v for v in _VARIANTS.value if v in FORMS]:
      net = space.supernet(
        s, remat=_REMAT.value, shifted=shifted, unroll=_UNROLL.value or None, **FORMS[variant]
      )
      shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), x0, tokens0)["params"]
      params = _zeros(shapes)
      t0 = time.perf_counter()
      flops, gib, text = _gflop(_compile(net, params, batch, None, supernet=True))
      compile_s = time.perf_counter() - t0
      conds, convs = (
        len(re.findall(r"\bconditional\(", text)),
        len(re.findall(r"\bconvolution\(", text)),
      )
      each = [_gflop(_compile(net, params, batch, t, supernet=True)) for t in children]
      ratio = np.mean([f / a for (f, _, _), a in zip(each, alone, strict=True)])
      run = np.mean([len(re.findall(r"\bconvolution\(", t)) for _, _, t in each])
      print(
        f"{LABELS[variant]:<28} {impl:<7} search step {flops:9.4g} GFLOP {gib:8.3g} GiB "
        f"(compile {compile_s:5.1f} s; {conds} conditionals, {convs} convolutions); per child "
        f"{' '.join(f'{f:.4g}' for f, _, _ in each)} GFLOP = {ratio:.3f}x stand-alone, "
        f"{run:.0f} convolutions run",
        flush=True,
      )


def _zeros(shapes):
  return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)


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
  if _COST_ONLY.value:
    _costs(space, batches[0], archs[0][0], rng)
    return
  runs = [(v, d) for v in _VARIANTS.value for d in _DEPTHWISE.value if v != "child"]
  runs += [("child", "conv")] if "child" in _VARIANTS.value else []
  rows = {}
  for variant, impl in runs:
    if variant in FORMS:
      net = space.supernet(
        s,
        remat=_REMAT.value,
        shifted=impl == "shifted",
        unroll=_UNROLL.value or None,
        **FORMS[variant],
      )
      params = jax.jit(net.init)(train_lib.init_key(0), x0, archs[0][0])["params"]
      rows[variant, impl] = _bench(net, params, batches, archs, supernet=True)
      label = f"supernet, {LABELS[variant]}, {impl}, unroll {net.blocks_per_iteration()}"
      label += ", remat" if _REMAT.value else ""
    elif variant == "child":
      paper = spaces.get("deconas", blocks=4, nodes=4, channels=64)
      net = paper.build(paper.decode(PAPER_TOKENS), s)
      params = jax.jit(net.init)(train_lib.init_key(0), x0)["params"]
      rows[variant, impl] = _bench(net, params, batches, [()] * n, supernet=False)
      label = "stand-alone DeCoNASNet (N=4, M=4, C=64)"
    else:
      raise app.UsageError(f"--variants: unknown {variant!r} (mask, skip, gather or child)")
    compile_s, sps, peak, source = rows[variant, impl]
    print(
      f"{label:<58} compile {compile_s:7.1f} s  {sps:8.3f} steps/s ({1 / sps:7.2f} s/step)  "
      f"{peak / 2**30:6.2f} GiB ({source})",
      flush=True,
    )
  for impl in _DEPTHWISE.value:
    for v in ("skip", "gather"):
      if ("mask", impl) in rows and (v, impl) in rows:
        ratio = rows[v, impl][1] / rows["mask", impl][1]
        print(f"{LABELS[v]} / masks speed ratio ({impl}): {ratio:.2f}")
  if len(_DEPTHWISE.value) == 2:
    for v in ("mask", "skip"):
      if (v, "shifted") in rows and (v, "conv") in rows:
        ratio = rows[v, "shifted"][1] / rows[v, "conv"][1]
        print(f"shifted / conv depthwise speed ratio ({v}): {ratio:.2f}")


if __name__ == "__main__":
  app.run(main)
