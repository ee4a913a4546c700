"""The HNAS search space (Guo et al., "Hierarchical Neural Architecture Search for Single Image
Super-Resolution", IEEE SPL 2020): a normal cell, an upsampling cell and where the latter goes.

Network (NHWC RGB in [0, 1]; the DIV2K mean is subtracted at the input and added back at the
output, like the other spaces), as the authors' released code builds it (guoyongcs/HNAS-SR
`src/model/arch.py`; the paper is silent on these details or agrees) with the space's defaults:

  s_-2 = s_-1 = stem conv3x3(x), no bias                            nodes * C channels, LR
  layer i = 1..L: the upsampling cell if i == position, else the normal cell
    s_i = cell_i(s_i-2, s_i-1)
    the cell after the upsampling cell reads the upsampling cell's output as both inputs
  y = conv3x3(s_L) to 3 channels                                     no global residual

Every position 1..L gives an HR output: L is the last layer, 1 upsamples the stem output.

A cell has two inputs (node 0 = the cell two back, node 1 = the previous cell), each through ReLU
and its own 1x1 conv (nodes * C -> C, no bias), and `nodes` intermediate nodes; intermediate node
j (0-based, node 2 + j) sums two edges, each an op applied to a node chosen among 0..j+1 (both
edges may read the same node); the cell output is the concat of the intermediate nodes (nodes * C
channels: 32 at the search width C=8, 256 at the retrain width 64).

nasr's earlier forms are options of the space (see HNAS): `cell_preprocess="concat_conv"` (one
1x1 conv of the concat back to C, stem and tail C wide), `conv_bias=True`, `deconv_kernel="2s"`,
`after_upsampling="resize"` (the LR cell, bilinearly resized, as the two-back input after the
upsampling cell), `skip="image"` (bicubic(x) added to the output), `reduction=4`.

Normal-cell ops (Table I), all C -> C at the input's resolution:
  identity
  dil_conv_3x3 / dil_conv_5x5   ReLU, depthwise k x k with dilation 2, pointwise 1x1 (as the
                                 authors' code; "dilated convolution" in the paper)
  sep_conv_3x3 / sep_conv_5x5   (ReLU, depthwise k x k, pointwise 1x1) twice; separable and
                                 dilated convs have no bias, as released
  udpb                           DBPN's up-projection then down-projection unit (Haris et al.,
                                 CVPR 2018): up: h0 = deconv(x), l0 = conv(h0), h1 = deconv(l0 - x),
                                 out h1 + h0; down: l0 = conv(x), h0 = deconv(l0), l1 = conv(h0 -
                                 x), out l1 + l0; stride = the network's scale, kernel 6 / 7 / 8
                                 for x2 / x3 / x4 with padding 2 (DBPN), PReLU after every conv.
                                 The authors' released code dropped it; we keep it.
  rcab                           RCAN's residual channel-attention block (reduction `reduction`,
                                 3 as released)
Upsampling-cell ops, on the edges that read the cell inputs (LR -> HR, x scale):
  area, bilinear, nearest        interpolation; for an integer factor area equals nearest
                                 (every output pixel lies inside one input pixel), as in PyTorch
  sub_pixel                      conv3x3 to s*s*C then pixel shuffle (x4: two x2 stages)
  deconvolution                  one stride-s transposed conv: kernel 3 at x2, 5 at x4 (padding 1,
                                 output padding 1, as released; x3: see `deconv_kernel`)
and on the edges between intermediate nodes (already HR) their stride-1 forms, as the authors'
code runs them: the interpolations and sub_pixel are the identity, deconvolution a stride-1 3x3
transposed conv.

Tokens, per cell and intermediate node j: (input a, op a, input b, op b), inputs in 0..j+1; the
normal cell's 4 * nodes tokens (group 0), the upsampling cell's (group 1), then the position
(group 2, token p - 1). The hierarchical strategy gives each group its own LSTM.

Supernet: every layer owns a normal cell and an upsampling cell (weights stacked over layers);
all ops of every edge exist. The sampled tokens are data: ops and inputs by `lax.switch`, and the
layers as two scans (LR, then HR) whose layers before / after the position run by `lax.cond`,
so one compile serves every (normal, upsampling, position) triple and a step costs only the
child's work. A cell's edges run as a scan over a buffer of its nodes with a hand-written
reverse mode (each edge's op recomputed under its own VJP, gradients added in place).
`child_params` selects the child's weights; supernet(a) == build(a) with them, gradients too.

Example:
  space = nasr.spaces.get("hnas", layers=12, nodes=4, channels=8)
  arch = space.decode(space.token_spec().sample(np.random.default_rng(0)))
  model = space.build(arch, scale=2)
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nasr.core.errors import ConfigError, TokenError
from nasr.core.types import TokenSpec
from nasr.ops.frame import SKIPS, SRFrame, sr_frame
from nasr.ops.functional import conv, depthwise
from nasr.ops.params import ConvParams
from nasr.ops.upsample import check_subpixel_scale, interpolate, pixel_shuffle
from nasr.spaces.base import ArchJSON, CostTable, count_module_params
from nasr.spaces.registry import register

Dtype = Any

NORMAL_OPS = (
  "identity",
  "dil_conv_3x3",
  "dil_conv_5x5",
  "sep_conv_3x3",
  "sep_conv_5x5",
  "udpb",
  "rcab",
)
UP_OPS = ("area", "bilinear", "nearest", "sub_pixel", "deconvolution")
# The network's forms (see HNAS): the first of each is the released code's.
CELL_PREPROCESS = ("relu_conv", "concat_conv")
DECONV_KERNELS = ("released", "2s")
AFTER_UPSAMPLING = ("repeat", "resize")
SLOTS = ("a", "b")  # the two edges of an intermediate node
# DBPN's projection (kernel, padding) per scale: a stride-s conv keeps H -> H / s exactly.
_PROJECTION = {2: (6, 2), 3: (7, 2), 4: (8, 2)}
_INNER_DECONV = "deconvolution_inner"  # the stride-1 form of deconvolution between HR nodes
TABLE_II_SIDE = 48  # HNAS's Table II counts multiply-adds on a 48 x 48 LR input (times 1e-8)


@dataclasses.dataclass(frozen=True)
class _Ctx:
  """What every op function needs besides its parameters and input."""

  channels: int
  scale: int
  reduction: int
  dtype: Dtype
  shifted: bool
  # Dense-conv gradients as tap matmuls: the supernet's edges run in a rolled loop, where XLA:CPU
  # computes conv kernel gradients ~37x slower (BENCHMARKS.md); the same function.
  tap_grad: bool = False
  # The network's forms (see HNAS): the released code's by default.
  cell_preprocess: str = "relu_conv"
  conv_bias: bool = False
  deconv_kernel: str = "released"


# ----------------------------------------------------------------------------------------------
# Operations as functions of (params, x): the child and the supernet run the same ones.


def _conv(x, p, ctx: _Ctx, **form):
  """Return nasr.ops.functional.conv of x with p's kernel and bias in the context's forms."""
  # 1x1 convs as matmuls (on every backend): most of a sep_conv step is its pointwise convs.
  kw = dict(dtype=ctx.dtype, tap_grad=ctx.tap_grad, stride_one=ctx.shifted, matmul_1x1=True)
  return conv(x, p["kernel"], p.get("bias"), **kw, **form)


def _depthwise(x, p, ctx: _Ctx, dilation: int):
  """Return nasr.ops.functional.depthwise of x with p's kernel and bias in the context's forms."""
  return depthwise(x, p["kernel"], dilation, p.get("bias"), dtype=ctx.dtype, shifted=ctx.shifted)


def _dil_conv(p, x, ctx):
  return _conv(_depthwise(nn.relu(x), p["dw"], ctx, 2), p["pw"], ctx)


def _sep_conv(p, x, ctx):
  h = _conv(_depthwise(nn.relu(x), p["dw1"], ctx, 1), p["pw1"], ctx)
  return _conv(_depthwise(nn.relu(h), p["dw2"], ctx, 1), p["pw2"], ctx)


def _prelu(x, a):
  return jnp.where(x >= 0, x, a.astype(x.dtype) * x)


def _project(x, p, ctx, name, a, up: bool):
  """Return PReLU(stride-s transposed conv (up) or stride-s conv (down)) of x."""
  k, pad = _PROJECTION[ctx.scale]
  s = ctx.scale
  if up:
    q = k - 1 - pad  # (H - 1) s + k - 2 pad = s H output rows
    y = _conv(x, p[name], ctx, padding=((q, q), (q, q)), lhs_dilation=s)
  else:
    y = _conv(x, p[name], ctx, stride=s, padding=((pad, pad), (pad, pad)))
  return _prelu(y, a)


def _udpb(p, x, ctx):
  a = p["prelu"]
  x = x.astype(ctx.dtype)
  h0 = _project(x, p, ctx, "up1", a[0], True)
  l0 = _project(h0, p, ctx, "up2", a[1], False)
  h = _project(l0 - x, p, ctx, "up3", a[2], True) + h0
  l0 = _project(h, p, ctx, "down1", a[3], False)
  h0 = _project(l0, p, ctx, "down2", a[4], True)
  return _project(h0 - h, p, ctx, "down3", a[5], False) + l0


def _rcab(p, x, ctx):
  y = _conv(nn.relu(_conv(x, p["conv1"], ctx)), p["conv2"], ctx)
  s = jnp.mean(y, axis=(1, 2), keepdims=True)
  s = nn.sigmoid(_conv(nn.relu(_conv(s, p["squeeze"], ctx)), p["excite"], ctx))
  return x.astype(ctx.dtype) + y * s


def _repeat(p, x, ctx):
  return interpolate(x.astype(ctx.dtype), ctx.scale, "nearest")


def _bilinear(p, x, ctx):
  return interpolate(x.astype(ctx.dtype), ctx.scale, "bilinear")


def _sub_pixel(p, x, ctx):
  for i, r in enumerate((2, 2) if ctx.scale == 4 else (ctx.scale,)):
    x = pixel_shuffle(_conv(x, p[f"conv{i}"], ctx), r)
  return x


def _deconv_form(scale: int, form: str) -> tuple[int, tuple[int, int]]:
  """Return (kernel, (low, high) padding of the input-dilated conv) of a stride-`scale` deconv.

  "released": the authors' nn.ConvTranspose2d(k, s, padding=1, output_padding=1), k = 3 at x2 and
  5 at x4, as a conv over the s-dilated input padded (k - 2, k - 1): s * H rows. At x3 their code
  uses k = 3 without output padding, 3H - 2 rows, so no network of theirs upsamples x3 this way.
  "2s": kernel 2s, 'SAME' as jax.lax.conv_transpose pads it (nasr's earlier form; any scale).
  """
  if form == "2s":
    lo = -(-(3 * scale - 2) // 2)
    return 2 * scale, (lo, 3 * scale - 2 - lo)
  if scale == 3:
    raise ConfigError(
      "hnas: the released deconvolution (kernel 3, stride 3, padding 1) gives 3H - 2 rows at x3, "
      "so the authors' code cannot upsample x3 through it; set space.deconv_kernel='2s' (kernel 6) "
      "for x3, or use an architecture without a deconvolution on a cell input"
    )
  k = {2: 3, 4: 5}[scale]
  return k, (k - 2, k - 1)


def _deconv(p, x, ctx):
  _, pads = _deconv_form(ctx.scale, ctx.deconv_kernel)
  return _conv(x, p["deconv"], ctx, padding=(pads, pads), lhs_dilation=ctx.scale)


def _inner_deconv(p, x, ctx):
  # A stride-1 3x3 transposed conv with padding 1 is a 3x3 conv with a flipped kernel: we keep
  # the conv form (same function class, parameters read as the conv's).
  return _conv(x, p["conv"], ctx)


def _identity(p, x, ctx):
  return x.astype(ctx.dtype)


NORMAL_FNS: dict[str, Callable] = {
  "identity": _identity,
  "dil_conv_3x3": _dil_conv,
  "dil_conv_5x5": _dil_conv,
  "sep_conv_3x3": _sep_conv,
  "sep_conv_5x5": _sep_conv,
  "udpb": _udpb,
  "rcab": _rcab,
}
UP_FNS: dict[str, Callable] = {
  "area": _repeat,
  "bilinear": _bilinear,
  "nearest": _repeat,
  "sub_pixel": _sub_pixel,
  "deconvolution": _deconv,
}
# Between HR nodes of the upsampling cell: the ops' stride-1 forms.
INNER_FNS: dict[str, Callable] = {
  "area": _identity,
  "bilinear": _identity,
  "nearest": _identity,
  "sub_pixel": _identity,
  "deconvolution": _inner_deconv,
}


def _op_spec(op: str, ctx: _Ctx) -> tuple:
  """Return ((param name, shape, bias), ...) of op `op` (names starting "prelu": PReLU slopes).

  Biases follow the released code: its separable and dilated convs have none (`conv_bias` adds
  them); RCAB, sub-pixel, the deconvolutions and DBPN's projections have them.
  """
  c, scale, bias = ctx.channels, ctx.scale, ctx.conv_bias
  if op in ("identity", "area", "bilinear", "nearest"):
    return ()
  if op.startswith("dil_conv"):
    k = int(op[-1])
    return (("dw", (k, k, 1, c), bias), ("pw", (1, 1, c, c), bias))
  if op.startswith("sep_conv"):
    k = int(op[-1])
    return tuple(
      (f"{n}{i}", shape, bias)
      for i in (1, 2)
      for n, shape in (("dw", (k, k, 1, c)), ("pw", (1, 1, c, c)))
    )
  if op == "udpb":
    k = _PROJECTION[scale][0]
    convs = tuple((f"{d}{i}", (k, k, c, c), True) for d in ("up", "down") for i in (1, 2, 3))
    return (*convs, ("prelu", (6,), False))
  if op == "rcab":
    r = max(1, c // ctx.reduction)
    return (
      ("conv1", (3, 3, c, c), True),
      ("conv2", (3, 3, c, c), True),
      ("squeeze", (1, 1, c, r), True),
      ("excite", (1, 1, r, c), True),
    )
  if op == "sub_pixel":
    stages = (2, 2) if scale == 4 else (scale,)
    return tuple((f"conv{i}", (3, 3, c, r * r * c), True) for i, r in enumerate(stages))
  if op == "deconvolution":
    k = _deconv_form(scale, ctx.deconv_kernel)[0]
    return (("deconv", (k, k, c, c), True),)
  if op == _INNER_DECONV:
    return (("conv", (3, 3, c, c), True),)
  raise ValueError(f"unknown op {op!r}")


def _cell_convs(ctx: _Ctx, nodes: int) -> tuple:
  """Return ((name, shape, bias), ...) of a cell's own convs (besides its edges' ops).

  "relu_conv" (the released code): each of the two inputs through ReLU and a 1x1 conv from the
  cell width nodes * C to C, no bias; the cell's output is the concat of its nodes.
  "concat_conv" (nasr's earlier form): one 1x1 conv of the concatenated nodes back to C.
  """
  c = ctx.channels
  if ctx.cell_preprocess == "relu_conv":
    return tuple((f"pre{i}", (1, 1, nodes * c, c), ctx.conv_bias) for i in (0, 1))
  return (("out", (1, 1, nodes * c, c), True),)


def _cell_width(ctx: _Ctx, nodes: int) -> int:
  """Return the channels between cells: the concat (relu_conv) or C (concat_conv)."""
  return nodes * ctx.channels if ctx.cell_preprocess == "relu_conv" else ctx.channels


def _conv_params(convs: tuple, stack: tuple) -> dict:
  """Return {name: {"kernel", "bias"}} of `convs` ((name, shape, bias), ...), created here."""
  out = {}
  for name, shape, bias in convs:
    kernel, b = ConvParams(shape, stack, use_bias=bias, name=name)()
    out[name] = {"kernel": kernel, "bias": b}
  return out


class _OpParams(nn.Module):
  """Create one op's parameters (convs as `ConvParams`, PReLU slopes at 0.25)."""

  spec: tuple  # ((name, shape, bias), ...) from _op_spec
  stack: tuple[int, ...] = ()  # leading axes: the supernet's layers

  @nn.compact
  def __call__(self) -> dict:
    """Return {name: {"kernel", "bias"} (bias None where the conv has none) or slopes}."""
    out = {}
    for name, shape, bias in self.spec:
      if name.startswith("prelu"):
        init = nn.initializers.constant(0.25)
        out[name] = self.param(name, init, (*self.stack, *shape), jnp.float32)
      else:
        kernel, b = ConvParams(shape, self.stack, use_bias=bias, name=name)()
        out[name] = {"kernel": kernel, "bias": b}
    return out


class _CellParams(nn.Module):
  """Create a cell's parameters: {edge: {op: params}} for the given ops per edge, and its own
  convs (the preprocessing "pre0" / "pre1", or "out")."""

  edges: tuple  # ((edge name, ((op, spec), ...)), ...)
  convs: tuple  # ((name, shape, bias), ...) from _cell_convs

  @nn.compact
  def __call__(self) -> dict:
    """Return the parameter tree, created on first use."""
    out = {}
    for edge, ops in self.edges:
      out[edge] = _EdgeParams(ops, name=edge)()
    return {**out, **_conv_params(self.convs, ())}


class _EdgeParams(nn.Module):
  """Create an edge's parameters for each of its candidate ops."""

  ops: tuple  # ((op, spec), ...)
  stack: tuple[int, ...] = ()

  @nn.compact
  def __call__(self) -> dict:
    """Return {op: params} (ops without parameters give {})."""
    return {op: _OpParams(spec, self.stack, name=op)() if spec else {} for op, spec in self.ops}


def _cell_in(p: dict, s0, s1, ctx: _Ctx) -> tuple:
  """Return the cell's two inputs as its edges read them (preprocessed under relu_conv)."""
  if ctx.cell_preprocess == "relu_conv":
    return tuple(_conv(nn.relu(s), p[f"pre{i}"], ctx) for i, s in enumerate((s0, s1)))
  return s0.astype(ctx.dtype), s1.astype(ctx.dtype)


def _cell_out(nodes: list, p: dict, ctx: _Ctx):
  """Return the cell output: the concat of its nodes, or its 1x1 conv (concat_conv)."""
  out = jnp.concatenate(nodes, axis=-1)
  return out if ctx.cell_preprocess == "relu_conv" else _conv(out, p["out"], ctx)


def _edge_name(j: int, slot: int) -> str:
  return f"node{j}_{SLOTS[slot]}"


# ----------------------------------------------------------------------------------------------
# Architecture.


def _check_cell(cell, nodes: int, ops: tuple[str, ...], kind: str) -> tuple:
  try:
    cell = tuple(tuple(node) for node in cell)
  except TypeError:
    raise TokenError(f"HNASArch.{kind} needs one (input, op, input, op) per node") from None
  if len(cell) != nodes:
    raise TokenError(f"HNASArch.{kind} needs {nodes} nodes, got {len(cell)}")
  out = []
  for j, node in enumerate(cell):
    if len(node) != 4:
      raise TokenError(f"HNASArch.{kind} node {j}: needs (input, op, input, op), got {node}")
    fixed = []
    for slot in range(2):
      inp, op = node[2 * slot], node[2 * slot + 1]
      if isinstance(inp, bool) or not isinstance(inp, int | np.integer) or not 0 <= inp < j + 2:
        raise TokenError(f"HNASArch.{kind} node {j}: input {inp!r} is not in 0..{j + 1}")
      if op not in ops:
        raise TokenError(f"HNASArch.{kind} node {j}: unknown op {op!r}; ops: {', '.join(ops)}")
      fixed += [int(inp), str(op)]
    out.append(tuple(fixed))
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class HNASArch(ArchJSON):
  """An HNAS architecture: the two cells and the upsampling cell's layer.

  Attributes:
    layers: number of cells L.
    nodes: intermediate nodes per cell.
    normal: per intermediate node j, (input a, op a, input b, op b); inputs 0 (two cells back),
      1 (previous cell) or 2 + m (intermediate node m < j); ops from NORMAL_OPS.
    upsampling: the same for the upsampling cell, ops from UP_OPS.
    position: the layer (1..L) that is the upsampling cell.
  """

  layers: int
  nodes: int
  normal: tuple
  upsampling: tuple
  position: int

  def __post_init__(self):
    for key in ("layers", "nodes"):
      value = getattr(self, key)
      if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise TokenError(f"HNASArch.{key} must be a positive integer, got {value!r}")
    object.__setattr__(self, "normal", _check_cell(self.normal, self.nodes, NORMAL_OPS, "normal"))
    object.__setattr__(
      self, "upsampling", _check_cell(self.upsampling, self.nodes, UP_OPS, "upsampling")
    )
    p = self.position
    if isinstance(p, bool) or not isinstance(p, int | np.integer) or not 1 <= p <= self.layers:
      raise TokenError(f"HNASArch.position must be in 1..{self.layers}, got {p!r}")
    object.__setattr__(self, "position", int(p))

  def describe(self) -> str:
    """Return e.g. 'normal [1:identity 1:sep_conv_5x5 | ...] up [...] at 10/12'."""

    def cell(c):
      return " | ".join(f"{a}:{oa} {b}:{ob}" for a, oa, b, ob in c)

    return (
      f"normal [{cell(self.normal)}] up [{cell(self.upsampling)}] at {self.position}/{self.layers}"
    )


# ----------------------------------------------------------------------------------------------
# Stand-alone child network (architecture static).


def _child_cell_params(cell: tuple, kind: str, ctx: _Ctx, name: str):
  edges = []
  for j, node in enumerate(cell):
    for slot in range(2):
      inp, op = node[2 * slot], node[2 * slot + 1]
      if kind == "up" and inp >= 2:
        op = _INNER_DECONV if op == "deconvolution" else None
      spec = _op_spec(op, ctx) if op else ()
      edges.append((_edge_name(j, slot), ((op, spec),) if spec else ()))
  return _CellParams(tuple(edges), _cell_convs(ctx, len(cell)), name=name)


def _run_child_cell(cell: tuple, kind: str, p: dict, s0, s1, ctx: _Ctx):
  states = list(_cell_in(p, s0, s1, ctx))
  for j, node in enumerate(cell):
    total = None
    for slot in range(2):
      inp, op = node[2 * slot], node[2 * slot + 1]
      ep = p[_edge_name(j, slot)]
      if kind == "normal":
        y = NORMAL_FNS[op](ep.get(op, {}), states[inp], ctx)
      elif inp < 2:
        y = UP_FNS[op](ep.get(op, {}), states[inp], ctx)
      else:
        y = INNER_FNS[op](ep.get(_INNER_DECONV, {}), states[inp], ctx)
      total = y if total is None else total + y
    states.append(total)
  return _cell_out(states[2:], p, ctx)


def _resize_like(x, like, dtype):
  return interpolate(x, like.shape[1] // x.shape[1], "bilinear").astype(dtype)


def _after_up(s1, out, after_upsampling: str, dtype) -> tuple:
  """Return the inputs (two back, previous) of the cell after the upsampling cell.

  "repeat" (the released code): the upsampling cell's output twice. "resize" (nasr's earlier
  form): the LR cell before it, bilinearly resized, as the two-back input.
  """
  if after_upsampling == "repeat":
    return out, out
  return _resize_like(s1, out, dtype), out


def _check_forms(cell_preprocess, conv_bias, deconv_kernel, after_upsampling, where: str):
  """Raise ConfigError naming the field when a form option is not one of its values."""
  for key, value, allowed in (
    ("cell_preprocess", cell_preprocess, CELL_PREPROCESS),
    ("deconv_kernel", deconv_kernel, DECONV_KERNELS),
    ("after_upsampling", after_upsampling, AFTER_UPSAMPLING),
  ):
    if value not in allowed:
      raise ConfigError(f"{where}: {key} must be one of {allowed}, got {value!r}")
  if not isinstance(conv_bias, bool | np.bool_):
    raise ConfigError(f"{where}: conv_bias must be True or False, got {conv_bias!r}")


FORMS = ("cell_preprocess", "conv_bias", "deconv_kernel", "after_upsampling")


def _form_ctx(owner, scale: int, dtype, shifted: bool, where: str, tap_grad: bool = False) -> _Ctx:
  """Return the op context of `owner`'s width, reduction and forms (checked, errors name `where`)."""
  _check_forms(*(getattr(owner, k) for k in FORMS), where)
  return _Ctx(
    owner.channels,
    scale,
    owner.reduction,
    dtype,
    shifted,
    tap_grad=tap_grad,
    cell_preprocess=owner.cell_preprocess,
    conv_bias=owner.conv_bias,
    deconv_kernel=owner.deconv_kernel,
  )


class HNASNet(SRFrame, nn.Module):
  """An HNAS network of a fixed architecture: NHWC [0, 1] RGB to `scale` times it (float32)."""

  arch: HNASArch  # the architecture (static, hashable)
  channels: int = 8  # width C of every op (the cell concat has nodes * C)
  scale: int = 2  # 2, 3 or 4
  reduction: int = 3  # RCAB channel-attention reduction (the released code's)
  skip: str = "none"  # the global residual: "none" (as released), "image" (bicubic input), "head"
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)
  shifted: bool = False  # depthwise convs as shifted multiply-adds (the same function)
  cell_preprocess: str = "relu_conv"  # see HNAS
  conv_bias: bool = False  # see HNAS
  deconv_kernel: str = "released"  # see HNAS
  after_upsampling: str = "repeat"  # see HNAS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return the super-resolved NHWC batch."""
    a = self.arch
    ctx = _form_ctx(self, self.scale, self.dtype, self.shifted, "HNASNet")

    def body(h0):
      s0 = s1 = h0
      for i in range(a.layers):
        up = i + 1 == a.position
        cell, kind = (a.upsampling, "up") if up else (a.normal, "normal")
        cp = _child_cell_params(cell, kind, ctx, f"cell{i}")
        out = _run_child_cell(cell, kind, cp(), s0, s1, ctx)
        s0, s1 = _after_up(s1, out, self.after_upsampling, self.dtype) if up else (s1, out)
      return s1

    return _frame(x, body, ctx, a.nodes, self.skip)


def _frame(x, body, ctx: _Ctx, nodes: int, skip: str):
  """Return HNAS's frame around `body` (stem conv, body at LR -> HR, tail, global skip).

  The stem and tail have the width between cells (nodes * C under relu_conv, as the released
  code's stem of 4C); the stem has a bias only with conv_bias (the released stem has none).
  """
  return sr_frame(
    x,
    body,
    _cell_width(ctx, nodes),
    ctx.scale,
    ctx.dtype,
    head="stem",
    head_bias=ctx.conv_bias,
    body_conv=None,
    upsample_at="body",
    skip=skip,
    skip_method="bicubic",
  )


# ----------------------------------------------------------------------------------------------
# Cost pieces: a child's cost is the frame's plus its cells' op by op (searches cache them).


class _Piece(nn.Module):
  """One additive piece of a child: an edge op, a cell's own convs, the skip resize, the frame."""

  form: str  # "normal", "up", "inner" (an upsampling cell's HR edge), "cell", "resize", "frame"
  op: str  # the edge's op ("" for the others)
  ctx: _Ctx
  skip: str = "none"
  nodes: int = 1  # intermediate nodes per cell (the frame's and a cell's widths)

  @nn.compact
  def __call__(self, x):
    """Return the piece's output (its cost is what matters)."""
    ctx = self.ctx
    if self.form == "frame":
      # The body's work is in the other pieces; nearest upsampling contracts nothing.
      body = functools.partial(interpolate, factor=ctx.scale, method="nearest")
      return _frame(x, body, ctx, self.nodes, self.skip)
    if self.form == "resize":
      return interpolate(x, ctx.scale, "bilinear").astype(ctx.dtype)  # as _resize_like
    if self.form == "cell":  # x: the cell width; preprocessing reads it twice, "out" once
      p = _conv_params(_cell_convs(ctx, self.nodes), ())
      return [_conv(nn.relu(x) if k.startswith("pre") else x, v, ctx) for k, v in p.items()]
    fns = {"normal": NORMAL_FNS, "up": UP_FNS, "inner": INNER_FNS}[self.form]
    name = _INNER_DECONV if self.form == "inner" else self.op
    spec = () if self.form == "inner" and self.op != "deconvolution" else _op_spec(name, ctx)
    return fns[self.op](_OpParams(spec, name=name)() if spec else {}, x, ctx)


# ----------------------------------------------------------------------------------------------
# Weight-sharing supernet (architecture as an array argument: compiled once).


def _pick(buffer: jax.Array, idx: jax.Array) -> jax.Array:
  """Return buffer[idx] for a traced idx (clamped into range)."""
  return jax.lax.dynamic_index_in_dim(buffer, idx, 0, keepdims=False)


def _edge_branches(kind: str) -> list[tuple[str, Callable, str, bool]]:
  """Return the switch branches of an edge: (op, fn, param key, reads the HR buffer)."""
  if kind == "normal":
    return [(o, NORMAL_FNS[o], o, False) for o in NORMAL_OPS]
  return [(o, UP_FNS[o], o, False) for o in UP_OPS] + [
    (o, INNER_FNS[o], _INNER_DECONV, True) for o in UP_OPS
  ]


def _branch_index(kind: str, inp, op):
  """Return the switch index of an edge with input `inp` and op `op` (see _edge_branches)."""
  return op if kind == "normal" else jnp.where(inp < 2, op, len(UP_OPS) + op)


def _edge_dst(kind: str, e):
  """Return (buffer, index) the output of edge `e` adds into: the LR buffer of a normal cell
  (nodes after the two inputs) or the HR buffer of the upsampling cell."""
  return ("lr", 2 + e // 2) if kind == "normal" else ("hr", e // 2)


def _edges_forward(kind: str, edge_params: dict, tokens: jax.Array, lr, hr, ctx: _Ctx):
  """Return the node buffers (lr, hr) after every edge of the cell has added its output."""

  def edge(carry, xs):
    bufs = dict(zip(("lr", "hr"), carry, strict=True))
    e, ep, (inp, op) = xs
    x_lr = _pick(bufs["lr"], inp)
    x_hr = _pick(bufs["hr"], inp - 2) if kind != "normal" else bufs["hr"]
    branches = [
      lambda fn=fn, k=k, hr_in=hr_in: fn(ep.get(k, {}), x_hr if hr_in else x_lr, ctx)
      for _, fn, k, hr_in in _edge_branches(kind)
    ]
    y = jax.lax.switch(_branch_index(kind, inp, op), branches)
    name, dst = _edge_dst(kind, e)
    bufs[name] = jax.lax.dynamic_update_index_in_dim(bufs[name], _pick(bufs[name], dst) + y, dst, 0)
    return (bufs["lr"], bufs["hr"]), None

  xs = (jnp.arange(tokens.shape[0]), edge_params, (tokens[:, 0], tokens[:, 1]))
  return jax.lax.scan(edge, (lr, hr), xs)[0]


# The edges' reverse mode is written out: autodiff of the scan above zero-fills a buffer-sized
# cotangent and stacks every edge's residuals (the switch keeps those of all its branches), which
# made 85% of an all-identity step at the reference size buffer traffic (profiled: 2.1 s, 0.13 s
# of it convolutions). Each edge reads nodes finished before it, so the backward pass reads its
# input from the final buffers, recomputes the taken op under its own VJP, and adds the input
# gradient into the cotangent buffer in place, edges in reverse.
@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 5))
def _run_edges(kind: str, edge_params: dict, tokens: jax.Array, lr, hr, ctx: _Ctx):
  """Return the node buffers (lr, hr) of a cell after all its edges (see _edges_forward)."""
  return _edges_forward(kind, edge_params, tokens, lr, hr, ctx)


