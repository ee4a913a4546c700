"""REINFORCE with a moving-average baseline and an entropy bonus (ENAS, DeCoNAS).

  loss = -mean((R - b) * log pi(tokens)) - entropy_weight * mean(H(pi | tokens))

Baseline, following ENAS: the baseline is moved towards this batch's mean reward first and the
moved value is subtracted, b <- decay * b + (1 - decay) * mean(R); advantage = R - b. Unlike
ENAS (which starts b at 0 and so spends its first hundreds of steps learning the reward's offset,
e.g. PSNR ~ 30 dB), the first update sets b = mean(R): its advantages are zero and only the entropy
term moves the policy.

log pi and the entropy are recomputed from the tokens by teacher forcing under the current
parameters, so `update` needs nothing from `propose` and a run can be rebuilt from its
(tokens, reward) history.
"""

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from nasr.core import ConfigError, TokenSpec
from nasr.strategies.base import STRATEGIES, Strategy
from nasr.strategies.controller import Controller


class ReinforceState(NamedTuple):
  """Controller parameters, optimizer state and the reward baseline (arrays only)."""

  params: dict
  opt_state: optax.OptState
  baseline: jax.Array  # float32 scalar: moving average of the mean batch reward
  baseline_ready: jax.Array  # bool scalar: False until the first update sets the baseline
  step: jax.Array  # int32 scalar: number of updates done


@STRATEGIES.register("reinforce")
def make_reinforce(
  spec: TokenSpec,
  hidden: int = 64,
  layers: int = 2,
  tanh_constant: float | None = 1.1,
  op_tanh_reduce: float = 1.0,
  temperature: float | None = None,
  learning_rate: float = 3e-4,
  baseline_decay: float = 0.99,
  entropy_weight: float = 1e-4,
  grad_clip: float = 0.0,
) -> Strategy:
  """Return a REINFORCE strategy training an LSTM `Controller` over `spec` with Adam.

  Args:
    spec: the decisions of the search space.
    hidden: LSTM width (DeCoNAS: 64).
    layers: stacked LSTM layers (DeCoNAS: 2).
    tanh_constant: logits are squashed to c * tanh(logits / temperature); None: no squashing.
    op_tanh_reduce: divides `tanh_constant` on the heads that choose operations
      (`spec.op_heads`; ENAS and DeCoNAS: 2.5); 1: every head alike.
    temperature: divides the logits before the tanh; None or 0: 1.
    learning_rate: Adam step size (DeCoNAS: 3e-4).
    baseline_decay: moving-average decay of the reward baseline (ENAS: 0.99).
    entropy_weight: weight of the entropy bonus.
    grad_clip: clip gradients to this global norm; 0 turns clipping off.
  """
  if hidden < 1 or layers < 1:
    raise ConfigError(f"reinforce: hidden and layers must be positive, got {hidden}, {layers}")
  if not 0.0 <= baseline_decay < 1.0:
    raise ConfigError(f"reinforce: baseline_decay must be in [0, 1), got {baseline_decay}")
  if grad_clip < 0:
    raise ConfigError(f"reinforce: grad_clip must be >= 0 (0 = off), got {grad_clip}")
  if temperature is not None and temperature < 0:
    raise ConfigError(f"reinforce: temperature must be positive (0 = none), got {temperature}")
  if not op_tanh_reduce > 0:
    raise ConfigError(
      f"reinforce: op_tanh_reduce must be positive (1 = none), got {op_tanh_reduce}"
    )
  head_tanh_reduce = ()
  if op_tanh_reduce != 1.0:
    ops = set(spec.op_heads)
    head_tanh_reduce = tuple(
      float(op_tanh_reduce) if h in ops else 1.0 for h in range(spec.num_heads)
    )
  model = Controller(
    spec,
    hidden=hidden,
    layers=layers,
    tanh_constant=tanh_constant,
    head_tanh_reduce=head_tanh_reduce,
    temperature=temperature or None,
  )
  clip = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
  tx = optax.chain(*clip, optax.adam(learning_rate))
  return policy_gradient(model, tx, baseline_decay, entropy_weight)


