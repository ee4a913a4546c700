"""Tests of the DARTS-SR space: derivation, genotype files, the cell's mean, weight sharing."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasr import spaces
from nasr.core.errors import ConfigError, TokenError
from nasr.estimation import train as train_lib
from nasr.ops import cpu_kernels, functional
from nasr.ops.conv import SepConv
from nasr.spaces import darts_sr
from nasr.spaces.darts_sr import DartsGenotype, edge_index

IMPROVED = darts_sr.IMPROVED_OPS


def _random_params(model, *args, seed=0):
  """Return random variables of `model` from its shapes (a jitted init compiles slowly)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)
  return jax.tree_util.tree_map(
    lambda s: jnp.asarray(0.2 * rng.standard_normal(s.shape), s.dtype), shapes
  )


def _lr(n=2, size=8, seed=0):
  return np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Derivation.


def test_derive_hand_set_alphas_never_picks_zero():
  space = spaces.get("darts_sr", nodes=4)
  op = {name: k for k, name in enumerate(space.op_names)}
  alpha = np.zeros(space.alpha_shape)  # uniform: strength 1/6 on every untouched edge

  def row(i, j, **logits):
    for name, value in logits.items():
      alpha[edge_index(i, j), op[name]] = value

  # Node 0 has only two inputs: both are kept, even under a dominant zero op, with the best
  # non-zero op on each.
  row(0, 0, none=10.0, res_dil_conv_5x5=2.0)
  row(0, 1, res_sep_conv_3x3=3.0)
  # Node 1: the zero op dominates the edge from in1 so much that every non-zero op there is
  # weaker than on the uniform edge from node0; were 'none' counted, in1 would win.
  row(1, 0, skip_connect=4.0)
  row(1, 1, none=8.0, res_sep_conv_5x5=3.0)
  # Node 2: skip from in1 beats a conv from node1; the other conv edge is stronger still.
  row(2, 1, skip_connect=2.0)
  row(2, 2, res_sep_conv_3x3=3.0)
  row(2, 3, res_dil_conv_3x3=1.0)
  # Node 3: the two strongest of five edges, ties in op broken towards the earlier op.
  row(3, 4, res_sep_conv_5x5=5.0, res_dil_conv_3x3=5.0)
  row(3, 0, res_dil_conv_5x5=4.0)
  row(3, 3, none=20.0)

  genotype = space.derive(alpha)
  assert genotype.edges == (
    ("res_dil_conv_5x5", 0),
    ("res_sep_conv_3x3", 1),
    ("skip_connect", 0),
    ("skip_connect", 2),  # a uniform row: the argmax is the first non-zero op
    ("skip_connect", 1),
    ("res_sep_conv_3x3", 2),
    ("res_dil_conv_5x5", 0),
    ("res_sep_conv_5x5", 4),
  )
  assert all(op != "none" for op, _ in genotype.edges)
  assert genotype.num_skip() == 3


def test_uniform_alpha_ties_go_to_lower_inputs_and_earlier_ops():
  space = spaces.get("darts_sr", nodes=2)
  genotype = space.derive(np.zeros(space.alpha_shape))
  assert {op for op, _ in genotype.edges} == {"skip_connect"}
  assert [j for _, j in genotype.edges] == [0, 1, 0, 1]  # ties: the lower inputs


def test_derive_original_ops_with_dominant_zero():
  space = spaces.get("darts_sr", ops="original", nodes=2)
  alpha = np.zeros(space.alpha_shape)
  alpha[:, space.op_names.index("none")] = 50.0
  alpha[:, space.op_names.index("max_pool_3x3")] = 1.0
  alpha[edge_index(1, 2), space.op_names.index("dil_conv_5x5")] = 2.0
  genotype = space.derive(alpha)
  assert genotype.edges == (
    ("max_pool_3x3", 0),
    ("max_pool_3x3", 1),
    ("max_pool_3x3", 0),
    ("dil_conv_5x5", 2),
  )


def test_derive_rejects_wrong_alpha_shape():
  with pytest.raises(TokenError, match=r"alpha must have shape \(14, 6\)"):
    spaces.get("darts_sr").derive(np.zeros((14, 8)))


# ---------------------------------------------------------------------------------------------
# Genotypes: tokens, JSON files and errors.


