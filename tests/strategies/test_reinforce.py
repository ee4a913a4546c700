"""REINFORCE: it learns a synthetic reward, compiles once, and never mutates its state."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nasr.core import ConfigError, TokenSpec
from nasr.strategies import Controller, ReinforceState, get, make_reinforce
from nasr.strategies.reinforce import policy_gradient

# DeCoNAS-like: 10 node pairs of 3 op bits on 3 shared heads, then 2 fusion steps of 4 bits each
# with a head per bit (positions on one head in one step would share one distribution).
GROUPS = 10
SPEC = TokenSpec(
  choices=(2,) * (3 * GROUPS + 8),
  steps=tuple(s for s in range(GROUPS) for _ in range(3)) + (GROUPS,) * 4 + (GROUPS + 1,) * 4,
  heads=(0, 1, 2) * GROUPS + tuple(range(3, 11)),
)


def test_reinforce_learns_to_match_a_target_pattern():
  # The same op bits are best in every node pair (what shared heads can express), plus random
  # fusion bits; reward = fraction of bits matching the target.
  target = np.concatenate([np.tile([1, 0, 1], GROUPS), np.random.default_rng(0).integers(0, 2, 8)])
  target = jnp.asarray(target, jnp.int32)
  strategy = make_reinforce(SPEC, learning_rate=3e-3)
  propose = jax.jit(strategy.propose, static_argnums=2)
  update = jax.jit(strategy.update, donate_argnums=0)
  state, rng = strategy.init(jax.random.key(0)), jax.random.key(1)
  rewards = []
  for step in range(300):
    tokens, _ = propose(state, jax.random.fold_in(rng, step), 8)
    reward = jnp.mean(tokens == target, axis=1, dtype=jnp.float32)
    state, metrics = update(state, tokens, reward)
    rewards.append(float(metrics["reward_mean"]))
  first, last = np.mean(rewards[:10]), np.mean(rewards[-20:])
  assert first < 0.65, first
  assert last > 0.8, (first, last)  # tanh_constant 1.1 caps a binary choice at p = 0.90.
  assert int(state.step) == 300


@pytest.fixture(scope="module")
def small():
  """Return a small REINFORCE strategy's initial state and its propose / update, jitted once."""
  spec = TokenSpec(choices=(2, 3, 2, 4), steps=(0, 0, 1, 2), heads=(0, 1, 0, 2))
  strategy = make_reinforce(spec, hidden=8, layers=1, grad_clip=1.0, baseline_decay=0.9)
  # Chex counts traces by function; reinforce and hierarchical share policy_gradient's.
  chex.clear_trace_counter()
  propose = jax.jit(chex.assert_max_traces(strategy.propose, n=1), static_argnums=2)
  update = jax.jit(chex.assert_max_traces(strategy.update, n=1))
  return jax.jit(strategy.init)(jax.random.key(0)), propose, update


def test_propose_and_update_compile_once(small):
  state, propose, update = small
  for step in range(5):
    tokens, _ = propose(state, jax.random.key(step), 4)
    state, _ = update(state, tokens, jnp.arange(4, dtype=jnp.float32) * step)


def test_propose_is_pure_and_deterministic(small):
  state, propose, _ = small
  before = jax.tree.map(np.asarray, state)
  out = propose(state, jax.random.key(7), 4)
  assert len(out) == 2  # (tokens, aux): no new state.
  again, _ = propose(state, jax.random.key(7), 4)
  other, _ = propose(state, jax.random.key(8), 4)
  np.testing.assert_array_equal(out[0], again)
  assert not np.array_equal(out[0], other)
  chex.assert_trees_all_equal(before, jax.tree.map(np.asarray, state))
  assert out[0].shape == (4, 4) and out[0].dtype == jnp.int32
  assert out[1]["log_prob"].shape == out[1]["entropy"].shape == (4,)


