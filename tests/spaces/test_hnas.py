"""The HNAS space: every op's shapes, every position, the compile-once supernet, exact costs.

The promises every space keeps (round trips, supernet == child on random architectures) are in
tests/spaces/test_contract.py; this file tests what is HNAS's own.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nasr import spaces
from nasr.core.errors import ConfigError, TokenError
from nasr.estimation import cost
from nasr.searches.reward import Reward, child_cost
from nasr.spaces import hnas

SCALES = (2, 3, 4)
C = 4


def _params(module, *args, seed=0, std=0.1):
  """Return random variables of `module` (nothing is compiled; biases are non-zero too)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)
  return jax.tree.map(lambda s: jnp.asarray(std * rng.standard_normal(s.shape), s.dtype), shapes)


def _op_params(op, scale, seed=0):
  spec = hnas._op_spec(op, C, scale, 4)
  if not spec:
    return {}
  return _params(hnas._OpParams(spec), seed=seed)["params"]


def _x(h=5, w=6, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=(2, h, w, C)), jnp.float32)


@pytest.mark.parametrize("scale", SCALES)
def test_every_normal_op_keeps_the_shape_and_acts(scale):
  ctx = hnas._Ctx(C, scale, 4, jnp.float32, False)
  x = _x()
  for op in hnas.NORMAL_OPS:
    y = hnas.NORMAL_FNS[op](_op_params(op, scale), x, ctx)
    assert y.shape == x.shape, op
    assert np.all(np.isfinite(np.asarray(y))), op
    if op != "identity":
      assert not np.allclose(y, x), f"{op} does nothing"


@pytest.mark.parametrize("scale", SCALES)
def test_every_upsampling_op_scales_and_inner_forms_keep_the_shape(scale):
  ctx = hnas._Ctx(C, scale, 4, jnp.float32, False)
  x = _x()
  for op in hnas.UP_OPS:
    y = hnas.UP_FNS[op](_op_params(op, scale), x, ctx)
    assert y.shape == (2, 5 * scale, 6 * scale, C), op
    inner = hnas._INNER_DECONV if op == "deconvolution" else op
    z = hnas.INNER_FNS[op](_op_params(inner, scale), y, ctx)
    assert z.shape == y.shape, op
  # Area interpolation by an integer factor: every HR pixel lies inside one LR pixel.
  area = hnas.UP_FNS["area"]({}, x, ctx)
  np.testing.assert_array_equal(area[:, ::scale, ::scale], x)
  np.testing.assert_array_equal(area[:, scale - 1 :: scale, scale - 1 :: scale], x)


@pytest.mark.parametrize("scale", SCALES)
def test_cpu_forms_are_the_same_functions(scale):
  plain = hnas._Ctx(C, scale, 4, jnp.float32, False)
  shifted = hnas._Ctx(C, scale, 4, jnp.float32, True)
  x = _x(seed=5)
  for table in (hnas.NORMAL_FNS, hnas.UP_FNS):
    for op, fn in table.items():
      p = _op_params(op, scale, seed=6)
      np.testing.assert_allclose(fn(p, x, shifted), fn(p, x, plain), atol=2e-5, err_msg=op)


def test_udpb_is_the_dbpn_up_then_down_projection():
  scale = 2
  ctx = hnas._Ctx(C, scale, 4, jnp.float32, False)
  p = _op_params("udpb", scale, seed=3)
  x = _x(seed=4)
  a = p["prelu"]

  def deconv(v, name, i):  # torch ConvTranspose2d(k=6, s=2, p=2) = dilate, pad k-1-p, conv
    q = 6 - 1 - 2
    y = (
      jax.lax.conv_general_dilated(
        v,
        p[name]["kernel"],
        (1, 1),
        ((q, q), (q, q)),
        lhs_dilation=(2, 2),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
      )
      + p[name]["bias"]
    )
    return jnp.where(y >= 0, y, a[i] * y)

  def conv(v, name, i):
    y = (
      jax.lax.conv_general_dilated(
        v, p[name]["kernel"], (2, 2), ((2, 2), (2, 2)), dimension_numbers=("NHWC", "HWIO", "NHWC")
      )
      + p[name]["bias"]
    )
    return jnp.where(y >= 0, y, a[i] * y)

  h0 = deconv(x, "up1", 0)
  l0 = conv(h0, "up2", 1)
  up = deconv(l0 - x, "up3", 2) + h0
  assert up.shape == (2, 10, 12, C)
  l0 = conv(up, "down1", 3)
  h0 = deconv(l0, "down2", 4)
  want = conv(h0 - up, "down3", 5) + l0
  np.testing.assert_allclose(hnas.NORMAL_FNS["udpb"](p, x, ctx), want, atol=1e-5, rtol=1e-5)


def _space(**kw):
  return spaces.get("hnas", **{"layers": 3, "nodes": 2, "channels": C, **kw})