def test_tokens_and_json_round_trip(tmp_path):
  space = spaces.get("darts_sr", cells=3, channels=8, nodes=3)
  rng = np.random.default_rng(0)
  for _ in range(20):
    genotype = space.derive(rng.normal(size=space.alpha_shape))
    assert space.decode(space.encode(genotype)) == genotype
    assert DartsGenotype.from_json(genotype.to_json()) == genotype
  path = tmp_path / "genotype.json"
  spaces.save_arch(path, "darts_sr", {"cells": 3, "channels": 8, "nodes": 3}, genotype, psnr=1.0)
  record = json.loads(path.read_text())
  assert record["tokens"] == space.encode(genotype).tolist()
  loaded_space, loaded = spaces.load_arch(path)
  assert loaded == genotype and loaded_space == space
  # An edited file whose ops disagree with its tokens names the edge, whichever is right.
  record["arch"]["edges"][2][0] = next(
    op for op in space.op_names if op not in ("none", record["arch"]["edges"][2][0])
  )
  edited = tmp_path / "edited.json"
  edited.write_text(json.dumps(record))
  with pytest.raises(
    TokenError, match=r"edited.json: 'tokens' and 'arch' disagree at arch\.edges\[2\]"
  ):
    spaces.load_arch(edited)
  net = spaces.build_from_file(path, scale=3, cells=5, channels=4)  # retrain at another size
  assert (net.cells, net.channels, net.scale, net.genotype) == (5, 4, 3, genotype)
  params = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))["params"]
  assert params["head"]["kernel"].shape == (3, 3, 3, 4)
  leading = {leaf.shape[0] for leaf in jax.tree_util.tree_leaves(params["cells"])}
  assert leading == {5}  # one stacked slice per cell


def test_genotype_order_is_canonical():
  a = DartsGenotype((("skip_connect", 1), ("res_sep_conv_3x3", 0)))
  b = DartsGenotype((("res_sep_conv_3x3", 0), ("skip_connect", 1)))
  assert a == b and a.edges[0] == ("res_sep_conv_3x3", 0)


@pytest.mark.parametrize(
  ("edges", "message"),
  [
    ((("skip_connect", 0), ("skip_connect", 0)), "both edges read input 0"),
    ((("skip_connect", 0), ("none", 1)), "zero op 'none' cannot be an edge"),
    ((("skip_connect", 0), ("skip_connect", 2)), r"input 2 is outside 0..1"),
    ((("skip_connect", 0),), "two edges per node"),
  ],
)
def test_bad_genotypes_name_the_problem(edges, message):
  with pytest.raises(TokenError, match=message):
    DartsGenotype(edges)


def test_space_checks_genotypes_and_tokens():
  space = spaces.get("darts_sr", nodes=2)
  pooled = DartsGenotype((("max_pool_3x3", 0), ("skip_connect", 1)) * 2)
  with pytest.raises(TokenError, match="'max_pool_3x3' is not in the 'improved' operation set"):
    space.encode(pooled)
  with pytest.raises(TokenError, match="genotype has 2 nodes; this space has 4"):
    spaces.get("darts_sr").build(pooled, 2)
  with pytest.raises(TokenError, match="node1: both edges read input 2"):
    space.decode([0, 0, 1, 0, 2, 0, 2, 1])
  with pytest.raises(TokenError, match="token 5 at node0 op b is outside 0..4"):
    space.decode([0, 0, 1, 5, 0, 0, 1, 0])
  assert (
    spaces.get("darts_sr", ops="original", nodes=2).encode(pooled).tolist()
    == [
      0,
      0,
      1,
      2,
    ]
    * 2
  )


def test_bad_space_settings():
  with pytest.raises(ConfigError, match="unknown op 'conv_7x7'"):
    spaces.get("darts_sr", ops="none,conv_7x7")
  with pytest.raises(ConfigError, match="cells must be a positive integer"):
    spaces.get("darts_sr", cells=0)
  with pytest.raises(ConfigError, match="has no setting 'blocks'"):
    spaces.get("darts_sr", blocks=3)
  with pytest.raises(ConfigError, match="node_reduce must be one of .* got 'max'"):
    spaces.get("darts_sr", node_reduce="max")
  custom = spaces.get("darts_sr", ops="none, skip_connect, res_sep_conv_3x3")
  assert custom.op_names == ("none", "skip_connect", "res_sep_conv_3x3")
  assert custom.edge_ops == ("skip_connect", "res_sep_conv_3x3")


# ---------------------------------------------------------------------------------------------
# Networks.


def _edge_outputs(intermediates):
  """Return {edge name: output} of the captured _Edge calls of a derived cell."""
  return {k: v["__call__"][0] for k, v in intermediates.items() if k.startswith("node")}