def _run_edges_fwd(kind, edge_params, tokens, lr, hr, ctx):
  out = _edges_forward(kind, edge_params, tokens, lr, hr, ctx)
  return out, (edge_params, tokens, out)


def _run_edges_bwd(kind, ctx, residuals, cotangents):
  edge_params, tokens, (lr, hr) = residuals

  def edge(carry, xs):
    cts = dict(zip(("lr", "hr"), carry, strict=True))
    e, ep, (inp, op) = xs
    name, dst = _edge_dst(kind, e)
    g = _pick(cts[name], dst)
    x_lr = _pick(lr, inp)
    x_hr = _pick(hr, inp - 2) if kind != "normal" else hr

    def branch(fn, k, hr_in):
      def run():
        x = x_hr if hr_in else x_lr
        _, vjp = jax.vjp(lambda p, x: fn(p, x, ctx), ep.get(k, {}), x)
        gp, gx = vjp(g.astype(ctx.dtype))
        grads = jax.tree.map(jnp.zeros_like, ep)
        if k in ep:
          grads[k] = gp
        zeros_lr, zeros_hr = jnp.zeros_like(x_lr), jnp.zeros_like(x_hr)
        return grads, (zeros_lr, gx.astype(x_hr.dtype)) if hr_in else (
          gx.astype(x_lr.dtype),
          zeros_hr,
        )

      return run

    branches = [branch(fn, k, hr_in) for _, fn, k, hr_in in _edge_branches(kind)]
    grads, (g_lr, g_hr) = jax.lax.switch(_branch_index(kind, inp, op), branches)
    # Out-of-range picks were clamped above; their (zero) gradients land on a clamped index too.
    cts["lr"] = jax.lax.dynamic_update_index_in_dim(cts["lr"], _pick(cts["lr"], inp) + g_lr, inp, 0)
    if kind != "normal":
      at = jnp.clip(inp - 2, 0, cts["hr"].shape[0] - 1)
      cts["hr"] = jax.lax.dynamic_update_index_in_dim(cts["hr"], _pick(cts["hr"], at) + g_hr, at, 0)
    return (cts["lr"], cts["hr"]), grads

  xs = (jnp.arange(tokens.shape[0]), edge_params, (tokens[:, 0], tokens[:, 1]))
  (ct_lr, ct_hr), grads = jax.lax.scan(edge, cotangents, xs, reverse=True)
  return grads, None, ct_lr, ct_hr


