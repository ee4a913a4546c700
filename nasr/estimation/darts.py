"""DARTS' bilevel optimisation: architecture alpha on one half of the data, weights w on the other.

  min_alpha L_val(w*(alpha), alpha)   s.t.   w*(alpha) = argmin_w L_train(w, alpha)

One step (`make_bilevel_step`) first updates alpha with the gradient of the unrolled validation
loss L_val(w', alpha), w' = w - xi * (grad_w L_train(w, alpha) + momentum * b + weight_decay * w)
(DARTS' virtual step: the SGD step the weights are about to take, b the momentum buffer), then
updates w with SGD on L_train at the new alpha. Three alpha-gradient modes:

  first_order        grad_alpha L_val(w, alpha) (xi = 0; DARTS' first-order approximation)
  finite_difference  DARTS' second order: grad_alpha L_val(w', alpha) - xi * H v with the
                     Hessian-vector product H v = grad^2_{alpha,w} L_train(w, alpha) v taken by a
                     central difference (grad_alpha L_train(w + eps v) - grad_alpha L_train(w -
                     eps v)) / 2 eps, v = grad_w' L_val(w', alpha), eps = 0.01 / ||v||
  exact              jax.grad with respect to alpha of L_val(w'(alpha), alpha), differentiating
                     through the virtual step (the finite difference is then unnecessary)

The exact gradient has two forms (`exact_form`), equal up to rounding: "reverse" differentiates
the whole unrolled objective in reverse mode (reverse over reverse: XLA keeps the residuals of
the inner backward pass of every cell, 51 GiB for the paper-size supernet); "jvp" uses that w' is
linear in g = grad_w L_train(w, alpha), so d L_val(w') / d alpha = dL_val/dalpha - xi * d<v, g>/dalpha
with v = grad_w' L_val, and takes d<v, g>/dalpha = d/dt grad_alpha L_train(w + t v, alpha) at t = 0
exactly by forward mode over reverse mode (the mixed partials commute); rematerialisation inside
it still applies (paper size: 11.6 GiB against 51.5, BENCHMARKS.md).

Steps are returned unjitted (DESIGN rule 3): the caller jits them once with the state donated and
the two batches split over the `data` mesh axis; losses are means over the global batch, so the
result does not depend on the number of devices.
"""

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from nasr.core.errors import ConfigError

Params = Any
Batch = dict
# loss(w, alpha, batch) -> scalar: the network's loss at weights w and architecture alpha.
BilevelLoss = Callable[[Params, jax.Array, Batch], jax.Array]

ALPHA_MODES = ("first_order", "finite_difference", "exact")
EXACT_FORMS = ("reverse", "jvp")
W_SCHEDULES = ("constant", "cosine")


@flax.struct.dataclass
class DartsState:
  """The whole differentiable-search state: weights and architecture with their optimizers."""

  step: jax.Array  # completed bilevel steps (int32)
  w: Params  # supernet weights
  w_opt: optax.OptState  # SGD-with-momentum state of w
  alpha: jax.Array  # architecture logits [edges, ops]
  alpha_opt: optax.OptState  # Adam state of alpha


def check_mode(mode: str) -> str:
  """Return `mode` if it is an alpha-gradient mode, else raise ConfigError naming the choices."""
  if mode not in ALPHA_MODES:
    raise ConfigError(f"unknown alpha mode {mode!r}; available: {', '.join(ALPHA_MODES)}")
  return mode


def check_exact_form(form: str) -> str:
  """Return `form` if it is a form of the exact gradient, else raise ConfigError."""
  if form not in EXACT_FORMS:
    raise ConfigError(f"unknown exact_form {form!r}; available: {', '.join(EXACT_FORMS)}")
  return form


def make_w_schedule(
  lr: float, schedule: str = "cosine", total_steps: int = 1, lr_min: float = 0.0
) -> optax.Schedule:
  """Return the weights' learning rate: 'constant', or 'cosine' from lr to lr_min (DARTS)."""
  if schedule == "constant":
    return optax.constant_schedule(lr)
  if schedule == "cosine":
    if lr <= 0 or not 0 <= lr_min <= lr:
      raise ConfigError(f"cosine schedule needs 0 <= lr_min <= lr, got lr={lr}, lr_min={lr_min}")
    return optax.cosine_decay_schedule(lr, max(1, int(total_steps)), alpha=lr_min / lr)
  raise ConfigError(f"unknown w schedule {schedule!r}; available: {', '.join(W_SCHEDULES)}")


