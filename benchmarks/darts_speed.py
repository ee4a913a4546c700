r"""Bilevel-step speed, compile time and peak memory of the DARTS-SR search, per alpha mode.

  python -m benchmarks.darts_speed                 # paper size: 8 cells, 64 channels, 16 x 64x64 LR
  python -m benchmarks.darts_speed --cells=2 --channels=8 --nodes=2 --batch=2 --patch=12 --steps=2

Prints, on the current device, for the first-order, finite-difference and exact second-order
steps, the exact one in both forms (`exact`: jax.grad through the virtual step; `exact_jvp`: the
same gradient forward over reverse), each an alpha update followed by a weight update as the
search runs them: compile time, steps/s and peak memory; --compile_only stops after compiling.
The first step is untimed unless --nowarmup. At paper size a 24 GiB host needs
`--remat --modes=first_order,finite_difference,exact_jvp`. Peak memory is the device's
`peak_bytes_in_use` (memory_stats(), GPU/TPU) when the runtime reports it, each mode then measured
in its own process so the peaks do not accumulate; otherwise (CPU) the compiled executable's
memory_analysis(), temporaries plus arguments. The line says which.

  python -m benchmarks.darts_speed --cost_only --modes=first_order --shifted=false --fused

--fused: the supernet's fused mixed ops (DartsSuperCell.fused). --cost_only compiles each mode and
prints its `cost_analysis()` FLOPs and bytes accessed without running it, as XLA reports them (the
body of a loop counted once) and per step (each loop body counted once per iteration: the scanned
cells, the shifted depthwise kernel gradients' loops; see `benchmarks.hlo_cost.per_step_cost`).
"""

import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks.hlo_cost import per_step_cost, xla_cost
from nasr import spaces
from nasr.estimation import darts, losses

_CELLS = flags.DEFINE_integer("cells", 8, "Cells of the search network.")
_CHANNELS = flags.DEFINE_integer("channels", 64, "Feature width.")
_NODES = flags.DEFINE_integer("nodes", 4, "Intermediate nodes per cell.")
_OPS = flags.DEFINE_string("ops", "improved", "Operation set: improved, original or an op list.")
_BATCH = flags.DEFINE_integer("batch", 16, "Batch size (of each of the two batches).")
_PATCH = flags.DEFINE_integer("patch", 64, "LR patch side.")
_SCALE = flags.DEFINE_integer("scale", 2, "Upscaling factor.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps after the first.")
_REMAT = flags.DEFINE_bool("remat", False, "Recompute cells in the backward pass.")
_SHIFTED = flags.DEFINE_bool(
  "shifted", True, "Depthwise convs as shifted multiply-adds (else conv_general_dilated)."
)
# benchmark name -> (alpha mode, exact_form)
_VARIANTS = {
  "first_order": ("first_order", "reverse"),
  "finite_difference": ("finite_difference", "reverse"),
  "exact": ("exact", "reverse"),
  "exact_jvp": ("exact", "jvp"),
}
_MODES = flags.DEFINE_list(
  "modes", list(_VARIANTS), f"Alpha-gradient variants to time, of {', '.join(_VARIANTS)}."
)
_ISOLATE = flags.DEFINE_bool(
  "isolate", True, "With device memory stats, time each mode in a fresh process."
)
_WARMUP = flags.DEFINE_bool("warmup", True, "Run one untimed step after compiling.")
_HEADER = flags.DEFINE_bool("header", True, "Print the device and size lines.")
_COMPILE_ONLY = flags.DEFINE_bool(
  "compile_only", False, "Stop after compiling: print compile time and XLA's memory estimate."
)
_FUSED = flags.DEFINE_bool("fused", False, "The fused mixed ops (DartsSuperCell.fused).")
_COST_ONLY = flags.DEFINE_bool(
  "cost_only", False, "Stop after compiling: print cost_analysis() FLOPs and bytes accessed."
)

_LABELS = {
  "first_order": "first order",
  "finite_difference": "2nd order, finite-difference HVP",
  "exact": "2nd order, exact (grad through step)",
  "exact_jvp": "2nd order, exact (fwd-over-rev term)",
}


def _device_peak() -> int | None:
  """Return the device's peak bytes in use, or None when the runtime does not report it."""
  stats = jax.devices()[0].memory_stats()
  return None if not stats or "peak_bytes_in_use" not in stats else int(stats["peak_bytes_in_use"])


def _gib(n: float) -> str:
  return f"{n / 2**30:6.2f} GiB"


