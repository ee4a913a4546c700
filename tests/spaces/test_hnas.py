"""The HNAS space: every op's shapes, every position, the compile-once supernet, exact costs.

The promises every space keeps (round trips, supernet == child on random architectures) are in
tests/spaces/test_contract.py; this file tests what is HNAS's own.
"""

import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nasr import spaces
from nasr.core.errors import ConfigError, TokenError
from nasr.estimation import cost
from nasr.searches.reward import Reward, child_cost, table_ii_mult_adds
from nasr.spaces import hnas

SCALES = (2, 3, 4)
C = 4


def _params(module, *args, seed=0, std=0.1):
  """Return random variables of `module` (nothing is compiled; biases are non-zero too)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)
  return jax.tree.map(lambda s: jnp.asarray(std * rng.standard_normal(s.shape), s.dtype), shapes)


# nasr's earlier forms, kept as options: everything the released code does differently.
EARLIER = dict(
  cell_preprocess="concat_conv",
  conv_bias=True,
  deconv_kernel="2s",
  after_upsampling="resize",
  skip="image",
  reduction=4,
)


def _ctx(scale, shifted=False):
  """Return an op context in the released forms (x3: kernel-2s deconvolutions, see HNAS)."""
  return hnas._Ctx(
    C, scale, 4, jnp.float32, shifted, deconv_kernel="2s" if scale == 3 else "released"
  )


def _op_params(op, scale, seed=0):
  spec = hnas._op_spec(op, _ctx(scale))
  if not spec:
    return {}
  return _params(hnas._OpParams(spec), seed=seed)["params"]


def _x(h=5, w=6, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=(2, h, w, C)), jnp.float32)


@pytest.mark.parametrize("scale", SCALES)
def test_every_normal_op_keeps_the_shape_and_acts(scale):
  ctx = _ctx(scale)
  x = _x()
  for op in hnas.NORMAL_OPS:
    y = hnas.NORMAL_FNS[op](_op_params(op, scale), x, ctx)
    assert y.shape == x.shape, op
    assert np.all(np.isfinite(np.asarray(y))), op
    if op != "identity":
      assert not np.allclose(y, x), f"{op} does nothing"


@pytest.mark.parametrize("scale", SCALES)
def test_every_upsampling_op_scales_and_inner_forms_keep_the_shape(scale):
  ctx = _ctx(scale)
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
  plain, shifted = _ctx(scale), _ctx(scale, shifted=True)
  x = _x(seed=5)
  for table in (hnas.NORMAL_FNS, hnas.UP_FNS):
    for op, fn in table.items():
      p = _op_params(op, scale, seed=6)
      np.testing.assert_allclose(fn(p, x, shifted), fn(p, x, plain), atol=2e-5, err_msg=op)


def test_udpb_is_the_dbpn_up_then_down_projection():
  scale = 2
  ctx = _ctx(scale)
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
  space = _space(deconv_kernel="2s" if scale == 3 else "released")
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


# nasr's earlier forms with the slow checks: the edges' hand-written reverse mode is the same code
# in every form (the released forms run it here, plain and shifted).
@pytest.mark.parametrize(
  "shifted,forms",
  [(False, {}), (True, {}), pytest.param(False, EARLIER, marks=pytest.mark.slow)],
  ids=["plain", "shifted", "earlier"],
)
def test_supernet_gradients_are_the_childs(shifted, forms):
  # The supernet's edges have a hand-written reverse mode (hnas._run_edges): its gradient must be
  # the stand-alone child's, on the child's weights, and zero on every weight the child lacks; in
  # the released forms (defaults) and nasr's earlier ones.
  scale = 2
  space = _space(**forms)
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
  # cells' input 1x1 convs (2 per cell, F = nodes * C -> C, at the cell inputs' resolution); the
  # upsampling cell at layer 2 reads LR inputs, so 2 cells preprocess at LR and 2 at HR.
  cell = ((0, "identity", 1, "identity"), (2, "identity", 0, "identity"))
  up = ((0, "nearest", 1, "nearest"), (2, "bilinear", 1, "area"))
  arch = hnas.HNASArch(4, 2, cell, up, 2)
  s2, f = scale * scale, 2 * C
  per_lr_pixel = 9 * 3 * f + 2 * (2 * f * C) + s2 * 2 * (2 * f * C) + s2 * 9 * f * 3
  assert reward.costs(space.encode(arch))["macs"] == per_lr_pixel
  # G multiply-adds of one 480 x 480 LR image.
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
@pytest.mark.parametrize("forms", [{}, EARLIER], ids=["released", "earlier"])
def test_cost_pieces_add_up_to_the_childs_parameters_and_multiply_adds(scale, forms):
  # The reward sums cached per-op pieces instead of tracing each child: the sums must be exact,
  # at the probe side and at others (RCAB's pooled 1x1 convs do not scale with the pixels).
  forms = {**forms, "deconv_kernel": "2s", "skip": "head"} if scale == 3 else forms
  space = _space(layers=4, **forms)
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


# ----------------------------------------------------------------------------------------------
# The paper's networks equal the authors' (guoyongcs/HNAS-SR at 2b34e1b, `src/model/arch.py`, run
# as released): trainable parameters (MeanShift excluded) and multiply-adds of every conv once.

ARCHS = Path(__file__).resolve().parents[2] / "configs" / "archs"
AUTHORS_PARAMS = {  # (channels, scale): HNAS-A, B, C; None where their code cannot run
  (64, 2): (974_019, 2_141_290, 2_542_545),
  (64, 3): (None, None, 2_727_185),
  (64, 4): (1_105_091, 2_502_250, 2_690_257),
  (8, 2): (27_227, 47_033, 46_799),
}


def _paper_arch(name, position=None):
  arch = json.loads((ARCHS / f"hnas_{name}.json").read_text())["arch"]
  return hnas.HNASArch.from_dict({**arch, **({"position": position} if position else {})})


@pytest.mark.parametrize("channels,scale", list(AUTHORS_PARAMS))
def test_paper_networks_have_the_authors_parameter_counts(channels, scale):
  space = spaces.get("hnas", channels=channels)
  for name, want in zip("abc", AUTHORS_PARAMS[channels, scale], strict=True):
    arch = _paper_arch(name)
    if want is None:  # a kernel-3 stride-3 deconvolution on a cell input: 3H - 2 rows
      with pytest.raises(ConfigError, match="deconv_kernel='2s'"):
        space.build(arch, scale)
      continue
    assert space.count_params(arch, scale) == want, f"HNAS-{name.upper()}"


def test_paper_networks_multiply_adds_and_table_ii_units():
  # Every conv of the network once at 480 x 480 LR, x2, C=64 (the authors' network measured with
  # forward hooks: nn.Conv2d plus nn.ConvTranspose2d), and Table II's units (Conv2d only, 48 x 48,
  # times 1e-8). HNAS-C's 83.6 is its upsampling cell at position 10, not the caption's 12.
  space = spaces.get("hnas", channels=64)
  cache = {}
  for name, position, total, table_ii in (
    ("a", None, 357.26, 30.6),
    ("b", None, 490.65, 48.2),
    ("c", None, 626.75, None),
    ("c", 10, None, 83.6),
  ):
    arch = _paper_arch(name, position)
    if total is not None:
      per_pixel = child_cost(space, arch, 2, 480, cache)[1]
      assert per_pixel * 480 * 480 / 1e9 == pytest.approx(total, rel=0.005), name
    if table_ii is not None:
      assert table_ii_mult_adds(space, arch, 2, cache) == pytest.approx(table_ii, rel=0.005), name
  # The pieces are the built network's: one full trace agrees.
  assert cost.gmacs_480(space.build(_paper_arch("a"), 2)) == pytest.approx(357.26, rel=0.005)


def test_released_deconvolution_is_torchs_conv_transpose():
  # nn.ConvTranspose2d(k, s, padding=1, output_padding=1): out[s*i + a - 1] += x[i] * W[a], cropped
  # to s * H; our conv over the dilated input holds W flipped.
  rng = np.random.default_rng(0)
  for scale, k in ((2, 3), (4, 5)):
    ctx = _ctx(scale)
    p = _op_params("deconvolution", scale, seed=scale)
    kernel = np.asarray(p["deconv"]["kernel"])
    assert kernel.shape == (k, k, C, C)
    x = rng.uniform(size=(1, 3, 4, C)).astype(np.float32)
    want = np.zeros((1, 3 * scale + k, 4 * scale + k, C), np.float64)
    w = kernel[::-1, ::-1]
    for i in range(3):
      for j in range(4):
        for a in range(k):
          for b in range(k):
            want[0, scale * i + a, scale * j + b] += x[0, i, j] @ w[a, b]
    want = want[:, 1 : 1 + 3 * scale, 1 : 1 + 4 * scale] + np.asarray(p["deconv"]["bias"])
    got = hnas.UP_FNS["deconvolution"](p, jnp.asarray(x), ctx)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_the_cell_after_upsampling_reads_its_output_twice():
  # Released: both inputs of the next cell are the upsampling cell's output, so with equal
  # preprocessing weights a cell reading node 0 equals one reading node 1; "resize" feeds it the
  # LR cell before (resized) as node 0, and they differ.
  up = ((0, "sub_pixel", 1, "nearest"),)
  reads0, reads1 = ((0, "sep_conv_3x3", 0, "identity"),), ((1, "sep_conv_3x3", 1, "identity"),)
  x = jnp.asarray(np.random.default_rng(1).uniform(size=(1, 5, 6, 3)), jnp.float32)
  for after, same in (("repeat", True), ("resize", False)):
    space = spaces.get("hnas", layers=2, nodes=1, channels=C, after_upsampling=after)
    outs = []
    for cell in (reads0, reads1):
      net = space.build(hnas.HNASArch(2, 1, cell, up, 1), 2)
      v = _params(net, x, seed=4)
      layer = v["params"]["cell1"]
      layer["pre0"] = layer["pre1"]
      outs.append(np.asarray(net.apply(v, x)))
    assert np.allclose(outs[0], outs[1], atol=1e-6) == same, after


def test_form_options_are_checked_and_x3_deconvolution_is_refused_early():
  with pytest.raises(ConfigError, match="cell_preprocess"):
    spaces.get("hnas", cell_preprocess="concat")
  with pytest.raises(ConfigError, match="after_upsampling"):
    spaces.get("hnas", after_upsampling="bilinear")
  space = spaces.get("hnas", layers=3, nodes=2, channels=C)
  with pytest.raises(ConfigError, match="3H - 2 rows at x3"):
    space.supernet(3)
  assert spaces.get("hnas", layers=3, nodes=2, channels=C, deconv_kernel="2s").supernet(3)
  # HNAS-C upsamples without a deconvolution on a cell input: it builds at x3 (as the authors').
  assert spaces.get("hnas").build(_paper_arch("c"), 3)


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