_run_edges.defvjp(_run_edges_fwd, _run_edges_bwd)


def _super_cell(kind: str, p: dict, s0, s1, tokens: jax.Array, ctx: _Ctx) -> jax.Array:
  """Return the cell output for per-edge tokens [2 * nodes, 2] (input, op), node-major.

  The edges run as one scan over a buffer of the cell's nodes (the nodes are alike but for how
  many inputs they may read), so the ops are traced once per cell, not once per edge: compile
  time does not grow with the number of nodes.
  """
  n = tokens.shape[0] // 2
  inputs = jnp.stack(_cell_in(p, s0, s1, ctx))
  if kind == "normal":
    lr = jnp.concatenate([inputs, jnp.zeros((n, *inputs.shape[1:]), ctx.dtype)])
    hr = lr[:0]
  else:
    lr = inputs
    s = ctx.scale
    _, b, h, w, c = inputs.shape
    hr = jnp.zeros((n, b, h * s, w * s, c), ctx.dtype)
  lr, hr = _run_edges(kind, p["edges"], tokens, lr, hr, ctx)
  nodes = lr[2:] if kind == "normal" else hr
  return _cell_out(list(nodes), p, ctx)


def _supernet_cell_params(kind: str, layers: int, nodes: int, ctx: _Ctx, name: str):
  ops = NORMAL_OPS if kind == "normal" else (*UP_OPS, _INNER_DECONV)
  specs = tuple((o, _op_spec(o, ctx)) for o in ops)
  return _BankParams(specs, _cell_convs(ctx, nodes), layers, 2 * nodes, name=name)


