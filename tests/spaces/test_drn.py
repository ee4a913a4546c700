"""The GP-NAS hyper-parameter space: DRN and RCAN-style networks, tokens, architecture files."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasr import spaces
from nasr.core.errors import ConfigError, TokenError
from nasr.spaces.drn import DRN, DenseResidualBlock, DRNArch, ibsc_stages

TINY = {
  "features": (4, 8),
  "blocks": (1, 3),
  "stages": (1, 2, 3),
  "rcan_groups": (1, 2),
  "rcan_blocks": (1, 2, 3),
  "reduction": 2,
}


def _all_archs(space) -> list[DRNArch]:
  """Return every architecture of the space's grid, in token order (last position fastest)."""
  spec = space.token_spec()
  return [space.decode(t) for t in np.indices(spec.choices).reshape(len(spec), -1).T]


def _conv(k, cin, cout):
  return k * k * cin * cout + cout


def _drn_params(f, d, stages, reduction, scale=2):
  """Return the parameter count of the DRN described in the module docstring, by hand."""
  r = max(1, f // reduction)
  attention = _conv(1, f, r) + _conv(1, r, f)
  block = 2 * stages * _conv(3, f, f) + _conv(1, f * stages, f) + attention
  upsample = _conv(3, f, scale * scale * f)
  return _conv(3, 3, f) + d * block + _conv(3, f, f) + upsample + _conv(3, f, 3)


def _random_params(model, *args, seed=0):
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)
  return jax.tree.map(lambda s: jnp.asarray(0.1 * rng.standard_normal(s.shape), s.dtype), shapes)


def test_rcan_family_matches_the_reference_parameter_count():
  space = spaces.get("drn")  # the paper's grid
  # RCAN (10 groups x 20 RCABs, 64 features) x2 has 15,444,667 parameters in the reference
  # PyTorch code, 24 of which are its two frozen MeanShift convs (3x3 weight + 3 bias each).
  assert space.count_params(DRNArch("rcan", 64, 10, 20), 2) == 15_444_667 - 24
  assert DRNArch("rcan", 128, 5, 10) in _all_archs(space)  # the paper's RCAN*
  assert DRNArch("drn", 128, 18, 3) in _all_archs(space)  # the paper's DRN*


@pytest.mark.parametrize("f,d,n", [(8, 1, 1), (8, 3, 2), (128, 18, 3)])
def test_drn_parameter_count_follows_its_description(f, d, n):
  space = spaces.get("drn", features=(f,), blocks=(d,), stages=(n,), families=("drn",))
  assert space.count_params(DRNArch("drn", f, d, n), 2) == _drn_params(f, d, n, 16)


def test_paper_grid_spec():
  space = spaces.get("drn")
  spec = space.token_spec()
  assert spec.choices == (2, 4, 21, 4) and spec.size == 672
  assert space.decode([0, 3, 14, 1]) == DRNArch("drn", 128, 18, 3)
  assert space.decode([1, 3, 3, 1]) == DRNArch("rcan", 128, 5, 10)


def test_every_grid_point_round_trips_through_tokens():
  space = spaces.get("drn", **TINY)
  archs = _all_archs(space)
  assert len(archs) == space.token_spec().size == 2 * 2 * 2 * 3
  assert len(set(archs)) == len(archs)
  for arch in archs:
    assert space.decode(space.encode(arch)) == arch
    assert space.arch_from_dict(arch.to_dict()) == arch


@pytest.mark.parametrize("tokens,scale", [([0, 1, 1, 2], 2), ([1, 0, 1, 1], 3)])
def test_networks_upscale_and_are_finite(tokens, scale):
  space = spaces.get("drn", **TINY)
  arch = space.decode(tokens)
  model = space.build(arch, scale)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 6, 7, 3)), jnp.float32)
  params = _random_params(model, x)
  y = jax.jit(model.apply)(params, x)
  assert y.shape == (2, 6 * scale, 7 * scale, 3) and y.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(y)))
  n = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params))
  assert n == space.count_params(arch, scale)


def test_inter_block_skip_reaches_the_first_and_middle_stages():
  assert ibsc_stages(1) == (0,) and ibsc_stages(2) == (0, 1) and ibsc_stages(5) == (0, 2)
  f, stages = 4, 3
  block = DenseResidualBlock(f, stages, reduction=2)
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((1, 5, 5, f)), jnp.float32)
  prev = jnp.asarray(rng.standard_normal((1, 5, 5, f)), jnp.float32)
  params = _random_params(block, x)
  np.testing.assert_allclose(
    block.apply(params, x, jnp.zeros_like(prev)), block.apply(params, x), atol=1e-6
  )
  # Silence every stage's convs: a stage's output is then `prev` if the IBSC reaches it, else 0.
  # Reading one stage at a time through the 1x1 fusion tells which stages receive it.
  p = jax.tree.map(jnp.asarray, params)
  for j in range(stages):
    p["params"][f"stage{j}_conv2"] = jax.tree.map(jnp.zeros_like, p["params"][f"stage{j}_conv2"])
  reached = []
  for j in range(stages):
    fuse = np.zeros((1, 1, f * stages, f), np.float32)
    fuse[0, 0, j * f : (j + 1) * f, :] = np.eye(f)
    p["params"]["fuse"] = {"kernel": jnp.asarray(fuse), "bias": jnp.zeros((f,))}
    residual = np.asarray(block.apply(p, x, prev) - x)
    reached.append(bool(np.abs(residual).max() > 1e-4))
  assert reached == [True, True, False]  # stages 0 and L // 2 = 1