def make_w_optimizer(
  schedule: optax.Schedule | float,
  momentum: float = 0.9,
  weight_decay: float = 1e-3,
  grad_clip: float = 5.0,
) -> optax.GradientTransformation:
  """Return PyTorch-style SGD for w: clip, add weight_decay * w, momentum buffer, scale by -lr.

  The momentum buffer is the `trace` the virtual step reads (`momentum_buffer`).
  """
  parts = []
  if grad_clip > 0:
    parts.append(optax.clip_by_global_norm(grad_clip))
  if weight_decay > 0:
    parts.append(optax.add_decayed_weights(weight_decay))
  parts.append(optax.sgd(schedule, momentum=momentum))
  return optax.chain(*parts)


def make_alpha_optimizer(
  lr: float = 3e-4,
  b1: float = 0.9,
  b2: float = 0.999,
  weight_decay: float = 1e-3,
  eps: float = 1e-8,
) -> optax.GradientTransformation:
  """Return PyTorch-style Adam for alpha: weight decay is an L2 term added to the gradient."""
  parts = [optax.add_decayed_weights(weight_decay)] if weight_decay > 0 else []
  parts.append(optax.adam(lr, b1=b1, b2=b2, eps=eps))
  return optax.chain(*parts)


def create_state(
  w: Params,
  alpha: jax.Array,
  w_tx: optax.GradientTransformation,
  alpha_tx: optax.GradientTransformation,
) -> DartsState:
  """Return a fresh DartsState at step 0."""
  return DartsState(
    step=jnp.zeros((), jnp.int32),
    w=w,
    w_opt=w_tx.init(w),
    alpha=alpha,
    alpha_opt=alpha_tx.init(alpha),
  )


def momentum_buffer(w_opt: optax.OptState, w: Params) -> Params:
  """Return the SGD momentum buffer of `w_opt` (zeros when the optimizer keeps none)."""
  trace = optax.tree_utils.tree_get(w_opt, "trace")
  return jax.tree.map(jnp.zeros_like, w) if trace is None else trace


def to_unit(x: jax.Array) -> jax.Array:
  """Return uint8 images as float32 in [0, 1]; float images pass through in their own dtype."""
  if jnp.issubdtype(x.dtype, jnp.integer):
    return x.astype(jnp.float32) / 255.0
  return x


def make_loss(apply_fn: Callable, loss_fn: Callable) -> BilevelLoss:
  """Return loss(w, alpha, batch) = loss_fn(apply_fn(w, lr, alpha), hr) on a {"lr", "hr"} batch."""

  def loss(w, alpha, batch):
    return loss_fn(apply_fn(w, to_unit(batch["lr"]), alpha), to_unit(batch["hr"]))

  return loss


def _axpy(a, x: Params, y: Params) -> Params:
  """Return y + a * x, leaf by leaf."""
  return jax.tree.map(lambda xi, yi: yi + jnp.asarray(a, yi.dtype) * xi, x, y)


def virtual_step(
  loss: BilevelLoss,
  w: Params,
  alpha: jax.Array,
  batch: Batch,
  xi,
  extra: Params | None = None,
) -> Params:
  """Return w' = w - xi * (grad_w loss(w, alpha, batch) + extra); differentiable in alpha."""
  g = jax.grad(loss)(w, alpha, batch)
  if extra is not None:
    g = jax.tree.map(jnp.add, g, extra)
  return _axpy(-xi, g, w)


def alpha_gradient(
  loss: BilevelLoss,
  w: Params,
  alpha: jax.Array,
  train_batch: Batch,
  val_batch: Batch,
  mode: str,
  xi=0.0,
  extra: Params | None = None,
  fd_scale: float = 0.01,
  exact_form: str = "reverse",
) -> tuple[jax.Array, jax.Array]:
  """Return (d L_val(w'(alpha), alpha) / d alpha, L_val) in the given mode.

  Args:
    loss: loss(w, alpha, batch) -> scalar.
    w: the weights before the virtual step.
    alpha: the architecture logits.
    train_batch: the batch of the virtual step (the weights' half of the data).
    val_batch: the batch of L_val (the architecture's half).
    mode: one of ALPHA_MODES.
    xi: virtual-step size (DARTS: the current weights learning rate); ignored in first_order.
    extra: the alpha-independent part of the step direction (momentum * buffer + decay * w).
    fd_scale: finite_difference only: eps = fd_scale / ||v||.
    exact_form: exact only: "reverse" (jax.grad through the virtual step) or "jvp" (the same
      gradient, its second-order term forward over reverse; see the module docstring).
  """
  check_mode(mode)
  check_exact_form(exact_form)
  if mode == "first_order":
    return _swap(jax.value_and_grad(loss, argnums=1)(w, alpha, val_batch))
  if mode == "exact" and exact_form == "jvp":
    w1 = virtual_step(loss, w, alpha, train_batch, xi, extra)
    val_loss, (v, g_alpha) = jax.value_and_grad(loss, argnums=(0, 1))(w1, alpha, val_batch)
    grad_train = lambda w_: jax.grad(loss, argnums=1)(w_, alpha, train_batch)  # noqa: E731
    _, mixed = jax.jvp(grad_train, (w,), (v,))
    return g_alpha - jnp.asarray(xi, g_alpha.dtype) * mixed, val_loss
  if mode == "exact":

    def unrolled(a):
      return loss(virtual_step(loss, w, a, train_batch, xi, extra), a, val_batch)

    return _swap(jax.value_and_grad(unrolled)(alpha))
  # finite_difference: the Hessian-vector product of the original DARTS.
  w1 = virtual_step(loss, w, alpha, train_batch, xi, extra)
  val_loss, (v, g_alpha) = jax.value_and_grad(loss, argnums=(0, 1))(w1, alpha, val_batch)
  eps = fd_scale / jnp.maximum(optax.global_norm(v), 1e-12)
  grad_train = jax.grad(loss, argnums=1)
  g_plus = grad_train(_axpy(eps, v, w), alpha, train_batch)
  g_minus = grad_train(_axpy(-eps, v, w), alpha, train_batch)
  hvp = (g_plus - g_minus) / (2.0 * eps)
  return g_alpha - jnp.asarray(xi, g_alpha.dtype) * hvp, val_loss


