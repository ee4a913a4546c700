r"""The benchmark suite: one command times the training steps of every network family of nasr.

  python -m benchmarks.suite                            # every section at full size (one GPU)
  python -m benchmarks.suite --sections=edsr,deconas --out=/tmp/suite.json   # or --out=<folder>
  python -m benchmarks.suite --sections=darts --section_timeout_s=darts=900   # all DARTS modes
  python -m benchmarks.suite --sections=edsr:f32,darts:first_order   # some variants only
  JAX_NUM_CPU_DEVICES=1 python -m benchmarks.suite --tiny --jobs=2   # CPU smoke run (as in CI)

Sections (x2, L1 loss; variants in the order they run):
  edsr     EDSR 16 blocks x 64 channels (configs/train.py:paper), batch 16 of 48x48 LR: compute in
           f32 and in bf16 (parameters f32).
  deconas  DeCoNAS supernet train step with configs/deconas.py:paper's supernet options (child-only
           work, remat; on the CPU a lax.cond per slot with shifted depthwise convs, on an
           accelerator one lax.switch per op over its gathered slots with XLA's depthwise convs)
           at N4M4C64 and N16M8C64, batch 16 of 64x64, as the one-shot search runs it: the
           config's controller proposes a new architecture inside every step (one compile,
           compute.compile_sampled_step); `child`: the stand-alone network of one sampled
           N4M4C64 architecture.
  darts    DARTS-SR bilevel step (alpha update, then weight update), 8 cells x 64 channels, 4 nodes,
           improved ops, two batches of 16 x 64x64, configs/darts_sr.py:paper's supernet options
           (remat, shifted depthwise): first_order, finite_difference, exact (its jvp form).
  drn      GP-NAS dense residual network, F=64, 12 blocks of 3 stages, batch 16 of 48x48.
  rcan     GP-NAS RCAN family at RCAN's size, F=64, 10 groups x 20 RCABs, batch 16 of 48x48.
  hnas     HNAS supernet train step at the search size (configs/hnas.py:paper: 12 layers, 4 nodes,
           C=8, every layer unrolled), batch 16 of 48x48, a new architecture every step proposed
           inside the step by the config's controller, as the search runs it.

Per row (JSON list in --out, strict JSON: null where a number is unknown): compile_s of
`jit(step).lower(...).compile()` alone (tracing included); median_ms of `--steps` steps after one
untimed step, each synchronised with block_until_ready; peak_gib and peak_source, the device's
measured peak (`memory_stats()['peak_bytes_in_use']`) where the runtime reports one, else the
compiled step's `memory_analysis()` temporaries + arguments; flops and bytes_accessed of the
compiled step's `cost_analysis()`, and tflops_per_s = flops / median step time. XLA's cost analysis
counts the body of a loop once, not once per iteration: rows with `hlo_has_loops` true (scanned
blocks or layers, loops over conv taps) under-count their FLOPs, bytes and TFLOP/s.

Each section runs in its own process with its own time limit (--section_timeout_s); on a device
that reports a measured peak (GPU), each variant gets a fresh process, since the peak never resets.
A section past its limit is killed: its finished rows are kept, the running and the unstarted
variants become rows with status "timeout". A variant that raises becomes a row with status
"error: <message>"; the suite then exits 1 after writing the JSON and the table.

Time budget: the default limits (DEFAULT_TIMEOUT_S, 350 s together) keep the whole suite within 6
minutes on one H200, compiles and process starts included. They are sized from the compile times
measured there (EDSR 4 s f32 / 11 s bf16, DeCoNAS N16M8 supernet 22-26 s, DARTS-SR first order
78 s) and want checking against a full run. The second-order DARTS-SR steps compiled 2.3x longer
than the first-order one on the CPU (BENCHMARKS.md), so at the default limit they are likely to be
"timeout" rows: give the section more time to measure them (third example). --tiny costs about 60
CPU-seconds on the 2-core CPU (--jobs=2 runs two sections at a time) and times 2 steps; full-size
runs time at least 5.
"""

import concurrent.futures
import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from nasr import compute, parallel, spaces, strategies, training
from nasr.configs import darts_sr as darts_config
from nasr.configs import deconas as deconas_config
from nasr.configs import hnas as hnas_config
from nasr.configs import train as train_config
from nasr.estimation import darts, losses
from nasr.estimation import train as train_lib
from nasr.searches import darts as darts_search
from nasr.searches import loop

