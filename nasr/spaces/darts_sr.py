"""The Improved-DARTS super-resolution space (Huang et al., "Improved DARTS for SR"), and the
original DARTS operation set beside it, to reproduce the skip-connection collapse side by side.

Network (NHWC RGB in [0, 1]; the DIV2K mean is subtracted at the input and added back at the
output, like the other spaces; no batch norm, as in EDSR):

  F_0 = conv3x3(x)                                          shallow features
  s_-2 = s_-1 = F_0;  s_k = cell_k(s_k-2, s_k-1), k = 0..cells-1   non-linear mapping
  y = conv3x3(subpixel(s_last + F_0))                        element-wise addition, upsampling

A cell has two input nodes (the outputs of the previous two cells) and `nodes` intermediate nodes;
node i (0-based) is the sum, over its 2 + i predecessors j (0, 1: the inputs; 2 + n: node n), of
an edge op; the cell output is the **mean** of the intermediate nodes. No reduction cells: the
channels and the resolution stay constant. In the search network each edge is a mixed op,
sum_k softmax(alpha[e])_k op_k(x), with one alpha [edges, ops] shared by all cells; `derive(alpha)`
keeps, per node, the 2 incoming edges with the largest non-zero softmax weight and, on each, the
argmax non-zero op (DARTS).

Operation sets (`ops=`):
  improved  none, skip_connect, res_sep_conv_3x3, res_sep_conv_5x5, res_dil_conv_3x3,
            res_dil_conv_5x5. res_* = Conv-ReLU-Conv + identity, each Conv depthwise-separable
            (dilation 2 for dil): the paper's identity mapping inside the convolution ops.
  original  DARTS' PRIMITIVES: none, max_pool_3x3, avg_pool_3x3 (stride 1, padding excluded from
            the average), skip_connect, sep_conv_3x3/5x5 (ReLU-SepConv-ReLU-SepConv),
            dil_conv_3x3/5x5 (ReLU-dilated SepConv), without shortcuts or batch norm.

Tokens (what save_arch stores): per node i, (input a, op a, input b, op b) with inputs in
0..i+1 and ops indexing the non-zero ops; the two inputs of a node differ.

Example:
  space = nasr.spaces.get("darts_sr", ops="improved", cells=8, channels=64)
  alpha = space.init_alpha(jax.random.PRNGKey(0))            # [14, 6]
  y = space.supernet(scale=2).apply(variables, x, alpha)     # alpha is data: one compile
  genotype = space.derive(alpha)
  net = space.build(genotype, scale=4, cells=20, channels=256)   # the paper's retraining size
"""

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nasr.core.checks import positive_int
from nasr.core.errors import ConfigError, TokenError
from nasr.core.types import TokenSpec
from nasr.ops.conv import SepConv
from nasr.ops.cpu_kernels import avg_pool, max_pool
from nasr.ops.frame import SRFrame, sr_frame
from nasr.ops.functional import conv, stacked_depthwise
from nasr.ops.params import SepConvParams
from nasr.ops.upsample import check_subpixel_scale
from nasr.spaces.base import ArchJSON, count_module_params
from nasr.spaces.registry import register

Dtype = Any

IMPROVED_OPS = (
  "none",
  "skip_connect",
  "res_sep_conv_3x3",
  "res_sep_conv_5x5",
  "res_dil_conv_3x3",
  "res_dil_conv_5x5",
)
ORIGINAL_OPS = (
  "none",
  "max_pool_3x3",
  "avg_pool_3x3",
  "skip_connect",
  "sep_conv_3x3",
  "sep_conv_5x5",
  "dil_conv_3x3",
  "dil_conv_5x5",
)
OP_SETS = {"improved": IMPROVED_OPS, "original": ORIGINAL_OPS}
ZERO = "none"
SKIP = "skip_connect"


def op_names(ops: str) -> tuple[str, ...]:
  """Return the ops of a set name ("improved", "original") or of a comma-separated list of ops."""
  if not isinstance(ops, str):
    raise ConfigError(f"darts_sr: ops must be a string, got {ops!r}")
  if ops in OP_SETS:
    return OP_SETS[ops]
  names = tuple(op.strip() for op in ops.split(",") if op.strip())
  known = dict.fromkeys(IMPROVED_OPS + ORIGINAL_OPS)
  for op in names:
    if op not in known:
      raise ConfigError(
        f"darts_sr: unknown op {op!r} in ops={ops!r}; use an operation set "
        f"({', '.join(OP_SETS)}) or a comma-separated list of {', '.join(known)}"
      )
  if len(set(names)) != len(names) or not any(op != ZERO for op in names):
    raise ConfigError(f"darts_sr: ops={ops!r} needs distinct ops, at least one of them non-zero")
  return names


def num_edges(nodes: int) -> int:
  """Return the number of edges of a cell with `nodes` intermediate nodes (14 for 4)."""
  return nodes * (nodes + 3) // 2


def edge_index(i: int, j: int) -> int:
  """Return the row of alpha of the edge node i <- predecessor j (0 <= j < 2 + i)."""
  return 2 * i + i * (i - 1) // 2 + j


def edge_list(nodes: int) -> list[tuple[int, int]]:
  """Return the (node, predecessor) pairs in alpha-row order."""
  return [(i, j) for i in range(nodes) for j in range(2 + i)]