def _swap(value_grad):
  value, grad = value_grad
  return grad, value


def make_bilevel_step(
  loss: BilevelLoss,
  w_tx: optax.GradientTransformation,
  alpha_tx: optax.GradientTransformation,
  mode: str = "exact",
  w_schedule: optax.Schedule | None = None,
  momentum: float = 0.9,
  weight_decay: float = 1e-3,
  xi: float | None = None,
  fd_scale: float = 0.01,
  exact_form: str = "reverse",
) -> Callable[[DartsState, Batch, Batch, jax.Array], tuple[DartsState, dict]]:
  """Return step(state, train_batch, val_batch, rng) -> (state, metrics), unjitted.

  The step updates alpha (gradient of `mode` on val_batch) and then w (SGD on train_batch at the
  new alpha), as DARTS' search loop does.

  Args:
    loss: loss(w, alpha, batch) -> scalar (see `make_loss`).
    w_tx: the weights' optimizer (`make_w_optimizer`).
    alpha_tx: the architecture's optimizer (`make_alpha_optimizer`).
    mode: one of ALPHA_MODES (static: one compile per mode).
    w_schedule: the weights' learning rate per step; the virtual step size xi when xi is None.
    momentum: the weights' SGD momentum, for the virtual step.
    weight_decay: the weights' weight decay, for the virtual step.
    xi: a fixed virtual-step size; None = the current weights learning rate (DARTS).
    fd_scale: finite_difference: eps = fd_scale / ||grad_w' L_val||.
    exact_form: exact: "reverse" or "jvp" (the same gradient; see the module docstring).
  """
  check_mode(mode)
  check_exact_form(exact_form)
  if xi is None and w_schedule is None:
    raise ConfigError("make_bilevel_step needs a fixed xi or the w_schedule that sets it")

  def step(state: DartsState, train_batch: Batch, val_batch: Batch, rng: jax.Array):
    del rng  # the supernet is deterministic; kept so every step has the same signature
    step_xi = w_schedule(state.step) if xi is None else jnp.asarray(xi, jnp.float32)
    w, alpha = state.w, state.alpha
    extra = None
    if mode != "first_order":
      # DARTS' unrolled model: theta - eta * (momentum * buffer + grad + weight_decay * theta).
      buf = momentum_buffer(state.w_opt, w)
      extra = jax.tree.map(lambda b, p: momentum * b + weight_decay * p, buf, w)
    g_alpha, val_loss = alpha_gradient(
      loss, w, alpha, train_batch, val_batch, mode, step_xi, extra, fd_scale, exact_form
    )
    a_updates, alpha_opt = alpha_tx.update(g_alpha, state.alpha_opt, alpha)
    alpha = optax.apply_updates(alpha, a_updates)
    train_loss, g_w = jax.value_and_grad(loss)(w, alpha, train_batch)
    w_updates, w_opt = w_tx.update(g_w, state.w_opt, w)
    w = optax.apply_updates(w, w_updates)
    new = DartsState(step=state.step + 1, w=w, w_opt=w_opt, alpha=alpha, alpha_opt=alpha_opt)
    metrics = {
      "train_loss": train_loss,
      "val_loss": val_loss,
      "alpha_grad_norm": jnp.linalg.norm(g_alpha),
      "w_grad_norm": optax.global_norm(g_w),
      "xi": jnp.asarray(0.0 if mode == "first_order" else step_xi, jnp.float32),
    }
    return new, metrics

  return step