SCALE = 2
SECTIONS = ("edsr", "deconas", "darts", "drn", "rcan", "hnas")
VARIANTS = {
  "edsr": ("f32", "bf16"),
  "deconas": ("small", "large", "child"),
  "darts": ("first_order", "finite_difference", "exact"),
  "drn": ("train",),
  "rcan": ("train",),
  "hnas": ("supernet",),
}
# Seconds per section on one H200, 350 s together (module docstring): besides the compile, each
# variant's process start, parameter init and tracing take seconds.
DEFAULT_TIMEOUT_S = {"edsr": 40, "deconas": 95, "darts": 115, "drn": 25, "rcan": 25, "hnas": 50}
TINY_TIMEOUT_S = 120.0
SIZES = {
  "edsr": {"batch": 16, "patch": 48, "blocks": 16, "channels": 64},
  "deconas": {"batch": 16, "patch": 64, "small": (4, 4, 64), "large": (16, 8, 64)},
  "darts": {"batch": 16, "patch": 64, "cells": 8, "channels": 64, "nodes": 4},
  "drn": {"batch": 16, "patch": 48, "features": 64, "blocks": 12, "stages": 3, "reduction": 16},
  "rcan": {"batch": 16, "patch": 48, "features": 64, "groups": 10, "blocks": 20, "reduction": 16},
  "hnas": {"batch": 16, "patch": 48, "layers": 12, "nodes": 4, "channels": 8},
}
# --tiny: every code path at sizes that compile in seconds on a 2-core CPU (the CI smoke run).
# Compile time there grows with the kinds of ops more than with depth: DARTS-SR gets three ops
# and XLA's own depthwise convs (the shifted ones compile slower).
TINY_SIZES = {
  "edsr": {"batch": 2, "patch": 12, "blocks": 2, "channels": 8},
  "deconas": {"batch": 2, "patch": 12, "small": (2, 1, 8), "large": (3, 1, 8)},
  "darts": {
    "batch": 2,
    "patch": 12,
    "cells": 2,
    "channels": 8,
    "nodes": 1,
    "ops": "none,skip_connect,res_sep_conv_3x3",
    "shifted": False,
  },
  "drn": {"batch": 2, "patch": 12, "features": 8, "blocks": 2, "stages": 2, "reduction": 4},
  "rcan": {"batch": 2, "patch": 12, "features": 8, "groups": 2, "blocks": 2, "reduction": 4},
  "hnas": {"batch": 2, "patch": 12, "layers": 2, "nodes": 1, "channels": 4},
}
# DARTS variants: (alpha mode, exact_form).
DARTS_MODES = {
  "first_order": ("first_order", "reverse"),
  "finite_difference": ("finite_difference", "reverse"),
  # Reverse over reverse keeps every cell's inner residuals (XLA:CPU's estimate at this size: 51.5
  # GiB rematerialised, BENCHMARKS.md); the jvp form, the same gradient, needs 11.6 GiB and is the
  # form the paper preset searches with.
  "exact": ("exact", "jvp"),
}
PROTOCOL = "@@suite "  # prefix of the lines a section process reports on

_SECTIONS = flags.DEFINE_list(
  "sections",
  list(SECTIONS),
  f"Sections to run, of {SECTIONS}; `section:variant` runs one variant of a section ({VARIANTS}).",
)
_TINY = flags.DEFINE_bool("tiny", False, "Tiny sizes: a CPU smoke run of every code path.")
_STEPS = flags.DEFINE_integer(
  "steps", None, "Timed steps per row (default 5; at least 5 unless --tiny, which defaults to 2)."
)
_OUT = flags.DEFINE_string(
  "out",
  "",
  "Where to write the rows (a JSON list): a file, or a folder to write the default name in. "
  "Default: benchmark_suite.json in the current folder, benchmark_suite_tiny.json with --tiny "
  "(a smoke run never overwrites a full run's rows).",
)
_TIMEOUT = flags.DEFINE_list(
  "section_timeout_s",
  [],
  "Time limits in seconds: one number for every section and/or section=seconds entries "
  f"(default {DEFAULT_TIMEOUT_S}; {TINY_TIMEOUT_S:g} each with --tiny).",
)
_BATCH = flags.DEFINE_integer("batch", 0, "Batch size of every section (0: each section's own).")
_PATCH = flags.DEFINE_integer("patch", 0, "LR patch side of every section (0: each section's own).")
_JOBS = flags.DEFINE_integer(
  "jobs", 1, "Sections run at the same time; more than 1 only with --tiny (a faster smoke run)."
)
_KERNELS = flags.DEFINE_enum(
  "kernels", "auto", ["auto", "cpu", "accelerator"], "config.kernels of every section."
)
_COMPUTE = flags.DEFINE_enum(
  "compute_dtype",
  "float32",
  ["float32", "bfloat16"],
  "config.compute_dtype of every section but EDSR's (which times both).",
)
_RUN_SECTION = flags.DEFINE_string(
  "run_section", "", "Internal: run this section's variants in this process (the suite's child)."
)
_RUN_VARIANTS = flags.DEFINE_list("run_variants", [], "Internal: the variants --run_section runs.")