@pytest.mark.parametrize(
  ("ops", "shifted", "node_reduce", "remat_ops"),
  [
    ("improved", True, "mean", False),
    ("original", False, "mean", True),
    ("improved", False, "sum", True),
    ("none,skip_connect,res_sep_conv_3x3", True, "sum", False),
  ],
)
def test_cell_output_is_mean_of_intermediate_nodes(ops, shifted, node_reduce, remat_ops):
  space = spaces.get("darts_sr", ops=ops, channels=4, nodes=3, node_reduce=node_reduce)
  cell = darts_sr.DartsSuperCell(
    space.op_names,
    space.nodes,
    space.channels,
    shifted,
    node_reduce=node_reduce,
    remat_ops=remat_ops,
  )
  rng = np.random.default_rng(1)
  s0, s1 = _lr(2, 6, 0)[..., :1].repeat(4, -1), _lr(2, 6, 1)[..., :1].repeat(4, -1)
  weights = jax.nn.softmax(jnp.asarray(rng.normal(size=space.alpha_shape)), axis=-1)
  variables = _random_params(cell, s0, s1, weights)
  out, state = cell.apply(variables, s0, s1, weights, mutable=["intermediates"])
  sown = [state["intermediates"][f"node{i}"][0] for i in range(space.nodes)]
  # Recompute every node edge by edge, op by op, with the stand-alone ops and the cell's weights;
  # "mean" divides by the node's total non-zero-op weight (a weighted mean of op outputs).
  states = [s0, s1]
  for i in range(space.nodes):
    node, mass = 0.0, 0.0
    for j in range(2 + i):
      edge_params = variables["params"][f"node{i}_from{j}"]
      for k, name in enumerate(space.op_names):
        if name == "none":
          continue
        op = darts_sr.DartsOp(name, space.channels)
        y = op.apply({"params": edge_params[name]} if name in edge_params else {}, states[j])
        node = node + weights[edge_index(i, j), k] * y
        mass = mass + weights[edge_index(i, j), k]
    states.append(node / mass if node_reduce == "mean" else node)
  nodes = states[2:]
  for got, want in zip(sown, nodes, strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out, sum(nodes) / space.nodes, rtol=1e-5, atol=1e-5)
  assert not np.allclose(out, nodes[-1], atol=1e-3)  # not the last node, nor a sum
  assert not np.allclose(out, sum(nodes), atol=1e-3)


@pytest.mark.parametrize(("node_reduce", "scale"), [("mean", 0.5), ("sum", 1.0)])
def test_derived_cell_output_is_mean_of_its_nodes(node_reduce, scale):
  genotype = DartsGenotype(
    (("res_sep_conv_3x3", 0), ("skip_connect", 1), ("res_dil_conv_5x5", 0), ("skip_connect", 2))
  )
  cell = darts_sr.DartsCell(genotype, channels=3, node_reduce=node_reduce)
  s0, s1 = _lr(1, 6, 0), _lr(1, 6, 1)
  out, state = cell.apply(_random_params(cell, s0, s1), s0, s1, capture_intermediates=True)
  edges = _edge_outputs(state["intermediates"])
  node0 = scale * (edges["node0_from0"] + edges["node0_from1"])
  node1 = scale * (edges["node1_from0"] + edges["node1_from2"])
  np.testing.assert_allclose(edges["node0_from1"], s1)  # skip-connect
  np.testing.assert_allclose(edges["node1_from2"], node0, rtol=1e-6)  # skip from node 0
  np.testing.assert_allclose(out, (node0 + node1) / 2, rtol=1e-5, atol=1e-6)


def test_mean_nodes_keep_a_deep_residual_network_at_scale():
  # The reason for node_reduce="mean": summed residual edges grow ~3x per cell at init, so an
  # 8-cell improved network starts with outputs in the hundreds and its retraining diverges.
  genotype = DartsGenotype(
    (("res_sep_conv_5x5", 0), ("res_sep_conv_5x5", 1), ("res_dil_conv_3x3", 1))
    + (("res_sep_conv_5x5", 2), ("res_sep_conv_3x3", 1), ("res_sep_conv_3x3", 2))
    + (("res_dil_conv_5x5", 0), ("skip_connect", 4))
  )
  x = _lr(2, 12)
  std = {}
  for node_reduce in ("mean", "sum"):
    space = spaces.get("darts_sr", cells=8, channels=8, node_reduce=node_reduce)
    net = space.build(genotype, 2)
    # Jitted, with the trainer's RBG init key: op by op the 8 cells take minutes, and a threefry
    # init of their parameters compiles for 30 s.
    variables = jax.jit(net.init)(train_lib.init_key(0), x)
    std[node_reduce] = float(jnp.std(jax.jit(net.apply)(variables, x)))
  assert 0.05 < std["mean"] < 2.0, std
  assert std["sum"] > 50.0, std


