"""Tests of the DeCoNAS search space, its supernet and the space registry."""

import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasr import spaces
from nasr.core.errors import ConfigError, TokenError
from nasr.searches import reward
from nasr.spaces.deconas import DeCoNAS, DeCoNASArch

PAPER_TOKENS = [7, 6, 4, 3, 0, 2, 2, 3, 4, 1]
# The paper's 1,713K: the authors' released x2 checkpoint holds exactly this many parameters.
PAPER_PARAMS_X2 = 1_713_795
# nasr's DeCoNASNet before issue 26: a 1x1 conv before every DNB and none after the last (eq. (3)
# read literally), biases on the depthwise convs.
FORMER = {"fuse_before_first": True, "depthwise_bias": True}


def _tiny(fusion_search=False, **options):
  return spaces.get(
    "deconas", blocks=2, nodes=3, channels=8, fusion_search=fusion_search, **options
  )


def _param_counts(tree) -> dict[str, int]:
  return {k: sum(int(np.prod(a.shape)) for a in jax.tree.leaves(v)) for k, v in tree.items()}


def _lr(n=1, size=16, seed=0):
  return np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype(np.float32)


def _random_params(model, *args, seed=0):
  """Return random variables of `model` without compiling its initialiser.

  A jitted `model.init` spends ~25 s compiling threefry on this CPU; the values do not matter
  here, and non-zero biases exercise the bias slicing too.
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)
  return jax.tree_util.tree_map(
    lambda s: jnp.asarray(0.2 * rng.standard_normal(s.shape), s.dtype), shapes
  )


# ---------------------------------------------------------------------------------------------
# Acceptance.


def test_paper_deconasnet_param_count():
  space = spaces.get("deconas", blocks=4, nodes=4, channels=64)
  arch = space.decode(PAPER_TOKENS)
  assert space.count_params(arch, scale=2) == PAPER_PARAMS_X2
  assert 0 < space.complexity(arch, 2) < 1
  assert space.complexity(space.max_arch(), 2) == 1.0
  former = spaces.get("deconas", blocks=4, nodes=4, channels=64, **FORMER)
  assert former.count_params(arch, scale=2) == 1_698_947


def test_paper_deconasnet_parts_are_the_authors_variables():
  # Per layer, the sizes of the variables in the authors' x2 checkpoint
  # (github.com/Junem360/DeCoNAS outputs/x2/model.ckpt-931000.index), summed as nasr names them.
  space = spaces.get("deconas", blocks=4, nodes=4, channels=64)
  model = space.build(space.decode(PAPER_TOKENS), 2)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))["params"]
  parts = _param_counts(params)
  assert parts == {
    "sfe1": 1_792,  # stem_conv w_grl, b_grl
    "sfe2": 36_928,  # stem_conv w_sfe, b_sfe
    **{f"block{d}": 352_640 for d in range(4)},  # layer_d
    # layer_d/block_connection_d: after DNB d over F_0..F_d+1; nothing reads the last one.
    "connect0": 8_256,
    "connect1": 12_352,
    "connect2": 16_448,
    "connect3": 20_544,
    "gff_fuse": 20_544,  # global_concat w_gc, b_gc
    "gff_conv": 36_928,  # global_concat w_gfe, b_gfe
    "upsample": 147_712,  # w_rsu, b_rsu
    "tail": 1_731,  # result_conv
  }
  block = _param_counts(params["block0"])
  attention = {f"node{m}_attention": 2_128 for m in range(1, 5)}  # C -> C/4 -> C, with biases
  # A separable conv: one bias, after the pointwise conv (9*64 + 64*64 + 64 per input slot).
  assert block == {
    **attention,
    "node1_conv3x3": 36_928,
    "node1_sepconv3x3": 4_736,
    "node1_dilconv3x3": 36_928,
    "node2_conv3x3": 73_792,
    "node2_sepconv3x3": 4_736,
    "node3_sepconv3x3": 9_408,
    "node3_dilconv3x3": 36_928,
    "node4_conv3x3": 36_928,
    "node4_sepconv3x3": 9_408,
    "node4_dilconv3x3": 73_792,
    "lff": 20_544,
  }


def test_the_unused_connection_has_parameters_but_no_multiply_adds():
  arch = _tiny().decode([7, 6, 4, 3, 0, 2])
  c = 8
  ours, literal = _tiny(), _tiny(fuse_before_first=True)
  params, macs = reward.child_cost(ours, arch, 2, 16)
  params_l, macs_l = reward.child_cost(literal, arch, 2, 16)
  # N=2: connect0 (2 slots) and the unused connect1 (3) against fuse0 (1) and fuse1 (2).
  assert params - params_l == (2 + 3 - 1 - 2) * c * c
  assert macs - macs_l == (2 - 1 - 2) * c * c  # per LR pixel: connect1 computes nothing
  model = ours.build(arch, 2)
  x = _lr()
  p = _random_params(model, x)
  moved = jax.tree.map(lambda a: a, p)
  moved["params"]["connect1"] = jax.tree.map(lambda a: a + 1.0, p["params"]["connect1"])
  np.testing.assert_array_equal(model.apply(moved, x), model.apply(p, x))


# x3 with the slow checks: every form runs at x2 here, and x3 in test_contract (the default form).
@pytest.mark.parametrize("scale", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_supernet_equals_child(scale):
  rng = np.random.default_rng(scale)
  x = _lr(2)
  checked = 0
  for fusion_search in (False, True):
    space = _tiny(fusion_search)
    spec = space.token_spec()
    masked = space.supernet(scale)
    zeros = np.zeros(len(spec), np.int32)
    params = _random_params(masked, x, zeros, seed=scale)
    # Masks and lax.cond per slot, each with conv_general_dilated and with shifted depthwise
    # convs; the accelerator form: one lax.switch per op over its gathered slots.
    forms = [
      {"skip_inactive": skip, "shifted": shifted}
      for skip in (False, True)
      for shifted in (False, True)
    ]
    forms.append({"skip_inactive": True, "gathered": True})
    variants = [jax.jit(space.supernet(scale, **form).apply) for form in forms]
    samples = [zeros, space.encode(space.max_arch())] + list(spec.sample(rng, 4))
    for tokens in samples:
      arch = space.decode(tokens)
      child = space.build(arch, scale)
      want = child.apply(space.child_params(params, arch), x)
      assert want.shape == (2, 16 * scale, 16 * scale, 3)
      for f in variants:
        np.testing.assert_allclose(f(params, x, tokens), want, atol=1e-5, rtol=1e-5)
      checked += 1
  assert checked >= 10


@pytest.mark.parametrize(
  "options", [FORMER, {"depthwise_bias": True}, {"fuse_before_first": True}], ids=str
)
def test_supernet_equals_child_with_options(options):
  # The defaults run through every form above; here each option in the forms whose code differs
  # (masks, a lax.cond per slot, gathered slots), with the cost pieces and table of the child.
  space = _tiny(fusion_search=True, **options)
  spec, x = space.token_spec(), _lr(2)
  zeros = np.zeros(len(spec), np.int32)
  forms = [{}, {"skip_inactive": True}, {"skip_inactive": True, "gathered": True}]
  variants = [jax.jit(space.supernet(2, **form).apply) for form in forms]
  params = _random_params(space.supernet(2), x, zeros, seed=4)
  samples = [space.encode(space.max_arch()), *spec.sample(np.random.default_rng(4), 3)]
  cache = {}
  table = jax.jit(space.cost_table(lambda *piece: reward._piece_cost(cache, 16, 2, *piece), 2, 16))
  for tokens in samples:
    arch = space.decode(tokens)
    child = space.build(arch, 2)
    sliced = space.child_params(params, arch)
    built = jax.eval_shape(child.init, jax.random.PRNGKey(0), x)
    assert jax.tree.map(np.shape, sliced) == jax.tree.map(np.shape, built)
    want = child.apply(sliced, x)
    for f in variants:
      np.testing.assert_allclose(f(params, x, tokens), want, atol=1e-5, rtol=1e-5)
    params_, macs = reward._module_cost(child, (1, 16, 16, 3))  # the whole child, traced
    assert reward.child_cost(space, arch, 2, 16, cache) == (params_, macs / 16**2)
    np.testing.assert_allclose(table(jnp.asarray(tokens)), (params_, macs / 16**2), rtol=1e-6)
  biases = jax.eval_shape(space.build(space.max_arch(), 2).init, jax.random.PRNGKey(0), x)
  sep = biases["params"]["block0"]["node1_sepconv3x3"]["depthwise"]
  assert ("bias" in sep) == options.get("depthwise_bias", False)


@pytest.mark.parametrize(
  "variant",
  [
    {"remat": True},
    {"shifted": True},
    {"remat": True, "shifted": True},
    # The accelerator form: gathered slots, XLA's depthwise convs, DNBs unrolled.
    {"skip_inactive": True, "gathered": True},
  ],
)
def test_supernet_variant_same_params_outputs_and_gradients(variant):
  space = _tiny(fusion_search=True)
  plain, remat = space.supernet(2), space.supernet(2, **variant)
  x = _lr(2)
  y = np.random.default_rng(3).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  tokens = space.token_spec().sample(np.random.default_rng(2), 1)[0]
  params = _random_params(plain, x, tokens)
  shapes = lambda t: jax.tree_util.tree_map(lambda a: a.shape, t)  # noqa: E731
  assert shapes(jax.eval_shape(remat.init, jax.random.PRNGKey(0), x, tokens)) == shapes(params)

  def grads(model):
    loss = lambda p: jnp.mean(jnp.abs(model.apply(p, x, tokens) - y))  # noqa: E731
    return jax.jit(jax.value_and_grad(loss))(params)

  (l0, g0), (l1, g1) = grads(plain), grads(remat)
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  chex.assert_trees_all_close(g1, g0, atol=1e-6, rtol=1e-5)


def test_child_params_match_child_init():
  space = _tiny(fusion_search=True)
  x = _lr()
  params = _random_params(space.supernet(2), x, np.zeros(len(space.token_spec()), np.int32))
  for tokens in space.token_spec().sample(np.random.default_rng(1), 5):
    arch = space.decode(tokens)
    sliced = space.child_params(params, arch)
    built = jax.eval_shape(space.build(arch, 2).init, jax.random.PRNGKey(0), x)
    shapes = lambda t: jax.tree_util.tree_map(lambda a: a.shape, t)  # noqa: E731
    assert shapes(sliced) == shapes(built)


# Masks; the search's CPU default: lax.cond per slot with shifted depthwise convs in a rolled loop;
# its accelerator default: one lax.switch per op over the gathered slots.
@pytest.mark.parametrize(
  "variant",
  [{}, {"skip_inactive": True, "shifted": True}, {"skip_inactive": True, "gathered": True}],
)
def test_supernet_traced_once(variant):
  space = _tiny(fusion_search=True)
  spec = space.token_spec()
  model = space.supernet(2, **variant)
  x, y = _lr(2), np.random.default_rng(1).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  params = _random_params(model, x, np.zeros(len(spec), np.int32))
  traces = {"forward": 0, "grad": 0}

  def forward(params, x, tokens):
    traces["forward"] += 1
    return model.apply(params, x, tokens)

  def loss(params, x, y, tokens):
    traces["grad"] += 1
    return jnp.mean(jnp.abs(model.apply(params, x, tokens) - y))

  f = jax.jit(forward)
  g = jax.jit(jax.value_and_grad(loss))
  samples = spec.sample(np.random.default_rng(0), 20)
  assert len({tuple(t) for t in samples}) == 20
  for tokens in samples:
    f(params, x, tokens).block_until_ready()
    value, grads = g(params, x, y, tokens)
    assert np.isfinite(float(value))
  assert traces == {"forward": 1, "grad": 1}


# ---------------------------------------------------------------------------------------------
# Decoding, encoding and errors.


def test_compact_form_decodes_like_bit_form():
  space = spaces.get("deconas", blocks=4, nodes=4, channels=64)
  arch = space.decode(PAPER_TOKENS)
  bits = space.encode(arch)
  assert len(bits) == len(space.token_spec()) == 30
  assert space.decode(bits) == arch
  assert arch.compact() == PAPER_TOKENS
  # 7: all ops; 6: conv + sep; 4: conv only; 3: sep + dilated; 0: none; 1: dilated only.
  assert bits[:15].tolist() == [1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0]
  assert arch.inputs(2, 0) == [0, 1]  # node2 conv3x3 reads node0 and node1
  assert arch.inputs(3, 0) == []  # node3 has no conv3x3
  assert arch.inputs(4, 2) == [1, 3]  # node4 dilated conv reads node1 and node3
  assert arch.lff == (1, 1, 1, 1) and arch.gff == (1, 1, 1, 1)


def test_token_spec_layout():
  space = spaces.get("deconas", blocks=2, nodes=3, fusion_search=True)
  spec = space.token_spec()
  g = 6
  assert len(spec) == 3 * g + 3 + 2 and set(spec.choices) == {2}
  assert spec.steps[: 3 * g] == tuple(s for s in range(g) for _ in range(3))
  assert spec.steps[3 * g :] == (g,) * 3 + (g + 1,) * 2
  assert spec.heads[: 3 * g] == (0, 1, 2) * g
  assert spec.names[3 * 3 + 0] == "node3<-node0 conv3x3"
  assert spec.names[3 * 4 + 1] == "node3<-node1 sepconv3x3"


def test_node_without_ops_passes_previous_node():
  space = _tiny()
  arch = space.decode([4, 0, 0, 2, 0, 0])  # node2 has no op
  assert arch.inputs(2, 0) == arch.inputs(2, 1) == arch.inputs(2, 2) == []
  params = jax.eval_shape(space.build(arch, 2).init, jax.random.PRNGKey(0), _lr())["params"]
  assert "node2_attention" not in params["block0"]
  assert {"node1_conv3x3", "node3_sepconv3x3"} <= set(params["block0"])
  # Reading node2 (= node1) costs the same as reading node1.
  same = space.decode([4, 0, 0, 0, 2, 0])
  assert space.count_params(arch, 2) == space.count_params(same, 2)


def test_fusion_bits_gate_all_but_the_last_node_and_block():
  space = _tiny(fusion_search=True)  # N=2, M=3: 3 LFF bits (nodes 0..2), 2 GFF bits (F_0, F_1)
  arch = space.decode(np.zeros(len(space.token_spec()), np.int32))
  assert arch.lff == (0, 0, 0) and arch.gff == (0, 0)
  bare = space.count_params(arch, 2)
  # Only node 3 and F_2 feed the fusions: each gate opened adds one C-wide 1x1 slot per use.
  c = space.channels
  assert space.count_params(dataclasses.replace(arch, gff=(1, 0)), 2) == bare + c * c
  assert space.count_params(dataclasses.replace(arch, lff=(1, 0, 0)), 2) == bare + 2 * c * c
  assert space.decode([0] * 6 + [1, 0, 0, 0, 1]) == dataclasses.replace(
    arch, lff=(1, 0, 0), gff=(0, 1)
  )
  # Without fusion search everything is fused.
  assert _tiny().decode([0] * 6).lff == (1, 1, 1)


def test_decode_errors_name_the_position():
  space = spaces.get("deconas", blocks=4, nodes=4)
  bad = list(PAPER_TOKENS)
  bad[3] = 9
  with pytest.raises(TokenError, match=r"token 9 at group 3 \(node3<-node0\) is outside 0\.\.7"):
    space.decode(bad)
  bits = space.encode(space.decode(PAPER_TOKENS))
  bits[7] = 2
  with pytest.raises(TokenError, match=r"position 7 \(node2<-node1 sepconv3x3\).*0\.\.1"):
    space.decode(bits)
  with pytest.raises(TokenError, match="expects 30 bit tokens or 10 compact tokens"):
    space.decode([1, 2, 3])
  with pytest.raises(TokenError, match="fusion_search is off"):
    space.encode(dataclasses.replace(space.max_arch(), lff=(0, 0, 0, 1)))
  with pytest.raises(TokenError, match="supernet expects 18 bit tokens"):
    jax.eval_shape(_tiny().supernet(2).init, jax.random.PRNGKey(0), _lr(), np.zeros(7, np.int32))


def test_arch_json_round_trip():
  space = spaces.get("deconas", blocks=4, nodes=4, fusion_search=True)
  arch = space.decode(PAPER_TOKENS + [1, 0, 1, 0, 0, 1, 0, 0])
  assert DeCoNASArch.from_json(arch.to_json()) == arch
  assert DeCoNASArch.from_json(json.loads(json.dumps(dataclasses.asdict(arch)))) == arch
  assert hash(arch) == hash(DeCoNASArch.from_json(arch.to_json()))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_child_shapes(scale):
  space = _tiny()
  model = space.build(space.decode([7, 6, 4, 3, 0, 2]), scale)
  x = _lr(1, size=12)
  out = jax.eval_shape(model.init_with_output, jax.random.PRNGKey(0), x)[0]
  assert out.shape == (1, 12 * scale, 12 * scale, 3) and out.dtype == jnp.float32


def test_bad_space_settings():
  with pytest.raises(ConfigError, match="channels"):
    DeCoNAS(channels=0)
  with pytest.raises(ConfigError, match="scale"):
    _tiny().build(_tiny().max_arch(), scale=5)


# ---------------------------------------------------------------------------------------------
# Registry and architecture files.


def test_registry():
  assert "deconas" in spaces.SPACES.names()
  assert isinstance(spaces.get("deconas"), DeCoNAS)
  with pytest.raises(ConfigError, match="unknown search space 'nope'; available: .*deconas"):
    spaces.get("nope")
  with pytest.raises(ConfigError, match="no setting 'width'.*channels"):
    spaces.get("deconas", width=3)


def test_save_load_and_build_from_file(tmp_path):
  kwargs = {"blocks": 2, "nodes": 3, "channels": 8, "fusion_search": True}
  space = spaces.get("deconas", **kwargs)
  arch = space.decode([7, 0, 4, 3, 1, 2, 0, 1, 1, 0, 1])
  path = tmp_path / "arch.json"
  spaces.save_arch(path, "deconas", kwargs, arch, psnr=30.5)
  record = json.loads(path.read_text())
  assert record["space"] == "deconas" and record["psnr"] == 30.5
  assert record["tokens"] == space.encode(arch).tolist()
  loaded_space, loaded = spaces.load_arch(path)
  assert loaded_space == space and loaded == arch
  wide = spaces.build_from_file(path, scale=3, channels=12)
  assert wide.channels == 12 and wide.scale == 3 and wide.arch == arch
  out = jax.eval_shape(wide.init_with_output, jax.random.PRNGKey(0), _lr(1, size=8))[0]
  assert out.shape == (1, 24, 24, 3)


def test_load_errors_name_the_file(tmp_path):
  with pytest.raises(ConfigError, match="missing.json: architecture file not found"):
    spaces.build_from_file(tmp_path / "missing.json", scale=2)
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(ConfigError, match="bad.json: not a readable JSON"):
    spaces.load_arch(bad)
  wrong = tmp_path / "wrong.json"
  wrong.write_text(json.dumps({"space": "deconas", "space_kwargs": {"width": 3}, "tokens": []}))
  with pytest.raises(ConfigError, match="wrong.json: .*no setting 'width'"):
    spaces.load_arch(wrong)
  short = tmp_path / "short.json"
  short.write_text(json.dumps({"space": "deconas", "space_kwargs": {}, "tokens": [1, 2]}))
  with pytest.raises(TokenError, match="short.json: .*expects"):
    spaces.load_arch(short)