# --------------------------------------------------------------------------------------------------
# A section process: build a step, compile it ahead of time, time it.
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Case:
  """A step to time: step(state, *args[i]) -> (state, metrics), compiled from args[0]."""

  step: Callable  # a jax.jit object: .lower(...).compile() gives the executable
  state: object  # the first state (donated to the first call)
  args: list  # per call: the arguments after the state (call 0 is the untimed one)
  setup: dict  # what was built, for the row


def _emit(event: dict) -> None:
  """Report an event of this section process to the suite (one line of stdout)."""
  print(PROTOCOL + json.dumps(_strict(event), allow_nan=False), flush=True)


def _sizes(section: str) -> dict:
  """Return the section's sizes (tiny or full) with --batch / --patch applied."""
  sizes = dict((TINY_SIZES if _TINY.value else SIZES)[section])
  if _BATCH.value:
    sizes["batch"] = _BATCH.value
  if _PATCH.value:
    sizes["patch"] = _PATCH.value
  return sizes


def variant_label(section: str, key: str) -> str:
  """Return the row label of a variant at this run's sizes, e.g. "N16M8C64" for deconas large."""
  s = _sizes(section)
  if section == "deconas":
    blocks, nodes, channels = s["small" if key == "child" else key]
    size = f"N{blocks}M{nodes}C{channels}"
    return f"child {size}" if key == "child" else size
  if section == "drn":
    return f"F{s['features']}D{s['blocks']}L{s['stages']}"
  if section == "rcan":
    return f"F{s['features']}G{s['groups']}B{s['blocks']}"
  if section == "hnas":
    return f"supernet L{s['layers']}N{s['nodes']}C{s['channels']}"
  return key


def _batches(n: int, sizes: dict, mesh, seed: int) -> list[dict]:
  """Return n random uint8 LR/HR batches, already split over the mesh (transfers stay untimed)."""
  rng = np.random.default_rng(seed)
  b, p = sizes["batch"], sizes["patch"]
  return [
    parallel.shard_batch(
      {
        "lr": rng.integers(0, 256, (b, p, p, 3), np.uint8),
        "hr": rng.integers(0, 256, (b, p * SCALE, p * SCALE, 3), np.uint8),
      },
      mesh,
    )
    for _ in range(n)
  ]


def _train_case(network, params, config, sizes, n, setup, space=None) -> Case:
  """Return the Case of `network`'s train step as nasr trains it; with `space`, a supernet's as
  the one-shot search runs it: the config's strategy proposes each step's architecture inside the
  step (`compute.compile_sampled_step`), a new one every step from the step's folded key."""
  mesh = parallel.make_mesh()
  repl = parallel.replicated(mesh)
  tx, _ = compute.make_tx(config, 1000)
  loss = compute.make_config_loss(config)
  state = jax.device_put(train_lib.create_train_state(params, tx), repl)
  key = jax.device_put(jax.random.PRNGKey(0), repl)
  batches = _batches(n, sizes, mesh, seed=1)
  if space is None:
    step = compute.compile_train_step(network, tx, loss, mesh)
    args = [(b, key) for b in batches]
  else:
    spec = space.token_spec()
    strategy = strategies.get(config.strategy.name, spec, **loop.strategy_options(config))
    step = compute.compile_sampled_step(network, tx, loss, strategy.propose, mesh)
    policy = jax.device_put(strategy.init(train_lib.init_key(1)), repl)
    keys = [jax.device_put(jax.random.fold_in(key, i), repl) for i in range(n)]
    args = [(policy, b, key, k) for b, k in zip(batches, keys, strict=True)]
    setup = {**setup, "strategy": config.strategy.name}
  setup = {"batch": sizes["batch"], "patch": sizes["patch"], "scale": SCALE, **setup}
  setup["params"] = int(sum(np.size(x) for x in jax.tree.leaves(params)))
  return Case(step, state, args, setup)


def _compute(config):
  """Return `config` with the suite's --kernels and --compute_dtype."""
  config.kernels, config.compute_dtype = _KERNELS.value, _COMPUTE.value
  return config


def _setup(config, setup: dict) -> dict:
  """Return a row's setup with the kernel forms and compute dtype it ran with (JSON values)."""
  out = {k: (jnp.dtype(v).name if k == "dtype" else v) for k, v in setup.items()}
  out.update(kernels=compute.kernels(config), compute_dtype=config.compute_dtype)
  return out


