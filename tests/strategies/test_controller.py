"""The LSTM controller: valid samples, exact scoring, a normalised policy, shared heads."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasr.core import ConfigError, TokenSpec
from nasr.strategies import Controller

# Mixed choices, several positions per step, heads shared within and across steps.
SPEC = TokenSpec(
  choices=(2, 2, 3, 2, 2, 3, 5, 4, 4, 1),
  steps=(0, 0, 0, 1, 1, 1, 2, 3, 3, 3),
  heads=(0, 1, 2, 0, 1, 2, 3, 4, 4, 5),
)


def _init(model, seed=0):
  # Jitted: op-by-op init of a scanned module is slower than compiling it.
  return jax.jit(model.init)(jax.random.key(seed), jax.random.key(seed + 1))


def _sample(model, params, num, seed=2):
  keys = jax.random.split(jax.random.key(seed), num)
  return jax.jit(jax.vmap(lambda k: model.apply(params, k)))(keys)


def _score(model, params, tokens):
  return jax.jit(jax.vmap(lambda t: model.apply(params, None, forced_tokens=t)))(tokens)


@pytest.fixture(scope="module")
def sampled():
  """Return (model, params, tokens, log_prob, entropy) for 400 samples of SPEC, compiled once."""
  model = Controller(SPEC, hidden=16, head_tanh_reduce=(2.5, 2.5, 2.5, 1.0, 1.0, 1.0))
  params = _init(model)
  return (model, params, *_sample(model, params, 400))


def test_samples_are_valid_and_cover_every_choice(sampled):
  _, _, tokens, log_prob, entropy = sampled
  tokens = np.asarray(tokens)
  assert tokens.shape == (400, len(SPEC)) and tokens.dtype == np.int32
  for p, c in enumerate(SPEC.choices):
    assert set(np.unique(tokens[:, p])) == set(range(c)), SPEC.name(p)
  assert log_prob.shape == entropy.shape == (400,)


def test_scoring_sampled_tokens_reproduces_their_log_prob(sampled):
  model, params, tokens, log_prob, entropy = sampled
  scored, scored_log_prob, scored_entropy = _score(model, params, tokens)
  np.testing.assert_array_equal(scored, tokens)
  np.testing.assert_allclose(scored_log_prob, log_prob, atol=1e-5)
  np.testing.assert_allclose(scored_entropy, entropy, atol=1e-5)


@pytest.mark.parametrize(
  "kwargs",
  [
    {"temperature": 0.5, "head_tanh_reduce": (2.5, 1.0, 1.0)},
    {"tanh_constant": None, "layers": 1},
  ],
)
def test_probabilities_of_all_sequences_sum_to_one(kwargs):
  # 3 binary positions (two on one shared head, across steps) and one 3-way position.
  spec = TokenSpec(choices=(2, 2, 2, 3), steps=(0, 0, 1, 2), heads=(0, 1, 0, 2))
  model = Controller(
    spec, hidden=8, init_range=1.0, **kwargs
  )  # Wide init: a far-from-uniform policy.
  params = _init(model, seed=3)
  tokens = jnp.asarray(list(itertools.product(*(range(c) for c in spec.choices))), jnp.int32)
  _, log_prob, entropy = _score(model, params, tokens)
  assert abs(float(jnp.sum(jnp.exp(log_prob))) - 1.0) < 1e-5
  assert float(jnp.std(log_prob)) > 1e-2  # The check is not passing because the policy is uniform.
  max_entropy = float(np.sum(np.log(spec.choices)))
  assert np.all(np.asarray(entropy) >= 0) and np.all(np.asarray(entropy) <= max_entropy + 1e-5)


def test_tanh_constant_bounds_the_logits():
  spec = TokenSpec(choices=(2,) * 6, steps=(0, 0, 1, 1, 2, 2), heads=(0, 1) * 3)
  model = Controller(spec, hidden=8, init_range=3.0, tanh_constant=1.1, head_tanh_reduce=(2.5, 1.0))
  tokens, log_prob, _ = _sample(model, _init(model), 200)
  # Per position p >= sigmoid(-2c): c = 0.44 on head 0, 1.1 on head 1.
  floor = 3 * np.log(jax.nn.sigmoid(-0.88)) + 3 * np.log(jax.nn.sigmoid(-2.2))
  assert np.all(np.asarray(log_prob) >= floor - 1e-5)


def test_heads_share_parameters_and_size_does_not_grow_with_steps():
  def spec(groups):
    return TokenSpec(
      choices=(2, 2, 2) * groups,
      steps=tuple(s for s in range(groups) for _ in range(3)),
      heads=(0, 1, 2) * groups,
    )

  small, large = Controller(spec(2), hidden=8), Controller(spec(20), hidden=8)
  key = jax.random.key(0)
  small_params = jax.eval_shape(small.init, key, key)
  large_params = jax.eval_shape(large.init, key, key)
  assert small_params["params"]["step"]["head_kernel"].shape == (3, 8, 2)
  assert small_params["params"]["step"]["embedding"].shape == (3, 2, 8)
  assert jax.tree.map(jnp.shape, small_params) == jax.tree.map(jnp.shape, large_params)
  # Scanned steps: the traced program is the same size for 2 and 20 steps.
  small_eqns = len(jax.make_jaxpr(small.apply)(small_params, key).eqns)
  large_eqns = len(jax.make_jaxpr(large.apply)(large_params, key).eqns)
  assert small_eqns == large_eqns


def test_bad_head_tanh_reduce_is_a_config_error():
  model = Controller(SPEC, head_tanh_reduce=(2.5,))
  with pytest.raises(ConfigError, match="head_tanh_reduce"):
    jax.eval_shape(model.init, jax.random.key(0), jax.random.key(1))
