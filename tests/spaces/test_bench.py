"""The benchmark space: every member indexed once, and its three faces (child, tokens, alpha) agree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasr import spaces
from nasr.core.errors import TokenError
from nasr.spaces import bench
from nasr.spaces.base import CostTable, DifferentiableSpace, SupernetSpace


@pytest.fixture(scope="module")
def space():
  return spaces.get("bench", cells=2, channels=4)


def test_ids_tokens_and_arch_files_are_one_bijection(space):
  members = space.members()
  assert members.shape == (216, 3) and space.size == 216
  assert len({tuple(t) for t in members}) == 216
  for i in (0, 1, 5, 6, 37, 215):
    tokens = bench.from_id(i)
    assert bench.arch_id(tokens) == i
    np.testing.assert_array_equal(members[i], tokens)
    arch = space.decode(tokens)
    assert space.arch_from_dict(arch.to_dict()) == arch
    np.testing.assert_array_equal(space.encode(arch), tokens)
  assert space.decode(bench.from_id(0)).ops == ("zero", "zero", "zero")
  assert space.decode(bench.from_id(215)).describe() == "rcab|rcab|rcab"
  for bad in (-1, 216, 2.0, True):
    with pytest.raises(TokenError, match=r"\[0, 216\)"):
      bench.from_id(bad)
  with pytest.raises(TokenError, match="edge 1->2: unknown op 'conv5x5'"):
    space.arch_from_dict({"ops": ["skip", "zero", "conv5x5"]})


def test_it_declares_every_capability_the_benchmark_needs(space):
  assert isinstance(space, SupernetSpace)
  assert isinstance(space, DifferentiableSpace)
  assert isinstance(space, CostTable)


def test_mixed_ops_at_one_hot_alpha_equal_the_single_path_and_the_child(space):
  model = space.supernet(2)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 6, 6, 3)), jnp.float32)
  variables = model.init(jax.random.PRNGKey(0), x, space.init_alpha(jax.random.PRNGKey(1)))
  # random non-zero weights everywhere, so a wrongly routed op shows
  leaves, tree = jax.tree.flatten(variables)
  rng = np.random.default_rng(1)
  variables = jax.tree.unflatten(
    tree, [jnp.asarray(0.3 * rng.standard_normal(v.shape), jnp.float32) for v in leaves]
  )
  apply = jax.jit(model.apply)
  for i in (0, 7, 100, 151, 215):
    arch = space.decode(bench.from_id(i))
    child = space.build(arch, 2).apply(space.child_params(variables, arch), x)
    single = apply(variables, x, jnp.asarray(space.encode(arch)))
    mixed = apply(variables, x, jnp.asarray(space.one_hot_alpha(arch)))
    np.testing.assert_allclose(single, child, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(mixed, child, atol=1e-5, rtol=1e-5)
    assert space.derive(space.one_hot_alpha(arch)) == arch


def test_a_child_initialised_alone_starts_from_the_supernets_weights(space):
  # Flax derives each weight's initial value from its path, and a child's paths are the
  # supernet's: the benchmark's stand-alone members can be trained through the supernet.
  x = jnp.zeros((1, 6, 6, 3), jnp.float32)
  arch = space.decode([2, 3, 5])
  sup = space.supernet(2).init(jax.random.PRNGKey(3), x, jnp.asarray(space.encode(arch)))
  alone = space.build(arch, 2).init(jax.random.PRNGKey(3), x)
  jax.tree.map(np.testing.assert_array_equal, alone, space.child_params(sup, arch))


def test_members_differ_in_cost_and_the_alpha_shape_is_checked(space):
  counts = {space.count_params(space.decode(t), 2) for t in space.members()[::7]}
  assert len(counts) > 5
  model = space.supernet(2)
  with pytest.raises(TokenError, match=r"alpha of shape \(3, 6\)"):
    model.init(jax.random.PRNGKey(0), jnp.zeros((1, 6, 6, 3)), jnp.zeros((3, 5)))