def _edge_name(i: int, j: int) -> str:
  return f"node{i}_from{j}"


# ----------------------------------------------------------------------------------------------
# Genotype.


@dataclasses.dataclass(frozen=True)
class DartsGenotype(ArchJSON):
  """A derived cell: two (op, input) pairs per intermediate node, sorted by input.

  Attributes:
    edges: (op name, predecessor) pairs, node-major: edges[2i], edges[2i + 1] feed node i;
      predecessor 0 and 1 are the cell inputs (outputs of the cells two back and one back), 2 + n
      is intermediate node n.
  """

  edges: tuple[tuple[str, int], ...]

  def __post_init__(self):
    try:
      pairs = [(str(op), int(j)) for op, j in self.edges]
    except (TypeError, ValueError):
      raise TokenError(f"a DARTS genotype needs (op, input) pairs, got {self.edges!r}") from None
    if not pairs or len(pairs) % 2:
      raise TokenError(f"a DARTS genotype needs two edges per node, got {len(pairs)} edges")
    edges = []
    for i in range(len(pairs) // 2):
      a, b = sorted(pairs[2 * i : 2 * i + 2], key=lambda p: p[1])
      for op, j in (a, b):
        if not 0 <= j < 2 + i:
          raise TokenError(f"node {i}: input {j} is outside 0..{i + 1}")
        if op == ZERO:
          raise TokenError(f"node {i}: the zero op 'none' cannot be an edge of a genotype")
      if a[1] == b[1]:
        raise TokenError(f"node {i}: both edges read input {a[1]}; they must differ")
      edges += [a, b]
    object.__setattr__(self, "edges", tuple(edges))

  @property
  def nodes(self) -> int:
    """Return the number of intermediate nodes."""
    return len(self.edges) // 2

  def node_edges(self, i: int) -> tuple[tuple[str, int], tuple[str, int]]:
    """Return the two (op, input) pairs of node i."""
    return self.edges[2 * i], self.edges[2 * i + 1]

  def num_skip(self) -> int:
    """Return the number of skip-connects (the quantity that collapses in plain DARTS)."""
    return sum(op == SKIP for op, _ in self.edges)


# ----------------------------------------------------------------------------------------------
# Candidate operations.


def _op_kind(op: str) -> tuple[str, int]:
  """Return (kind, kernel) of an op name such as 'res_dil_conv_5x5'."""
  if op in (ZERO, SKIP):
    return op, 0
  kind, size = op.rsplit("_", 1)
  return kind, int(size.split("x")[0])


class DartsOp(nn.Module):
  """One candidate operation of an edge; channels and resolution are preserved."""

  op: str  # an entry of IMPROVED_OPS or ORIGINAL_OPS
  channels: int  # feature width
  shifted: bool = False  # depthwise convs as shifted multiply-adds (fast on CPU, same function)
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return op(x)."""
    kind, k = _op_kind(self.op)
    c, dt = self.channels, self.dtype
    sep = functools.partial(SepConv, shifted=self.shifted)
    if kind == ZERO:
      return jnp.zeros_like(x)
    if kind == SKIP:
      return x
    if kind == "max_pool":
      return max_pool(x, k)
    if kind == "avg_pool":
      return avg_pool(x, k)
    if kind in ("res_sep_conv", "res_dil_conv"):
      # The paper's op: Conv-ReLU-Conv with an identity shortcut.
      dil = 2 if kind == "res_dil_conv" else 1
      h = sep(c, k, dil, dtype=dt, name="conv1")(x)
      h = sep(c, k, dil, dtype=dt, name="conv2")(nn.relu(h))
      return h + x.astype(h.dtype)
    if kind == "sep_conv":  # DARTS: (ReLU, SepConv) twice
      h = sep(c, k, dtype=dt, name="conv1")(nn.relu(x))
      return sep(c, k, dtype=dt, name="conv2")(nn.relu(h))
    if kind == "dil_conv":  # DARTS: ReLU, dilated SepConv
      return sep(c, k, 2, dtype=dt, name="conv1")(nn.relu(x))
    raise ConfigError(f"unknown DARTS operation {self.op!r}")


class _Edge(nn.Module):
  """An edge of a derived cell: its single op."""

  op: str
  channels: int
  dtype: Dtype = jnp.float32
  shifted: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return op(x)."""
    return DartsOp(self.op, self.channels, self.shifted, self.dtype, name=self.op)(x)


# The supernet computes all edges that leave one node together (below); its parameters keep the
# derived network's layout, cell/node{i}_from{j}/{op}/conv{n}/{depthwise,pointwise}/{kernel,bias},
# so `child_params` is a selection and the weight-sharing test compares like with like.


def _conv_plan(op: str) -> tuple[bool, tuple[tuple[int, int], ...], bool] | None:
  """Return (ReLU first, ((kernel, dilation) per SepConv), identity shortcut), None if param-free."""
  kind, k = _op_kind(op)
  return {
    "res_sep_conv": (False, ((k, 1), (k, 1)), True),
    "res_dil_conv": (False, ((k, 2), (k, 2)), True),
    "sep_conv": (True, ((k, 1), (k, 1)), False),
    "dil_conv": (True, ((k, 2),), False),
  }.get(kind)


class _OpParams(nn.Module):
  """Create the parameters of one parametric op (as DartsOp names them)."""

  op: str
  channels: int

  @nn.compact
  def __call__(self) -> list:
    """Return [SepConv parameters per conv]."""
    convs = _conv_plan(self.op)[1]
    return [
      SepConvParams(k, self.channels, self.channels, name=f"conv{n + 1}")()
      for n, (k, _) in enumerate(convs)
    ]


class _EdgeParams(nn.Module):
  """Create the parameters of every parametric op of one edge."""

  ops: tuple[str, ...]
  channels: int

  @nn.compact
  def __call__(self) -> dict:
    """Return {op: [SepConv parameters per conv]}."""
    return {op: _OpParams(op, self.channels, name=op)() for op in self.ops}


def _stack(convs: list, dt: Dtype):
  """Return one SepConv's parameters of n edges stacked on a leading axis.

  Returns (dw kernel [n, k, k, C], dw bias [n, 1, 1, 1, C]), (pw kernel [n, C, C], pw bias).
  """
  st = lambda a, b: jnp.stack([c[a][b] for c in convs]).astype(dt)  # noqa: E731
  n = len(convs)
  bias = lambda a: st(a, 1).reshape(n, 1, 1, 1, -1)  # noqa: E731
  return (st(0, 0)[:, :, :, 0, :], bias(0)), (st(1, 0)[:, 0, 0], bias(1))


def _batched_op(op: str, x: jax.Array, params: list, shifted: bool, dt: Dtype) -> jax.Array:
  """Return op applied with each edge's parameters: x [1, N, H, W, C] -> [n, N, H, W, C]."""
  pre_relu, convs, residual = _conv_plan(op)
  h = nn.relu(x) if pre_relu else x
  for n, (_, dil) in enumerate(convs):
    if n:
      h = nn.relu(h)
    (dwk, dwb), (pwk, pwb) = _stack([p[n] for p in params], dt)
    h = stacked_depthwise(h, dwk, dil, shifted=shifted) + dwb
    # Edges lead: a batched matmul with its batch axis first needs no transposes.
    h = jnp.einsum("ebhwc,ecd->ebhwd", h, pwk) + pwb
  return h + x if residual else h


# The fused form of the mixed ops that read one node (`fused=True`). The n edges leaving a node
# each hold K conv ops; the unfused form computes them op by op, each a chain of
# [n, N, H, W, C] tensors that are weighted, added and transposed separately. Here every conv op of
# every edge runs at once, in NHWC tensors of M = n * K channel blocks (edge-major, then op):
#   - the ops are grouped by (ReLU first, SepConvs, dilation), the group's depthwise kernels
#     zero-padded to its largest: 3x3 and 5x5 share a 5x5 conv, dilated or not (a common 9x9
#     footprint, dil_conv_5x5's, would quadruple the depthwise multiply-adds). Shifted depthwise
#     convs cost per tap: with `shifted` the kernel size splits the groups too (one op each);
#   - each depthwise conv of a group is one conv over its M * C channels, each inner pointwise conv
#     one grouped 1x1 conv (M groups) with the depthwise bias folded into its bias;
#   - the last pointwise conv contracts each edge's K ops at once (n groups of K * C channels)
#     with the softmax weights folded into its kernel, sum_k w_k (h_k P_k + b_k) =
#     concat_k(h_k) stack_k(w_k P_k) + sum_k w_k b_k, so it writes [N, H, W, n, C] once;
#   - identity shortcuts and skip-connects add (the sum of their weights) * x, pools w * pool(x)
#     (one pool for all edges), and the zero op nothing.
# The parameters are the unfused form's (the derived network's layout); only their use differs.


def _fused_groups(
  ops: tuple[str, ...], by_kernel: bool
) -> list[tuple[bool, int, int, int, list[int]]]:
  """Return the conv-op groups: (ReLU first, SepConvs, kernel, dilation, op columns) each."""
  groups: dict[tuple, list[int]] = {}
  for k, op in enumerate(ops):
    plan = _conv_plan(op)
    if plan is not None:
      pre_relu, convs, _ = plan
      (size, dil), n_convs = convs[0], len(convs)
      key = (pre_relu, n_convs, dil, size) if by_kernel else (pre_relu, n_convs, dil)
      groups.setdefault(key, []).append(k)
  return [
    (key[0], key[1], max(_conv_plan(ops[k])[1][0][0] for k in cols), key[2], cols)
    for key, cols in groups.items()
  ]


def _pad_kernel(kernel: jax.Array, size: int) -> jax.Array:
  """Return kernel [k, k, C] zero-padded to [size, size, C], centred (the same conv)."""
  r = (size - kernel.shape[0]) // 2
  return jnp.pad(kernel, ((r, r), (r, r), (0, 0))) if r else kernel


def _fused_group(
  x: jax.Array,
  ops: list[str],
  params: dict,
  w: jax.Array,
  size: int,
  dilation: int,
  shifted: bool,
  dt: Dtype,
) -> tuple[jax.Array, jax.Array]:
  """Return the weighted sum of a group's ops without their last bias and shortcut, and that bias.

  x [N, H, W, C] (after the ops' leading ReLU); params {op: [per-edge SepConv parameters]};
  w [n, K] the ops' weights per edge. Returns ([N, H, W, n, C], bias [n, C]).
  """
  n, nk = w.shape
  b, hh, ww, c = x.shape
  m = n * nk
  n_convs = len(_conv_plan(ops[0])[1])

  def stack(s: int, a: int, i: int, f=lambda v: v) -> jax.Array:
    # [n, K, ...]: one SepConv's parameter of every op and edge, edge-major like the blocks.
    return jnp.stack([jnp.stack([f(params[op][e][s][a][i]) for op in ops]) for e in range(n)])

  if shifted:  # blocks lead: [1 or M, N, H, W, C], as the unfused shifted form runs them
    h = x[None]
  else:
    h = jnp.broadcast_to(x[..., None, :], (b, hh, ww, m, c)).reshape(b, hh, ww, m * c)
  for s in range(n_convs):
    dwk = stack(s, 0, 0, lambda k: _pad_kernel(k[:, :, 0], size)).astype(dt)  # [n, K, k, k, C]
    pw = stack(s, 1, 0)[:, :, 0, 0]  # [n, K, C, C]
    # (h + b) P + b' = h P + (b P + b'): the depthwise bias joins the pointwise one.
    bias = stack(s, 1, 1) + jnp.einsum("ekc,ekcd->ekd", stack(s, 0, 1), pw)
    pw, bias = pw.astype(dt), bias.astype(dt)
    if shifted:  # op-major blocks: the last pointwise conv then reads each op's edges in one piece
      dwk = dwk.swapaxes(0, 1).reshape(m, size, size, c)
      h = stacked_depthwise(h, dwk, dilation, shifted=True)
    else:
      dwk = dwk.transpose(2, 3, 0, 1, 4).reshape(size, size, 1, m * c)
      h = conv(h, dwk, dilation=dilation, groups=m * c)
    if s < n_convs - 1:
      if shifted:
        h = jnp.einsum("mbhwc,mcd->mbhwd", h, pw.swapaxes(0, 1).reshape(m, c, c))
        h = nn.relu(h + bias.swapaxes(0, 1).reshape(m, 1, 1, 1, c))
      else:
        h = conv(h, pw.transpose(2, 0, 1, 3).reshape(1, 1, c, m * c), groups=m)
        h = nn.relu(h + bias.reshape(m * c))
      continue
    pw = pw * w[:, :, None, None]
    bias = jnp.einsum("ek,ekd->ed", w, bias)
    if shifted:
      h = h.reshape(nk, n, b, hh, ww, c)
      y = sum(jnp.einsum("ebhwc,ecd->ebhwd", h[k], pw[:, k]) for k in range(nk))
      y = y.transpose(1, 2, 3, 0, 4)
    else:
      kernel = pw.reshape(n, nk * c, c).transpose(1, 0, 2).reshape(1, 1, nk * c, n * c)
      y = conv(h, kernel, groups=n).reshape(b, hh, ww, n, c)
  return y, bias


def _fused_source(
  ops: tuple[str, ...], x: jax.Array, params: dict, w: jax.Array, shifted: bool, dt: Dtype
) -> jax.Array:
  """Return every mixed op of the n edges reading x [N, H, W, C]: [N, H, W, n, C].

  params {op: [per-edge SepConv parameters]}; w [n, ops] the edges' softmax weights.
  """
  x = x.astype(dt)
  terms = []
  x_weight = None  # skip-connects and identity shortcuts
  for k, op in enumerate(ops):
    kind, size = _op_kind(op)
    plan = _conv_plan(op)
    if kind == SKIP or (plan is not None and plan[2]):
      x_weight = w[:, k] if x_weight is None else x_weight + w[:, k]
    elif kind == "max_pool":
      terms.append(w[:, k, None] * max_pool(x, size)[..., None, :])
    elif kind == "avg_pool":
      terms.append(w[:, k, None] * avg_pool(x, size)[..., None, :])
  if x_weight is not None:
    terms.append(x_weight[:, None] * x[..., None, :])
  for pre_relu, _, size, dilation, cols in _fused_groups(ops, by_kernel=shifted):
    group = [ops[k] for k in cols]
    h = nn.relu(x) if pre_relu else x
    y, bias = _fused_group(h, group, params, w[:, np.array(cols)], size, dilation, shifted, dt)
    terms.append(y + bias)
  if not terms:  # the zero op alone
    return jnp.zeros((*x.shape[:3], w.shape[0], x.shape[-1]), dt)
  return sum(terms[1:], terms[0])


NODE_REDUCE = ("mean", "sum")


def _check_node_reduce(node_reduce: str) -> str:
  if node_reduce not in NODE_REDUCE:
    raise ConfigError(f"darts_sr: node_reduce must be one of {NODE_REDUCE}, got {node_reduce!r}")
  return node_reduce


def _edge_mass(ops: tuple[str, ...], weights: jax.Array, nodes: int, node_reduce: str) -> list:
  """Return, per node, what its summed mixed ops are divided by (None: nothing, for "sum").

  "mean": the node's total weight of non-zero ops, sum_j (1 - w[edge(i, j), zero]); each node is
  then a convex combination of its edges' op outputs, and at a one-hot alpha (two kept edges, the
  zero op on the others) it is (e_a + e_b) / 2, the derived cell's node.
  """
  if node_reduce == "sum":
    return [None] * nodes
  nonzero = 1.0 - weights[:, ops.index(ZERO)] if ZERO in ops else jnp.ones(weights.shape[:1])
  # The floor only matters if every incoming edge's zero op had all of its softmax's mass.
  return [
    jnp.maximum(sum(nonzero[edge_index(i, j)] for j in range(2 + i)), 1e-6) for i in range(nodes)
  ]


class DartsSuperCell(nn.Module):
  """A search cell: every edge is a mixed op weighted by the rows of `weights` [edges, ops].

  The edges leaving one node (or input) share its value; they are computed together, op by op,
  with the edges' kernels side by side: 5 batched computations instead of 14 per op at 4 nodes,
  which compiles and runs several times faster than one computation per edge. `fused` computes
  all ops of those edges at once instead (`_fused_source`): the same function and parameters in
  fewer, wider tensors, for accelerators (XLA's bytes accessed per paper-size first-order step,
  `benchmarks/darts_speed.py --cost_only`: 667 GiB, against 939 op by op with conv depthwise convs
  and 3524 with shifted ones; on CPU its grouped convs run far slower than the shifted form).
  """

  ops: tuple[str, ...]
  nodes: int = 4
  channels: int = 64
  shifted: bool = True  # depthwise convs as shifted multiply-adds (see nasr.ops.cpu_kernels)
  dtype: Dtype = jnp.float32
  node_reduce: str = "mean"  # how a node combines its edges: "mean" or "sum" (see DartsSR)
  remat_ops: bool = False  # recompute each batched op's insides in the backward pass
  fused: bool = False  # all ops of the edges reading a node at once (_fused_source)

  @nn.compact
  def __call__(self, s0: jax.Array, s1: jax.Array, weights: jax.Array) -> jax.Array:
    """Return the mean of the intermediate nodes (each also sown as intermediates/node{i})."""
    c, dt = self.channels, self.dtype
    batched_op, fused_source = _batched_op, _fused_source
    if self.remat_ops:
      # Only each op's output is kept for the backward pass (it is what d loss / d alpha needs);
      # its ReLUs and convs are recomputed. (At paper size XLA's estimate moved little, 33.90 ->
      # 33.81 GiB, BENCHMARKS.md; kept because it bounds what one cell's backward holds.)
      batched_op = jax.checkpoint(_batched_op, static_argnums=(0, 3, 4))
      fused_source = jax.checkpoint(_fused_source, static_argnums=(0, 4, 5))
    conv_ops = [op for op in self.ops if _conv_plan(op) is not None]
    params = {
      (i, j): _EdgeParams(tuple(conv_ops), c, name=_edge_name(i, j))()
      for i, j in edge_list(self.nodes)
    }
    _check_node_reduce(self.node_reduce)
    states = [s0.astype(dt), s1.astype(dt)]
    acc: list[jax.Array | None] = [None] * self.nodes
    mass = _edge_mass(self.ops, weights, self.nodes, self.node_reduce)
    for j in range(self.nodes + 1):  # the last node feeds no edge
      if j >= 2:
        if mass[j - 2] is not None:  # complete: every input has been sent
          acc[j - 2] = acc[j - 2] / mass[j - 2].astype(dt)
        self.sow("intermediates", f"node{j - 2}", acc[j - 2])
        states.append(acc[j - 2])
      readers = list(range(max(0, j - 1), self.nodes))  # node i reads j when j < 2 + i
      w = weights[np.array([edge_index(i, j) for i in readers])].astype(dt)  # [n, ops]
      if self.fused:
        edge_params = {op: [params[(i, j)][op] for i in readers] for op in conv_ops}
        out = fused_source(self.ops, states[j], edge_params, w, self.shifted, dt)
        for r, i in enumerate(readers):
          acc[i] = out[..., r, :] if acc[i] is None else acc[i] + out[..., r, :]
        continue
      x = states[j][None]  # [1, N, H, W, C]
      out = None
      for k, op in enumerate(self.ops):
        if op == ZERO:  # weight * 0: contributes nothing but its share of the softmax
          continue
        kind, size = _op_kind(op)
        if kind == SKIP:
          y = x
        elif kind == "max_pool":
          y = max_pool(states[j], size)[None]
        elif kind == "avg_pool":
          y = avg_pool(states[j], size)[None]
        else:
          y = batched_op(op, x, [params[(i, j)][op] for i in readers], self.shifted, dt)
        term = w[:, k, None, None, None, None] * y  # [n, N, H, W, C]
        out = term if out is None else out + term
      for r, i in enumerate(readers):
        acc[i] = out[r] if acc[i] is None else acc[i] + out[r]
    if mass[-1] is not None:
      acc[-1] = acc[-1] / mass[-1].astype(dt)
    self.sow("intermediates", f"node{self.nodes - 1}", acc[-1])
    return sum(acc) / self.nodes


class DartsCell(nn.Module):
  """A derived cell of a fixed genotype (static)."""

  genotype: DartsGenotype
  channels: int = 64
  dtype: Dtype = jnp.float32
  shifted: bool = False  # depthwise convs as shifted multiply-adds (the same function)
  node_reduce: str = "mean"  # a node is the "mean" or the "sum" of its two edges

  @nn.compact
  def __call__(self, s0: jax.Array, s1: jax.Array) -> jax.Array:
    """Return the mean of the intermediate nodes."""
    scale = 0.5 if _check_node_reduce(self.node_reduce) == "mean" else 1.0
    states = [s0, s1]
    for i in range(self.genotype.nodes):
      node = sum(
        _Edge(op, self.channels, self.dtype, self.shifted, name=_edge_name(i, j))(states[j])
        for op, j in self.genotype.node_edges(i)
      )
      states.append(node * scale)
    return sum(states[2:]) / self.genotype.nodes


class _SuperCellStep(nn.Module):
  """One step of the scanned cell stack: (s_k-2, s_k-1) -> (s_k-1, s_k)."""

  ops: tuple[str, ...]
  nodes: int
  channels: int
  shifted: bool
  dtype: Dtype
  node_reduce: str
  remat_ops: bool
  fused: bool

  @nn.compact
  def __call__(self, carry, weights):
    s0, s1 = carry
    cell = DartsSuperCell(
      self.ops,
      self.nodes,
      self.channels,
      self.shifted,
      self.dtype,
      self.node_reduce,
      self.remat_ops,
      self.fused,
      name="cell",
    )
    out = cell(s0, s1, weights)
    return (s1, out), None


class _CellStep(nn.Module):
  """One step of the scanned stack of derived cells."""

  genotype: DartsGenotype
  channels: int
  dtype: Dtype
  shifted: bool
  node_reduce: str

  @nn.compact
  def __call__(self, carry):
    s0, s1 = carry
    cell = DartsCell(
      self.genotype, self.channels, self.dtype, self.shifted, self.node_reduce, name="cell"
    )
    return (s1, cell(s0, s1)), None


def _out_dtype(dtype: Dtype) -> Dtype:
  return jnp.promote_types(dtype, jnp.float32)


class DartsSRSupernet(SRFrame, nn.Module):
  """The search network: __call__(x, alpha) with alpha [edges, ops] logits (an array argument)."""

  ops: tuple[str, ...] = IMPROVED_OPS  # candidate ops (the columns of alpha)
  cells: int = 8  # stacked cells
  channels: int = 64  # feature width
  nodes: int = 4  # intermediate nodes per cell
  scale: int = 2  # 2, 3 or 4
  remat: bool = False  # recompute cells and ops in the backward pass (less memory, more compute)
  shifted: bool = True  # depthwise convs as shifted multiply-adds (fast on CPU, same function)
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)
  node_reduce: str = "mean"  # how a node combines its edges (DartsSR.node_reduce)
  fused: bool = False  # each node's mixed ops in a few wide convs (DartsSuperCell.fused)

  def __post_init__(self):
    _check_node_reduce(self.node_reduce)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, alpha: jax.Array) -> jax.Array:
    """Return the super-resolved NHWC batch of the continuous architecture `alpha`."""
    c, dt = self.channels, self.dtype
    shape = (num_edges(self.nodes), len(self.ops))
    if alpha.shape != shape:  # static: never a branch on alpha's values
      raise TokenError(f"alpha must have shape {shape} (edges, ops), got {alpha.shape}")
    weights = jax.nn.softmax(jnp.asarray(alpha), axis=-1)

    def body(f0):
      cell = nn.remat(_SuperCellStep) if self.remat else _SuperCellStep
      stack = nn.scan(
        cell,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=nn.broadcast,
        length=self.cells,
      )
      step = stack(
        self.ops,
        self.nodes,
        c,
        self.shifted,
        dt,
        self.node_reduce,
        self.remat,
        self.fused,
        name="cells",
      )
      (_, s1), _ = step((f0, f0), weights)
      return s1

    # No body conv: the last cell's output plus F_0 is upsampled (the paper's element-wise sum).
    return sr_frame(x, body, c, self.scale, dt, body_conv=None, out_dtype=_out_dtype(dt))