def policy_gradient(
  model: nn.Module,
  tx: optax.GradientTransformation,
  baseline_decay: float,
  entropy_weight: float,
  baseline_reset_every: int = 0,
) -> Strategy:
  """Return a REINFORCE strategy over a policy `model`'s parameters, trained with `tx`.

  Args:
    model: a policy applied as `model.apply(params, rng)` (sample) or `model.apply(params, None,
      forced_tokens=tokens)` (score), returning (tokens int32 [L], log_prob, entropy), as
      `Controller` does; its parameters are initialised by `model.init(rng, rng)`.
    tx: the optimizer (with any schedule and clipping).
    baseline_decay: moving-average decay of the reward baseline.
    entropy_weight: weight of the entropy bonus.
    baseline_reset_every: every this many updates the baseline starts again from the batch's
      reward (HNAS's released code resets it each epoch); 0: never.
  """

  def init(rng: jax.Array) -> ReinforceState:
    """Return fresh controller parameters, optimizer state and an unset baseline."""
    init_rng, sample_rng = jax.random.split(rng)
    params = model.init(init_rng, sample_rng)
    return ReinforceState(
      params=params,
      opt_state=tx.init(params),
      baseline=jnp.zeros((), jnp.float32),
      baseline_ready=jnp.zeros((), bool),
      step=jnp.zeros((), jnp.int32),
    )

  def propose(state: ReinforceState, rng: jax.Array, num: int):
    """Return `num` sampled token sequences and their log_prob / entropy under the policy."""
    sample = jax.vmap(lambda key: model.apply(state.params, key))
    tokens, log_prob, entropy = sample(jax.random.split(rng, num))
    return tokens, {"log_prob": log_prob, "entropy": entropy}

  def update(state: ReinforceState, tokens: jax.Array, rewards: jax.Array):
    """Return the state after one REINFORCE step on (tokens, rewards), and its metrics."""
    tokens = jnp.asarray(tokens, jnp.int32)
    rewards = jnp.asarray(rewards, jnp.float32)
    # A diverged child's reward (NaN, inf) says nothing about its choices: it is left out of the
    # baseline and the gradient, so one bad child cannot turn the whole policy into NaN.
    finite = jnp.isfinite(rewards)
    measured = jnp.sum(finite).astype(jnp.float32)
    any_measured = measured > 0
    rewards = jnp.where(finite, rewards, 0.0)
    # A mean over the measured children is the mean over all of them (zeros in the others' place)
    # times this factor: exactly 1.0 when every child is measured, so those steps keep their bits.
    correction = rewards.shape[0] / jnp.maximum(measured, 1.0)

    def measured_mean(x):
      return jnp.mean(x) * correction

    mean_reward = measured_mean(rewards)
    moved = baseline_decay * state.baseline + (1.0 - baseline_decay) * mean_reward
    ready = state.baseline_ready
    if baseline_reset_every > 0:  # the update count is in the state: a resumed run resets alike
      ready = ready & (state.step % baseline_reset_every != 0)
    baseline = jnp.where(ready, moved, mean_reward)
    # The advantage is a constant of the loss: gradients flow through log pi only.
    advantage = jax.lax.stop_gradient(jnp.where(finite, rewards - baseline, 0.0))

    def loss_fn(params):
      score = jax.vmap(lambda t: model.apply(params, None, forced_tokens=t))
      _, log_prob, entropy = score(tokens)
      mean_entropy = jnp.mean(entropy)
      return -measured_mean(advantage * log_prob) - entropy_weight * mean_entropy, mean_entropy

    (loss, mean_entropy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)

    def unless_unmeasured(new, old):  # a batch without one finite reward changes nothing
      return jax.tree.map(lambda a, b: jnp.where(any_measured, a, b), new, old)

    new_state = ReinforceState(
      params=unless_unmeasured(optax.apply_updates(state.params, updates), state.params),
      opt_state=unless_unmeasured(opt_state, state.opt_state),
      baseline=jnp.where(any_measured, baseline, state.baseline),
      baseline_ready=state.baseline_ready | any_measured,
      step=state.step + 1,
    )
    metrics = {
      "loss": loss,
      "baseline": baseline,
      "reward_mean": jnp.where(any_measured, mean_reward, jnp.nan),
      "entropy_mean": mean_entropy,
      "grad_norm": optax.global_norm(grads),
    }
    return new_state, metrics

  return Strategy(init=init, propose=propose, update=update)