def test_architecture_file_round_trip_builds_the_same_network(tmp_path):
  space = spaces.get("drn", **TINY)
  arch = space.decode([1, 1, 1, 2])
  path = tmp_path / "arch.json"
  spaces.save_arch(path, "drn", dict(TINY), arch, psnr=30.5)
  loaded_space, loaded = spaces.load_arch(path)
  assert loaded == arch and loaded_space == space
  net = spaces.build_from_file(path, scale=2)
  assert (net.features, net.groups, net.blocks) == (8, 2, 3)


def test_bad_settings_and_tokens_name_the_culprit():
  with pytest.raises(ConfigError, match="rcan_groups needs one value per blocks value"):
    DRN(blocks=(1, 2, 3), rcan_groups=(1, 2))
  DRN(blocks=(1, 2, 3), families=("drn",))  # the RCAN lists do not matter without RCAN
  with pytest.raises(ConfigError, match="strictly ascending"):
    DRN(features=(64, 32))
  with pytest.raises(ConfigError, match="families must be"):
    DRN(families=("drn", "edsr"))
  with pytest.raises(ConfigError, match="no setting 'depth'"):
    spaces.get("drn", depth=3)
  space = spaces.get("drn", **TINY)
  with pytest.raises(TokenError, match="features"):
    space.decode([0, 2, 0, 0])
  with pytest.raises(TokenError, match="blocks=2 is not on this grid"):
    space.encode(DRNArch("drn", 4, 2, 1))
  with pytest.raises(TokenError, match="family must be one of"):
    DRNArch("vdsr", 4, 1, 1)
  with pytest.raises(ConfigError, match="scale must be one of"):
    space.build(space.decode([0, 0, 0, 0]), 5)


# ---------------------------------------------------------------------------------------------
# The weight-sharing supernet (equality with every child over the grid: tests/spaces/test_contract).


def test_max_arch_is_the_family_with_more_parameters():
  space = spaces.get("drn", **TINY)
  best = space.max_arch()
  assert best.group() == best.family
  for family in ("drn", "rcan"):
    only = spaces.get("drn", **{**TINY, "families": (family,)})
    assert only.max_arch().family == family
    assert space.count_params(best, 2) >= only.count_params(only.max_arch(), 2)
  assert all(space.count_params(a, 3) <= space.count_params(best, 3) for a in _all_archs(space))


@pytest.mark.parametrize("family,blocks", [("rcan", (1, 2)), ("drn", (1,))])
def test_single_family_supernet_equals_its_children(family, blocks):
  settings = {**TINY, "families": (family,), "blocks": blocks, "rcan_groups": blocks}
  space = spaces.get("drn", **settings)
  model = space.supernet(2)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 5, 4, 3)), jnp.float32)
  params = _random_params(model, x, np.zeros(4, np.int32), seed=3)
  forward = jax.jit(model.apply)
  archs = _all_archs(space)
  for arch in [archs[0], archs[-1], *archs[1:-1:3]]:
    want = space.build(arch, 2).apply(space.child_params(params, arch), x)
    got = forward(params, x, space.encode(arch))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  assert forward._cache_size() == 1


def test_supernet_remat_same_gradients():
  space = spaces.get("drn", **TINY)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 4, 5, 3)), jnp.float32)
  plain, remat = space.supernet(2), space.supernet(2, remat=True)
  params = _random_params(plain, x, np.zeros(4, np.int32), seed=1)
  grad_fns = [
    jax.jit(jax.grad(lambda p, t, m=m: jnp.mean(m.apply(p, x, t) ** 2))) for m in (plain, remat)
  ]
  for tokens in ([0, 1, 1, 2], [1, 1, 1, 2]):
    grads = [g(params, jnp.asarray(tokens, jnp.int32)) for g in grad_fns]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), *grads)


def test_supernet_rejects_bad_token_shapes():
  space = spaces.get("drn", **TINY)
  x = jnp.zeros((1, 4, 4, 3))
  with pytest.raises(TokenError, match="expects 4 tokens"):
    jax.eval_shape(space.supernet(2).init, jax.random.PRNGKey(0), x, jnp.zeros(3, jnp.int32))
  with pytest.raises(ConfigError, match="scale must be one of"):
    space.supernet(5)