@pytest.mark.parametrize("scale", SCALES)
def test_every_position_gives_the_hr_size(scale):
  space = _space()
  rng = np.random.default_rng(scale)
  x = jnp.asarray(rng.uniform(size=(1, 5, 7, 3)), jnp.float32)
  base = space.decode(space.token_spec().sample(rng))
  for position in range(1, space.layers + 1):
    arch = hnas.HNASArch(base.layers, base.nodes, base.normal, base.upsampling, position)
    net = space.build(arch, scale)
    y = net.apply(_params(net, x), x)
    assert y.shape == (1, 5 * scale, 7 * scale, 3), position
    assert np.all(np.isfinite(np.asarray(y))), position


def test_supernet_step_compiles_once_over_twenty_triples_and_shares_weights():
  scale = 2
  space = _space()
  # The CPU forms (shifted depthwise, sub-pixel deconvolutions, tap-matmul gradients) against the
  # plain stand-alone child: the same functions.
  model = space.supernet(scale, shifted=True)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(2, 6, 6, 3)), jnp.float32)
  hr = jnp.asarray(rng.uniform(size=(2, 12, 12, 3)), jnp.float32)
  variables = _params(model, x, space.encode(space.max_arch()), seed=1)
  tx = optax.adam(1e-2)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(variables, opt, tokens):
    def loss(v):
      return jnp.mean(jnp.abs(model.apply(v, x, tokens) - hr))

    value, grads = jax.value_and_grad(loss)(variables)
    updates, opt = tx.update(grads, opt, variables)
    return optax.apply_updates(variables, updates), opt, value

  forward = jax.jit(model.apply)
  opt = tx.init(variables)
  triples = set()
  checked = 0
  for tokens in space.token_spec().sample(rng, 20):
    arch = space.decode(tokens)
    triples.add((arch.normal, arch.upsampling, arch.position))
    variables, opt, value = step(variables, opt, jnp.asarray(tokens))
    assert np.isfinite(float(value))
    if checked < 10:  # weight sharing: the trained supernet's child equals the stand-alone child
      child = space.build(arch, scale)
      want = child.apply(space.child_params(variables, arch), x)
      np.testing.assert_allclose(forward(variables, x, tokens), want, atol=2e-5, rtol=2e-5)
      checked += 1
  assert len(triples) == 20 and checked == 10
  chex.clear_trace_counter()


@pytest.mark.parametrize("shifted", [False, True])
def test_supernet_gradients_are_the_childs(shifted):
  # The supernet's edges have a hand-written reverse mode (hnas._run_edges): its gradient must be
  # the stand-alone child's, on the child's weights, and zero on every weight the child lacks.
  scale = 2
  space = _space()
  model = space.supernet(scale, shifted=shifted)
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.uniform(size=(2, 5, 6, 3)), jnp.float32)
  variables = _params(model, x, space.encode(space.max_arch()), seed=2)

  def loss(v, apply, *args):
    return jnp.sum(jnp.sin(3.0 * apply(v, x, *args)))  # a non-trivial output cotangent

  grad = jax.jit(jax.grad(lambda v, t: loss(v, model.apply, t)))
  seen_ops, seen_inner = set(), False
  archs = [space.decode(t) for t in space.token_spec().sample(rng, 5)] + [space.max_arch()]
  # Every normal op and the inner deconvolution (an HR edge with weights) at least once.
  cell = ((0, "sep_conv_3x3", 1, "rcab"), (2, "dil_conv_5x5", 0, "identity"))
  up = ((0, "deconvolution", 1, "sub_pixel"), (2, "deconvolution", 1, "bilinear"))
  archs.append(hnas.HNASArch(3, 2, cell, up, 2))
  for arch in archs:
    g_super = grad(variables, jnp.asarray(space.encode(arch)))
    child = space.build(arch, scale)
    g_child = jax.grad(lambda v, child=child: loss(v, child.apply))(
      space.child_params(variables, arch)
    )
    chex.assert_trees_all_close(space.child_params(g_super, arch), g_child, atol=1e-5, rtol=1e-4)
    # What the child does not use gets nothing: the squared gradient norms agree.
    norm = sum(float(jnp.sum(leaf**2)) for leaf in jax.tree.leaves(g_super))
    want = sum(float(jnp.sum(leaf**2)) for leaf in jax.tree.leaves(g_child))
    assert norm == pytest.approx(want, rel=1e-4)
    seen_ops |= {op for node in arch.normal for op in node[1::2]}
    seen_inner |= any(node[0] >= 2 for node in arch.upsampling)
  assert seen_ops == set(hnas.NORMAL_OPS) and seen_inner


