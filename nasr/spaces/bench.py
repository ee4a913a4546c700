"""The benchmark space: a small cell space whose every member can be trained, for a tabular benchmark.

Like NAS-Bench-201, one cell is a little DAG over three nodes (node 0 is the cell's input):

  n1 = op_a(n0)          edge "0->1"
  n2 = op_b(n0) + op_c(n1)   edges "0->2", "1->2"        the cell's output is n2

and each of the three edges takes one of six ops:

  zero     nothing (the edge is absent)
  skip     identity
  conv3x3  ReLU, 3x3 conv
  sep3x3   ReLU, depthwise 3x3, pointwise 1x1
  dil3x3   ReLU, 3x3 conv with dilation 2 (a 5x5 field)
  rcab     residual channel-attention block (RCAN): x + CA(conv(ReLU(conv(x))))

so the space has 6^3 = 216 members, each a stack of `cells` copies of its cell (own weights per
copy) inside nasr's SR frame (head conv, cells, body conv, long skip, sub-pixel upsampler, tail).
A member's integer id is its tokens read as a base-6 number, first edge most significant
(`arch_id` / `from_id`): id 0 is the all-zero cell, id 215 three RCABs.

The space is both a `SupernetSpace` and a `DifferentiableSpace`, over one set of shared weights
(every op of every edge of every cell): the supernet applied to int32 tokens [3] runs the single
path they select (`lax.switch` per edge, one compiled step for all members), applied to float
logits alpha [3, 6] it runs DARTS' mixed ops (softmax(alpha) weights per edge, shared by the
cells). `one_hot_alpha(arch)` makes the mixed network exactly the member's.
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nasr.core.checks import positive_int
from nasr.core.errors import ConfigError, TokenError
from nasr.core.types import TokenSpec
from nasr.ops.frame import SRFrame, sr_frame
from nasr.ops.functional import conv, depthwise
from nasr.ops.upsample import check_subpixel_scale
from nasr.spaces.base import ArchJSON, CostTable, count_module_params
from nasr.spaces.registry import register

Dtype = Any

OPS = ("zero", "skip", "conv3x3", "sep3x3", "dil3x3", "rcab")
EDGES = ((0, 1), (0, 2), (1, 2))  # (from node, to node), in token order
EDGE_NAMES = tuple(f"{i}->{j}" for i, j in EDGES)
_PARAM_KEYS = tuple(f"e{i}{j}" for i, j in EDGES)  # parameter-tree names of the edges
_FREE = ("zero", "skip")  # ops without parameters
_REDUCTION = 4  # the RCAB's channel-attention reduction
# The frame's long skip: the input image interpolated and added to the output ("bilinear",
# "bicubic"), the head features added to the cells' output ("head", EDSR's), or none.
SKIPS = ("bilinear", "bicubic", "head", "none")


@dataclasses.dataclass(frozen=True)
class BenchArch(ArchJSON):
  """A member of the benchmark space: the op of each of the cell's three edges."""

  ops: tuple[str, ...]

  def __post_init__(self):
    ops = tuple(self.ops) if isinstance(self.ops, list | tuple) else self.ops
    if not isinstance(ops, tuple) or len(ops) != len(EDGES):
      raise TokenError(f"a bench cell has {len(EDGES)} edge ops {EDGE_NAMES}, got {self.ops!r}")
    for name, op in zip(EDGE_NAMES, ops, strict=True):
      if op not in OPS:
        raise TokenError(f"edge {name}: unknown op {op!r}; the ops are {', '.join(OPS)}")
    object.__setattr__(self, "ops", ops)

  def describe(self) -> str:
    """Return the cell as 'a|b|c' (edge ops 0->1, 0->2, 1->2)."""
    return "|".join(self.ops)


def arch_id(tokens: Sequence[int] | np.ndarray) -> int:
  """Return the member id of `tokens` (base-6 digits, the first edge most significant)."""
  out = 0
  for t in np.asarray(tokens, np.int64).reshape(-1):
    out = out * len(OPS) + int(t)
  return out


