"""Measured latency on this host: the median of timed calls, for a network's forward pass.

  time_call(fn, x)                                   # {"median_ms", "p10_ms", "p90_ms", "runs"}
  network_ms(space.build(arch, 2), (1, 180, 320, 3))

Multiply-adds are a poor stand-in for speed: depthwise, dilated and resize ops are memory-bound,
so networks of equal multiply-adds can differ several times in latency. `host()` names what a
latency was seen to depend on; `nasr.searches.op_latency` times the ops of a space once per host
and adds them up for the one-shot reward's latency term.
"""

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nasr.core.errors import ConfigError

WARMUP, REPEATS = 2, 15


def _cpu_model() -> str:
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def host() -> dict:
  """Return what a latency was seen to depend on: backend, device kind, CPU, JAX, threads."""
  device = jax.devices()[0]
  return {
    "backend": jax.default_backend(),
    "device": device.device_kind,
    "cpu": _cpu_model(),
    "cpus": os.cpu_count(),
    "jax": jax.__version__,
  }


def host_key() -> str:
  """Return `host()` as one string (the cache's key for this machine)."""
  return " | ".join(f"{k}={v}" for k, v in host().items())


def summarize(times_s: Sequence[float]) -> dict:
  """Return the median, 10th and 90th percentile (ms) of per-call times in seconds."""
  ms = sorted(1e3 * t for t in times_s)
  if not ms:
    raise ValueError("no timed calls")
  q = np.percentile(ms, [10, 90])
  return {
    "median_ms": round(statistics.median(ms), 4),
    "p10_ms": round(float(q[0]), 4),
    "p90_ms": round(float(q[1]), 4),
    "runs": len(ms),
  }


def time_call(
  fn: Callable,
  *args,
  warmup: int = WARMUP,
  repeats: int = REPEATS,
  clock: Callable[[], float] = time.perf_counter,
) -> dict:
  """Return `summarize` of `repeats` timed calls of fn(*args) (results waited for), after
  `warmup` untimed ones (compilation, caches)."""
  if warmup < 0 or repeats < 1:
    raise ConfigError(f"latency: warmup must be >= 0 and repeats >= 1, got {warmup}, {repeats}")
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = clock()
    jax.block_until_ready(fn(*args))
    times.append(clock() - t0)
  return summarize(times)


def _random_variables(module, shape: Sequence[int]):
  x = jnp.zeros(tuple(shape), jnp.float32)
  return jax.jit(module.init)(jax.random.PRNGKey(0), x), x


def network_ms(module, input_shape: Sequence[int], **timing) -> dict:
  """Return `time_call` of module's jitted forward pass on an input of `input_shape` (NHWC), with
  initial weights (latency does not depend on their values)."""
  variables, x = _random_variables(module, input_shape)
  x = jax.random.uniform(jax.random.PRNGKey(1), x.shape, jnp.float32)
  return time_call(jax.jit(module.apply), variables, x, **timing)


def module_median_ms(module, shape: Sequence[int]) -> float:
  """Return the median latency (ms) of one forward pass of `module` on `shape`."""
  return network_ms(module, shape)["median_ms"]