class DartsSRNet(SRFrame, nn.Module):
  """A derived network of a fixed genotype: NHWC [0, 1] RGB to `scale` times it."""

  genotype: DartsGenotype  # the cell (static, hashable)
  cells: int = 20  # stacked cells (the paper retrains 20)
  channels: int = 64  # feature width
  scale: int = 2  # 2, 3 or 4
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)
  shifted: bool = False  # depthwise convs as shifted multiply-adds (the same function)
  node_reduce: str = "mean"  # a node is the "mean" or the "sum" of its two edges

  def __post_init__(self):
    _check_node_reduce(self.node_reduce)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return the super-resolved NHWC batch."""
    c, dt = self.channels, self.dtype

    def body(f0):
      stack = nn.scan(
        _CellStep,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        length=self.cells,
        # Unrolled: in a rolled loop XLA:CPU computes conv kernel gradients ~40x slower
        # (nasr.ops.cpu_kernels.conv_tap_grad); the scan still stacks the cells' parameters.
        unroll=self.cells,
      )
      step = stack(self.genotype, c, dt, self.shifted, self.node_reduce, name="cells")
      (_, s1), _ = step((f0, f0))
      return s1

    return sr_frame(x, body, c, self.scale, dt, body_conv=None, out_dtype=_out_dtype(dt))


# ----------------------------------------------------------------------------------------------
# The space.


def _positive_int(value, key: str) -> int:
  return positive_int(value, f"darts_sr: {key}")


@register("darts_sr")
@dataclasses.dataclass(frozen=True)
class DartsSR:
  """The DARTS-for-SR space: one searched cell stacked `cells` times at constant width.

  Attributes:
    ops: the operation set, "improved" (the paper's residual convolutions) or "original" (DARTS),
      or a comma-separated list of op names (e.g. "none,skip_connect,res_sep_conv_3x3").
    cells: stacked cells (search network; `build` retrains this many unless told otherwise).
    channels: feature width.
    nodes: intermediate nodes per cell.
    node_reduce: how an intermediate node combines its incoming edges. "mean" (default): the
      derived cell's node is (e_a + e_b) / 2, the search cell's the sum of its mixed ops divided
      by their total non-zero-op weight. "sum": the plain sum of DARTS (and of the issue's
      reading of the paper). With residual ops (op(x) + x, and skip-connects) summed nodes grow
      ~3x per cell at initialisation, so a deep network without normalisation diverges (a
      derived 8-cell improved network: output std 460 at init); averaging keeps the scale.
  """

  ops: str = "improved"
  cells: int = 8
  channels: int = 64
  nodes: int = 4
  node_reduce: str = "mean"

  def __post_init__(self):
    op_names(self.ops)  # raises ConfigError naming the bad op
    _check_node_reduce(self.node_reduce)
    for key in ("cells", "channels", "nodes"):
      _positive_int(getattr(self, key), key)

  @property
  def op_names(self) -> tuple[str, ...]:
    """Return the candidate ops, in the column order of alpha."""
    return op_names(self.ops)

  @property
  def edge_ops(self) -> tuple[str, ...]:
    """Return the ops a genotype may hold (all but 'none'), in token order."""
    return tuple(op for op in self.op_names if op != ZERO)

  @property
  def num_edges(self) -> int:
    """Return the number of edges (rows of alpha)."""
    return num_edges(self.nodes)

  @property
  def alpha_shape(self) -> tuple[int, int]:
    """Return (edges, ops), the shape of alpha."""
    return self.num_edges, len(self.op_names)

  def edge_names(self) -> list[str]:
    """Return a name per alpha row, e.g. 'node2<-node0' (inputs are 'in0', 'in1')."""
    src = lambda j: f"in{j}" if j < 2 else f"node{j - 2}"  # noqa: E731
    return [f"node{i}<-{src(j)}" for i, j in edge_list(self.nodes)]

  def init_alpha(self, rng: jax.Array, std: float = 1e-3) -> jax.Array:
    """Return DARTS' initial alpha: std * N(0, 1) of shape [edges, ops] (float32)."""
    return std * jax.random.normal(rng, self.alpha_shape, jnp.float32)

  def token_spec(self) -> TokenSpec:
    """Return the TokenSpec: per node (input a, op a, input b, op b)."""
    choices, names, labels = [], [], []
    n_ops = len(self.edge_ops)
    for i in range(self.nodes):
      choices += [2 + i, n_ops, 2 + i, n_ops]
      names += [f"node{i} input a", f"node{i} op a", f"node{i} input b", f"node{i} op b"]
      inputs = ("in0", "in1", *(f"node{m}" for m in range(i)))  # as edge_names() calls them
      labels += [inputs, self.edge_ops, inputs, self.edge_ops]
    steps = [s for s in range(self.nodes) for _ in range(4)]
    return TokenSpec(tuple(choices), tuple(names), tuple(steps), choice_names=tuple(labels))

  def decode(self, tokens: Sequence[int] | np.ndarray) -> DartsGenotype:
    """Return the genotype of `tokens`, or raise TokenError naming the position."""
    arr = self.token_spec().validate(tokens)
    edges = []
    for i in range(self.nodes):
      ja, ka, jb, kb = (int(t) for t in arr[4 * i : 4 * i + 4])
      if ja == jb:
        raise TokenError(f"node{i}: both edges read input {ja}; they must differ")
      edges += [(self.edge_ops[ka], ja), (self.edge_ops[kb], jb)]
    return DartsGenotype(tuple(edges))

  def _check(self, genotype: DartsGenotype) -> DartsGenotype:
    if not isinstance(genotype, DartsGenotype):
      raise TokenError(f"expected a DartsGenotype, got {type(genotype).__name__}")
    if genotype.nodes != self.nodes:
      raise TokenError(f"genotype has {genotype.nodes} nodes; this space has {self.nodes}")
    for op, _ in genotype.edges:
      if op not in self.edge_ops:
        raise TokenError(
          f"op {op!r} is not in the {self.ops!r} operation set ({', '.join(self.edge_ops)})"
        )
    return genotype

  def arch_from_dict(self, d: dict) -> DartsGenotype:
    """Return the genotype stored by `DartsGenotype.to_dict`, checked against this space."""
    return self._check(DartsGenotype.from_dict(d))

  def encode(self, genotype: DartsGenotype) -> np.ndarray:
    """Return the tokens of `genotype` (int32, shape [4 * nodes])."""
    self._check(genotype)
    out = []
    for i in range(self.nodes):
      for op, j in genotype.node_edges(i):
        out += [j, self.edge_ops.index(op)]
    return np.asarray(out, np.int32)

  def one_hot_alpha(self, genotype: DartsGenotype) -> np.ndarray:
    """Return logits [edges, ops] whose softmax is exactly one-hot on `genotype` (float32).

    Each kept edge gets its op, every other edge the zero op: the supernet at these logits is the
    derived network with the supernet's weights (what the diagnostics score architectures with).
    """
    self._check(genotype)
    if ZERO not in self.op_names:
      raise TokenError(
        f"a genotype is scored in the supernet through its {ZERO!r} op on unused edges; the op set "
        f"{', '.join(self.op_names)} has none"
      )
    alpha = np.full(self.alpha_shape, -1e9, np.float32)  # exp(-1e9) is exactly 0 in float32
    alpha[:, self.op_names.index(ZERO)] = 0.0
    for i in range(genotype.nodes):
      for op, j in genotype.node_edges(i):
        alpha[edge_index(i, j)] = -1e9
        alpha[edge_index(i, j), self.op_names.index(op)] = 0.0
    return alpha

  def derive(self, alpha: jax.Array | np.ndarray) -> DartsGenotype:
    """Return the DARTS genotype of `alpha` [edges, ops] (logits).

    Per node, the 2 incoming edges with the largest softmax weight of a non-zero op are kept; on
    each, the argmax non-zero op. Ties go to the lower input and the earlier op.
    """
    alpha = np.asarray(alpha, np.float64)
    if alpha.shape != self.alpha_shape:
      raise TokenError(f"alpha must have shape {self.alpha_shape}, got {alpha.shape}")
    p = np.exp(alpha - alpha.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    nonzero = [k for k, op in enumerate(self.op_names) if op != ZERO]
    edges = []
    for i in range(self.nodes):
      rows = p[[edge_index(i, j) for j in range(2 + i)]][:, nonzero]  # [2 + i, non-zero ops]
      strength = rows.max(axis=1)
      keep = np.argsort(-strength, kind="stable")[:2]
      for j in sorted(int(j) for j in keep):
        edges.append((self.op_names[nonzero[int(np.argmax(rows[j]))]], j))
    return DartsGenotype(tuple(edges))

  def num_skip(self, genotype: DartsGenotype) -> int:
    """Return the skip-connects of `genotype`."""
    return self._check(genotype).num_skip()

  def max_skip(self) -> int:
    """Return the most skip-connects a genotype holds: every kept edge (2 per node)."""
    return 2 * self.nodes

  def supernet_options(self) -> frozenset[str]:
    """Return the keyword options of `supernet` besides scale."""
    return frozenset({"remat", "shifted", "dtype", "fused"})

  def supernet(
    self,
    scale: int,
    remat: bool = False,
    shifted: bool = True,
    dtype: Dtype = jnp.float32,
    fused: bool = False,
  ) -> DartsSRSupernet:
    """Return the search network; call it as model.apply(variables, x, alpha).

    `shifted` computes depthwise convs as shifted multiply-adds (nasr.ops.cpu_kernels): the same
    function and parameters, several times faster on CPU; the derived network of `build` keeps
    `conv_general_dilated`, so its multiply-adds are counted. `fused` computes the mixed ops of
    all edges that read one node together (`_fused_source`): the same function and parameters,
    fewer and wider tensors (the accelerator form).
    """
    return DartsSRSupernet(
      self.op_names,
      self.cells,
      self.channels,
      self.nodes,
      scale,
      remat,
      shifted,
      dtype,
      self.node_reduce,
      fused,
    )

  def build(
    self,
    genotype: DartsGenotype,
    scale: int,
    dtype: Dtype = jnp.float32,
    shifted: bool = False,
    cells: int | None = None,
    channels: int | None = None,
  ) -> DartsSRNet:
    """Return the stand-alone network of `genotype` (cells/channels default to the space's).

    `shifted` computes depthwise convs as shifted multiply-adds (nasr.ops.cpu_kernels): the same
    function and parameters; which form trains faster depends on the network and the device.
    """
    cells = self.cells if cells is None else _positive_int(cells, "cells")
    channels = self.channels if channels is None else _positive_int(channels, "channels")
    return DartsSRNet(
      self._check(genotype), cells, channels, scale, dtype, shifted, self.node_reduce
    )

  def child_params(self, supernet_params: dict, genotype: DartsGenotype) -> dict:
    """Return the parameters of build(genotype) taken from the supernet's (same cells and width).

    Accepts the supernet's params tree or its variables ({"params": ...}) and returns the same
    form.
    """
    self._check(genotype)
    if "params" in supernet_params:
      return {"params": self.child_params(supernet_params["params"], genotype)}
    out = {k: v for k, v in supernet_params.items() if k != "cells"}
    cell = supernet_params["cells"]["cell"]  # every leaf stacked over the cells
    sub: dict = {}
    for i in range(self.nodes):
      for op, j in genotype.node_edges(i):
        edge = cell[_edge_name(i, j)]
        if op in edge:  # parameter-free ops (skip, pools) have no entry
          sub.setdefault(_edge_name(i, j), {})[op] = edge[op]
    if sub:  # a cell of parameter-free ops has no entry either
      out["cells"] = {"cell": sub}
    return out

  def count_params(
    self, genotype: DartsGenotype, scale: int, cells: int | None = None, channels: int | None = None
  ) -> int:
    """Return the exact parameter count of build(genotype, scale, cells, channels)."""
    net = self.build(genotype, check_subpixel_scale(scale), cells=cells, channels=channels)
    return count_module_params(net)
