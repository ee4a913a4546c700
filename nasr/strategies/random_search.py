"""Uniform random search: the baseline every other strategy must beat."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from nasr.core import TokenSpec
from nasr.strategies.base import STRATEGIES, Strategy


class RandomState(NamedTuple):
  """How many candidates were scored, and the best one so far (arrays only)."""

  count: jax.Array  # int32 scalar: candidates scored
  best_tokens: jax.Array  # int32 [len(spec)]: best candidate (zeros before any finite reward)
  best_reward: jax.Array  # float32 scalar: its reward (-inf before any finite reward)


@STRATEGIES.register("random")
def make_random(spec: TokenSpec) -> Strategy:
  """Return a strategy that proposes uniformly random tokens and remembers the best one."""
  choices = jnp.asarray(spec.choices, jnp.int32)

  def init(rng: jax.Array) -> RandomState:
    """Return an empty record; `rng` is unused (random search has nothing to initialise)."""
    del rng
    return RandomState(
      count=jnp.zeros((), jnp.int32),
      best_tokens=jnp.zeros((len(spec),), jnp.int32),
      best_reward=jnp.full((), -jnp.inf, jnp.float32),
    )

  def propose(state: RandomState, rng: jax.Array, num: int):
    """Return `num` uniformly random token sequences and their (uniform) log-probability."""
    del state
    tokens = jax.random.randint(rng, (num, len(spec)), 0, choices, dtype=jnp.int32)
    log_prob = -jnp.sum(jnp.log(choices.astype(jnp.float32)))
    return tokens, {"log_prob": jnp.full((num,), log_prob), "entropy": jnp.full((num,), -log_prob)}

  def update(state: RandomState, tokens: jax.Array, rewards: jax.Array):
    """Return the record with this batch counted and the best candidate kept, and its metrics."""
    rewards = jnp.asarray(rewards, jnp.float32)
    # A diverged candidate (NaN reward) must never become the best.
    finite = jnp.where(jnp.isnan(rewards), -jnp.inf, rewards)
    i = jnp.argmax(finite)
    better = finite[i] > state.best_reward
    new_state = RandomState(
      count=state.count + rewards.shape[0],
      best_tokens=jnp.where(better, jnp.asarray(tokens, jnp.int32)[i], state.best_tokens),
      best_reward=jnp.where(better, finite[i], state.best_reward),
    )
    metrics = {
      "reward_mean": jnp.mean(rewards),
      "best_reward": new_state.best_reward,
      "count": new_state.count,
    }
    return new_state, metrics

  # Its entropy is the maximum by construction: no policy to diagnose.
  return Strategy(init=init, propose=propose, update=update, policy=False)