def _edsr(key: str, n: int) -> Case:
  """Return the EDSR train step, f32 or bf16 compute."""
  s = _sizes("edsr")
  config = _compute(train_config.get_config("paper"))
  dtype = "bfloat16" if key == "bf16" else "float32"
  config.model_kwargs = {"blocks": s["blocks"], "channels": s["channels"]}
  config.compute_dtype = dtype
  network = training.build_network(config, SCALE)
  params = compute.init_params(network, s["patch"], 0)
  setup = {"blocks": s["blocks"], "channels": s["channels"]}
  return _train_case(network, params, config, s, n, _setup(config, setup))


def _deconas(key: str, n: int) -> Case:
  """Return a DeCoNAS supernet step (a new architecture per call) or a stand-alone child's."""
  s = _sizes("deconas")
  config = _compute(deconas_config.get_config("tiny" if _TINY.value else "paper"))
  rng = np.random.default_rng(0)
  blocks, nodes, channels = s["small" if key == "child" else key]
  space = spaces.get("deconas", blocks=blocks, nodes=nodes, channels=channels)
  if key == "child":
    tokens = space.token_spec().sample(rng)
    dtype = compute.compute_dtype(config)
    network = space.build(space.decode(tokens), SCALE, dtype=dtype)
    params = compute.init_params(network, s["patch"], 0)
    setup = {"blocks": blocks, "nodes": nodes, "channels": channels, "tokens": tokens.tolist()}
    setup["depthwise"] = "conv"  # DeCoNASNet's default, as configs/train.py retrains it
    return _train_case(network, params, config, s, n, _setup(config, setup))
  options = compute.supernet_options(config, space)
  network = space.supernet(SCALE, **options)
  x0 = jnp.zeros((1, s["patch"], s["patch"], 3), jnp.float32)
  max_tokens = jnp.asarray(space.encode(space.max_arch()), jnp.int32)
  params = jax.jit(network.init)(train_lib.init_key(0), x0, max_tokens)["params"]
  setup = {"blocks": blocks, "nodes": nodes, "channels": channels, **options}
  return _train_case(network, params, config, s, n, _setup(config, setup), space=space)


def _darts(key: str, n: int) -> Case:
  """Return the DARTS-SR bilevel step of one alpha mode, as the search compiles it."""
  s = _sizes("darts")
  config = darts_config.get_config("tiny" if _TINY.value else "paper")
  mode, form = DARTS_MODES[key]
  space = spaces.get(
    "darts_sr",
    ops=s.get("ops", config.space.ops),
    cells=s["cells"],
    channels=s["channels"],
    nodes=s["nodes"],
    node_reduce=config.space.node_reduce,
  )
  options = compute.supernet_options(_compute(config), space)
  if "shifted" in s:
    options["shifted"] = s["shifted"]
  network = space.supernet(SCALE, **options)
  alpha = space.init_alpha(jax.random.PRNGKey(0), config.alpha_init_std)
  # Random weights from the shapes, as benchmarks/darts_speed.py: a jitted init of ~1000 arrays
  # compiles slowly and the values do not change the cost of a step.
  x0 = jnp.zeros((1, s["patch"], s["patch"], 3), jnp.float32)
  shapes = jax.eval_shape(network.init, jax.random.PRNGKey(0), x0, alpha)["params"]
  rng = np.random.default_rng(0)
  w = jax.tree.map(lambda a: jnp.asarray(0.05 * rng.standard_normal(a.shape), a.dtype), shapes)
  wo, ao = config.w_optim, config.alpha_optim
  schedule = darts.make_w_schedule(wo.lr, wo.schedule, 1000, wo.lr_min)
  w_tx = darts.make_w_optimizer(schedule, wo.momentum, wo.weight_decay, wo.grad_clip)
  a_tx = darts.make_alpha_optimizer(ao.lr, ao.b1, ao.b2, ao.weight_decay)
  apply = lambda w, x, a: network.apply({"params": w}, x, a)
  loss = darts.make_loss(apply, losses.make_loss(config.loss))
  step_fn = darts.make_bilevel_step(
    loss,
    w_tx,
    a_tx,
    mode,
    schedule,
    wo.momentum,
    wo.weight_decay,
    xi=None if config.xi < 0 else float(config.xi),
    fd_scale=config.fd_scale,
    exact_form=form,
  )
  mesh = parallel.make_mesh()
  state = jax.device_put(darts.create_state(w, alpha, w_tx, a_tx), parallel.replicated(mesh))
  key_ = jax.device_put(jax.random.PRNGKey(0), parallel.replicated(mesh))
  train, val = _batches(n, s, mesh, seed=1), _batches(n, s, mesh, seed=2)
  setup = {
    "batch": s["batch"],
    "patch": s["patch"],
    "scale": SCALE,
    "cells": s["cells"],
    "channels": s["channels"],
    "nodes": s["nodes"],
    "ops": space.ops,
    "exact_form": form if mode == "exact" else None,
    **options,
    "params": int(sum(np.size(x) for x in jax.tree.leaves(w))),
  }
  args = [(t, v, key_) for t, v in zip(train, val, strict=True)]
  step = darts_search.compile_bilevel_step(step_fn, mesh)
  return Case(step, state, args, _setup(config, setup))


