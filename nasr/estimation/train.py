"""Train state, optimizers and step factories; steps are returned unjitted (callers jit and shard)."""

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasr.core.errors import ConfigError, DivergedError

Params = Any
ApplyFn = Callable[..., jax.Array]
LossFn = Callable[[jax.Array, jax.Array], jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything a training run updates: step counter, parameters, optimizer state."""

  step: jax.Array
  params: Params
  opt_state: optax.OptState


def init_key(seed: int) -> jax.Array:
  """Return the PRNG key used to initialise network parameters.

  RBG rather than the default threefry: XLA compiles a threefry-based init of ~100 parameter arrays
  slowly on CPU (13.7 s against 3.7 s for the tiny DeCoNAS supernet), and init runs once per run.
  """
  return jax.random.key(seed, impl="rbg")


def create_train_state(params: Params, tx: optax.GradientTransformation) -> TrainState:
  """Return a fresh TrainState at step 0 for `params`."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def make_schedule(
  lr: float,
  schedule: str = "step",
  total_steps: int = 1,
  decay_every: int = 0,
  decay_factor: float = 0.5,
  warmup_steps: int = 0,
  lr_end: float = 0.0,
) -> optax.Schedule:
  """Return a learning-rate schedule: 'constant', 'step' (x decay_factor every K steps) or 'cosine'.

  'cosine' decays from `lr` to `lr_end` over `total_steps - warmup_steps` steps (HNAS: 1e-3 to
  1e-5), then stays at `lr_end`; `lr_end` is only used by 'cosine'.

  Raises:
    ConfigError: an unknown schedule, or a cosine `lr_end` outside [0, lr].
  """
  if schedule == "constant":
    sched = optax.constant_schedule(lr)
  elif schedule == "step":
    if decay_every <= 0:
      sched = optax.constant_schedule(lr)
    else:
      sched = optax.exponential_decay(lr, decay_every, decay_factor, staircase=True)
  elif schedule == "cosine":
    if not 0.0 <= lr_end <= lr:
      raise ConfigError(f"optim.lr_end must be between 0 and optim.lr={lr}, got {lr_end}")
    # alpha = 0 (lr_end = 0) is optax's default: the same schedule as before lr_end existed.
    alpha = lr_end / lr if lr > 0 else 0.0
    sched = optax.cosine_decay_schedule(lr, max(1, total_steps - warmup_steps), alpha=alpha)
  else:
    raise ConfigError(f"unknown optim.schedule {schedule!r}; available: constant, step, cosine")
  if warmup_steps > 0:
    sched = optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup_steps), sched], [warmup_steps]
    )
  return sched


def make_adam(
  schedule: optax.Schedule,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  weight_decay: float = 0.0,
  grad_clip: float = 0.0,
) -> optax.GradientTransformation:
  """Return Adam (AdamW when weight_decay > 0), optionally after global-norm gradient clipping."""
  parts = []
  if grad_clip > 0:
    parts.append(optax.clip_by_global_norm(grad_clip))
  if weight_decay > 0:
    parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
  else:
    parts.append(optax.adam(schedule, b1=b1, b2=b2, eps=eps))
  return optax.chain(*parts)


def to_unit(x: jax.Array, dtype=jnp.float32) -> jax.Array:
  """Return uint8 images as floats in [0, 1] (floats pass through unchanged)."""
  if jnp.issubdtype(x.dtype, jnp.integer):
    return x.astype(dtype) / 255.0
  return x.astype(dtype)


def make_train_step(
  apply_fn: ApplyFn, tx: optax.GradientTransformation, loss_fn: LossFn
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
  """Return step(state, batch, rng) -> (state, metrics) for a fixed network.

  `apply_fn(params, lr_images, rng, arch)` maps [N,h,w,3] floats in [0,1] to [N,h*s,w*s,3]; `arch` is
  the sampled architecture of a weight-sharing supernet (an int32 array, so one compile serves every
  architecture) or None for a fixed network. The batch holds
  uint8 "lr"/"hr"; the loss is a mean over the global batch, so the result does not depend on how the
  batch is split over devices.
  """

  def step(state: TrainState, batch: dict, rng: jax.Array, arch: jax.Array | None = None):
    lr, hr = to_unit(batch["lr"]), to_unit(batch["hr"])
    rng = jax.random.fold_in(rng, state.step)

    def loss_of(params):
      return loss_fn(apply_fn(params, lr, rng, arch), hr)

    loss, grads = jax.value_and_grad(loss_of)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads)}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return step


def all_finite(tree) -> jax.Array:
  """Return a scalar bool: every leaf of `tree` is free of NaN and Inf."""
  leaves = [
    jnp.all(jnp.isfinite(x))
    for x in jax.tree.leaves(tree)
    if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def check_finite(losses_pending: list, first_step: int, last_good: int | str | None) -> float:
  """Return the mean of the pending losses; raise DivergedError at the first non-finite one.

  Args:
    losses_pending: per-step losses (device scalars), fetched together so the host syncs once.
    first_step: the step of losses_pending[0] minus one (the step count before it).
    last_good: the step of the newest checkpoint (or its description, "after epoch 3"), named in
      the error (None: none yet).
  """
  values = np.asarray(jax.device_get(losses_pending), np.float64)
  bad = np.flatnonzero(~np.isfinite(values))
  if bad.size:
    step = first_step + int(bad[0]) + 1
    where = "none yet" if last_good is None else last_good
    where = f"step {where}" if isinstance(where, int) else where
    raise DivergedError(
      f"loss became {values[bad[0]]} at step {step}; training stopped. "
      f"The last good checkpoint ({where}) is kept."
    )
  return float(values.mean()) if values.size else float("nan")
