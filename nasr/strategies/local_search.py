"""Local search (White et al. 2021, "Exploring the Loss Landscape in Neural Architecture Search"):
hill climbing over one-position changes, state of the art on small NAS benchmarks.

Start from a random candidate; score its neighbours (every candidate that differs in one
position) in a fixed order; move to the best neighbour if it beats the current candidate, else
(a local optimum) restart from a random candidate. The state says which neighbours come next, so
`propose` stays a pure function and `update` must get back what `propose` proposed.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nasr.core import TokenSpec
from nasr.strategies.base import STRATEGIES, Strategy


class LocalSearchState(NamedTuple):
  """The current candidate, how far its neighbourhood is scored, and the best candidate so far."""

  started: jax.Array  # int32 scalar: 0 while the next proposals are a random (re)start
  current: jax.Array  # int32 [len(spec)]
  current_reward: jax.Array  # float32 scalar
  cursor: jax.Array  # int32 scalar: the next neighbour to propose
  best_neighbour: jax.Array  # int32 [len(spec)]: the best neighbour scored so far
  best_neighbour_reward: jax.Array  # float32 scalar (-inf: none yet)
  count: jax.Array  # int32 scalar: candidates scored
  best_tokens: jax.Array  # int32 [len(spec)]
  best_reward: jax.Array  # float32 scalar (-inf before any finite reward)


def neighbour_table(spec: TokenSpec) -> tuple[np.ndarray, np.ndarray]:
  """Return (position, shift) per neighbour: neighbour k sets position[k] to (value + shift[k]) mod
  its choices; sum(choices - 1) neighbours in all."""
  pos = [j for j, c in enumerate(spec.choices) for _ in range(c - 1)]
  shift = [s for c in spec.choices for s in range(1, c)]
  return np.asarray(pos, np.int32), np.asarray(shift, np.int32)


@STRATEGIES.register("local_search")
def make_local_search(spec: TokenSpec) -> Strategy:
  """Return first-improvement-free local search: the best of all neighbours, or a restart."""
  n, choices = len(spec), jnp.asarray(spec.choices, jnp.int32)
  pos, shift = neighbour_table(spec)
  k_all = max(1, len(pos))
  pos_j, shift_j = jnp.asarray(pos if len(pos) else [0]), jnp.asarray(shift if len(pos) else [0])

  def init(rng: jax.Array) -> LocalSearchState:
    """Return a state whose first proposals are a random start; `rng` is unused."""
    del rng
    zeros, ninf = jnp.zeros((n,), jnp.int32), jnp.full((), -jnp.inf, jnp.float32)
    z = jnp.zeros((), jnp.int32)
    return LocalSearchState(z, zeros, ninf, z, zeros, ninf, z, zeros, ninf)

  def neighbour(current: jax.Array, k: jax.Array) -> jax.Array:
    p = pos_j[k % k_all]
    return current.at[p].set((current[p] + shift_j[k % k_all]) % choices[p])

  def propose(state: LocalSearchState, rng: jax.Array, num: int):
    """Return the next `num` neighbours of the current candidate, or `num` random starts."""
    rand = jax.random.randint(rng, (num, n), 0, choices, dtype=jnp.int32)
    near = jax.vmap(lambda k: neighbour(state.current, k))(state.cursor + jnp.arange(num))
    tokens = jnp.where(state.started > 0, near, rand)
    zeros = jnp.zeros((num,), jnp.float32)
    return tokens, {"log_prob": zeros, "entropy": zeros}

  def update(state: LocalSearchState, tokens: jax.Array, rewards: jax.Array):
    """Return the state after scoring what `propose` proposed (a start, or neighbours), and metrics."""
    tokens = jnp.asarray(tokens, jnp.int32)
    rewards = jnp.asarray(rewards, jnp.float32)
    finite = jnp.where(jnp.isnan(rewards), -jnp.inf, rewards)
    num = tokens.shape[0]
    # neighbours past the end of the neighbourhood (a batch that overran it) do not count
    valid = (state.cursor + jnp.arange(num) < len(pos)) | (state.started == 0)
    scored = jnp.where(valid, finite, -jnp.inf)
    i = jnp.argmax(scored)
    top, top_reward = tokens[i], scored[i]
    better_overall = top_reward > state.best_reward
    best_tokens = jnp.where(better_overall, top, state.best_tokens)
    best_reward = jnp.maximum(top_reward, state.best_reward)

    # a (re)start: the best of the batch becomes the current candidate
    start = state._replace(
      started=jnp.ones((), jnp.int32),
      current=top,
      current_reward=top_reward,
      cursor=jnp.zeros((), jnp.int32),
      best_neighbour_reward=jnp.full((), -jnp.inf, jnp.float32),
    )
    # neighbours: keep the best; once all are scored, move or restart
    nb_better = top_reward > state.best_neighbour_reward
    nb = state._replace(
      cursor=state.cursor + num,
      best_neighbour=jnp.where(nb_better, top, state.best_neighbour),
      best_neighbour_reward=jnp.maximum(top_reward, state.best_neighbour_reward),
    )
    done = nb.cursor >= len(pos)
    improves = nb.best_neighbour_reward > nb.current_reward
    moved = nb._replace(
      current=nb.best_neighbour,
      current_reward=nb.best_neighbour_reward,
      cursor=jnp.zeros((), jnp.int32),
      best_neighbour_reward=jnp.full((), -jnp.inf, jnp.float32),
    )
    restart = nb._replace(started=jnp.zeros((), jnp.int32))
    after_nb = jax.tree.map(
      lambda a, b, c: jnp.where(done, jnp.where(improves, a, b), c), moved, restart, nb
    )
    new = jax.tree.map(lambda a, b: jnp.where(state.started > 0, a, b), after_nb, start)
    new = new._replace(count=state.count + num, best_tokens=best_tokens, best_reward=best_reward)
    metrics = {
      "reward_mean": jnp.mean(rewards),
      "best_reward": new.best_reward,
      "count": new.count,
      "restarts": 1 - new.started,
    }
    return new, metrics

  return Strategy(init=init, propose=propose, update=update, policy=False)