class _BankParams(nn.Module):
  """Create a supernet cell bank: every op of every edge [L, edges, ...] and the cell's own convs
  [L, ...]."""

  ops: tuple  # ((op, spec), ...)
  convs: tuple  # ((name, shape, bias), ...) from _cell_convs
  layers: int
  edges: int

  @nn.compact
  def __call__(self) -> dict:
    """Return {"edges": {op: params}, conv name: {"kernel", "bias"}, ...}."""
    edges = _EdgeParams(self.ops, (self.layers, self.edges), name="edges")()
    return {"edges": edges, **_conv_params(self.convs, (self.layers,))}


class HNASSupernet(SRFrame, nn.Module):
  """The HNAS weight-sharing supernet: __call__(x, tokens) with int32 tokens [8 * nodes + 1].

  Parameters: "stem" and "tail" (the frame), "normal" and "upsampling" (every edge's every op and
  the output conv, stacked over the L layers). The layers run as an LR scan then an HR scan;
  `lax.cond` runs a layer's normal cell only on its side of the position, so a step costs the
  child's work whatever the position.
  """

  layers: int = 12  # L
  nodes: int = 4  # intermediate nodes per cell
  channels: int = 8  # width C
  scale: int = 2  # 2, 3 or 4
  reduction: int = 3  # RCAB channel-attention reduction
  skip: str = "none"  # the global residual (see HNASNet)
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)
  remat: bool = False  # recompute each cell in the backward pass instead of storing it
  shifted: bool = False  # depthwise convs as shifted multiply-adds (the same function)
  # Layers per scan iteration: 0 unrolls both scans (XLA:CPU computes conv kernel gradients much
  # slower inside a rolled loop), 1 keeps them rolled (faster compile, less memory).
  unroll: int = 0
  cell_preprocess: str = "relu_conv"  # see HNAS
  conv_bias: bool = False  # see HNAS
  deconv_kernel: str = "released"  # see HNAS
  after_upsampling: str = "repeat"  # see HNAS

  @nn.compact
  def __call__(self, x: jax.Array, tokens: jax.Array) -> jax.Array:
    """Return the super-resolved NHWC batch of the architecture `tokens` (no Python branching)."""
    n, big_l, dt = self.nodes, self.layers, self.dtype
    tokens = jnp.asarray(tokens, jnp.int32)
    if tokens.shape != (8 * n + 1,):  # a static shape: no branching on sampled values
      raise TokenError(f"the hnas supernet expects {8 * n + 1} tokens, got shape {tokens.shape}")
    normal_t, up_t = tokens[: 4 * n].reshape(n, 4), tokens[4 * n : 8 * n].reshape(n, 4)
    pos = tokens[8 * n]  # 0-based layer of the upsampling cell
    ctx = _form_ctx(self, self.scale, dt, self.shifted, "HNASSupernet", tap_grad=self.shifted)

    def cell_tokens(t):  # [nodes, 4] -> per edge (input, op) [2 * nodes, 2]
      return t.reshape(2 * n, 2)

    def normal(p, s0, s1):
      return _super_cell("normal", p, s0, s1, cell_tokens(normal_t), ctx)

    def up(p, s0, s1):
      return _super_cell("up", p, s0, s1, cell_tokens(up_t), ctx)

    if self.remat:
      normal, up = jax.checkpoint(normal), jax.checkpoint(up)

    def phase(before: bool):
      def step(carry, xs):
        i, p = xs
        s0, s1 = carry
        run = i < pos if before else i > pos
        return jax.lax.cond(run, lambda: (s1, normal(p, s0, s1)), lambda: (s0, s1)), None

      return step

    def body(h0):
      normal_p = _supernet_cell_params("normal", big_l, n, ctx, name="normal")()
      up_p = _supernet_cell_params("up", big_l, n, ctx, name="upsampling")()
      layers = (jnp.arange(big_l), normal_p)
      unroll = self.unroll or big_l
      h0 = h0.astype(dt)
      (s0, s1), _ = jax.lax.scan(phase(True), (h0, h0), layers, unroll=unroll)
      p_up = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, pos, 0, False), up_p)
      out = up(p_up, s0, s1)
      carry = _after_up(s1, out, self.after_upsampling, dt)
      (_, s1), _ = jax.lax.scan(phase(False), carry, layers, unroll=unroll)
      return s1

    return _frame(x, body, ctx, n, self.skip)


