"""What a run computes with: the compute dtype, the kernel forms, the loss, the optimiser, and the
jitted, sharded steps.

The trainer and every search build their steps here, so a config key such as `compute_dtype`,
`kernels` or `loss` means the same in all of them: `compile_train_step` (a network, or a supernet
given the architecture), `compile_sampled_step` (a supernet that samples its own architecture
inside the step: the one-shot search's shared-weight step), `supernet_options` (what a config asks
of a space's supernet), `make_tx` and `make_config_loss`.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from nasr import parallel
from nasr.core.errors import ConfigError
from nasr.estimation import losses
from nasr.estimation import train as train_lib

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
KERNELS = ("auto", "cpu", "accelerator")


def compute_dtype(config: ml_collections.ConfigDict):
  """Return the dtype networks compute in: config.compute_dtype (parameters stay float32)."""
  name = config.get("compute_dtype", "float32") or "float32"
  if name not in COMPUTE_DTYPES:
    raise ConfigError(
      f"config.compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {name!r}"
    )
  return COMPUTE_DTYPES[name]


def kernels(config: ml_collections.ConfigDict, backend: str | None = None) -> str:
  """Return "cpu" or "accelerator": config.kernels, where "auto" follows the JAX backend.

  The CPU forms are what each config tunes for XLA:CPU (shifted depthwise convs, tap-matmul kernel
  gradients in rolled loops: `depthwise`, `supernet.shifted`); the accelerator forms are XLA's own
  convolutions (`feature_group_count` depthwise convs, no tap loops).
  """
  mode = config.get("kernels", "auto") or "auto"
  if mode not in KERNELS:
    raise ConfigError(f"config.kernels must be one of {', '.join(KERNELS)}, got {mode!r}")
  if mode == "auto":
    return "cpu" if (backend or jax.default_backend()) == "cpu" else "accelerator"
  return mode


def log_compute(config: ml_collections.ConfigDict) -> None:
  """Log the compute dtype and the kernel forms this run uses (and why)."""
  mode = config.get("kernels", "auto") or "auto"
  chosen = kernels(config)
  why = f"auto on the {jax.default_backend()} backend" if mode == "auto" else "config.kernels"
  forms = (
    "the config's CPU forms"
    if chosen == "cpu"
    else "XLA's own convolutions (grouped depthwise convs, no tap loops, gathered supernet slots)"
  )
  logging.info(
    "compute: %s, parameters float32; kernels: %s (%s): %s",
    jnp.dtype(compute_dtype(config)).name,
    chosen,
    why,
    forms,
  )


def supernet_options(config: ml_collections.ConfigDict, space) -> dict:
  """Return the keyword arguments of `space.supernet`: config.supernet, the compute dtype, and
  the accelerator forms when `kernels` resolves to "accelerator" (options the space lacks are
  left out); an option of config.supernet that the space's supernet does not take fails here."""
  options = dict(config.get("supernet", {}) or {})
  accepted = space.supernet_options()
  unknown = sorted(set(options) - accepted)
  if unknown:
    raise ConfigError(
      f"config.supernet.{unknown[0]}: the {type(space).__name__} supernet has no such option; "
      f"it takes {', '.join(sorted(accepted)) or 'none'}"
    )
  if "dtype" in accepted:
    options["dtype"] = compute_dtype(config)
  if kernels(config) == "accelerator":
    for key, value in _ACCELERATOR_FORMS.items():
      if key in accepted:
        options[key] = value
  return options


# What "accelerator" sets in a supernet's options: no CPU-only forms; DeCoNAS's child-only work
# as one lax.switch per op over its gathered slots (a lax.cond per slot on the CPU, where the
# per-slot form's smaller kernels are no slower: BENCHMARKS.md).
_ACCELERATOR_FORMS = {"shifted": False, "gathered": True}


def _apply_fn(network) -> Callable:
  def apply(params, x, rng, arch):
    del rng  # the baselines and searched networks are deterministic
    if arch is None:
      return network.apply({"params": params}, x)
    return network.apply({"params": params}, x, arch)  # a supernet: the architecture is data

  return apply


def init_params(network, patch: int, seed: int):
  """Return the network's initial parameters for LR patches of side `patch`."""
  x = jnp.zeros((1, patch, patch, 3), jnp.float32)
  return jax.jit(network.init)(train_lib.init_key(seed), x).get("params", {})


def make_tx(config: ml_collections.ConfigDict, total_steps: int):
  """Return (Adam transformation, learning-rate schedule) of `config.optim`."""
  o = config.optim
  schedule = train_lib.make_schedule(
    o.lr,
    o.schedule,
    total_steps,
    o.decay_every,
    o.decay_factor,
    o.warmup_steps,
    lr_end=o.get("lr_end", 0.0),  # configs older than lr_end: cosine to 0
  )
  return train_lib.make_adam(
    schedule, o.b1, o.b2, weight_decay=o.weight_decay, grad_clip=o.grad_clip
  ), schedule


def make_config_loss(config: ml_collections.ConfigDict) -> Callable:
  """Return the loss `config.loss` names, mixed by `config.ms_ssim_weight` where it applies."""
  return losses.make_loss(config.loss, config.get("ms_ssim_weight", None))


def compile_train_step(network, tx, loss_fn, mesh, supernet: bool = False) -> Callable:
  """Return the jitted step(state, batch, rng[, arch]): params replicated, batch split, state donated.

  With `supernet=True` the step takes the sampled architecture as a fourth (replicated) array.
  """
  repl, split = parallel.replicated(mesh), parallel.data_sharded(mesh)
  return jax.jit(
    train_lib.make_train_step(_apply_fn(network), tx, loss_fn),
    in_shardings=(repl, split, repl, repl) if supernet else (repl, split, repl),
    out_shardings=(repl, repl),
    donate_argnums=(0,),
  )


def compile_sampled_step(network, tx, loss_fn, propose: Callable, mesh) -> Callable:
  """Return the jitted step(state, policy, batch, rng, key) of a supernet that samples its own
  architecture: tokens = propose(policy, key, 1)[0] inside the step, so a search's shared-weight
  steps need no host round trip (params and policy replicated, batch split, state donated)."""
  train = train_lib.make_train_step(_apply_fn(network), tx, loss_fn)

  def step(state, policy, batch, rng, key):
    tokens, _ = propose(policy, key, 1)
    return train(state, batch, rng, tokens[0])

  repl, split = parallel.replicated(mesh), parallel.data_sharded(mesh)
  return jax.jit(
    step,
    in_shardings=(repl, repl, split, repl, repl),
    out_shardings=(repl, repl),
    donate_argnums=(0,),
  )