def from_id(member: int) -> np.ndarray:
  """Return the int32 tokens of member id `member`, or raise TokenError if out of range."""
  size = len(OPS) ** len(EDGES)
  if isinstance(member, bool) or not isinstance(member, int | np.integer) or not 0 <= member < size:
    raise TokenError(f"a bench member id is an integer in [0, {size}), got {member!r}")
  digits = []
  for _ in EDGES:
    member, d = divmod(int(member), len(OPS))
    digits.append(d)
  return np.asarray(digits[::-1], np.int32)


# ---------------------------------------------------------------------------------------------
# The ops, as parameter modules (they only create weights) and pure functions of the weights.


def _conv_params(module: nn.Module, name: str, k: int, cin: int, cout: int, groups: int = 1):
  init = nn.initializers.lecun_normal()
  kernel = module.param(f"{name}_kernel", init, (k, k, cin // groups, cout), jnp.float32)
  bias = module.param(f"{name}_bias", nn.initializers.zeros_init(), (cout,), jnp.float32)
  return kernel, bias


class _OpParams(nn.Module):
  """The weights of one op on `channels` channels: a dict of arrays (none for zero and skip)."""

  op: str
  channels: int

  @nn.compact
  def __call__(self) -> dict:
    c = self.channels
    if self.op in ("conv3x3", "dil3x3"):
      return dict(zip(("kernel", "bias"), _conv_params(self, "conv", 3, c, c), strict=True))
    if self.op == "sep3x3":
      dw = _conv_params(self, "dw", 3, c, c, groups=c)
      pw = _conv_params(self, "pw", 1, c, c)
      return {"dw": dw, "pw": pw}
    if self.op == "rcab":
      r = max(1, c // _REDUCTION)
      names = (("conv1", 3, c, c), ("conv2", 3, c, c), ("squeeze", 1, c, r), ("excite", 1, r, c))
      return {n: _conv_params(self, n, k, i, o) for n, k, i, o in names}
    return {}


def _apply_op(op: str, p: dict, x: jax.Array, dt: Dtype, shifted: bool) -> jax.Array:
  """Return op(x) with weights `p` (what `_OpParams(op)` made), computed in `dt`."""
  if op == "zero":
    return jnp.zeros_like(x)
  if op == "skip":
    return x
  if op == "conv3x3":
    return conv(nn.relu(x), p["kernel"], p["bias"], dtype=dt)
  if op == "dil3x3":
    return conv(nn.relu(x), p["kernel"], p["bias"], dtype=dt, dilation=2)
  if op == "sep3x3":
    kernel, bias = p["dw"]
    h = depthwise(nn.relu(x), kernel, 1, bias, dtype=dt, shifted=shifted)
    return conv(h, *p["pw"], dtype=dt)
  # rcab
  h = conv(nn.relu(conv(x, *p["conv1"], dtype=dt)), *p["conv2"], dtype=dt)
  s = jnp.mean(h, axis=(1, 2), keepdims=True)
  s = nn.sigmoid(conv(nn.relu(conv(s, *p["squeeze"], dtype=dt)), *p["excite"], dtype=dt))
  return x.astype(h.dtype) + h * s


class _CellParams(nn.Module):
  """The weights of one cell: {edge: {op: weights}} for the ops each edge may take."""

  edge_ops: tuple[tuple[str, ...], ...]  # per edge, the ops with weights
  channels: int

  @nn.compact
  def __call__(self) -> dict:
    return {
      e: {op: _OpParams(op, self.channels, name=f"{e}_{op}")() for op in ops if op not in _FREE}
      for e, ops in zip(_PARAM_KEYS, self.edge_ops, strict=True)
    }


def _cell(edge_fns: Sequence[Callable[[jax.Array], jax.Array]], x: jax.Array) -> jax.Array:
  """Return n2 of the cell whose edges compute `edge_fns` (in EDGES order)."""
  n1 = edge_fns[0](x)
  return edge_fns[1](x) + edge_fns[2](n1)


def _frame(x, body, channels: int, scale: int, dt, skip: str) -> jax.Array:
  """Return sr_frame around `body` with the space's long skip (see SKIPS)."""
  if skip in ("bilinear", "bicubic"):
    return sr_frame(x, body, channels, scale, dt, skip="image", skip_method=skip)
  return sr_frame(x, body, channels, scale, dt, skip=skip)


class BenchNet(SRFrame, nn.Module):
  """A member of the benchmark space, stand-alone: `cells` copies of its cell in the SR frame."""

  arch: BenchArch
  cells: int
  channels: int
  scale: int
  dtype: Dtype = jnp.float32
  shifted: bool = False
  skip: str = "bilinear"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return the super-resolved NHWC batch."""
    dt, ops = self.dtype, self.arch.ops

    def body(h):
      for c in range(self.cells):
        p = _CellParams(tuple((op,) for op in ops), self.channels, name=f"cell{c}")()
        fns = [
          functools.partial(_apply_op, op, p[e].get(op, {}), dt=dt, shifted=self.shifted)
          for e, op in zip(_PARAM_KEYS, ops, strict=True)
        ]
        h = _cell(fns, h)
      return h

    return _frame(x, body, self.channels, self.scale, dt, self.skip)


class BenchSupernet(SRFrame, nn.Module):
  """Every member over shared weights: apply(x, tokens int32 [3]) or apply(x, alpha float [3, 6])."""

  cells: int
  channels: int
  scale: int
  dtype: Dtype = jnp.float32
  shifted: bool = False
  skip: str = "bilinear"

  @nn.compact
  def __call__(self, x: jax.Array, arch: jax.Array) -> jax.Array:
    """Return the single path of int tokens, or the mixed ops of float logits alpha."""
    arch = jnp.asarray(arch)
    single = jnp.issubdtype(arch.dtype, jnp.integer)
    want = (len(EDGES),) if single else (len(EDGES), len(OPS))
    if arch.shape != want:  # a static shape: checked when traced
      kind = "tokens" if single else "alpha"
      raise TokenError(f"the bench supernet takes {kind} of shape {want}, got {arch.shape}")
    dt = self.dtype

    def edge_fn(p_edge: dict, a: jax.Array):
      fns = [
        functools.partial(_apply_op, op, p_edge.get(op, {}), dt=dt, shifted=self.shifted)
        for op in OPS
      ]
      if single:
        return lambda h: jax.lax.switch(a, fns, h)
      w = jax.nn.softmax(a.astype(jnp.float32)).astype(dt)
      return lambda h: sum(w[k] * f(h) for k, f in enumerate(fns))

    def body(h):
      for c in range(self.cells):
        p = _CellParams((OPS,) * len(EDGES), self.channels, name=f"cell{c}")()
        h = _cell([edge_fn(p[e], arch[i]) for i, e in enumerate(_PARAM_KEYS)], h)
      return h

    return _frame(x, body, self.channels, self.scale, dt, self.skip)


class _CostPiece(nn.Module):
  """One op on `channels` channels, alone: a cost piece of a member (see Bench.cost_pieces)."""

  op: str
  channels: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    p = _OpParams(self.op, self.channels, name="op")()
    return _apply_op(self.op, p, x, jnp.float32, False)


def _positive_int(value, key: str) -> int:
  return positive_int(value, f"bench space: {key}")


@register("bench")
@dataclasses.dataclass(frozen=True)
class Bench(CostTable):
  """The 216-member benchmark space (module docstring); `cells` and `channels` size every member.

  Attributes:
    cells: stacked copies of the cell (each with its own weights).
    channels: feature width of the frame and the cells.
  """

  cells: int = 2
  channels: int = 16
  skip: str = "bilinear"

  def __post_init__(self):
    _positive_int(self.cells, "cells")
    _positive_int(self.channels, "channels")
    if self.skip not in SKIPS:
      raise ConfigError(f"bench space: skip must be one of {SKIPS}, got {self.skip!r}")

  # ----- SearchSpace
  def token_spec(self) -> TokenSpec:
    """Return three positions (the edges), six ops each, one controller head for all."""
    n = len(EDGES)
    return TokenSpec(
      (len(OPS),) * n,
      names=tuple(f"op {e}" for e in EDGE_NAMES),
      heads=(0,) * n,
      op_heads=(0,),
      choice_names=(OPS,) * n,
    )

  @property
  def size(self) -> int:
    """Return the number of members (216)."""
    return len(OPS) ** len(EDGES)

  def members(self) -> np.ndarray:
    """Return the tokens of every member, int32 [size, 3], row i being member id i."""
    return np.stack([from_id(i) for i in range(self.size)])

  def decode(self, tokens: Sequence[int] | np.ndarray) -> BenchArch:
    """Return the member of `tokens`, or raise TokenError naming the bad position."""
    t = np.asarray(tokens).reshape(-1)
    if t.shape != (len(EDGES),):
      raise TokenError(f"a bench member has {len(EDGES)} tokens, got {t.size}")
    for name, v in zip(EDGE_NAMES, t.tolist(), strict=True):
      if not (isinstance(v, int) and 0 <= v < len(OPS)):
        raise TokenError(f"token of edge {name} must be in [0, {len(OPS)}), got {v!r}")
    return BenchArch(tuple(OPS[v] for v in t.tolist()))

  def encode(self, arch: BenchArch) -> np.ndarray:
    """Return the int32 tokens of `arch`."""
    return np.asarray([OPS.index(op) for op in self._check(arch).ops], np.int32)

  def arch_from_dict(self, d: dict) -> BenchArch:
    """Return the member stored by `arch.to_dict()`."""
    return BenchArch.from_dict(d)

  def _check(self, arch) -> BenchArch:
    if not isinstance(arch, BenchArch):
      raise TokenError(f"the bench space takes a BenchArch, got {type(arch).__name__}")
    return arch

  def build(
    self, arch: BenchArch, scale: int, dtype: Dtype = jnp.float32, shifted: bool = False
  ) -> BenchNet:
    """Return the stand-alone network of `arch` (`shifted`: CPU form of the depthwise conv)."""
    return BenchNet(self._check(arch), self.cells, self.channels, scale, dtype, shifted, self.skip)

  def count_params(self, arch: BenchArch, scale: int) -> int:
    """Return the exact parameter count of build(arch, scale)."""
    return count_module_params(self.build(arch, check_subpixel_scale(scale)))

  # ----- SupernetSpace and DifferentiableSpace
  def supernet_options(self) -> frozenset[str]:
    """Return the keyword options of `supernet` besides scale."""
    return frozenset({"dtype", "shifted"})

  def supernet(
    self, scale: int, dtype: Dtype = jnp.float32, shifted: bool = False
  ) -> BenchSupernet:
    """Return the supernet; apply it to (x, tokens int32 [3]) or (x, alpha float [3, 6])."""
    return BenchSupernet(self.cells, self.channels, scale, dtype, shifted, self.skip)

  def child_params(self, supernet_params: dict, arch: BenchArch) -> dict:
    """Return build(arch)'s parameters taken from the supernet's (params tree or variables)."""
    ops = self._check(arch).ops
    if "params" in supernet_params:
      return {"params": self.child_params(supernet_params["params"], arch)}
    out = {k: v for k, v in supernet_params.items() if not k.startswith("cell")}
    for c in range(self.cells):
      cell = supernet_params[f"cell{c}"]
      keep = {f"{e}_{op}" for e, op in zip(_PARAM_KEYS, ops, strict=True) if op not in _FREE}
      sub = {k: v for k, v in cell.items() if k in keep}
      if sub:  # a cell of parameter-free ops has no entry
        out[f"cell{c}"] = sub
    return out

  def max_arch(self) -> BenchArch:
    """Return the most complex member: an RCAB on every edge."""
    return BenchArch(("rcab",) * len(EDGES))

  @property
  def alpha_shape(self) -> tuple[int, int]:
    """Return (edges, ops) = (3, 6)."""
    return (len(EDGES), len(OPS))

  def init_alpha(self, rng: jax.Array, std: float = 1e-3) -> jax.Array:
    """Return initial logits std * N(0, 1) of shape alpha_shape."""
    return std * jax.random.normal(rng, self.alpha_shape, jnp.float32)

  @property
  def op_names(self) -> tuple[str, ...]:
    """Return the ops, in the column order of alpha."""
    return OPS

  def edge_names(self) -> list[str]:
    """Return the edges' names, in the row order of alpha."""
    return list(EDGE_NAMES)

  def one_hot_alpha(self, arch: BenchArch) -> np.ndarray:
    """Return logits whose softmax is exactly one-hot on `arch`'s ops (float32)."""
    alpha = np.full(self.alpha_shape, -1e9, np.float32)  # exp(-1e9) is exactly 0 in float32
    alpha[np.arange(len(EDGES)), self.encode(arch)] = 0.0
    return alpha

  def derive(self, alpha) -> BenchArch:
    """Return the member of each edge's strongest op (the zero op included, as NAS-Bench-201)."""
    a = np.asarray(alpha, np.float32)
    if a.shape != self.alpha_shape:
      raise TokenError(f"alpha must have shape {self.alpha_shape}, got {a.shape}")
    return self.decode(np.argmax(a, axis=1).astype(np.int32))

  def num_skip(self, arch: BenchArch) -> int:
    """Return how many edges of `arch` are skip-connects."""
    return sum(op == "skip" for op in self._check(arch).ops)

  def max_skip(self) -> int:
    """Return the most skip-connects a member holds (every edge)."""
    return len(EDGES)

  # ----- CostPieces, CostTable
  def _op_piece(self, op: str, side: int) -> tuple:
    return (
      ("op", op, self.channels),
      _CostPiece(op, self.channels),
      (1, side, side, self.channels),
    )

  def _frame_piece(self, scale: int, side: int) -> tuple:
    frame = BenchNet(BenchArch(("zero",) * len(EDGES)), 1, self.channels, scale, skip=self.skip)
    return (("frame", self.channels), frame, (1, side, side, 3))

  def cost_pieces(self, arch: BenchArch, scale: int, side: int) -> list[tuple]:
    """Return [(key, module, shape)]: the frame, then each op with weights of each cell."""
    ops = [op for op in self._check(arch).ops if op not in _FREE]
    scale = check_subpixel_scale(scale)
    return [self._frame_piece(scale, side)] + [
      self._op_piece(op, side) for _ in range(self.cells) for op in ops
    ]

  def cost_table(self, piece_cost, scale: int, side: int):
    """Return cost(tokens) -> (parameters, multiply-adds per LR pixel) in jnp (traceable)."""
    scale = check_subpixel_scale(scale)
    frame = np.asarray(piece_cost(*self._frame_piece(scale, side)), np.float32)
    rows = [(0, 0) if op in _FREE else piece_cost(*self._op_piece(op, side)) for op in OPS]
    table = np.asarray(rows, np.float32)  # numpy: a constant of the traced function
    cells, pixels = float(self.cells), float(side * side)

    def cost(tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
      per_cell = jnp.asarray(table)[jnp.asarray(tokens, jnp.int32)].sum(axis=0)
      total = jnp.asarray(frame) + cells * per_cell
      return total[0], total[1] / pixels

    return cost
