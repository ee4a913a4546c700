"""Regularized evolution and local search: the NAS literature's strong simple baselines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasr.core import ConfigError, TokenSpec
from nasr.strategies import get
from nasr.strategies.evolution import mutate
from nasr.strategies.local_search import neighbour_table

SPEC = TokenSpec((3, 4, 1, 2))


def _landscape(tokens):
  """A reward with one peak at (2, 3, 0, 1), falling with the Hamming distance to it."""
  return -jnp.sum(jnp.asarray(tokens) != jnp.array([2, 3, 0, 1]), axis=-1).astype(jnp.float32)


def _run(name, steps, batch, seed=0, **options):
  strategy = get(name, SPEC, **options)
  state = strategy.init(jax.random.key(seed))
  propose = jax.jit(strategy.propose, static_argnums=2)
  update = jax.jit(strategy.update)
  proposed = []
  for step in range(steps):
    tokens, _ = propose(state, jax.random.fold_in(jax.random.key(seed), step), batch)
    proposed.append(np.asarray(tokens))
    state, _ = update(state, tokens, _landscape(tokens))
  return state, np.concatenate(proposed)


def test_a_mutation_changes_exactly_one_position_that_has_a_choice():
  tokens = jnp.array([1, 2, 0, 1], jnp.int32)
  for k in range(30):
    child = np.asarray(mutate(SPEC, tokens, jax.random.key(k)))
    diff = np.flatnonzero(child != np.asarray(tokens))
    assert len(diff) == 1 and diff[0] != 2  # position 2 has a single choice
    SPEC.validate(child)


def test_evolution_fills_its_population_at_random_then_ages_out_the_oldest():
  state, proposed = _run("evolution", steps=12, batch=2, population=6, sample_size=3)
  assert int(state.filled) == 6 and int(state.count) == 24
  # the population holds the last 6 scored candidates, the oldest slot next in line
  last6 = proposed[-6:]
  order = [(int(state.oldest) + i) % 6 for i in range(6)]
  np.testing.assert_array_equal(np.asarray(state.population)[order], last6)
  np.testing.assert_array_equal(state.best_tokens, [2, 3, 0, 1])  # found the peak


def test_evolution_children_are_one_mutation_from_a_population_member():
  strategy = get("evolution", SPEC, population=4, sample_size=2)
  state = strategy.init(jax.random.key(0))
  start = jnp.array([[0, 0, 0, 0], [1, 1, 0, 1], [2, 2, 0, 0], [0, 3, 0, 1]], jnp.int32)
  state, _ = strategy.update(state, start, jnp.array([0.0, 1.0, 2.0, 3.0]))
  kids, _ = strategy.propose(state, jax.random.key(1), 16)
  dist = (np.asarray(kids)[:, None, :] != np.asarray(start)[None]).sum(-1)
  assert (dist.min(axis=1) == 1).all()


def test_local_search_climbs_to_the_peak_through_neighbours():
  pos, shift = neighbour_table(SPEC)
  assert len(pos) == 2 + 3 + 0 + 1
  state, proposed = _run("local_search", steps=30, batch=1, seed=3)
  np.testing.assert_array_equal(state.best_tokens, [2, 3, 0, 1])
  # after the random start, each proposal is one position away from the one before it moved
  assert int(state.count) == 30
  assert len({tuple(t) for t in proposed}) <= 30


def test_local_search_restarts_at_a_local_optimum():
  strategy = get("local_search", SPEC)
  update, propose = jax.jit(strategy.update), jax.jit(strategy.propose, static_argnums=2)
  state = strategy.init(jax.random.key(0))
  peak = jnp.array([[2, 3, 0, 1]], jnp.int32)
  state, _ = update(state, peak, jnp.array([0.0]))
  nbrs, _ = propose(state, jax.random.key(1), 6)  # the whole neighbourhood, all worse
  assert ((np.asarray(nbrs) != np.asarray(peak)).sum(-1) == 1).all()
  state, metrics = update(state, nbrs, jnp.full((6,), -1.0))
  assert int(state.started) == 0 and int(metrics["restarts"]) == 1
  np.testing.assert_array_equal(state.best_tokens, [2, 3, 0, 1])


def test_bad_evolution_options_fail_naming_the_option():
  with pytest.raises(ConfigError, match="sample_size"):
    get("evolution", SPEC, population=3, sample_size=5)
  with pytest.raises(ConfigError, match="population"):
    get("evolution", SPEC, population=0)