def test_baseline_follows_enas(small):
  state, propose, update = small
  tokens, _ = propose(state, jax.random.key(0), 4)
  state1, m1 = update(state, tokens, jnp.array([1.0, 2.0, 3.0, 4.0]))
  # First update: the baseline is the mean reward, so advantages are zero.
  np.testing.assert_allclose(m1["baseline"], 2.5)
  state2, m2 = update(state1, tokens, jnp.array([5.0, 5.0, 5.0, 5.0]))
  np.testing.assert_allclose(m2["baseline"], 0.9 * 2.5 + 0.1 * 5.0, rtol=1e-6)
  assert int(state2.step) == 2 and bool(state2.baseline_ready)
  assert set(m2) == {"loss", "baseline", "reward_mean", "entropy_mean", "grad_norm"}
  assert all(np.isfinite(float(v)) for v in m2.values())
  # The state holds arrays only, so Orbax can checkpoint it.
  assert isinstance(state2, ReinforceState)
  assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(state2))


def test_a_diverged_childs_reward_is_left_out_and_a_batch_without_rewards_changes_nothing():
  # One NaN/inf reward (a child whose PSNR diverged) used to make the baseline and every
  # parameter NaN: the search went on sampling from a broken policy.
  spec = TokenSpec(choices=(2, 3, 2, 4), steps=(0, 0, 1, 2), heads=(0, 1, 0, 2))
  strategy = make_reinforce(spec, hidden=8, layers=1, baseline_decay=0.9, entropy_weight=0.0)
  update = jax.jit(strategy.update)
  state = strategy.init(jax.random.key(0))
  tokens, _ = strategy.propose(state, jax.random.key(1), 4)
  state, _ = update(state, tokens, jnp.array([1.0, 2.0, 3.0, 4.0]))  # the baseline is set (2.5)
  rewards = jnp.array([3.0, jnp.nan, 1.0, jnp.inf])
  got, m = update(state, tokens, rewards)
  want, w = update(state, tokens[jnp.array([0, 2])], rewards[jnp.array([0, 2])])
  # the same step as on the measured children alone
  chex.assert_trees_all_close(got.params, want.params, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(m["baseline"], 0.9 * 2.5 + 0.1 * 2.0, rtol=1e-6)
  np.testing.assert_allclose(m["reward_mean"], w["reward_mean"])
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(got))
  # none measured: the policy, its optimiser and the baseline stay; only the count moves
  same, m = update(got, tokens, jnp.full(4, jnp.nan))
  chex.assert_trees_all_equal(same._replace(step=got.step), got)
  assert int(same.step) == int(got.step) + 1 and np.isnan(float(m["reward_mean"]))


def test_op_tanh_reduce_squashes_the_specs_op_heads_only():
  # ENAS / DeCoNAS: the heads that choose operations get tanh constant 1.1 / 2.5, the others 1.1.
  spec = TokenSpec(choices=(2, 3, 2, 4), steps=(0, 0, 1, 2), heads=(0, 1, 0, 2), op_heads=(0, 2))
  options = {"hidden": 8, "layers": 1, "tanh_constant": 1.1}
  model = Controller(spec, head_tanh_reduce=(2.5, 1.0, 2.5), **options)
  want = policy_gradient(model, optax.adam(3e-4), 0.99, 1e-4)
  got = make_reinforce(spec, op_tanh_reduce=2.5, **options)
  plain = make_reinforce(spec, **options)
  states = [s.init(jax.random.key(0)) for s in (want, got, plain)]
  chex.assert_trees_all_equal(states[0].params, states[1].params, states[2].params)
  log_prob = [
    s.propose(state, jax.random.key(1), 16)[1]["log_prob"]
    for s, state in zip((want, got, plain), states, strict=True)
  ]
  np.testing.assert_array_equal(log_prob[0], log_prob[1])
  assert not np.allclose(log_prob[0], log_prob[2])


def test_bad_options_are_config_errors():
  with pytest.raises(ConfigError, match="op_tanh_reduce"):
    make_reinforce(SPEC, op_tanh_reduce=0.0)
  with pytest.raises(ValueError, match="op_heads"):
    TokenSpec(choices=(2, 2), op_heads=(2,))
  with pytest.raises(ConfigError, match="baseline_decay"):
    make_reinforce(SPEC, baseline_decay=1.0)
  with pytest.raises(ConfigError, match="learning_rat"):
    get("reinforce", SPEC, learning_rat=1e-3)
  with pytest.raises(ConfigError, match="reinforce"):
    get("reinforcement", SPEC)
