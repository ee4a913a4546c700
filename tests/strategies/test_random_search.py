"""Random search, and the Strategy contract for every registered strategy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasr.core import TokenSpec
from nasr.strategies import STRATEGIES, get, make_random

SPEC = TokenSpec(choices=(2, 3, 5, 1), steps=(0, 0, 1, 2), heads=(0, 1, 2, 3))


def test_random_proposals_are_valid_and_uniform():
  strategy = make_random(SPEC)
  tokens, aux = jax.jit(strategy.propose, static_argnums=2)(
    strategy.init(jax.random.key(0)), jax.random.key(1), 6000
  )
  tokens = np.asarray(tokens)
  assert tokens.shape == (6000, 4) and tokens.dtype == np.int32
  for p, c in enumerate(SPEC.choices):
    freq = np.bincount(tokens[:, p], minlength=c) / len(tokens)
    assert len(freq) == c
    np.testing.assert_allclose(freq, 1.0 / c, atol=0.03)
  np.testing.assert_allclose(aux["log_prob"], -np.log(30.0), rtol=1e-6)


def test_random_keeps_the_best_candidate():
  strategy = make_random(SPEC)
  update = jax.jit(strategy.update)
  state = strategy.init(jax.random.key(0))
  tokens = jnp.array([[0, 0, 0, 0], [1, 2, 4, 0], [1, 1, 1, 0]], jnp.int32)
  state, metrics = update(state, tokens, jnp.array([1.0, 3.0, 2.0]))
  np.testing.assert_array_equal(state.best_tokens, [1, 2, 4, 0])
  state, metrics = update(state, tokens[:2], jnp.array([2.5, 0.0]))
  np.testing.assert_array_equal(state.best_tokens, [1, 2, 4, 0])
  # A diverged candidate (NaN) never wins; a better one does.
  state, metrics = update(state, tokens[::2], jnp.array([jnp.nan, 4.0]))
  np.testing.assert_array_equal(state.best_tokens, [1, 1, 1, 0])
  assert float(metrics["best_reward"]) == 4.0 and int(metrics["count"]) == 7


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_registered_strategy_runs_jitted(name):
  # Small settings where a strategy has costly defaults (the GP's refit), to keep the check quick.
  fast = {"gp": {"fit_steps": 20, "fit_restarts": 1}}.get(name, {})
  strategy = get(name, SPEC, **fast)
  state = jax.jit(strategy.init)(jax.random.key(0))
  propose = jax.jit(strategy.propose, static_argnums=2)
  update = jax.jit(strategy.update)
  for step in range(3):
    tokens, aux = propose(state, jax.random.key(step), 5)
    assert tokens.shape == (5, len(SPEC)) and tokens.dtype == jnp.int32
    for t in np.asarray(tokens):
      SPEC.validate(t)
    assert all(v.shape == (5,) for v in aux.values())
    state, metrics = update(state, tokens, jnp.linspace(0.0, 1.0, 5))
    assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
  assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(state))