def _bench(mode: str) -> str:
  """Return the result line of one mode."""
  rng = np.random.default_rng(0)
  s, b, p, n = _SCALE.value, _BATCH.value, _PATCH.value, _STEPS.value + 1
  space = spaces.get(
    "darts_sr", ops=_OPS.value, cells=_CELLS.value, channels=_CHANNELS.value, nodes=_NODES.value
  )
  net = space.supernet(s, remat=_REMAT.value, shifted=_SHIFTED.value, fused=_FUSED.value)
  alpha = space.init_alpha(jax.random.PRNGKey(0))
  # Random weights from the shapes: a jitted init of ~1000 arrays compiles slowly and the values
  # do not change the cost of a step.
  shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1, p, p, 3)), alpha)
  w = jax.tree.map(
    lambda a: jnp.asarray(0.05 * rng.standard_normal(a.shape), a.dtype), shapes["params"]
  )

  def batch():
    return {
      "lr": jnp.asarray(rng.integers(0, 256, (b, p, p, 3), np.uint8)),
      "hr": jnp.asarray(rng.integers(0, 256, (b, p * s, p * s, 3), np.uint8)),
    }

  batches = [(batch(), batch()) for _ in range(n)]
  schedule = darts.make_w_schedule(1e-2, "cosine", 1000)
  w_tx, a_tx = darts.make_w_optimizer(schedule), darts.make_alpha_optimizer()
  apply = lambda w, x, a: net.apply({"params": w}, x, a)  # noqa: E731
  alpha_mode, form = _VARIANTS[mode]
  loss = darts.make_loss(apply, losses.l1)
  step = darts.make_bilevel_step(loss, w_tx, a_tx, alpha_mode, schedule, exact_form=form)
  state = darts.create_state(w, alpha, w_tx, a_tx)
  key = jax.random.PRNGKey(0)
  t0 = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=(0,)).lower(state, *batches[0], key).compile()
  compile_s = time.perf_counter() - t0
  ma = compiled.memory_analysis()
  estimate = ma.temp_size_in_bytes + ma.argument_size_in_bytes
  # Printed before the first step, which can take minutes on a CPU.
  print(f"  {mode}: compiled in {compile_s:.1f} s, XLA estimate {_gib(estimate)}", flush=True)
  if _COST_ONLY.value:
    label = f"{_LABELS.get(mode, mode):<38} compile {compile_s:7.1f} s  "
    try:
      raw, step_cost, unknown = per_step_cost(compiled)
    except Exception as e:  # noqa: BLE001 - it re-parses HLO text through private jaxlib calls
      raw = xla_cost(compiled.cost_analysis())
      return (
        f"{label}XLA's (loop bodies once): {raw['flops'] / 1e9:10.2f} GFLOP, "
        f"{raw['bytes accessed'] / 2**30:9.3f} GiB (no per-step count: {type(e).__name__}: {e})"
      )
    note = f" ({unknown} loops of unknown trip count counted once)" if unknown else ""
    return (
      f"{label}per step: {step_cost['flops'] / 1e9:10.2f} GFLOP, "
      f"{step_cost['bytes accessed'] / 2**30:9.3f} GiB accessed; XLA's (loop bodies once): "
      f"{raw['flops'] / 1e9:10.2f} GFLOP, {raw['bytes accessed'] / 2**30:9.3f} GiB{note}"
    )
  if _COMPILE_ONLY.value:
    return f"{_LABELS.get(mode, mode):<38} compile {compile_s:7.1f} s  (--compile_only)"
  if _WARMUP.value:
    state, m = compiled(state, *batches[0], key)
    jax.block_until_ready(m)
  t0 = time.perf_counter()
  for i in range(1, n):
    state, m = compiled(state, *batches[i], key)
  jax.block_until_ready(m)
  sps = (n - 1) / (time.perf_counter() - t0)
  peak = _device_peak()
  if peak is not None:
    mem = f"peak {_gib(peak)} (device memory_stats)"
  else:
    mem = f"peak {_gib(estimate)} (compiled memory_analysis: temp + arguments)"
  rate = f"{sps:8.4g} steps/s ({1 / sps:7.2f} s/step)"
  return f"{_LABELS.get(mode, mode):<38} compile {compile_s:7.1f} s  {rate}  {mem}"


def main(argv):
  del argv
  for mode in _MODES.value:
    if mode not in _VARIANTS:
      raise app.UsageError(f"--modes: unknown {mode!r}; available: {', '.join(_VARIANTS)}")
  if _HEADER.value:
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()})")
    print(
      f"supernet: {_CELLS.value} cells x {_CHANNELS.value} channels, {_NODES.value} nodes, "
      f"{_OPS.value} ops; two batches of {_BATCH.value} x {_PATCH.value}x{_PATCH.value} LR, "
      f"x{_SCALE.value}; {_STEPS.value} timed steps; depthwise "
      f"{'shifted' if _SHIFTED.value else 'conv'}{', remat' if _REMAT.value else ''}"
      f"{', fused' if _FUSED.value else ''}"
    )
    sys.stdout.flush()
  if len(_MODES.value) > 1 and _ISOLATE.value and _device_peak() is not None:
    # memory_stats' peak never resets: measure each mode in a process of its own.
    for mode in _MODES.value:
      args = [a for a in sys.argv[1:] if not a.startswith(("--modes", "--header", "--noheader"))]
      subprocess.run(
        [sys.executable, "-m", "benchmarks.darts_speed", *args, f"--modes={mode}", "--noheader"],
        check=True,
      )
    return
  for mode in _MODES.value:
    print(_bench(mode), flush=True)


if __name__ == "__main__":
  app.run(main)