@pytest.mark.parametrize(
  ("ops", "scale", "node_reduce"),
  [("improved", 2, "mean"), ("original", 3, "mean"), ("improved", 4, "sum")],
)
def test_supernet_at_one_hot_alpha_equals_derived_network(ops, scale, node_reduce):
  space = spaces.get("darts_sr", ops=ops, cells=2, channels=4, nodes=3, node_reduce=node_reduce)
  supernet = space.supernet(scale)
  x = _lr(2, 8)
  params = _random_params(supernet, x, jnp.zeros(space.alpha_shape), seed=scale)
  f = jax.jit(supernet.apply)
  rng = np.random.default_rng(scale)
  for _ in range(3):
    genotype = space.derive(rng.normal(size=space.alpha_shape))
    child = space.build(genotype, scale)
    want = child.apply(space.child_params(params, genotype), x)
    assert want.shape == (2, 8 * scale, 8 * scale, 3)
    got = f(params, x, space.one_hot_alpha(genotype))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_one_hot_alpha_needs_the_zero_op():
  space = spaces.get("darts_sr", ops="skip_connect,sep_conv_3x3", cells=1, channels=4, nodes=2)
  genotype = space.derive(np.zeros(space.alpha_shape))
  with pytest.raises(TokenError, match="'none' op on unused edges"):
    space.one_hot_alpha(genotype)


def test_supernet_checks_alpha_shape():
  space = spaces.get("darts_sr", cells=1, channels=4, nodes=2)
  with pytest.raises(TokenError, match=r"alpha must have shape \(5, 6\)"):
    jax.eval_shape(
      space.supernet(2).init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), jnp.zeros((5, 8))
    )


def test_improved_conv_ops_have_an_identity_shortcut():
  x = _lr(1, 6)[..., :2]
  for name in ("res_sep_conv_3x3", "res_dil_conv_5x5"):
    op = darts_sr.DartsOp(name, channels=2)
    variables = _random_params(op, x)
    zeroed = jax.tree_util.tree_map(jnp.zeros_like, variables)
    np.testing.assert_allclose(op.apply(zeroed, x), x)  # Conv(...) = 0 leaves x
    assert not np.allclose(op.apply(variables, x), x)
  plain = darts_sr.DartsOp("sep_conv_3x3", channels=2)
  zeroed = jax.tree_util.tree_map(jnp.zeros_like, _random_params(plain, x))
  np.testing.assert_allclose(plain.apply(zeroed, x), 0.0)  # the original op: no shortcut


def test_pooling_ops_keep_the_resolution():
  x = jnp.asarray(_lr(1, 5))
  avg = darts_sr.DartsOp("avg_pool_3x3", 3).apply({}, x)
  mx = darts_sr.DartsOp("max_pool_3x3", 3).apply({}, x)
  assert avg.shape == mx.shape == x.shape
  np.testing.assert_allclose(avg[0, 0, 0], x[0, :2, :2].mean(axis=(0, 1)), rtol=1e-6)  # no pad
  np.testing.assert_allclose(mx[0, 2, 2], x[0, 1:4, 1:4].max(axis=(0, 1)))


def test_remat_supernet_matches():
  space = spaces.get(
    "darts_sr", ops="none,skip_connect,res_sep_conv_3x3", cells=2, channels=4, nodes=2
  )
  x, alpha = _lr(1, 6), jnp.asarray(np.random.default_rng(0).normal(size=space.alpha_shape))
  params = _random_params(space.supernet(2), x, alpha)
  loss = lambda net: lambda p: jnp.mean(net.apply(p, x, alpha) ** 2)  # noqa: E731
  g1 = jax.jit(jax.grad(loss(space.supernet(2))))(params)
  g2 = jax.jit(jax.grad(loss(space.supernet(2, remat=True))))(params)
  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g1, g2
  )