def test_reward_cost_is_the_childs_exact_multiply_adds():
  scale = 2
  space = _space(layers=4)
  reward = Reward({"psnr": 0.6, "macs": -0.4}, space, scale)
  # By hand: identity edges and nearest upsampling leave only the convs of the frame and the
  # cells' 1x1 output convs; the upsampling cell at layer 2 puts 1 cell at LR and 3 at HR.
  cell = ((0, "identity", 1, "identity"), (2, "identity", 0, "identity"))
  up = ((0, "nearest", 1, "nearest"), (2, "bilinear", 1, "area"))
  arch = hnas.HNASArch(4, 2, cell, up, 2)
  s2 = scale * scale
  per_lr_pixel = 9 * 3 * C + 2 * C * C + 3 * s2 * 2 * C * C + s2 * 9 * C * 3
  assert reward.costs(space.encode(arch))["macs"] == per_lr_pixel
  # The paper's units: G multiply-adds of one 480 x 480 LR image.
  paper = Reward({"psnr": 0.6, "macs": -0.4}, space, scale, norm="paper")
  gmacs = paper.costs(space.encode(arch))["macs_ratio"]
  assert gmacs == pytest.approx(per_lr_pixel * 480 * 480 / 1e9, rel=1e-12)
  # The released code's units: multiply-adds of a 48 x 48 LR image times 0.5e-8.
  ref = Reward({"psnr": 0.6, "macs": -0.4}, space, scale, norm="reference")
  assert ref.costs(space.encode(arch))["macs_ratio"] == pytest.approx(
    per_lr_pixel * 48 * 48 * 0.5e-8, rel=1e-12
  )
  rng = np.random.default_rng(0)
  probe = (1, 32, 32, 3)
  for tokens in space.token_spec().sample(rng, 5):
    child = space.build(space.decode(tokens), scale)
    shapes = jax.eval_shape(child.init, jax.random.PRNGKey(0), jnp.zeros(probe))
    want = cost.count_macs(child, shapes, probe) / (32 * 32)
    got = reward.costs(tokens)
    assert got["macs"] == want
    assert 0 < got["macs_ratio"] <= 1 and 0 < got["params_ratio"] <= 1


@pytest.mark.parametrize("scale", SCALES)
def test_cost_pieces_add_up_to_the_childs_parameters_and_multiply_adds(scale):
  # The reward sums cached per-op pieces instead of tracing each child: the sums must be exact,
  # at the probe side and at others (RCAB's pooled 1x1 convs do not scale with the pixels).
  space = _space(layers=4, skip="head" if scale == 3 else "image")
  cache = {}
  tokens = space.token_spec().sample(np.random.default_rng(scale), 4)
  for side, t in zip((32, 48, 17, 32), tokens, strict=True):
    arch = space.decode(t)
    child = space.build(arch, scale)
    probe = (1, side, side, 3)
    shapes = jax.eval_shape(child.init, jax.random.PRNGKey(0), jnp.zeros(probe))
    params, per_pixel = child_cost(space, arch, scale, side, cache)
    assert params == space.count_params(arch, scale)
    assert per_pixel == cost.count_macs(child, shapes, probe) / (side * side)
  assert any(key[2] == "normal" for key in cache)  # the pieces were used and cached


def test_max_arch_is_the_most_complex_child():
  space = _space(layers=4)
  reward = Reward({"psnr": 1.0, "macs": -1.0}, space, 2)
  for tokens in space.token_spec().sample(np.random.default_rng(1), 12):
    costs = reward.costs(tokens)
    assert costs["macs_ratio"] <= 1 and costs["params_ratio"] <= 1


def test_tokens_round_trip_and_bad_tokens_name_the_position():
  space = spaces.get("hnas", layers=12, nodes=4, channels=8)
  spec = space.token_spec()
  assert len(spec) == 33 and spec.num_groups == 3
  assert spec.choices[-1] == 12 and spec.groups[-1] == 2
  for tokens in spec.sample(np.random.default_rng(0), 20):
    arch = space.decode(tokens)
    np.testing.assert_array_equal(space.encode(arch), tokens)
    assert space.arch_from_dict(arch.to_dict()) == arch
  bad = spec.sample(np.random.default_rng(1))
  bad[0] = 2  # node 0 reads the cell inputs 0 and 1 only
  with pytest.raises(TokenError, match="normal node0 input a"):
    space.decode(bad)
  with pytest.raises(TokenError, match="position must be in 1..12"):
    hnas.HNASArch(12, 1, ((0, "udpb", 1, "rcab"),), ((0, "area", 1, "nearest"),), 13)
  with pytest.raises(TokenError, match="unknown op 'conv'"):
    hnas.HNASArch(12, 1, ((0, "conv", 1, "rcab"),), ((0, "area", 1, "nearest"),), 1)
  with pytest.raises(ConfigError, match="skip"):
    spaces.get("hnas", skip="bicubic")


def test_the_spec_names_every_choice_as_decode_reads_it():
  space = spaces.get("hnas", layers=12, nodes=4, channels=8)
  spec = space.token_spec()
  inputs = lambda i: "cell k-2" if i == 0 else "cell k-1" if i == 1 else f"node{i - 2}"  # noqa: E731
  for tokens in spec.sample(np.random.default_rng(0), 20):
    arch = space.decode(tokens)
    named = [spec.choice_labels(i)[t] for i, t in enumerate(tokens)]
    for c, cell in enumerate((arch.normal, arch.upsampling)):
      for j, (ia, op_a, ib, op_b) in enumerate(cell):
        at = 4 * (4 * c + j)  # 4 nodes a cell, 4 tokens a node
        assert named[at : at + 4] == [inputs(ia), op_a, inputs(ib), op_b]
    assert named[-1] == f"layer {arch.position}"