# ----------------------------------------------------------------------------------------------
# The space.


@register("hnas")
@dataclasses.dataclass(frozen=True)
class HNAS(CostTable):
  """The HNAS search space: normal and upsampling cells of `nodes` nodes, L layers, a position.

  The defaults build the authors' network (guoyongcs/HNAS-SR `src/model/arch.py`, `enas.py`,
  `operations.py`) where the paper is silent or agrees: HNAS-A/B/C at C=64 have the released
  code's parameter counts exactly (tests/spaces/test_hnas.py). nasr's earlier choices stay as
  options (docs/fidelity.md lists every departure).

  Attributes:
    layers: number of cells L (paper: 12).
    nodes: intermediate nodes per cell (paper: 4, "B - 2").
    channels: width C of every op (paper: 8 to search, 64 to retrain).
    reduction: RCAB channel-attention reduction (the released code: 3; RCAN's own is 16).
    skip: the global residual: "none" (neither the paper nor the code has one), "image"
      (bicubic-upscaled input added to the output: short runs learn faster from it), "head"
      (stem features).
    cell_preprocess: "relu_conv" (released): each cell input through ReLU and a 1x1 conv from
      nodes * C to C, the cell output the concat of its nodes (nodes * C), stem 3 -> nodes * C,
      tail nodes * C -> 3; "concat_conv": one 1x1 conv of the concat back to C and a C-wide
      stem and tail (fewer parameters, about 14% at HNAS-A).
    conv_bias: False (released): no bias on the stem, the preprocessing and the separable /
      dilated convs; True: every conv has one.
    deconv_kernel: the stride-s deconvolution's kernel: "released" (3 at x2, 5 at x4, padding 1,
      output padding 1; at x3 the authors' form gives 3H - 2 rows, so a deconvolution on an
      upsampling cell input is refused there), "2s" (kernel 2s, any scale).
    after_upsampling: the inputs of the cell after the upsampling cell: "repeat" (released: the
      upsampling cell's output twice), "resize" (the LR cell before it, bilinearly resized, as
      the two-back input: a skip across the resolution change).
  """

  layers: int = 12
  nodes: int = 4
  channels: int = 8
  reduction: int = 3
  skip: str = "none"
  cell_preprocess: str = "relu_conv"
  conv_bias: bool = False
  deconv_kernel: str = "released"
  after_upsampling: str = "repeat"

  def __post_init__(self):
    for key in ("layers", "nodes", "channels", "reduction"):
      value = getattr(self, key)
      if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"hnas: {key} must be a positive integer, got {value!r}")
    if self.skip not in SKIPS:
      raise ConfigError(f"hnas: skip must be one of {SKIPS}, got {self.skip!r}")
    _check_forms(*(getattr(self, k) for k in FORMS), "hnas")

  def _ctx(self, scale: int, dtype: Dtype = jnp.float32, shifted: bool = False) -> _Ctx:
    """Return the op context of this space's forms at `scale`."""
    return _form_ctx(self, scale, dtype, shifted, "hnas")

  def _forms(self) -> dict:
    """Return the form options as HNASNet / HNASSupernet keywords."""
    return {
      "cell_preprocess": self.cell_preprocess,
      "conv_bias": self.conv_bias,
      "deconv_kernel": self.deconv_kernel,
      "after_upsampling": self.after_upsampling,
    }

  def token_spec(self) -> TokenSpec:
    """Return the spec: normal-cell tokens (group 0), upsampling-cell (1), position (2)."""
    n = self.nodes
    choices, names, heads, groups, labels = [], [], [], [], []
    for g, (kind, ops) in enumerate((("normal", NORMAL_OPS), ("upsampling", UP_OPS))):
      base = g * (n + 1)  # heads: one per node's inputs, one shared by the cell's ops
      for j in range(n):
        inputs = ("cell k-2", "cell k-1", *(f"node{m}" for m in range(j)))
        for t in range(2):
          choices += [j + 2, len(ops)]
          names += [f"{kind} node{j} input {SLOTS[t]}", f"{kind} node{j} op {SLOTS[t]}"]
          heads += [base + j, base + n]
          groups += [g, g]
          labels += [inputs, ops]
    choices.append(self.layers)
    names.append("upsampling position")
    heads.append(2 * (n + 1))
    groups.append(2)
    labels.append(tuple(f"layer {layer}" for layer in range(1, self.layers + 1)))
    return TokenSpec(
      tuple(choices),
      tuple(names),
      heads=tuple(heads),
      groups=tuple(groups),
      op_heads=(n, 2 * n + 1),  # one per cell
      choice_names=tuple(labels),
    )

  def decode(self, tokens: Sequence[int] | np.ndarray) -> HNASArch:
    """Return the architecture of `tokens`, or raise TokenError naming the bad position."""
    arr = self.token_spec().validate(tokens)
    n = self.nodes

    def cell(t, ops):
      return tuple(
        (int(t[4 * j]), ops[t[4 * j + 1]], int(t[4 * j + 2]), ops[t[4 * j + 3]]) for j in range(n)
      )

    normal, up = cell(arr[: 4 * n], NORMAL_OPS), cell(arr[4 * n : 8 * n], UP_OPS)
    return HNASArch(self.layers, n, normal, up, int(arr[8 * n]) + 1)

  def _check(self, arch: HNASArch) -> HNASArch:
    if not isinstance(arch, HNASArch):
      raise TokenError(f"expected an HNASArch, got {type(arch).__name__}")
    if (arch.layers, arch.nodes) != (self.layers, self.nodes):
      raise TokenError(
        f"architecture has layers={arch.layers}, nodes={arch.nodes}; this space has "
        f"layers={self.layers}, nodes={self.nodes}"
      )
    return arch

  def arch_from_dict(self, d: dict) -> HNASArch:
    """Return the architecture stored by `HNASArch.to_dict`, checked against this space."""
    return self._check(HNASArch.from_dict(d))

  def encode(self, arch: HNASArch) -> np.ndarray:
    """Return the tokens of `arch` (int32, shape [8 * nodes + 1])."""
    self._check(arch)
    out = []
    for cell, ops in ((arch.normal, NORMAL_OPS), (arch.upsampling, UP_OPS)):
      for a, oa, b, ob in cell:
        out += [a, ops.index(oa), b, ops.index(ob)]
    return np.asarray([*out, arch.position - 1], np.int32)

  def max_arch(self) -> HNASArch:
    """Return the most complex child: every normal edge a UDPB, every upsampling edge a
    sub-pixel conv on a cell input, the upsampling cell first (every normal cell at HR)."""
    n = self.nodes
    return HNASArch(
      self.layers, n, ((0, "udpb", 1, "udpb"),) * n, ((0, "sub_pixel", 1, "sub_pixel"),) * n, 1
    )

  def build(
    self, arch: HNASArch, scale: int, dtype: Dtype = jnp.float32, shifted: bool = False
  ) -> HNASNet:
    """Return the stand-alone network of `arch` at `scale` (shifted: CPU depthwise form)."""
    self._check(arch)
    if any(
      inp < 2 and op == "deconvolution"
      for node in arch.upsampling
      for inp, op in (node[:2], node[2:])
    ):
      _deconv_form(check_subpixel_scale(scale), self.deconv_kernel)  # x3: a clear error now
    return HNASNet(
      arch,
      self.channels,
      scale,
      self.reduction,
      self.skip,
      dtype,
      shifted,
      **self._forms(),
    )

  def supernet(
    self,
    scale: int,
    dtype: Dtype = jnp.float32,
    remat: bool = False,
    shifted: bool = False,
    unroll: int = 0,
  ) -> HNASSupernet:
    """Return the weight-sharing supernet; call it as model.apply(params, x, tokens).

    Args:
      scale: the upscaling factor.
      dtype: compute dtype (parameters stay float32).
      remat: recompute each cell in the backward pass (less memory, more compute).
      shifted: depthwise convs as shifted multiply-adds (the same function; fast on XLA:CPU).
      unroll: layers per scan iteration; 0 unrolls the layers (see HNASSupernet).
    """
    scale = check_subpixel_scale(scale)
    _deconv_form(scale, self.deconv_kernel)  # every op exists in the supernet: x3 fails now
    return HNASSupernet(
      self.layers,
      self.nodes,
      self.channels,
      scale,
      self.reduction,
      self.skip,
      dtype,
      remat,
      shifted,
      unroll,
      **self._forms(),
    )

  def supernet_options(self) -> frozenset[str]:
    """Return the keyword options of `supernet` besides scale."""
    return frozenset({"dtype", "remat", "shifted", "unroll"})

  def _piece(self, scale: int, side: int, form: str, op: str = "", at_hr: bool = False) -> tuple:
    """Return (key, module, input shape) of one cost piece: "frame", "resize", an edge of form
    "normal" | "up" | "inner" (at LR or HR), or a cell's own convs ("cell")."""
    c, n = self.channels, self.nodes
    ctx = self._ctx(scale)
    res = (1, side * scale, side * scale, c) if at_hr else (1, side, side, c)
    width = _cell_width(ctx, n)
    if form == "frame":
      return ("frame",), _Piece("frame", "", ctx, self.skip, n), (1, side, side, 3)
    if form == "resize":
      return ("resize",), _Piece("resize", "", ctx), (*res[:3], width)
    if form == "cell":
      return ("cell", res[1]), _Piece("cell", "", ctx, nodes=n), (*res[:3], n * c)
    return (form, op, res[1]), _Piece(form, op, ctx), res

  def _cell_convs_at_hr(self, layer: int, position: int) -> bool:
    """Return whether layer `layer`'s own convs run at HR: preprocessing reads the cell's
    inputs (LR up to the upsampling cell), the concat conv its output."""
    if self.cell_preprocess == "relu_conv":
      return layer > position
    return layer >= position

  def cost_pieces(
    self, arch: HNASArch, scale: int, side: int, deconvolutions: bool = True
  ) -> list[tuple]:
    """Return [(key, module, input shape)]: pieces whose costs add up to build(arch)'s.

    On a 1 x side x side LR image, the child's parameters and multiply-adds are the sums over
    these pieces' (a piece counted as often as it occurs); equal keys are equal pieces, so a
    caller that caches by key traces each distinct op once instead of every new child whole.
    `deconvolutions=False` leaves out the upsampling cell's deconvolutions (what HNAS's own
    counter missed: see `table_ii_pieces`).
    """
    self._check(arch)
    piece = functools.partial(self._piece, check_subpixel_scale(scale), side)
    pieces = [piece("frame")]
    if self.after_upsampling == "resize":
      pieces.append(piece("resize"))
    for i in range(arch.layers):
      layer = i + 1
      up = layer == arch.position
      for node in arch.upsampling if up else arch.normal:
        for inp, op in (node[:2], node[2:]):
          if up and op == "deconvolution" and not deconvolutions:
            continue
          if up:  # an upsampling edge reads the LR cell inputs; between its nodes it is at HR
            pieces.append(piece("inner", op, True) if inp >= 2 else piece("up", op, False))
          else:
            pieces.append(piece("normal", op, layer > arch.position))
      pieces.append(piece("cell", at_hr=self._cell_convs_at_hr(layer, arch.position)))
    return pieces

  def table_ii_pieces(self, arch: HNASArch, scale: int) -> list[tuple]:
    """Return the cost pieces HNAS's Table II counts, on its 48 x 48 LR probe.

    The authors' `compute_flops` (controller_trainer.py) hooks nn.Conv2d only, so their
    deconvolutions (nn.ConvTranspose2d) are not counted, and Table II gives that count on a
    48 x 48 LR input times 1e-8: one tenth of the G multiply-adds at 480 x 480 that their comment
    equates it with. `estimation`-side callers sum these (nasr.searches.reward.table_ii_mult_adds).
    """
    return self.cost_pieces(arch, scale, TABLE_II_SIDE, deconvolutions=False)

  def cost_table(self, piece_cost, scale: int, side: int):
    """Return cost(tokens) -> (parameters, multiply-adds per LR pixel) in jnp (traceable).

    The sum over `cost_pieces(decode(tokens), scale, side)` computed from the tokens alone, so a
    search can compute its reward on the device; `piece_cost(key, module, shape)` returns
    (parameters, multiply-adds) of one piece (the caller caches it). float32: exact to ~1e-7.
    """
    scale = check_subpixel_scale(scale)
    n, layers = self.nodes, self.layers

    # numpy: constants of the traced function (closed-over device arrays would be read back).
    def row(*args) -> np.ndarray:
      return np.asarray(piece_cost(*self._piece(scale, side, *args)), np.float32)

    fixed = row("frame") + (row("resize") if self.after_upsampling == "resize" else 0)
    tables = {
      "fixed": fixed,
      "normal": np.stack([np.stack([row("normal", op, hr) for op in NORMAL_OPS]) for hr in (0, 1)]),
      "up": np.stack([row("up", op, False) for op in UP_OPS]),
      "inner": np.stack([row("inner", op, True) for op in UP_OPS]),
      "convs_lr": row("cell", "", False),
      "convs_hr": row("cell", "", True),
    }
    # The upsampling cell's own convs: at LR (preprocessing its inputs) or HR (its output's).
    up_convs = "convs_lr" if self.cell_preprocess == "relu_conv" else "convs_hr"

    def cost(tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
      t = {k: jnp.asarray(v) for k, v in tables.items()}
      fixed, normal, up, inner = t["fixed"], t["normal"], t["up"], t["inner"]
      convs_lr, convs_hr = t["convs_lr"], t["convs_hr"]
      normal_ops = tokens[1 : 4 * n : 2]  # (input, op) pairs: the ops at odd positions
      up_in, up_ops = tokens[4 * n : 8 * n : 2], tokens[4 * n + 1 : 8 * n : 2]
      position = tokens[8 * n] + 1
      cell_lr, cell_hr = (jnp.sum(normal[hr, normal_ops], axis=0) for hr in (0, 1))
      up_cell = jnp.sum(jnp.where(up_in[:, None] >= 2, inner[up_ops], up[up_ops]), axis=0)
      total = (
        fixed
        + (position - 1) * (cell_lr + convs_lr)
        + up_cell
        + t[up_convs]
        + (layers - position) * (cell_hr + convs_hr)
      )
      return total[0], total[1] / (side * side)

    return cost

  def count_params(self, arch: HNASArch, scale: int) -> int:
    """Return the exact parameter count of build(arch, scale) (shapes only, no compute)."""
    return count_module_params(self.build(arch, check_subpixel_scale(scale)))

  def child_params(self, supernet_params: dict, arch: HNASArch) -> dict:
    """Return the parameters of build(arch) taken from the supernet's shared weights.

    Accepts the supernet's params tree or its variables ({"params": ...}) and returns the same
    form.
    """
    self._check(arch)
    if "params" in supernet_params:
      return {"params": self.child_params(supernet_params["params"], arch)}
    p = supernet_params
    out = {k: v for k, v in p.items() if k not in ("normal", "upsampling")}
    for i in range(arch.layers):
      up = i + 1 == arch.position
      bank = p["upsampling" if up else "normal"]
      cell_p = {k: jax.tree.map(lambda a, i=i: a[i], v) for k, v in bank.items() if k != "edges"}
      for j, node in enumerate(arch.upsampling if up else arch.normal):
        for t in range(2):
          inp, op = node[2 * t], node[2 * t + 1]
          if up and inp >= 2:
            op = _INNER_DECONV if op == "deconvolution" else None
          if op and bank["edges"].get(op):
            e = 2 * j + t
            sliced = jax.tree.map(lambda a, i=i, e=e: a[i, e], bank["edges"][op])
            cell_p[_edge_name(j, t)] = {op: sliced}
      out[f"cell{i}"] = cell_p
    return out
