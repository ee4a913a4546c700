"""The DeCoNAS search space (Ahn and Cho, "Neural Architecture Search for Image Super-Resolution
Using Densely Constructed Search Space: DeCoNAS", ICPR 2020).

Network (RDN-like, no batch norm, NHWC RGB in [0, 1]; the DIV2K mean is subtracted at the input and
added back at the output, like the EDSR baseline; the mean shift has no parameters):

  SFENet  F_-1 = conv3x3(x), F_0 = conv3x3(F_-1)
  DeCoNet F_1 = DNB_1(F_0), F_d = DNB_d(conv1x1(concat(F_0..F_d-1)))                  d = 2..N
  GFF     F_GF = conv3x3(conv1x1(concat(g_0 F_0, .., g_N-1 F_N-1, F_N))) + F_-1     eq. (4)
  UPNet   conv3x3 to r*r*C, pixel shuffle (x4: two x2 stages), conv3x3 to 3 channels.

DeCoNet as the authors' released code builds it (github.com/Junem360/DeCoNAS,
src/DIV2K/child_network.py: a "block connection" after every DNB). Eq. (3) writes the 1x1 conv
before DNB 1 too; the code has none there, and after DNB N it creates one whose output nothing
reads: its parameters are the network's (the authors' checkpoint holds them, the paper's 1,713K
counts them), its multiply-adds are not. `DeCoNAS.fuse_before_first` builds eq. (3) literally.

A DNB has M mix nodes; node 0 is the DNB input and node m reads nodes 0..m-1. For each pair
(m, j) three bits say which of the ops [conv3x3, sepconv3x3, dilconv3x3 (rate 3)] read node j;
op k of node m reads the channel concat of its selected inputs and is pre-activated (ReLU, then
conv with bias). Node m = CA(ReLU(mean of its active ops)), or node m-1 when it has no active op
(eq. (5)-(6)). LFF: conv1x1(concat(l_0 node_0, .., l_M-1 node_M-1, node_M)) + DNB input. Every DNB
uses the same tokens with its own weights.

Fusion bits, as eq. (4) writes them: the N GFF bits g_0..g_N-1 gate F_0..F_N-1 and the last DNB
output F_N always feeds GFF; likewise the M LFF bits l_0..l_M-1 gate nodes 0..M-1 and the last
node always feeds LFF. Without fusion search every gate is 1. So every bit the controller emits
matters; none is forced.

Parameters of the paper's DeCoNASNet (N=4, M=4, C=64, x2): 1,713,795, the paper's 1,713K and,
variable for variable, the authors' released x2 checkpoint (outputs/x2/model.ckpt-931000.index):
SFENet 1,792 + 36,928; per DNB 352,640 (mix nodes 80,720, 80,656, 48,464 and 122,256, each
with a channel attention of reduction 4 with biases, 2,128; LFF 20,544); the 1x1 convs after the
DNBs 8,256, 12,352, 16,448 and 20,544 (the unused one); GFF 20,544 + 36,928; UPNet 147,712 +
1,731. nasr's network before issue 26 had 1,698,947, the options `fuse_before_first` and
`depthwise_bias` together: 16,384 fewer in the 1x1 convs between DNBs (C*C*(1+2+3+4) + 4C
instead of C*C*(2+3+4+5) + 4C) and 1,536 more in depthwise biases (6 separable input slots per
DNB, C each, 4 DNBs), which the authors' separable conv does not have.

Tokens (bit form, what strategies search): G = M(M+1)/2 groups of 3 bits ordered (m=1,j=0),
(m=2,j=0), (m=2,j=1), (m=3,j=0), ...; with `fusion_search`, then the M LFF bits and the N GFF bits.
The paper's compact form has one integer 0..7 per group with the conv3x3 bit most significant
(4 = conv only, 1 = dilated only).

Example:
  space = nasr.spaces.get("deconas", blocks=4, nodes=4, channels=64)
  arch = space.decode([7, 6, 4, 3, 0, 2, 2, 3, 4, 1])
  model = space.build(arch, scale=2)
"""

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nasr.core.errors import ConfigError, TokenError
from nasr.core.types import TokenSpec
from nasr.ops.attention import ChannelAttention
from nasr.ops.conv import Conv, SepConv
from nasr.ops.frame import SRFrame, sr_frame
from nasr.ops.functional import conv, depthwise
from nasr.ops.params import ConvParams, SepConvParams
from nasr.ops.upsample import check_subpixel_scale
from nasr.spaces.base import ArchJSON, CostTable, count_module_params
from nasr.spaces.registry import register

Dtype = Any

OPS = ("conv3x3", "sepconv3x3", "dilconv3x3")  # op k <-> bit k of a group; k=0 is most significant
DILATION = (1, 1, 3)  # per op


def num_groups(nodes: int) -> int:
  """Return the number of (node, input) pairs of a DNB with `nodes` mix nodes."""
  return nodes * (nodes + 1) // 2


def group_index(m: int, j: int) -> int:
  """Return the group of the pair (node m reads node j), 1 <= m, 0 <= j < m."""
  return m * (m - 1) // 2 + j


def _groups(nodes: int) -> list[tuple[int, int]]:
  return [(m, j) for m in range(1, nodes + 1) for j in range(m)]


