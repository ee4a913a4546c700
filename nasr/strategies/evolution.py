"""Regularized evolution (Real et al. 2019, "Regularized Evolution for Image Classifier
Architecture Search"): aging evolution, a strong simple baseline on NAS benchmarks.

A population of the last `population` candidates scored: the first `population` proposals are
uniformly random; after that each proposal is a mutation (one position set to another value) of
the best of `sample_size` members drawn at random from the population, and each scored candidate
replaces the oldest member (not the worst: the aging that regularizes the search).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from nasr.core import ConfigError, TokenSpec
from nasr.strategies.base import STRATEGIES, Strategy


class EvolutionState(NamedTuple):
  """The population as a ring buffer, oldest first from `oldest`, and the best candidate so far."""

  population: jax.Array  # int32 [population, len(spec)]
  fitness: jax.Array  # float32 [population]: rewards (-inf for an empty slot or a NaN reward)
  filled: jax.Array  # int32 scalar: members so far (at most population)
  oldest: jax.Array  # int32 scalar: the slot the next scored candidate replaces once full
  count: jax.Array  # int32 scalar: candidates scored
  best_tokens: jax.Array  # int32 [len(spec)]
  best_reward: jax.Array  # float32 scalar (-inf before any finite reward)


def mutate(spec: TokenSpec, tokens: jax.Array, rng: jax.Array) -> jax.Array:
  """Return `tokens` with one position (among those with a choice) set to a different value."""
  choices = jnp.asarray(spec.choices, jnp.int32)
  free = choices > 1
  k_pos, k_val = jax.random.split(rng)
  # uniform over the positions that can change; none can: unchanged
  pos = jax.random.categorical(k_pos, jnp.where(free, 0.0, -jnp.inf))
  c = choices[pos]
  shift = 1 + jax.random.randint(k_val, (), 0, jnp.maximum(c - 1, 1))
  new = jnp.where(c > 1, (tokens[pos] + shift) % c, tokens[pos])
  return tokens.at[pos].set(new)


@STRATEGIES.register("evolution")
def make_evolution(spec: TokenSpec, population: int = 20, sample_size: int = 5) -> Strategy:
  """Return regularized (aging) evolution with `population` members and tournaments of
  `sample_size`."""
  for name, v in (("population", population), ("sample_size", sample_size)):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ConfigError(f"strategy evolution: {name} must be a positive integer, got {v!r}")
  if sample_size > population:
    raise ConfigError(
      f"strategy evolution: sample_size ({sample_size}) cannot exceed population ({population})"
    )
  n, choices = len(spec), jnp.asarray(spec.choices, jnp.int32)

  def init(rng: jax.Array) -> EvolutionState:
    """Return an empty population; `rng` is unused (proposals draw their own randomness)."""
    del rng
    return EvolutionState(
      population=jnp.zeros((population, n), jnp.int32),
      fitness=jnp.full((population,), -jnp.inf, jnp.float32),
      filled=jnp.zeros((), jnp.int32),
      oldest=jnp.zeros((), jnp.int32),
      count=jnp.zeros((), jnp.int32),
      best_tokens=jnp.zeros((n,), jnp.int32),
      best_reward=jnp.full((), -jnp.inf, jnp.float32),
    )

  def child(state: EvolutionState, rng: jax.Array) -> jax.Array:
    k_pick, k_mut = jax.random.split(rng)
    # a tournament among filled slots (drawn with replacement)
    idx = jax.random.randint(k_pick, (sample_size,), 0, jnp.maximum(state.filled, 1))
    parent = state.population[idx[jnp.argmax(state.fitness[idx])]]
    return mutate(spec, parent, k_mut)

  def propose(state: EvolutionState, rng: jax.Array, num: int):
    """Return `num` candidates: random while the population fills, then mutated tournament winners."""
    k_rand, k_child = jax.random.split(rng)
    rand = jax.random.randint(k_rand, (num, n), 0, choices, dtype=jnp.int32)
    kids = jax.vmap(lambda k: child(state, k))(jax.random.split(k_child, num))
    # row i is scored after i others of this batch: random while the population is still filling
    filling = (state.filled + jnp.arange(num)) < population
    tokens = jnp.where(filling[:, None], rand, kids)
    zeros = jnp.zeros((num,), jnp.float32)
    return tokens, {"log_prob": zeros, "entropy": zeros}

  def update(state: EvolutionState, tokens: jax.Array, rewards: jax.Array):
    """Return the population with each scored candidate in the oldest slot, and metrics."""
    tokens = jnp.asarray(tokens, jnp.int32)
    rewards = jnp.asarray(rewards, jnp.float32)
    finite = jnp.where(jnp.isnan(rewards), -jnp.inf, rewards)

    def add(s: EvolutionState, row):
      t, r = row
      slot = jnp.where(s.filled < population, s.filled, s.oldest)
      better = r > s.best_reward
      s = EvolutionState(
        population=s.population.at[slot].set(t),
        fitness=s.fitness.at[slot].set(r),
        filled=jnp.minimum(s.filled + 1, population),
        oldest=jnp.where(s.filled < population, s.oldest, (s.oldest + 1) % population),
        count=s.count + 1,
        best_tokens=jnp.where(better, t, s.best_tokens),
        best_reward=jnp.where(better, r, s.best_reward),
      )
      return s, None

    state, _ = jax.lax.scan(add, state, (tokens, finite))
    metrics = {
      "reward_mean": jnp.mean(rewards),
      "best_reward": state.best_reward,
      "count": state.count,
    }
    return state, metrics

  return Strategy(init=init, propose=propose, update=update, policy=False)