# The fused mixed ops (fused=True): the same function and parameters as the op-by-op form. The
# fused form adds in another order (the softmax weights and the depthwise biases folded into the
# pointwise kernels and biases, the ops of an edge summed inside one contraction), so float32
# results agree to rounding: outputs within rtol = atol = 1e-5, gradients within rtol 1e-4 and
# atol 1e-5 (their values are of order 1e-3..1).
_MIXED_OPS = "none,skip_connect,max_pool_3x3,avg_pool_3x3,res_sep_conv_3x3,res_dil_conv_5x5"
_MIXED_OPS += ",sep_conv_5x5,dil_conv_3x3"  # every kind of group: ReLU first or not, 1 or 2 convs


@pytest.mark.parametrize(
  ("ops", "shifted", "node_reduce", "remat_ops"),
  [
    ("improved", False, "mean", False),
    ("improved", True, "mean", False),
    ("original", False, "sum", True),
    (_MIXED_OPS, True, "mean", False),  # the original set's kinds of op, shifted
  ],
)
def test_fused_cell_equals_unfused(ops, shifted, node_reduce, remat_ops):
  # One cell of 2 nodes: 3 sources read by 2, 2 and 1 edges. (Two compiles each, and the shifted
  # gradients compile slowly: the sizes are the smallest that take every path.)
  space = spaces.get("darts_sr", ops=ops, channels=3, nodes=2, node_reduce=node_reduce)
  rng = np.random.default_rng(0)
  s0, s1 = (jnp.asarray(rng.uniform(size=(2, 5, 5, 3)), jnp.float32) for _ in range(2))
  alpha = jnp.asarray(rng.normal(size=space.alpha_shape), jnp.float32)

  def cell(fused):
    return darts_sr.DartsSuperCell(
      space.op_names, 2, 3, shifted, node_reduce=node_reduce, remat_ops=remat_ops, fused=fused
    )

  params = _random_params(cell(False), s0, s1, alpha)
  shapes = lambda t: jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), t)  # noqa: E731
  assert shapes(jax.eval_shape(cell(True).init, jax.random.PRNGKey(0), s0, s1, alpha)) == shapes(
    params
  )

  def run(model):
    f = lambda p, a: model.apply(p, s0, s1, jax.nn.softmax(a, axis=-1))  # noqa: E731
    loss = lambda p, a: jnp.mean(f(p, a) ** 2)  # noqa: E731
    return jax.jit(lambda p, a: (f(p, a), jax.grad(loss, (0, 1))(p, a)))(params, alpha)

  (y0, (gw0, ga0)), (y1, (gw1, ga1)) = run(cell(False)), run(cell(True))
  np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ga1, ga0, rtol=1e-4, atol=1e-5)
  assert float(jnp.max(jnp.abs(ga0))) > 1e-3  # alpha's gradient is not trivially zero
  for a, b in zip(jax.tree_util.tree_leaves(gw1), jax.tree_util.tree_leaves(gw0), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_fused_supernet_keeps_the_parameters():
  # space.supernet passes `fused` down to every cell; the checkpoints of both forms are the same.
  space = spaces.get("darts_sr", ops="original", cells=2, channels=4, nodes=3)
  x, alpha = _lr(1, 8), jnp.zeros(space.alpha_shape)
  fused = space.supernet(2, shifted=False, fused=True)
  assert fused.fused and not space.supernet(2).fused
  shapes = lambda net: jax.tree_util.tree_map(  # noqa: E731
    lambda a: (a.shape, a.dtype), jax.eval_shape(net.init, jax.random.PRNGKey(0), x, alpha)
  )
  assert shapes(fused) == shapes(space.supernet(2))


# ---------------------------------------------------------------------------------------------
# The shifted leaf ops the supernet runs on (nasr.ops.cpu_kernels).


def _lax_depthwise(x, kernel, dilation):
  return jax.lax.conv_general_dilated(
    x,
    kernel,
    (1, 1),
    "SAME",
    rhs_dilation=(dilation, dilation),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=x.shape[-1],
  )


@pytest.mark.parametrize("row_blocks", [False, True])
@pytest.mark.parametrize(("k", "dilation"), [(3, 1), (5, 2)])
def test_shifted_depthwise_and_pooling_match_xla(k, dilation, row_blocks, monkeypatch):
  if (
    row_blocks
  ):  # the kernel gradient then loops over one-row blocks (7 of them, halos at both ends)
    monkeypatch.setattr(cpu_kernels, "_BLOCK_BYTES", 1)
  rng = np.random.default_rng(k)
  x = jnp.asarray(rng.normal(size=(2, 7, 6, 3)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(k, k, 1, 3)), jnp.float32)
  want = _lax_depthwise(x, kernel, dilation)
  got = functional.depthwise(x, kernel, dilation, shifted=True)
  np.testing.assert_allclose(got, want, atol=1e-5)
  # n kernels side by side over a shared input, and the hand-written gradient.
  kernels = jnp.asarray(rng.normal(size=(2, k, k, 3)), jnp.float32)
  for h in (x[None], jnp.stack([x, 2 * x])):
    got = cpu_kernels.stacked_depthwise_conv(h, kernels, dilation)
    for e in range(2):
      ref = _lax_depthwise(h[min(e, h.shape[0] - 1)], kernels[e][:, :, None], dilation)
      np.testing.assert_allclose(got[e], ref, atol=1e-5)
    g = jnp.asarray(rng.normal(size=got.shape), jnp.float32)
    loss = lambda h, k, g=g: jnp.sum(  # noqa: E731
      jnp.sin(cpu_kernels.stacked_depthwise_conv(h, k, dilation)) * g
    )
    ref_loss = lambda h, k, g=g: jnp.sum(jnp.sin(cpu_kernels._stacked_forward(h, k, dilation)) * g)  # noqa: E731
    for a, b in zip(
      jax.grad(loss, (0, 1))(h, kernels), jax.grad(ref_loss, (0, 1))(h, kernels), strict=True
    ):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(
    cpu_kernels.max_pool(x, 3), nn.max_pool(x, (3, 3), strides=(1, 1), padding="SAME")
  )
  np.testing.assert_allclose(
    cpu_kernels.avg_pool(x, 3),
    nn.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME", count_include_pad=False),
    atol=1e-6,
  )


def test_kernel_gradient_row_blocks_fit_the_cache_budget():
  budget = cpu_kernels._BLOCK_BYTES
  # HNAS-A at C=64: 16 images x 52 padded columns x 64 channels x 4 bytes = 213 kB a row.
  assert cpu_kernels._block_rows(48, 213_000) == 2
  assert cpu_kernels._block_rows(96, 2 * budget) == 1  # a row over budget: one row at a time
  assert cpu_kernels._block_rows(7, 10 * budget // 3) == 1  # 7 is prime: no 3-row block divides it
  assert cpu_kernels._block_rows(7, 1000) == 7  # small in all: one block, the loop over taps


def test_shifted_sepconv_equals_sepconv():
  x = jnp.asarray(_lr(2, 7)[..., :3])
  ref = SepConv(4, 5, 2)
  params = _random_params(ref, x)
  np.testing.assert_allclose(
    SepConv(4, 5, 2, shifted=True).apply(params, x), ref.apply(params, x), atol=1e-5
  )


@pytest.mark.parametrize("space_name", ["darts_sr", "deconas"])
def test_shifted_child_equals_conv_child_through_build_from_file(tmp_path, space_name):
  # launch.train builds searched networks with shifted depthwise convs on CPU (config.depthwise):
  # the parameters and the function, gradients included, must be those of the plain network.
  kwargs = {"cells": 2, "channels": 8} if space_name == "darts_sr" else {"blocks": 2, "nodes": 3}
  space = spaces.get(space_name, **kwargs)
  if space_name == "darts_sr":  # the improved ops are all separable convs but skip and zero
    arch = space.derive(np.random.default_rng(0).normal(size=space.alpha_shape))
  else:  # every op on, the separable conv included
    kwargs["channels"] = 8
    space = spaces.get(space_name, **kwargs)
    arch = space.max_arch()
  path = tmp_path / "arch.json"
  spaces.save_arch(path, space_name, kwargs, arch)
  plain = spaces.build_from_file(path, scale=2)
  shifted = spaces.build_from_file(path, scale=2, shifted=True)
  assert shifted.shifted and not plain.shifted
  x = _lr(2, 10)
  params = _random_params(plain, x)
  shapes = lambda t: jax.tree_util.tree_map(lambda a: a.shape, t)  # noqa: E731
  assert shapes(jax.eval_shape(shifted.init, jax.random.PRNGKey(0), x)) == shapes(params)

  def grads(model):
    return jax.jit(jax.value_and_grad(lambda p: jnp.mean(model.apply(p, x) ** 2)))(params)

  (l0, g0), (l1, g1) = grads(plain), grads(shifted)
  np.testing.assert_allclose(l1, l0, rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g0), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