def _gpnas_net(section: str, n: int) -> Case:
  """Return the train step of a GP-NAS network: a DRN, or an RCAN (the same space's family)."""
  s = _sizes(section)
  config = train_config.get_config("paper")
  if section == "drn":
    depth, size = s["blocks"], s["stages"]
    space = spaces.get(
      "drn",
      features=(s["features"],),
      blocks=(depth,),
      stages=(size,),
      families=("drn",),
      reduction=s["reduction"],
    )
  else:
    depth, size = s["groups"], s["blocks"]
    space = spaces.get(
      "drn",
      features=(s["features"],),
      blocks=(depth,),
      stages=(size,),
      families=("rcan",),
      rcan_groups=(depth,),
      rcan_blocks=(size,),
      reduction=s["reduction"],
    )
  arch = space.decode([0, 0, 0, 0])
  network = space.build(arch, SCALE, dtype=compute.compute_dtype(_compute(config)))
  params = compute.init_params(network, s["patch"], 0)
  return _train_case(network, params, config, s, n, _setup(config, {"arch": arch.to_dict()}))


def _drn(key: str, n: int) -> Case:
  """Return the DRN train step."""
  del key
  return _gpnas_net("drn", n)


def _rcan(key: str, n: int) -> Case:
  """Return the RCAN train step."""
  del key
  return _gpnas_net("rcan", n)


def _hnas(key: str, n: int) -> Case:
  """Return the HNAS supernet train step, a new architecture per call."""
  del key
  s = _sizes("hnas")
  config = hnas_config.get_config("tiny" if _TINY.value else "paper")
  space = spaces.get("hnas", layers=s["layers"], nodes=s["nodes"], channels=s["channels"])
  options = compute.supernet_options(_compute(config), space)
  network = space.supernet(SCALE, **options)
  x0 = jnp.zeros((1, s["patch"], s["patch"], 3), jnp.float32)
  max_tokens = jnp.asarray(space.encode(space.max_arch()), jnp.int32)
  params = jax.jit(network.init)(train_lib.init_key(0), x0, max_tokens)["params"]
  setup = {"layers": s["layers"], "nodes": s["nodes"], "channels": s["channels"], **options}
  return _train_case(network, params, config, s, n, _setup(config, setup), space=space)


BUILDERS = {
  "edsr": _edsr,
  "deconas": _deconas,
  "darts": _darts,
  "drn": _drn,
  "rcan": _rcan,
  "hnas": _hnas,
}


def _device_peak() -> int | None:
  """Return the device's measured peak bytes in use, or None when the runtime reports none."""
  stats = jax.devices()[0].memory_stats()
  return None if not stats or "peak_bytes_in_use" not in stats else int(stats["peak_bytes_in_use"])


def cost_numbers(cost) -> tuple[float | None, float | None]:
  """Return (flops, bytes accessed) of a `cost_analysis()` result: a dict or a list of dicts."""
  if cost is None:
    return None, None
  parts = [cost] if isinstance(cost, dict) else [c for c in cost if isinstance(c, dict)]
  out = []
  for name in ("flops", "bytes accessed"):
    values = [float(p[name]) for p in parts if name in p and p[name] is not None]
    total = sum(values) if values else None
    out.append(total if total is not None and math.isfinite(total) and total >= 0 else None)
  return out[0], out[1]


def measure(case: Case, steps: int) -> dict:
  """Return the row's measurements of `case`: compile, `steps` timed calls, memory and cost."""
  t0 = time.perf_counter()
  compiled = case.step.lower(case.state, *case.args[0]).compile()
  compile_s = time.perf_counter() - t0
  _emit({"event": "compiled", "compile_s": compile_s})
  try:
    flops, nbytes = cost_numbers(compiled.cost_analysis())
  except Exception:  # a backend without cost analysis still gets its timings
    flops, nbytes = None, None
  loops = re.search(r"\bwhile\(", compiled.as_text() or "") is not None
  state, metrics = compiled(case.state, *case.args[0])  # first-call allocations stay untimed
  jax.block_until_ready((state, metrics))
  times = []
  for i in range(1, steps + 1):
    t = time.perf_counter()
    state, metrics = compiled(state, *case.args[i])
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t)
  median_s = float(np.median(times))
  peak = _device_peak()
  if peak is not None:
    source = "device memory_stats peak_bytes_in_use"
  else:
    mem = compiled.memory_analysis()
    peak = None if mem is None else mem.temp_size_in_bytes + mem.argument_size_in_bytes
    source = None if mem is None else "compiled memory_analysis temp + argument"
  return {
    "compile_s": compile_s,
    "median_ms": 1e3 * median_s,
    "step_ms": [1e3 * t for t in times],
    "peak_gib": None if peak is None else peak / 2**30,
    "peak_source": source,
    "flops": flops,
    "bytes_accessed": nbytes,
    "tflops_per_s": None if flops is None or median_s <= 0 else flops / median_s / 1e12,
    "hlo_has_loops": loops,
  }