@dataclasses.dataclass(frozen=True)
class DeCoNASArch(ArchJSON):
  """A DeCoNAS architecture: op bits per (node, input) pair and the feature-fusion bits.

  Attributes:
    blocks: number of DNBs (N).
    nodes: mix nodes per DNB (M).
    ops: 3 * M(M+1)/2 bits, group-major: ops[3 * group_index(m, j) + k] = op k of node m reads j.
    lff: M bits: lff[m] = node m (0..M-1) feeds local feature fusion; node M always does.
    gff: N bits: gff[d] = F_d (0..N-1; F_0 is the SFENet output) feeds global feature fusion;
      F_N always does.
  """

  blocks: int
  nodes: int
  ops: tuple[int, ...]
  lff: tuple[int, ...]
  gff: tuple[int, ...]

  def __post_init__(self):
    for field in ("ops", "lff", "gff"):
      object.__setattr__(self, field, tuple(int(b) for b in getattr(self, field)))
    expected = {"ops": 3 * num_groups(self.nodes), "lff": self.nodes, "gff": self.blocks}
    for field, n in expected.items():
      bits = getattr(self, field)
      if len(bits) != n or any(b not in (0, 1) for b in bits):
        raise TokenError(f"DeCoNASArch.{field} needs {n} bits (0 or 1), got {bits}")

  def bit(self, m: int, j: int, k: int) -> int:
    """Return whether op k of node m reads node j."""
    return self.ops[3 * group_index(m, j) + k]

  def inputs(self, m: int, k: int) -> list[int]:
    """Return the nodes op k of node m reads (empty: the op is inactive)."""
    return [j for j in range(m) if self.bit(m, j, k)]

  def compact(self) -> list[int]:
    """Return the paper's compact form: one integer 0..7 per group (conv3x3 bit first)."""
    o = self.ops
    return [4 * o[3 * g] + 2 * o[3 * g + 1] + o[3 * g + 2] for g in range(len(o) // 3)]

  def live_nodes(self) -> list[bool]:
    """Return, per node 0..M, whether its value reaches the DNB output (else it is skipped)."""
    live = [True] + [bool(self.lff[m]) for m in range(1, self.nodes)] + [True]
    for m in range(self.nodes, 0, -1):
      if not live[m]:
        continue
      readers = [j for k in range(3) for j in self.inputs(m, k)]
      for j in readers or [m - 1]:  # a node without ops passes node m-1 on
        live[j] = True
    return live


# ----------------------------------------------------------------------------------------------
# Stand-alone child network (architecture static).


def _node_plan(arch: DeCoNASArch) -> dict[int, list[tuple[int, list[int]]]]:
  """Return, per live node m with ops, its active ops as (k, inputs); the child builds these."""
  live = arch.live_nodes()
  plan = {}
  for m in range(1, arch.nodes + 1):
    ops = [(k, arch.inputs(m, k)) for k in range(3) if arch.inputs(m, k)]
    if live[m] and ops:
      plan[m] = ops
  return plan


def _child_op(
  k: int, channels: int, dtype: Dtype, name: str, shifted: bool, depthwise_bias: bool
) -> nn.Module:
  if OPS[k] == "sepconv3x3":
    return SepConv(
      channels, 3, dtype=dtype, shifted=shifted, depthwise_bias=depthwise_bias, name=name
    )
  return Conv(channels, 3, DILATION[k], dtype=dtype, name=name)


class DeCoNASBlock(nn.Module):
  """One densely connected network block (DNB) of a fixed architecture."""

  arch: DeCoNASArch  # the architecture (static, hashable)
  channels: int = 64  # feature width
  reduction: int = 4  # channel-attention reduction
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)
  shifted: bool = False  # depthwise convs as shifted multiply-adds (the same function)
  depthwise_bias: bool = False  # the separable convs' depthwise convs have biases too

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return the block output (same shape as x)."""
    arch, plan, live = self.arch, _node_plan(self.arch), self.arch.live_nodes()
    feats: list[jax.Array | None] = [x]
    for m in range(1, arch.nodes + 1):
      if not live[m]:
        feats.append(None)  # read by nothing that reaches the output
      elif m not in plan:
        feats.append(feats[m - 1])
      else:
        outs = []
        for k, inputs in plan[m]:
          h = nn.relu(jnp.concatenate([feats[j] for j in inputs], axis=-1))
          name = f"node{m}_{OPS[k]}"
          op = _child_op(k, self.channels, self.dtype, name, self.shifted, self.depthwise_bias)
          outs.append(op(h))
        h = nn.relu(sum(outs) / len(outs))
        feats.append(
          ChannelAttention(self.channels, self.reduction, self.dtype, name=f"node{m}_attention")(h)
        )
    fused = [feats[m] for m in range(arch.nodes) if arch.lff[m]] + [feats[arch.nodes]]
    y = Conv(self.channels, 1, dtype=self.dtype, name="lff")(jnp.concatenate(fused, axis=-1))
    return y + x.astype(y.dtype)


class DeCoNASNet(SRFrame, nn.Module):
  """A DeCoNAS network of a fixed architecture: NHWC [0, 1] RGB to `scale` times it (float32)."""

  arch: DeCoNASArch  # the architecture (static, hashable)
  channels: int = 64  # feature width C
  scale: int = 2  # 2, 3 or 4
  reduction: int = 4  # channel-attention reduction (C -> C / reduction -> C)
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)
  shifted: bool = False  # depthwise convs as shifted multiply-adds (the same function)
  fuse_before_first: bool = False  # 1x1 convs before DNBs 1..N (eq. (3) literally), none after N
  depthwise_bias: bool = False  # the separable convs' depthwise convs have biases too

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return the super-resolved NHWC batch."""
    c, dt, n = self.channels, self.dtype, self.arch.blocks

    def body(f_m1):
      feats = [Conv(c, 3, dtype=dt, name="sfe2")(f_m1)]
      h = feats[0]  # the authors' DNB 1 reads F_0 itself
      for d in range(n):
        if self.fuse_before_first:
          h = Conv(c, 1, dtype=dt, name=f"fuse{d}")(jnp.concatenate(feats, axis=-1))
        block = DeCoNASBlock(
          self.arch,
          c,
          self.reduction,
          dt,
          self.shifted,
          depthwise_bias=self.depthwise_bias,
          name=f"block{d}",
        )
        feats.append(block(h))
        if self.fuse_before_first:
          continue
        if d < n - 1:
          h = Conv(c, 1, dtype=dt, name=f"connect{d}")(jnp.concatenate(feats, axis=-1))
        else:
          # The authors' code creates a connection after the last DNB too but reads nothing from
          # it: its parameters are the network's (in their checkpoint and the paper's 1,713K),
          # its multiply-adds are not (nothing computes it).
          ConvParams((1, 1, (n + 1) * c, c), name=f"connect{d}")()
      sel = [feats[d] for d in range(n) if self.arch.gff[d]] + [feats[n]]
      return Conv(c, 1, dtype=dt, name="gff_fuse")(jnp.concatenate(sel, axis=-1))

    # SFENet's first conv is the head, GFF's 3x3 conv the body conv: F_GF + F_-1 is the long skip.
    return sr_frame(x, body, c, self.scale, dt, head="sfe1", body_conv="gff_conv")


class _CostPiece(nn.Module):
  """One additive piece of a DeCoNASNet's cost (`DeCoNAS.cost_pieces`); its output is unused."""

  # "frame" (everything outside the DNBs and fusions), "conv1x1", "unused1x1" (a 1x1 conv's
  # parameters, never applied), "op", "attention"
  kind: str
  channels: int
  scale: int = 2
  reduction: int = 4
  op: int = 0  # OPS index of an "op" piece
  depthwise_bias: bool = False  # of a separable "op" piece

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return the piece's output."""
    c = self.channels
    if self.kind == "frame":
      body = lambda f: Conv(c, 3, name="sfe2")(f)  # noqa: E731 - F_0; the rest are other pieces
      return sr_frame(x, body, c, self.scale, head="sfe1", body_conv="gff_conv")
    if self.kind == "conv1x1":
      return Conv(c, 1, name="conv")(x)
    if self.kind == "unused1x1":
      ConvParams((1, 1, x.shape[-1], c), name="conv")()
      return x
    if self.kind == "op":
      return _child_op(self.op, c, jnp.float32, "op", False, self.depthwise_bias)(x)
    return ChannelAttention(c, self.reduction, jnp.float32, name="attention")(x)


# ----------------------------------------------------------------------------------------------
# Weight-sharing supernet (architecture as an array argument: compiled once).


def _masked_concat(xs: Sequence[jax.Array], mask: jax.Array) -> jax.Array:
  return jnp.concatenate([x * mask[j].astype(x.dtype) for j, x in enumerate(xs)], axis=-1)


def _select(bit: jax.Array, fn, like: jax.Array) -> jax.Array:
  # lax.cond: the unselected slot costs nothing (only the child's work is done).
  return jax.lax.cond(bit > 0, fn, lambda: jnp.zeros_like(like))


def _selected_first(bits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Return (order, count): slot indices with the selected ones first (in slot order), and how
  many are selected."""
  return jnp.argsort(bits <= 0, stable=True), jnp.sum(bits > 0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _permute(a: jax.Array, order: jax.Array, axis: int) -> jax.Array:
  """Return `a` permuted along `axis` into `order` (a permutation: its gradient is a gather too,
  not the scatter-add of a general take)."""
  return jnp.take(a, order, axis=axis)


def _permute_fwd(a, order, axis):
  return _permute(a, order, axis), order


def _permute_bwd(axis, order, g):
  return jnp.take(g, jnp.argsort(order), axis=axis), None


_permute.defvjp(_permute_fwd, _permute_bwd)


def _take_slots(a: jax.Array, order: jax.Array, width: int, axis: int) -> jax.Array:
  """Return `a` with its width-sized slots along `axis` permuted into `order`."""
  shape = a.shape
  slots = a.reshape(*shape[:axis], shape[axis] // width, width, *shape[axis + 1 :])
  return _permute(slots, order, axis).reshape(shape)


def _by_count(count: jax.Array, slots: int, branch, like: jax.Array) -> jax.Array:
  """Return branch(count) (zeros for 0), one lax.switch: branch i computes over i slots only."""
  branches = [lambda: jnp.zeros_like(like)]
  branches += [functools.partial(branch, i) for i in range(1, slots + 1)]
  return jax.lax.switch(count, branches)


class DeCoNASSuperBlock(nn.Module):
  """A DNB whose architecture is an array argument; all ops exist at their largest shape."""

  nodes: int  # mix nodes M
  channels: int = 64  # feature width
  reduction: int = 4  # channel-attention reduction
  skip_inactive: bool = False  # lax.cond per input slot instead of masks
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)
  shifted: bool = False  # depthwise convs as shifted multiply-adds (fast on CPU, same function)
  tap_grad: bool = False  # dense-conv gradients as tap matmuls (fast in a rolled loop on CPU)
  gathered: bool = False  # with skip_inactive: one conv per op over its gathered slots
  depthwise_bias: bool = False  # the separable convs' depthwise convs have biases too

  def _op(
    self, m: int, k: int, xs: list[jax.Array], bits: jax.Array, stack: jax.Array | None = None
  ) -> jax.Array:
    """Return op k of node m over its input slots xs (ReLU'd) selected by bits [m]; `stack` is
    xs stacked [m, B, H, W, C] (the gathered form's input)."""
    c, dt, name, tg = self.channels, self.dtype, f"node{m}_{OPS[k]}", self.tap_grad
    if self.skip_inactive and self.gathered:
      # The selected slots first, as one buffer: the conv over its first `count` slots is the
      # child's conv over concat(selected inputs); lax.switch picks that width (a static shape).
      order, count = _selected_first(bits)
      g = _permute(stack, order, 0)
      buf = jnp.moveaxis(g, 0, 3).reshape(*g.shape[1:4], m * c)
    if OPS[k] == "sepconv3x3":
      (dw, dwb), (pw, pwb) = SepConvParams(3, m * c, c, self.depthwise_bias, name=name)()
      sl = lambda j: slice(j * c, (j + 1) * c)  # noqa: E731
      cut = lambda b, s: None if b is None else b[s]  # noqa: E731 - the depthwise bias, if any

      if self.skip_inactive and self.gathered:
        dw, pw = _take_slots(dw, order, c, 3), _take_slots(pw, order, c, 2)
        dwb = None if dwb is None else _take_slots(dwb, order, c, 0)

        def width(i):
          n = i * c
          b = cut(dwb, slice(n))
          h = depthwise(buf[..., :n], dw[..., :n], 1, b, dtype=dt, shifted=self.shifted)
          return conv(h, pw[:, :, :n, :], dtype=dt, tap_grad=tg)

        return _by_count(count, m, width, xs[0]) + pwb.astype(dt)

      def slot(j):
        b = cut(dwb, sl(j))
        h = depthwise(xs[j], dw[..., sl(j)], 1, b, dtype=dt, shifted=self.shifted)
        return conv(h, pw[:, :, sl(j), :], dtype=dt, tap_grad=tg)

      if self.skip_inactive:
        return sum(_select(bits[j], functools.partial(slot, j), xs[0]) for j in range(m)) + pwb
      # Depthwise conv acts per channel, so masking after it equals dropping the slot.
      h = depthwise(jnp.concatenate(xs, axis=-1), dw, 1, dwb, dtype=dt, shifted=self.shifted)
      h = h * jnp.repeat(bits, c).astype(dt)
      return conv(h, pw, pwb, dtype=dt, tap_grad=tg)
    kernel, bias = ConvParams((3, 3, m * c, c), name=name)()
    dil = DILATION[k]
    if self.skip_inactive and self.gathered:
      kernel = _take_slots(kernel, order, c, 2)

      def width(i):
        return conv(
          buf[..., : i * c], kernel[:, :, : i * c, :], dtype=dt, dilation=dil, tap_grad=tg
        )

      return _by_count(count, m, width, xs[0]) + bias.astype(dt)
    if self.skip_inactive:

      def slot(j):
        return conv(
          xs[j], kernel[:, :, j * c : (j + 1) * c, :], dtype=dt, dilation=dil, tap_grad=tg
        )

      return sum(_select(bits[j], functools.partial(slot, j), xs[0]) for j in range(m)) + bias
    # A conv of the concat is the sum of per-slot convs: zeroing a slot drops it.
    return conv(_masked_concat(xs, bits), kernel, bias, dtype=dt, dilation=dil, tap_grad=tg)

  @nn.compact
  def __call__(self, x: jax.Array, ops: jax.Array, lff: jax.Array) -> jax.Array:
    """Return the block output for op bits `ops` [G, 3] and LFF bits `lff` [M] (int32)."""
    c, dt = self.channels, self.dtype
    x = x.astype(dt)
    feats = [x]
    for m in range(1, self.nodes + 1):
      g0 = group_index(m, 0)
      bits = ops[g0 : g0 + m]  # [m, 3]
      active = jnp.any(bits > 0, axis=0)  # [3]
      xs = [nn.relu(f) for f in feats]
      stack = jnp.stack(xs) if self.skip_inactive and self.gathered else None
      total = jnp.zeros_like(x)
      for k in range(3):
        out = self._op(m, k, xs, bits[:, k], stack)
        total = total + jnp.where(active[k], out, 0.0)
      count = jnp.sum(active)
      h = nn.relu(total / jnp.maximum(count, 1).astype(dt))
      h = ChannelAttention(c, self.reduction, dt, name=f"node{m}_attention")(h)
      feats.append(jnp.where(count > 0, h, feats[m - 1]))
    mask = jnp.concatenate([lff, jnp.ones((1,), lff.dtype)])  # the last node always feeds LFF
    kernel, bias = ConvParams((1, 1, (self.nodes + 1) * c, c), name="lff")()
    y = conv(_masked_concat(feats, mask), kernel, bias, dtype=dt, tap_grad=self.tap_grad)
    return y + x


class _DenseStep(nn.Module):
  """One DNB of the supernet as a scan step: run the block on its input, store its output, and
  fuse the features so far into the next block's input (with `fuse_before_first`: fuse first).

  The carry is (stack, h, d): stack [N+1, B, H, W, C] holds F_0..F_N (zeros where not yet
  computed), h is the next DNB's input and d counts the DNBs done. The fuse kernel exists at its
  largest width (N+1)*C; the slots after F_d+1 (F_d) are masked, which equals the child's
  connect{d} (fuse{d}): a conv1x1 over concat(F_0..F_d+1) (concat(F_0..F_d)).
  """

  nodes: int
  channels: int
  blocks: int
  reduction: int
  skip_inactive: bool
  dtype: Dtype
  shifted: bool
  tap_grad: bool
  gathered: bool
  fuse_before_first: bool
  depthwise_bias: bool

  @nn.compact
  def __call__(self, carry, ops: jax.Array, lff: jax.Array):
    """Return ((stack with F_d+1 written, the next DNB's input, d + 1), None)."""
    stack, h, d = carry
    c, n, dt = self.channels, self.blocks, self.dtype
    kernel, bias = ConvParams((1, 1, (n + 1) * c, c), name="fuse")()

    def fuse(stack, upto):
      mask = jnp.arange(n + 1) <= upto
      y = conv(_stack_concat(stack, mask), kernel, bias, dtype=dt, tap_grad=self.tap_grad)
      return y.astype(stack.dtype)

    if self.fuse_before_first:
      h = fuse(stack, d)
    block = DeCoNASSuperBlock(
      self.nodes,
      c,
      self.reduction,
      self.skip_inactive,
      dt,
      self.shifted,
      self.tap_grad,
      self.gathered,
      self.depthwise_bias,
      name="block",
    )
    y = block(h, ops, lff)
    stack = jax.lax.dynamic_update_index_in_dim(stack, y.astype(stack.dtype), d + 1, 0)
    if not self.fuse_before_first:
      # After the last DNB this is the connection nothing reads (see DeCoNASNet): one idle 1x1
      # conv per step, the price of a scan body that is the same at every step.
      h = fuse(stack, d + 1)
    return (stack, h, d + 1), None


def _stack_concat(stack: jax.Array, mask: jax.Array) -> jax.Array:
  """Return concat over slots of stack [S, B, H, W, C] * mask [S] as [B, H, W, S*C]."""
  s, b, h, w, c = stack.shape
  masked = stack * mask.astype(stack.dtype)[:, None, None, None, None]
  return jnp.moveaxis(masked, 0, 3).reshape(b, h, w, s * c)


class DeCoNASSupernet(SRFrame, nn.Module):
  """The DeCoNAS weight-sharing supernet: __call__(x, tokens) with bit-form int32 tokens.

  The N DNBs run as one `nn.scan` (parameters stacked under "dense" with a leading axis N). With
  `remat` the loop stays rolled and stores only each block's input for the backward pass (XLA's
  CPU scheduler does not honour rematerialisation in unrolled code, but does in a scanned body).
  `DeCoNAS.child_params` maps this layout onto the child's.
  """

  blocks: int = 4  # DNBs N
  nodes: int = 4  # mix nodes per DNB M
  channels: int = 64  # feature width C
  scale: int = 2  # 2, 3 or 4
  fusion_search: bool = False  # tokens carry M LFF and N GFF bits after the op bits
  skip_inactive: bool = False  # lax.cond per input slot (only the child's cost) instead of masks
  reduction: int = 4  # channel-attention reduction
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)
  # Recompute each DNB's activations in the backward pass instead of storing them: the masked
  # paper-size step (N=16, M=8, C=64, 16 x 64x64) needs 47.6 GiB without it (BENCHMARKS.md).
  remat: bool = False
  shifted: bool = False  # depthwise convs as shifted multiply-adds (fast on CPU, same function)
  # DNBs per iteration of the scan; None = 1 (a rolled loop) with `remat` or `shifted`, else N
  # (unrolled). Only the rolled loop lets XLA:CPU keep just each DNB's input for the backward
  # pass, and it compiles faster; but there XLA:CPU computes conv kernel gradients ~40x slower
  # unless `shifted` writes them out (BENCHMARKS.md).
  unroll: int | None = None
  # With skip_inactive: per op, the selected input slots gathered into one buffer and one conv
  # over them picked by their count (lax.switch): M*3 conditionals and convs per DNB instead of
  # one per (node, input, op), the child's FLOPs either way (BENCHMARKS.md).
  gathered: bool = False
  fuse_before_first: bool = False  # 1x1 convs before DNBs 1..N (eq. (3) literally), none after N
  depthwise_bias: bool = False  # the separable convs' depthwise convs have biases too

  def __post_init__(self):
    if self.unroll is not None and not 1 <= self.unroll <= self.blocks:
      raise ConfigError(f"unroll must be in 1..blocks={self.blocks}, got {self.unroll}")
    super().__post_init__()

  def blocks_per_iteration(self) -> int:
    """Return the DNBs per scan iteration (the resolved `unroll`)."""
    if self.unroll is not None:
      return self.unroll
    return 1 if self.remat or self.shifted else self.blocks

  @nn.compact
  def __call__(self, x: jax.Array, tokens: jax.Array) -> jax.Array:
    """Return the super-resolved NHWC batch of the architecture `tokens` (no Python branching)."""
    c, dt, n, mm = self.channels, self.dtype, self.blocks, self.nodes
    g = num_groups(mm)
    tokens = jnp.asarray(tokens, jnp.int32)
    expected = 3 * g + (mm + n if self.fusion_search else 0)
    if tokens.shape != (expected,):  # a static shape: no branching on sampled values
      raise TokenError(f"the supernet expects {expected} bit tokens, got shape {tokens.shape}")
    ops = tokens[: 3 * g].reshape(g, 3)
    if self.fusion_search:
      lff = tokens[3 * g : 3 * g + mm]
      gff = tokens[3 * g + mm : 3 * g + mm + n]
    else:
      lff, gff = jnp.ones((mm,), jnp.int32), jnp.ones((n,), jnp.int32)
    # In a rolled loop XLA:CPU computes conv kernel gradients ~40x slower: `shifted` (the
    # CPU-friendly forms) then writes them out as tap matmuls too.
    tap_grad = self.shifted and self.blocks_per_iteration() < n

    def body(f_m1):
      f0 = Conv(c, 3, dtype=dt, name="sfe2")(f_m1)
      step_cls = nn.remat(_DenseStep) if self.remat else _DenseStep
      dense = nn.scan(
        step_cls,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=(nn.broadcast, nn.broadcast),
        length=n,
        unroll=self.blocks_per_iteration(),
      )(
        mm,
        c,
        n,
        self.reduction,
        self.skip_inactive,
        dt,
        self.shifted,
        tap_grad,
        self.gathered,
        self.fuse_before_first,
        self.depthwise_bias,
        name="dense",
      )
      stack = jnp.zeros((n + 1, *f0.shape), f0.dtype).at[0].set(f0)
      (stack, _, _), _ = dense((stack, f0, jnp.int32(0)), ops, lff)
      kernel, bias = ConvParams((1, 1, (n + 1) * c, c), name="gff_fuse")()
      gmask = jnp.concatenate([gff, jnp.ones((1,), gff.dtype)])  # F_N always feeds GFF
      return conv(_stack_concat(stack, gmask), kernel, bias, dtype=dt)

    return sr_frame(x, body, c, self.scale, dt, head="sfe1", body_conv="gff_conv")


# ----------------------------------------------------------------------------------------------
# The space.


def _slots(a: jax.Array, slots: Sequence[int], width: int, axis: int) -> jax.Array:
  """Return the concat along `axis` of the width-sized slices of `a` at `slots`."""
  parts = [jax.lax.slice_in_dim(a, j * width, (j + 1) * width, axis=axis) for j in slots]
  return jnp.concatenate(parts, axis=axis)


@register("deconas")
@dataclasses.dataclass(frozen=True)
class DeCoNAS(CostTable):
  """The DeCoNAS search space: N DNBs of M mix nodes with searched op/input bits.

  Attributes:
    blocks: number of DNBs N.
    nodes: mix nodes per DNB M.
    channels: feature width C.
    fusion_search: also search which nodes feed LFF and which DNBs feed GFF.
    reduction: channel-attention reduction (the bottleneck has C // reduction channels).
    fuse_before_first: eq. (3) read literally: a 1x1 conv over concat(F_0..F_d-1) before every
      DNB d, the first included, and none after the last (nasr's network before issue 26; N*C*C
      fewer parameters). Off, as the authors' code: DNB 1 reads F_0 itself, a 1x1 conv over
      concat(F_0..F_d) follows every DNB d, and nothing reads the last one's output.
    depthwise_bias: the separable convs' depthwise convs have biases too, before the pointwise
      conv's (nasr's network before issue 26): the same function class with C more parameters
      per input slot of a separable conv. Off, as the authors' code: one bias, after the
      pointwise conv.
  """

  blocks: int = 4
  nodes: int = 4
  channels: int = 64
  fusion_search: bool = False
  reduction: int = 4
  fuse_before_first: bool = False
  depthwise_bias: bool = False

  def __post_init__(self):
    for key in ("blocks", "nodes", "channels", "reduction"):
      value = getattr(self, key)
      if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"deconas: {key} must be a positive integer, got {value!r}")
    for key in ("fusion_search", "fuse_before_first", "depthwise_bias"):
      if not isinstance(getattr(self, key), bool | np.bool_):
        raise ConfigError(f"deconas: {key} must be a bool, got {getattr(self, key)!r}")

  @property
  def num_groups(self) -> int:
    """Return G = M(M+1)/2, the number of (node, input) pairs."""
    return num_groups(self.nodes)

  def _names(self) -> list[str]:
    names = [f"node{m}<-node{j} {op}" for m, j in _groups(self.nodes) for op in OPS]
    if self.fusion_search:
      names += [f"lff node{m}" for m in range(self.nodes)]
      names += [f"gff F{d}" for d in range(self.blocks)]
    return names

  def token_spec(self) -> TokenSpec:
    """Return the bit-form TokenSpec: 3 bits per group, then M LFF and N GFF bits."""
    g, mm, n = self.num_groups, self.nodes, self.blocks
    steps = [s for s in range(g) for _ in range(3)]
    # Bit k of every group shares head k ("FC layers for one operation share parameters").
    heads = [0, 1, 2] * g
    if self.fusion_search:
      # The paper connects one FC layer per fusion connection: one head per LFF / GFF bit.
      steps += [g] * mm + [g + 1] * n
      heads += list(range(3, 3 + mm + n))
    # The op bits choose operations: ENAS squashes their logits more.
    return TokenSpec(
      (2,) * len(steps),
      tuple(self._names()),
      tuple(steps),
      tuple(heads),
      op_heads=(0, 1, 2),
      choice_names=(("off", "on"),) * len(steps),  # each bit keeps its op or connection or not
    )

  def _compact_spec(self) -> TokenSpec:
    names = [f"group {i} (node{m}<-node{j})" for i, (m, j) in enumerate(_groups(self.nodes))]
    choices = [8] * self.num_groups
    if self.fusion_search:
      names += self._names()[3 * self.num_groups :]
      choices += [2] * (self.nodes + self.blocks)
    return TokenSpec(tuple(choices), tuple(names))

  def decode(self, tokens: Sequence[int] | np.ndarray) -> DeCoNASArch:
    """Return the architecture of bit-form or compact tokens, or raise TokenError naming the position."""
    arr = np.asarray(tokens)
    g, mm, n = self.num_groups, self.nodes, self.blocks
    extra = mm + n if self.fusion_search else 0
    if arr.ndim == 1 and arr.shape[0] == g + extra:
      arr = self._compact_spec().validate(arr)
      ops = [(int(v) >> (2 - k)) & 1 for v in arr[:g] for k in range(3)]
      rest = arr[g:]
    else:
      spec = self.token_spec()
      if arr.ndim != 1 or arr.shape[0] != len(spec):
        raise TokenError(
          f"deconas (blocks={n}, nodes={mm}, fusion_search={self.fusion_search}) expects "
          f"{len(spec)} bit tokens or {g + extra} compact tokens, got shape {arr.shape}"
        )
      named = dataclasses.replace(
        spec, names=tuple(f"position {i} ({s})" for i, s in enumerate(spec.names))
      )
      arr = named.validate(arr)
      ops, rest = arr[: 3 * g].tolist(), arr[3 * g :]
    if self.fusion_search:
      lff, gff = list(rest[:mm]), list(rest[mm:])
    else:
      lff, gff = [1] * mm, [1] * n
    return DeCoNASArch(n, mm, tuple(ops), tuple(lff), tuple(gff))

  def _check(self, arch: DeCoNASArch) -> DeCoNASArch:
    if not isinstance(arch, DeCoNASArch):
      raise TokenError(f"expected a DeCoNASArch, got {type(arch).__name__}")
    if (arch.blocks, arch.nodes) != (self.blocks, self.nodes):
      raise TokenError(
        f"architecture has blocks={arch.blocks}, nodes={arch.nodes}; this space has "
        f"blocks={self.blocks}, nodes={self.nodes}"
      )
    if not self.fusion_search and not (all(arch.lff) and all(arch.gff)):
      raise TokenError("architecture disconnects feature fusion but fusion_search is off")
    return arch

  def arch_from_dict(self, d: dict) -> DeCoNASArch:
    """Return the architecture stored by `DeCoNASArch.to_dict`, checked against this space."""
    return self._check(DeCoNASArch.from_dict(d))

  def encode(self, arch: DeCoNASArch) -> np.ndarray:
    """Return the bit-form tokens of `arch` (int32, shape [len(token_spec())])."""
    self._check(arch)
    bits = list(arch.ops) + (list(arch.lff) + list(arch.gff) if self.fusion_search else [])
    return np.asarray(bits, np.int32)

  def max_arch(self) -> DeCoNASArch:
    """Return the most complex architecture: every op reads every input, all fusion on."""
    return DeCoNASArch(
      self.blocks, self.nodes, (1,) * 3 * self.num_groups, (1,) * self.nodes, (1,) * self.blocks
    )

  def build(
    self, arch: DeCoNASArch, scale: int, dtype: Dtype = jnp.float32, shifted: bool = False
  ) -> DeCoNASNet:
    """Return the stand-alone network of `arch` at `scale`.

    `shifted` computes depthwise convs as shifted multiply-adds (nasr.ops.cpu_kernels): the same
    function and parameters; which form trains faster depends on the network and the device.
    """
    return DeCoNASNet(
      self._check(arch),
      self.channels,
      scale,
      self.reduction,
      dtype,
      shifted,
      self.fuse_before_first,
      self.depthwise_bias,
    )

  def supernet(
    self,
    scale: int,
    skip_inactive: bool = False,
    dtype: Dtype = jnp.float32,
    remat: bool = False,
    shifted: bool = False,
    unroll: int | None = None,
    gathered: bool = False,
  ) -> DeCoNASSupernet:
    """Return the weight-sharing supernet; call it as model.apply(params, x, tokens).

    Args:
      scale: the upscaling factor.
      skip_inactive: lax.cond per input slot (only the child's work) instead of masks.
      dtype: compute dtype (parameters stay float32).
      remat: recompute each DNB in the backward pass (less memory, about a third more compute).
      shifted: depthwise convs as shifted multiply-adds and, in a rolled loop, conv kernel
        gradients as tap matmuls (nasr.ops.cpu_kernels): the same function, many times faster on
        XLA:CPU.
      unroll: DNBs per scan iteration (None: 1 with remat or shifted, else all of them).
      gathered: with skip_inactive, one conv per op over its selected slots gathered into one
        buffer, picked by their count (lax.switch), instead of a lax.cond per slot: fewer,
        larger kernels for an accelerator; ignored with masks.
    """
    return DeCoNASSupernet(
      self.blocks,
      self.nodes,
      self.channels,
      scale,
      self.fusion_search,
      skip_inactive,
      self.reduction,
      dtype,
      remat,
      shifted,
      unroll,
      gathered,
      self.fuse_before_first,
      self.depthwise_bias,
    )

  def supernet_options(self) -> frozenset[str]:
    """Return the keyword options of `supernet` besides scale."""
    return frozenset({"skip_inactive", "dtype", "remat", "shifted", "unroll", "gathered"})

  def _piece(self, scale: int, side: int, kind: str, slots: int = 1, op: int = 0) -> tuple:
    """Return (key, module, input shape) of one cost piece reading `slots` x C channels."""
    if kind == "frame":
      return (
        ("frame",),
        _CostPiece("frame", self.channels, scale, self.reduction),
        (1, side, side, 3),
      )
    module = _CostPiece(kind, self.channels, scale, self.reduction, op, self.depthwise_bias)
    return (kind, slots, op), module, (1, side, side, slots * self.channels)

  def cost_pieces(self, arch: DeCoNASArch, scale: int, side: int) -> list[tuple]:
    """Return [(key, module, input shape)]: pieces whose costs add up to build(arch)'s.

    On a 1 x side x side LR image, the child's parameters and multiply-adds are the sums over
    these pieces (a piece counted as often as it occurs); equal keys are equal pieces, so a caller
    that caches by key traces each distinct piece once instead of every new child whole (a
    paper-size child: 1.4 s a trace).
    """
    arch = self._check(arch)
    piece = functools.partial(self._piece, check_subpixel_scale(scale), side)
    plan = _node_plan(arch)
    block = [piece("op", len(inputs), k) for ops in plan.values() for k, inputs in ops]
    block += [piece("attention")] * len(plan)
    block.append(piece("conv1x1", sum(arch.lff) + 1))  # LFF; node M always feeds it
    n = arch.blocks
    pieces = [piece("frame")]
    for d in range(n):
      if self.fuse_before_first:
        pieces += [piece("conv1x1", d + 1), *block]  # fuse{d} over F_0..F_d, then DNB d
      else:
        # DNB d, then connect{d} over F_0..F_d+1 (after the last DNB: its parameters only).
        pieces += [*block, piece("conv1x1" if d < n - 1 else "unused1x1", d + 2)]
    pieces.append(piece("conv1x1", sum(arch.gff) + 1))  # GFF's 1x1 conv; F_N always feeds it
    return pieces

  def cost_table(self, piece_cost, scale: int, side: int):
    """Return cost(tokens) -> (parameters, multiply-adds per LR pixel) in jnp (traceable).

    The sum over `cost_pieces(decode(tokens), scale, side)` computed from the bit tokens alone,
    so a search can compute its reward on the device; `piece_cost(key, module, shape)` returns
    (parameters, multiply-adds) of one piece (the caller caches it). float32: exact to ~1e-7.
    """
    scale = check_subpixel_scale(scale)
    m_, n_, g = self.nodes, self.blocks, self.num_groups

    # numpy: constants of the traced function (closed-over device arrays would be read back).
    def table(kind: str, slots, op: int = 0) -> np.ndarray:
      rows = [piece_cost(*self._piece(scale, side, kind, n, op)) for n in slots]
      return np.asarray(rows, np.float32)  # [len(slots), 2]

    tables = {
      "frame": table("frame", [1])[0],
      "conv1x1": table("conv1x1", range(1, max(n_, m_) + 2)),  # row i: i + 1 slots
      "ops": np.stack([table("op", range(1, m_ + 1), k) for k in range(3)]),  # [3, M, 2]
      "attention": table("attention", [1])[0],
    }
    if self.fuse_before_first:
      between = np.sum(tables["conv1x1"][:n_], axis=0)  # fuse{d}: d + 1 slots
    else:  # connect{d}: d + 2 slots; the last one's parameters only
      between = np.sum(tables["conv1x1"][1:n_], axis=0) + table("unused1x1", [n_ + 1])[0]

    def cost(tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
      t = {k: jnp.asarray(v) for k, v in tables.items()}
      frame, conv1x1, ops_t, attention = t["frame"], t["conv1x1"], t["ops"], t["attention"]
      bits = tokens[: 3 * g].reshape(g, 3) > 0
      if self.fusion_search:
        lff, gff = tokens[3 * g : 3 * g + m_] > 0, tokens[3 * g + m_ :] > 0
      else:
        lff, gff = jnp.ones((m_,), bool), jnp.ones((n_,), bool)
      reads = [bits[group_index(m, 0) : group_index(m, 0) + m] for m in range(m_ + 1)]  # [m, 3]
      has = [jnp.any(r) for r in reads]
      # DeCoNASArch.live_nodes: nodes reached backwards from the output (LFF bits, readers).
      live = [jnp.bool_(True), *[lff[m] for m in range(1, m_)], jnp.bool_(True)]
      for m in range(m_, 0, -1):
        read_j = jnp.any(reads[m], axis=1)
        for j in range(m):
          live[j] = live[j] | (live[m] & (read_j[j] | ((j == m - 1) & ~has[m])))
      block = conv1x1[jnp.sum(lff)]  # LFF over the selected nodes and node M
      for m in range(1, m_ + 1):
        count = jnp.sum(reads[m], axis=0)  # inputs per op [3]
        node = attention + sum(
          jnp.where(count[k] > 0, ops_t[k, jnp.maximum(count[k] - 1, 0)], 0.0) for k in range(3)
        )
        block = block + jnp.where(live[m] & has[m], node, 0.0)
      total = frame + between + n_ * block + conv1x1[jnp.sum(gff)]
      return total[0], total[1] / (side * side)

    return cost

  def count_params(self, arch: DeCoNASArch, scale: int) -> int:
    """Return the exact parameter count of build(arch, scale) (shapes only, no compute)."""
    return count_module_params(self.build(arch, check_subpixel_scale(scale)))

  def complexity(self, arch: DeCoNASArch, scale: int) -> float:
    """Return DeCoNAS's complexity penalty cb: params of arch / params of the max architecture."""
    return self.count_params(arch, scale) / self.count_params(self.max_arch(), scale)

  def child_params(self, supernet_params: dict, arch: DeCoNASArch) -> dict:
    """Return the parameters of build(arch) sliced from the supernet's shared weights.

    Accepts the supernet's params tree or its variables ({"params": ...}) and returns the same
    form.
    """
    self._check(arch)
    if "params" in supernet_params:
      return {"params": self.child_params(supernet_params["params"], arch)}
    c = self.channels
    p = _unstack(supernet_params, self.blocks, c, self.fuse_before_first)
    out = {k: v for k, v in p.items() if not k.startswith("block") and k != "gff_fuse"}
    sel = [d for d in range(self.blocks) if arch.gff[d]] + [self.blocks]
    out["gff_fuse"] = {"kernel": _slots(p["gff_fuse"]["kernel"], sel, c, 2), **_bias(p["gff_fuse"])}
    plan = _node_plan(arch)
    lff_slots = [m for m in range(self.nodes) if arch.lff[m]] + [self.nodes]
    for d in range(self.blocks):
      sp, bp = p[f"block{d}"], {}
      for m, ops in plan.items():
        for k, inputs in ops:
          name = f"node{m}_{OPS[k]}"
          if OPS[k] == "sepconv3x3":
            dw, pw = sp[name]["depthwise"], sp[name]["pointwise"]
            bp[name] = {
              "depthwise": {
                "kernel": _slots(dw["kernel"], inputs, c, 3),
                **({"bias": _slots(dw["bias"], inputs, c, 0)} if "bias" in dw else {}),
              },
              "pointwise": {"kernel": _slots(pw["kernel"], inputs, c, 2), **_bias(pw)},
            }
          else:
            bp[name] = {"kernel": _slots(sp[name]["kernel"], inputs, c, 2), **_bias(sp[name])}
        bp[f"node{m}_attention"] = sp[f"node{m}_attention"]
      bp["lff"] = {"kernel": _slots(sp["lff"]["kernel"], lff_slots, c, 2), **_bias(sp["lff"])}
      out[f"block{d}"] = bp
    return out


def _unstack(params: dict, blocks: int, channels: int, fuse_before_first: bool) -> dict:
  """Return the supernet params with the scanned "dense" stack split into block{d} and the 1x1
  convs between DNBs: connect{d} (fuse{d} with `fuse_before_first`).

  connect{d} keeps the first (d+2)*C input rows of the stacked fuse kernel, fuse{d} the first
  (d+1)*C: the slots the supernet does not mask at step d.
  """
  if "dense" not in params:
    return params
  out = {k: v for k, v in params.items() if k != "dense"}
  dense = params["dense"]
  name, extra = ("fuse", 1) if fuse_before_first else ("connect", 2)
  for d in range(blocks):
    fuse = dense["fuse"]
    out[f"{name}{d}"] = {
      "kernel": fuse["kernel"][d, :, :, : (d + extra) * channels],
      "bias": fuse["bias"][d],
    }
    out[f"block{d}"] = jax.tree_util.tree_map(lambda a, d=d: a[d], dense["block"])
  return out


def _bias(p: dict) -> dict:
  return {"bias": p["bias"]}