def _device_info() -> dict:
  """Return the device fields of a row (this initialises the backend)."""
  d = jax.devices()[0]
  return {
    "device": d.device_kind,
    "platform": d.platform,
    "devices": jax.device_count(),
    "jax_version": jax.__version__,
  }


def run_section(section: str, variants: list[str], steps: int) -> None:
  """Run `variants` of `section` here, reporting events; stop early to isolate device peaks."""
  _emit({"event": "device", **_device_info()})
  for i, key in enumerate(variants):
    if i and _device_peak() is not None:
      # memory_stats' peak never resets: the suite runs the rest in a fresh process.
      _emit({"event": "isolate"})
      return
    _emit({"event": "start", "key": key})
    t0 = time.perf_counter()
    row = {"section": section, "key": key, "variant": variant_label(section, key)}
    try:
      case = BUILDERS[section](key, steps + 1)
      row.update(status="ok", **measure(case, steps), setup=case.setup)
    except Exception as e:  # one failing variant must not end the suite
      row["status"] = "error: " + _one_line(f"{type(e).__name__}: {e}")
    row["wall_s"] = time.perf_counter() - t0
    _emit({"event": "row", "row": row})
    case = None  # frees the device buffers before the next variant


# --------------------------------------------------------------------------------------------------
# The suite: one process per section (or variant), each under its time limit.
# --------------------------------------------------------------------------------------------------
ROW_FIELDS = (
  "section",
  "variant",
  "key",
  "status",
  "compile_s",
  "median_ms",
  "step_ms",
  "peak_gib",
  "peak_source",
  "flops",
  "bytes_accessed",
  "tflops_per_s",
  "hlo_has_loops",
  "device",
  "platform",
  "devices",
  "jax_version",
  "setup",
  "wall_s",
  "note",
)


def _one_line(text: str, limit: int = 300) -> str:
  """Return `text` on one line, at most `limit` characters."""
  line = " ".join(str(text).split())
  return line if len(line) <= limit else line[: limit - 3] + "..."


def _strict(value):
  """Return `value` with every non-finite float replaced by None (strict JSON)."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: _strict(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [_strict(v) for v in value]
  return value


def parse_timeouts(entries: list[str], sections, tiny: bool) -> dict[str, float]:
  """Return {section: seconds} from --section_timeout_s entries ("60", "darts=300")."""
  limits = {s: TINY_TIMEOUT_S if tiny else float(DEFAULT_TIMEOUT_S[s]) for s in sections}
  for entry in entries:
    name, _, value = entry.rpartition("=")
    try:
      seconds = float(value)
    except ValueError:
      raise app.UsageError(
        f"--section_timeout_s: {entry!r} is not SECONDS or SECTION=SECONDS"
      ) from None
    if not seconds > 0:
      raise app.UsageError(f"--section_timeout_s: {entry!r} must be positive")
    if not name:
      limits = dict.fromkeys(limits, seconds)
    elif name in SECTIONS:
      if name in limits:
        limits[name] = seconds
    else:
      raise app.UsageError(f"--section_timeout_s: unknown section {name!r}; sections: {SECTIONS}")
  return limits


def _row(section: str, key: str, info: dict, fields: dict) -> dict:
  """Return a row of the suite with every field, unknown ones None."""
  row = dict.fromkeys(ROW_FIELDS)
  row.update(section=section, key=key, variant=variant_label(section, key))
  row["jax_version"] = jax.__version__
  row.update({k: v for k, v in info.items() if k in ROW_FIELDS})
  row.update(fields)
  return row


def _child_cmd(section: str, variants: list[str], steps: int) -> list[str]:
  """Return the argv of a section process."""
  cmd = [sys.executable, "-m", "benchmarks.suite", f"--run_section={section}"]
  cmd += [f"--run_variants={','.join(variants)}", f"--steps={steps}"]
  cmd += ["--tiny" if _TINY.value else "--notiny"]
  cmd += [f"--batch={_BATCH.value}", f"--patch={_PATCH.value}"]
  cmd += [f"--kernels={_KERNELS.value}", f"--compute_dtype={_COMPUTE.value}"]
  return cmd


def _kill(proc: subprocess.Popen) -> None:
  """Kill the process group of `proc` (a section process and anything it started)."""
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass  # it ended on its own meanwhile


def _run_child(cmd: list[str], limit_s: float) -> tuple[list[dict], bool, int | None]:
  """Return (events, timed_out, exit code) of a section process killed after `limit_s`."""
  repo = Path(__file__).resolve().parents[1]
  env = dict(os.environ)
  env["PYTHONPATH"] = str(repo) + os.pathsep + env.get("PYTHONPATH", "")
  # A session of its own: a timeout kills the process group, whatever it started.
  proc = subprocess.Popen(
    cmd, cwd=repo, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
  )
  timed_out = False
  try:
    out, _ = proc.communicate(timeout=limit_s)
  except subprocess.TimeoutExpired:
    timed_out = True
    _kill(proc)
    out, _ = proc.communicate()
  except BaseException:
    _kill(proc)
    proc.wait()
    raise
  events = []
  for line in out.splitlines():
    if line.startswith(PROTOCOL):
      events.append(json.loads(line[len(PROTOCOL) :]))
    elif line.strip():
      print(line, file=sys.stderr)  # stdout is the suite's: the table comes last
  return events, timed_out, proc.returncode


def parse_sections(entries: list[str]) -> dict[str, list[str]]:
  """Return {section: its variants to run} from --sections entries `section` or `section:variant`."""
  chosen: dict[str, list[str]] = {}
  for entry in entries:
    section, _, variant = entry.partition(":")
    if section not in SECTIONS:
      raise app.UsageError(
        f"--sections: unknown section {section!r}; sections: {', '.join(SECTIONS)}"
      )
    if variant and variant not in VARIANTS[section]:
      raise app.UsageError(
        f"--sections: {entry!r}: section {section} has no variant {variant!r}; "
        f"its variants: {', '.join(VARIANTS[section])}"
      )
    wanted = set(chosen.get(section, ())) | set([variant] if variant else VARIANTS[section])
    chosen[section] = [v for v in VARIANTS[section] if v in wanted]  # the section's own order
  if not chosen:
    raise app.UsageError(f"--sections: none given; sections: {', '.join(SECTIONS)}")
  return chosen


def run_sections(
  sections, limits: dict[str, float], steps: int, jobs: int = 1, variants=None
) -> list[dict]:
  """Return the rows of every section (in order), each section within its time limit."""
  variants = variants or {}
  args = [(s, limits[s], steps, variants.get(s)) for s in sections]
  if jobs <= 1:
    return [row for a in args for row in section_rows(*a)]
  with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
    futures = [pool.submit(section_rows, *a) for a in args]
    return [row for f in futures for row in f.result()]


def section_rows(section: str, limit_s: float, steps: int, variants=None) -> list[dict]:
  """Return the rows of one section (`variants` of it, default all): processes until done or `limit_s`."""
  rows = []
  pending = list(variants or VARIANTS[section])
  deadline = time.monotonic() + limit_s
  info: dict = {}
  while pending:
    left = deadline - time.monotonic()
    if left <= 0:
      break
    events, timed_out, code = _run_child(_child_cmd(section, pending, steps), left)
    running, compile_s, produced = None, None, False
    for event in events:
      kind = event["event"]
      if kind == "device":
        info = {k: v for k, v in event.items() if k != "event"}
      elif kind == "start":
        running, compile_s = event["key"], None
      elif kind == "compiled":
        compile_s = event["compile_s"]
      elif kind == "row":
        row = _row(section, event["row"]["key"], info, event["row"])
        rows.append(row)
        pending.remove(row["key"])
        running, produced = None, True
        _progress(row)
    if not pending:
      break
    if timed_out:
      when = "after" if compile_s is not None else "before"
      note = f"killed {when} the step compiled: section limit {limit_s:g} s"
      key = running or pending[0]
      fields = {"status": "timeout", "compile_s": compile_s, "note": note}
      rows.append(_row(section, key, info, fields))
      pending.remove(key)
      _progress(rows[-1])
      break
    if running is not None or not produced:
      # The process died (or stopped) without a row for the variant it was on.
      status = f"error: section process exited with code {code} without a row"
      key = running or pending[0]
      rows.append(_row(section, key, info, {"status": status, "compile_s": compile_s}))
      pending.remove(key)
      _progress(rows[-1])
  for key in pending:
    note = f"not started: section limit {limit_s:g} s spent"
    rows.append(_row(section, key, info, {"status": "timeout", "note": note}))
    _progress(rows[-1])
  return rows


def _progress(row: dict) -> None:
  """Print one line as a row comes in (before the table)."""
  print(f"[suite] {row['section']} {row['variant']}: {row['status']}", flush=True)


def _fmt(value, spec: str) -> str:
  """Return `value` formatted by `spec`, or "-" as wide when it is unknown."""
  return format(value, spec) if value is not None else "-".rjust(int(spec.split(".")[0]))


def table(rows: list[dict]) -> str:
  """Return the plain-text table of `rows`: a header line, then one line per row."""
  lines = [
    f"{'section':<8} {'variant':<26} {'compile_s':>9} {'median_ms':>10} {'peak_GiB':>8} "
    f"{'peak_src':<8} {'GFLOP':>10} {'GB':>9} {'TFLOP/s':>8} {'loops':<5} status"
  ]
  for r in rows:
    src = r["peak_source"] or ""
    src = "device" if src.startswith("device") else "xla" if src else "-"
    gflop = None if r["flops"] is None else r["flops"] / 1e9
    gbytes = None if r["bytes_accessed"] is None else r["bytes_accessed"] / 1e9
    loops = "-" if r["hlo_has_loops"] is None else "yes" if r["hlo_has_loops"] else "no"
    lines.append(
      f"{r['section']:<8} {r['variant']:<26} {_fmt(r['compile_s'], '9.2f')} "
      f"{_fmt(r['median_ms'], '10.3f')} {_fmt(r['peak_gib'], '8.3f')} {src:<8} "
      f"{_fmt(gflop, '10.3f')} {_fmt(gbytes, '9.3f')} {_fmt(r['tflops_per_s'], '8.3f')} "
      f"{loops:<5} {_one_line(r['status'], 60)}"
    )
  return "\n".join(lines)


def _steps() -> int:
  """Return the timed steps per row, checking --steps against --tiny."""
  steps = _STEPS.value if _STEPS.value is not None else (2 if _TINY.value else 5)
  minimum = 2 if _TINY.value else 5
  if steps < minimum:
    raise app.UsageError(
      f"--steps must be at least {minimum}{'' if _TINY.value else ' (or --tiny)'}"
    )
  return steps


def output_path(out: str, tiny: bool) -> Path:
  """Return the file --out names: `out` itself, or the default name inside a folder (or the
  current folder when `out` is empty)."""
  name = "benchmark_suite_tiny.json" if tiny else "benchmark_suite.json"
  if not out:
    return Path.cwd() / name
  path = Path(out).expanduser()
  if path.is_dir() or out.endswith(os.sep):
    return path.absolute() / name
  return path.absolute()


def _check_writable(out: Path) -> None:
  """Raise UsageError naming --out when `out` cannot be written (before minutes of timing)."""
  try:
    out.parent.mkdir(parents=True, exist_ok=True)
    existed = out.exists()
    with out.open("a"):  # appends nothing: an earlier file stays as it is until the rows come
      pass
    if not existed:
      out.unlink()
  except OSError as e:
    raise app.UsageError(f"--out={_OUT.value}: cannot write {out}: {e.strerror or e}") from None


def main(argv):
  del argv
  steps = _steps()
  if _RUN_SECTION.value:
    run_section(_RUN_SECTION.value, list(_RUN_VARIANTS.value), steps)
    return 0
  # This process never needs a device; on a GPU host it would hold memory the sections need.
  jax.config.update("jax_platforms", "cpu")
  variants = parse_sections(_SECTIONS.value)
  sections = list(variants)
  limits = parse_timeouts(_TIMEOUT.value, sections, _TINY.value)
  if _BATCH.value < 0 or _PATCH.value < 0:
    raise app.UsageError("--batch and --patch must be positive (0: each section's own)")
  if _JOBS.value > 1 and not _TINY.value:
    raise app.UsageError("--jobs > 1 shares the device between sections: only with --tiny")
  out = output_path(_OUT.value, _TINY.value)
  _check_writable(out)
  budget = ", ".join(f"{s} {limits[s]:g} s" for s in sections)
  print(f"[suite] {'tiny' if _TINY.value else 'full'} sizes, {steps} timed steps; limits: {budget}")
  t0 = time.monotonic()
  rows = _strict(run_sections(sections, limits, steps, _JOBS.value, variants))
  out.write_text(json.dumps(rows, indent=2, allow_nan=False) + "\n")
  first = next((r for r in rows if r["device"]), {})
  print(
    f"[suite] {len(rows)} rows in {time.monotonic() - t0:.1f} s on {first.get('device', '?')} "
    f"({first.get('devices', '?')} device(s)), jax {jax.__version__}; wrote {out}"
  )
  print(table(rows), flush=True)
  return 1 if any(r["status"].startswith("error") for r in rows) else 0


if __name__ == "__main__":
  app.run(main)
