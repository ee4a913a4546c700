"""The GP-NAS hyper-parameter space: dense residual networks (DRN) and RCAN-style networks
("Heterogeneous model ensemble for real image super-resolution", AIM 2020, sec. 4.1; RCAN: Zhang et
al., ECCV 2018).

DRN (NHWC RGB in [0, 1]; the DIV2K mean is subtracted at the input and added back at the output):

  head = conv3x3(x)                                       shallow features, 3 -> F channels
  B_0 .. B_D-1: dense residual blocks (DRB)               h_i = DRB_i(h_i-1, input of B_i-1)
  body = conv3x3(h_D) + head                              global skip, as RCAN/EDSR
  out  = conv3x3(sub-pixel upsampler(body))               F -> 3 channels

A DRB has L stages of two 3x3 convs (conv, ReLU, conv); stage j reads stage j-1's output (stage 0
reads the block input). The L stage outputs are concatenated and fused by a 1x1 conv F*L -> F,
channel attention follows, and the block skip connection (BSC) adds the block input. The two
inter-block skip connections (IBSC) add the input of block i-1 to the outputs of two stages of
block i: the first (j = 0) and the middle one (j = L // 2); with L = 1 they land on the same stage,
which gets it once. Block 0 has no block before it and no IBSC. The paper's figure is not in its
text; this is one reading of "two shortcuts from the input of block B_i-1 to the two stages inside
block B_i".

RCAN family: head conv, G residual groups of B residual channel-attention blocks (RCAB) and a conv
with a group skip, a body conv with the global skip, the same upsampler and tail.

Identical blocks are folded with `nn.scan`, so compiling a 24-block network costs about as much as a
2-block one; parameters of the scanned blocks are stacked along a leading axis.

Tokens (what GP-NAS searches): (family, F index, D index, L index). The DRN family reads D and L
from `blocks` and `stages`; the RCAN family reads the same positions as residual groups
(`rcan_groups`) and RCABs per group (`rcan_blocks`), so those lists have the lengths of `blocks`
and `stages`. Every position is ordinal (ascending values), which is what the GP's encoding assumes.

Weight sharing (`DRN.supernet`): one network holds every weight at its largest shape (F_max
features, D_max blocks, L_max stages; G_max groups of B_max RCABs) and takes the tokens as an int32
array, so one compiled step serves the whole grid: `lax.switch` picks the family, channel masks
keep the features a narrower child lacks at zero, and `lax.cond` turns the blocks, stages, groups
and RCABs past the child's depth into identities. `DRN.child_params` slices a child's parameters
out of it (channel prefixes, the first blocks), and the supernet at `encode(arch)` equals
`build(arch)` with them.

Example:
  space = nasr.spaces.get("drn", features=(32, 64), blocks=(4, 8), stages=(2, 3))
  arch = space.decode([0, 1, 0, 1])        # DRN, F=64, D=4, L=3
  model = space.build(arch, scale=2)
  supernet = space.supernet(scale=2)       # model.apply(variables, x, tokens)
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
from nasr.ops.attention import RCAB, ChannelAttention
from nasr.ops.conv import Conv
from nasr.ops.frame import SRFrame, sr_frame
from nasr.ops.functional import conv
from nasr.ops.params import ConvParams
from nasr.ops.upsample import check_subpixel_scale
from nasr.spaces.base import ArchJSON, Families, count_module_params
from nasr.spaces.registry import register

Dtype = Any

FAMILIES = ("drn", "rcan")


def ibsc_stages(stages: int) -> tuple[int, ...]:
  """Return the stages of a DRB that receive the inter-block skip connection (first and middle)."""
  return tuple(sorted({0, stages // 2}))


@dataclasses.dataclass(frozen=True)
class DRNArch(ArchJSON):
  """One point of the GP-NAS grid.

  Attributes:
    family: "drn" or "rcan".
    features: feature channels F.
    blocks: DRN: dense residual blocks D; RCAN: residual groups.
    stages: DRN: stages per block L; RCAN: RCABs per group.
  """

  family: str
  features: int
  blocks: int
  stages: int

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise TokenError(f"DRNArch.family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
    for key in ("features", "blocks", "stages"):
      value = getattr(self, key)
      if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise TokenError(f"DRNArch.{key} must be a positive integer, got {value!r}")
      object.__setattr__(self, key, int(value))

  def describe(self) -> str:
    """Return a short human-readable name, e.g. "DRN(F=128, D=18, L=3)"."""
    if self.family == "rcan":
      return f"RCAN(F={self.features}, G={self.blocks}, B={self.stages})"
    return f"DRN(F={self.features}, D={self.blocks}, L={self.stages})"

  def group(self) -> str:
    """Return the network family ("drn" or "rcan")."""
    return self.family


# ----------------------------------------------------------------------------------------------
# Networks (architecture static).


class DenseResidualBlock(nn.Module):
  """L stages of conv-ReLU-conv, 1x1 fusion of all stage outputs, channel attention, block skip."""

  features: int  # F
  stages: int  # L
  reduction: int = 16  # channel-attention reduction
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)

  @nn.compact
  def __call__(self, x: jax.Array, prev: jax.Array | None = None) -> jax.Array:
    """Return the block output; `prev` (the previous block's input) feeds the IBSC stages."""
    f, dt = self.features, self.dtype
    targets = ibsc_stages(self.stages)
    s, outs = x, []
    for j in range(self.stages):
      t = nn.relu(Conv(f, 3, dtype=dt, name=f"stage{j}_conv1")(s))
      t = Conv(f, 3, dtype=dt, name=f"stage{j}_conv2")(t)
      if prev is not None and j in targets:
        t = t + prev.astype(t.dtype)
      outs.append(t)
      s = t
    y = Conv(f, 1, dtype=dt, name="fuse")(jnp.concatenate(outs, axis=-1))
    y = ChannelAttention(f, self.reduction, dt, name="attention")(y)
    return y + x.astype(y.dtype)


class _DRBStep(nn.Module):
  """A DRB as a scan step over the carry (h, input of the previous block)."""

  features: int
  stages: int
  reduction: int
  dtype: Dtype

  @nn.compact
  def __call__(self, carry, _):
    """Return ((block output, block input), None)."""
    h, prev = carry
    out = DenseResidualBlock(self.features, self.stages, self.reduction, self.dtype, name="drb")(
      h, prev
    )
    return (out.astype(h.dtype), h), None


class DRNNet(SRFrame, nn.Module):
  """A dense residual network: NHWC [0, 1] RGB to `scale` times it (float32)."""

  features: int = 64  # F
  blocks: int = 4  # D
  stages: int = 3  # L
  scale: int = 2  # 2, 3 or 4
  reduction: int = 16  # channel-attention reduction
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return the super-resolved NHWC batch."""
    f, dt = self.features, self.dtype

    def body(head):
      h = DenseResidualBlock(f, self.stages, self.reduction, dt, name="block0")(head)
      if self.blocks > 1:
        scan = nn.scan(
          _DRBStep,
          variable_axes={"params": 0},
          split_rngs={"params": True},
          length=self.blocks - 1,
        )
        (h, _), _ = scan(f, self.stages, self.reduction, dt, name="blocks")((h, head), None)
      return h

    return sr_frame(x, body, f, self.scale, dt)


class _RCABStep(nn.Module):
  features: int
  reduction: int
  dtype: Dtype

  @nn.compact
  def __call__(self, h, _):
    """Return (RCAB(h), None)."""
    out = RCAB(self.features, reduction=self.reduction, dtype=self.dtype, name="rcab")(h)
    return out.astype(h.dtype), None


class ResidualGroup(nn.Module):
  """RCAN's residual group: `blocks` RCABs, a 3x3 conv, and the group skip."""

  features: int
  blocks: int
  reduction: int = 16
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return x plus the group's residual."""
    scan = nn.scan(
      _RCABStep, variable_axes={"params": 0}, split_rngs={"params": True}, length=self.blocks
    )
    h, _ = scan(self.features, self.reduction, self.dtype, name="rcabs")(x, None)
    return Conv(self.features, 3, dtype=self.dtype, name="conv")(h) + x.astype(h.dtype)


class _GroupStep(nn.Module):
  features: int
  blocks: int
  reduction: int
  dtype: Dtype

  @nn.compact
  def __call__(self, h, _):
    """Return (group(h), None)."""
    out = ResidualGroup(self.features, self.blocks, self.reduction, self.dtype, name="group")(h)
    return out.astype(h.dtype), None


class RCANNet(SRFrame, nn.Module):
  """An RCAN-style network of `groups` x `blocks` RCABs: NHWC [0, 1] RGB to `scale` times it."""

  features: int = 64  # F
  groups: int = 10  # residual groups
  blocks: int = 20  # RCABs per group
  scale: int = 2  # 2, 3 or 4
  reduction: int = 16  # channel-attention reduction
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return the super-resolved NHWC batch."""
    f, dt = self.features, self.dtype

    def body(head):
      scan = nn.scan(
        _GroupStep, variable_axes={"params": 0}, split_rngs={"params": True}, length=self.groups
      )
      h, _ = scan(f, self.blocks, self.reduction, dt, name="groups")(head, None)
      return h

    return sr_frame(x, body, f, self.scale, dt)


# ----------------------------------------------------------------------------------------------
# Weight-sharing supernet (architecture as an array argument: compiled once).


def _at(kb, i):
  """Return the i-th copy of stacked (kernel, bias)."""
  return kb[0][i], kb[1][i]


class _AttentionParams(nn.Module):
  """Create channel attention's squeeze / excite parameters at F_max, R_max (names as the child's)."""

  features: int
  squeeze: int
  stack: tuple[int, ...] = ()

  @nn.compact
  def __call__(self) -> dict:
    """Return {"squeeze": (kernel, bias), "excite": (kernel, bias)}."""
    f, r, st = self.features, self.squeeze, self.stack
    return {
      "squeeze": ConvParams((1, 1, f, r), st, name="squeeze")(),
      "excite": ConvParams((1, 1, r, f), st, name="excite")(),
    }


class _DRBParams(nn.Module):
  """Create a DRB's parameters at the largest shape: the L_max stages' convs stacked on an axis."""

  features: int
  stages: int
  squeeze: int
  stack: tuple[int, ...] = ()  # (D_max - 1,) for the scanned blocks

  @nn.compact
  def __call__(self) -> dict:
    """Return the block's (kernel, bias) pairs by name."""
    f, st = self.features, self.stack
    return {
      "stage_conv1": ConvParams((3, 3, f, f), (*st, self.stages), name="stage_conv1")(),
      "stage_conv2": ConvParams((3, 3, f, f), (*st, self.stages), name="stage_conv2")(),
      # Rows j * F_max + c: stage j's channel c (the child's fuse kernel is rows j * F + c).
      "fuse": ConvParams((1, 1, self.stages * f, f), st, name="fuse")(),
      "attention": _AttentionParams(f, self.squeeze, st, name="attention")(),
    }


class _RCABParams(nn.Module):
  """Create the RCABs' parameters: [G_max, B_max] stacked copies (names as the child's RCAB)."""

  features: int
  squeeze: int
  stack: tuple[int, ...]

  @nn.compact
  def __call__(self) -> dict:
    """Return the RCABs' (kernel, bias) pairs by name."""
    f, st = self.features, self.stack
    return {
      "conv1": ConvParams((3, 3, f, f), st, name="conv1")(),
      "conv2": ConvParams((3, 3, f, f), st, name="conv2")(),
      "attention": _AttentionParams(f, self.squeeze, st, name="attention")(),
    }


class _GroupParams(nn.Module):
  """Create the residual groups' parameters: RCABs [G_max, B_max] and group convs [G_max]."""

  features: int
  groups: int
  blocks: int
  squeeze: int

  @nn.compact
  def __call__(self) -> dict:
    """Return {"rcab": ..., "conv": (kernel, bias)}."""
    f, g = self.features, self.groups
    return {
      "rcab": _RCABParams(f, self.squeeze, (g, self.blocks), name="rcab")(),
      "conv": ConvParams((3, 3, f, f), (g,), name="conv")(),
    }


def _attention(p: dict, x: jax.Array, rmask: jax.Array, dtype: Dtype) -> jax.Array:
  """Return channel attention of x (as `ChannelAttention`), its squeeze width masked by rmask."""
  s = jnp.mean(x.astype(dtype), axis=(1, 2), keepdims=True)
  s = nn.relu(conv(s, *p["squeeze"], dtype=dtype) * rmask)
  s = nn.sigmoid(conv(s, *p["excite"], dtype=dtype))
  return x.astype(dtype) * s


@dataclasses.dataclass(frozen=True)
class _Widths:
  """The traced child sizes the supernet's pure functions read."""

  fmask: jax.Array  # [F_max] 1 for the child's features
  rmask: jax.Array  # [R_max] 1 for the child's attention squeeze width
  dtype: Dtype


def _drb(p: dict, x, prev, stages, min_stages: int, w: _Widths) -> jax.Array:
  """Return a DRB of `stages` (traced) of the L_max stages in `p`; prev None: no IBSC (block 0)."""
  dt = w.dtype
  s, outs = x, []
  for j in range(p["stage_conv1"][0].shape[0]):

    def stage(s, j=j):
      t = nn.relu(conv(s, *_at(p["stage_conv1"], j), dtype=dt) * w.fmask)
      t = conv(t, *_at(p["stage_conv2"], j), dtype=dt) * w.fmask
      if prev is not None:
        # The IBSC targets stages 0 and L // 2 of the traced L (once when they coincide).
        hit = True if j == 0 else j == stages // 2
        t = jnp.where(hit, t + prev.astype(t.dtype), t)
      return t

    # A stage past the child's L outputs zeros: its rows of the fuse kernel then add nothing.
    t = stage(s) if j < min_stages else jax.lax.cond(j < stages, stage, jnp.zeros_like, s)
    outs.append(t)
    s = t
  y = conv(jnp.concatenate(outs, axis=-1), *p["fuse"], dtype=dt) * w.fmask
  y = _attention(p["attention"], y, w.rmask, dt)
  return y + x.astype(y.dtype)


def _drn_body(p: dict, depth, stages, min_stages: int, remat: bool, w: _Widths, head):
  """Return the DRN family's body: block 0, then the scanned blocks up to the traced depth."""
  h = _drb(p["block0"], head, None, stages, min_stages, w)
  if "blocks" not in p:
    return h

  def step(carry, xs):
    pi, i = xs

    def run(c):
      h, prev = c
      return _drb(pi, h, prev, stages, min_stages, w).astype(h.dtype), h

    # Blocks past the child's depth are identities (lax.cond: their work is skipped).
    return jax.lax.cond(i < depth - 1, run, lambda c: c, carry), None

  step = jax.checkpoint(step) if remat else step
  n = p["blocks"]["fuse"][0].shape[0]
  (h, _), _ = jax.lax.scan(step, (h, head), (p["blocks"], jnp.arange(n)))
  return h


def _rcan_body(p: dict, groups, blocks, remat: bool, w: _Widths, head):
  """Return the RCAN family's body: residual groups of RCABs up to the traced counts."""
  dt = w.dtype

  def rcab(h, xs):
    pb, b = xs

    def run(x):
      y = nn.relu(conv(x, *pb["conv1"], dtype=dt) * w.fmask)
      y = conv(y, *pb["conv2"], dtype=dt) * w.fmask
      y = _attention(pb["attention"], y, w.rmask, dt)
      return (x.astype(y.dtype) + 1.0 * y).astype(x.dtype)

    return jax.lax.cond(b < blocks, run, lambda x: x, h), None

  ng, nb = p["rcab"]["conv1"][0].shape[:2]

  def group(h, xs):
    pg, g = xs

    def run(x):
      y, _ = jax.lax.scan(rcab, x, (pg["rcab"], jnp.arange(nb)))
      return (conv(y, *pg["conv"], dtype=dt) * w.fmask + x.astype(y.dtype)).astype(x.dtype)

    # Groups past the child's count are identities (lax.cond: their work is skipped).
    return jax.lax.cond(g < groups, run, lambda x: x, h), None

  group = jax.checkpoint(group) if remat else group
  h, _ = jax.lax.scan(group, head, (p, jnp.arange(ng)))
  return h


class DRNSupernet(SRFrame, nn.Module):
  """The GP-NAS grid's weight-sharing supernet: __call__(x, tokens) with tokens int32 [4].

  Tokens (family, features, blocks, stages) as `DRN.token_spec` orders them, as an array: one
  compile serves every architecture. Parameters (float32, largest shapes): the shared head,
  body, upsample and tail convs at F_max; the DRN family's "block0" and scanned "blocks"
  (stage convs stacked on an L_max axis); the RCAN family's "groups" (RCABs [G_max, B_max]).
  `DRN.child_params` slices a child's parameters out of them.
  """

  features: tuple[int, ...]  # the F values
  blocks: tuple[int, ...]  # DRN's D values
  stages: tuple[int, ...]  # DRN's L values
  families: tuple[str, ...] = FAMILIES  # the families searched (the token's first choice)
  rcan_groups: tuple[int, ...] = (1,)  # RCAN's residual groups, one per `blocks` value
  rcan_blocks: tuple[int, ...] = (1,)  # RCAN's RCABs per group, one per `stages` value
  scale: int = 2  # 2, 3 or 4
  reduction: int = 16  # channel-attention reduction
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)
  remat: bool = False  # recompute each scanned block / group in the backward pass (less memory)

  @nn.compact
  def __call__(self, x: jax.Array, tokens: jax.Array) -> jax.Array:
    """Return the super-resolved NHWC batch of the architecture `tokens` (no Python branching)."""
    tokens = jnp.asarray(tokens, jnp.int32)
    if tokens.shape != (4,):  # a static shape: no branching on sampled values
      raise TokenError(f"the DRN supernet expects 4 tokens, got shape {tokens.shape}")
    fam, fi, di, si = tokens[0], tokens[1], tokens[2], tokens[3]
    fm, dt, red = max(self.features), self.dtype, self.reduction
    rm = max(1, fm // red)
    f = jnp.asarray(self.features, jnp.int32)[fi]
    w = _Widths(
      (jnp.arange(fm) < f).astype(dt), (jnp.arange(rm) < jnp.maximum(1, f // red)).astype(dt), dt
    )

    def body(head):
      branches = []
      for family in self.families:  # parameters first: lax.switch only reads them
        if family == "drn":
          p = {"block0": _DRBParams(fm, max(self.stages), rm, name="block0")()}
          if max(self.blocks) > 1:
            stack = (max(self.blocks) - 1,)
            p["blocks"] = _DRBParams(fm, max(self.stages), rm, stack, name="blocks")()
          depth = jnp.asarray(self.blocks, jnp.int32)[di]
          stages = jnp.asarray(self.stages, jnp.int32)[si]
          fn = functools.partial(_drn_body, p, depth, stages, min(self.stages), self.remat, w)
        else:
          p = _GroupParams(fm, max(self.rcan_groups), max(self.rcan_blocks), rm, name="groups")()
          groups = jnp.asarray(self.rcan_groups, jnp.int32)[di]
          blocks = jnp.asarray(self.rcan_blocks, jnp.int32)[si]
          fn = functools.partial(_rcan_body, p, groups, blocks, self.remat, w)
        branches.append(fn)
      if len(branches) == 1:
        return branches[0](head)
      return jax.lax.switch(fam, branches, head)

    return sr_frame(x, body, fm, self.scale, dt, mask=w.fmask)


def _conv_slice(p: dict, lead: tuple, cin: int, cout: int) -> dict:
  """Return a child conv's {"kernel", "bias"}: `lead` indexes the stacked axes, then prefixes."""
  return {"kernel": p["kernel"][lead][..., :cin, :cout], "bias": p["bias"][lead][..., :cout]}


def _attention_slice(p: dict, lead: tuple, f: int, r: int) -> dict:
  return {
    "squeeze": _conv_slice(p["squeeze"], lead, f, r),
    "excite": _conv_slice(p["excite"], lead, r, f),
  }


# ----------------------------------------------------------------------------------------------
# The space.


def _int_tuple(space: str, key: str, value) -> tuple[int, ...]:
  if isinstance(value, str | bytes):
    raise ConfigError(f"{space}: {key} must be a list of positive integers, got {value!r}")
  try:
    out = tuple(int(v) for v in value)
  except (TypeError, ValueError):
    raise ConfigError(
      f"{space}: {key} must be a list of positive integers, got {value!r}"
    ) from None
  if (
    not out
    or any(v < 1 for v in out)
    or any(isinstance(v, bool) or float(v) != int(v) for v in value)
  ):
    raise ConfigError(f"{space}: {key} must be a list of positive integers, got {value!r}")
  if list(out) != sorted(set(out)):
    raise ConfigError(f"{space}: {key} must be strictly ascending (an ordinal axis), got {out}")
  return out


@register("drn")
@dataclasses.dataclass(frozen=True)
class DRN(Families):
  """The GP-NAS grid: network family x features x depth x block size.

  Attributes:
    features: the F values (shared by both families).
    blocks: DRN's D values (dense residual blocks).
    stages: DRN's L values (stages per block).
    families: the families searched, a subset of FAMILIES.
    rcan_groups: RCAN's residual-group counts, one per `blocks` value.
    rcan_blocks: RCAN's RCABs per group, one per `stages` value.
    reduction: channel-attention reduction (RCAN: 16).
  """

  features: Sequence[int] = (32, 64, 96, 128)
  blocks: Sequence[int] = tuple(range(4, 25))
  stages: Sequence[int] = (2, 3, 4, 5)
  families: Sequence[str] = FAMILIES
  rcan_groups: Sequence[int] = tuple(range(2, 23))
  rcan_blocks: Sequence[int] = (5, 10, 15, 20)
  reduction: int = 16

  def __post_init__(self):
    for key in ("features", "blocks", "stages", "rcan_groups", "rcan_blocks"):
      object.__setattr__(self, key, _int_tuple("drn", key, getattr(self, key)))
    fams = self.families
    if isinstance(fams, str) or not isinstance(fams, Sequence) or not fams:
      raise ConfigError(f"drn: families must be a list drawn from {FAMILIES}, got {fams!r}")
    fams = tuple(str(f) for f in fams)
    bad = [f for f in fams if f not in FAMILIES]
    if bad or len(set(fams)) != len(fams):
      raise ConfigError(f"drn: families must be distinct names from {FAMILIES}, got {fams}")
    object.__setattr__(self, "families", fams)
    if "rcan" in fams:
      for key, ref in (("rcan_groups", "blocks"), ("rcan_blocks", "stages")):
        if len(getattr(self, key)) != len(getattr(self, ref)):
          raise ConfigError(
            f"drn: {key} needs one value per {ref} value ({len(getattr(self, ref))}), got "
            f"{getattr(self, key)}; the RCAN family reads the same token positions"
          )
    r = self.reduction
    if isinstance(r, bool) or not isinstance(r, int | np.integer) or r < 1:
      raise ConfigError(f"drn: reduction must be a positive integer, got {r!r}")

  def token_spec(self) -> TokenSpec:
    """Return the spec: (family, features, blocks / groups, stages / RCABs per group)."""

    def values(drn: Sequence[int], rcan: Sequence[int]) -> tuple[str, ...]:
      if "rcan" not in self.families:
        return tuple(str(v) for v in drn)
      if "drn" not in self.families:
        return tuple(str(v) for v in rcan)
      return tuple(f"{d} (rcan {r})" for d, r in zip(drn, rcan, strict=True))

    return TokenSpec(
      (len(self.families), len(self.features), len(self.blocks), len(self.stages)),
      ("family", "features", "blocks (rcan: groups)", "stages (rcan: blocks per group)"),
      choice_names=(
        self.families,
        tuple(str(f) for f in self.features),
        values(self.blocks, self.rcan_groups),
        values(self.stages, self.rcan_blocks),
      ),
    )

  def _lists(self, family: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if family == "rcan":
      return self.rcan_groups, self.rcan_blocks
    return self.blocks, self.stages

  def decode(self, tokens: Sequence[int] | np.ndarray) -> DRNArch:
    """Return the architecture of `tokens`, or raise TokenError naming the position."""
    fam, f, d, s = self.token_spec().validate(tokens)
    family = self.families[fam]
    depths, sizes = self._lists(family)
    return DRNArch(family, self.features[f], depths[d], sizes[s])

  def encode(self, arch: DRNArch) -> np.ndarray:
    """Return the tokens of `arch` (int32 [4]), or raise TokenError if it is off the grid."""
    arch = self._check(arch)
    depths, sizes = self._lists(arch.family)
    return np.asarray(
      [
        self.families.index(arch.family),
        self.features.index(arch.features),
        depths.index(arch.blocks),
        sizes.index(arch.stages),
      ],
      np.int32,
    )

  def _check(self, arch: DRNArch) -> DRNArch:
    if not isinstance(arch, DRNArch):
      raise TokenError(f"expected a DRNArch, got {type(arch).__name__}")
    if arch.family not in self.families:
      raise TokenError(f"family {arch.family!r} is not searched here (families {self.families})")
    depths, sizes = self._lists(arch.family)
    for key, value, grid in (
      ("features", arch.features, self.features),
      ("blocks", arch.blocks, depths),
      ("stages", arch.stages, sizes),
    ):
      if value not in grid:
        raise TokenError(f"{arch.describe()}: {key}={value} is not on this grid {grid}")
    return arch

  def arch_from_dict(self, d: dict) -> DRNArch:
    """Return the architecture stored by `DRNArch.to_dict`, checked against this grid."""
    return self._check(DRNArch.from_dict(d))

  def build(
    self, arch: DRNArch, scale: int, dtype: Dtype = jnp.float32, shifted: bool = False
  ) -> nn.Module:
    """Return the stand-alone network of `arch` at `scale` (no depthwise convs: `shifted` is moot)."""
    del shifted
    arch = self._check(arch)
    if arch.family == "rcan":
      return RCANNet(arch.features, arch.blocks, arch.stages, scale, self.reduction, dtype)
    return DRNNet(arch.features, arch.blocks, arch.stages, scale, self.reduction, dtype)

  def count_params(self, arch: DRNArch, scale: int) -> int:
    """Return the exact parameter count of build(arch, scale) (shapes only, no compute)."""
    return count_module_params(self.build(arch, check_subpixel_scale(scale)))

  def max_arch(self) -> DRNArch:
    """Return the child with the most parameters: widest, deepest, largest blocks, of either family."""
    archs = []
    for family in self.families:
      depths, sizes = self._lists(family)
      archs.append(DRNArch(family, max(self.features), max(depths), max(sizes)))
    # The scale only changes the upsampler, which both families share.
    return max(archs, key=lambda a: self.count_params(a, 2))

  def supernet(self, scale: int, dtype: Dtype = jnp.float32, remat: bool = False) -> DRNSupernet:
    """Return the weight-sharing supernet; call it as model.apply(variables, x, tokens).

    Args:
      scale: the upscaling factor.
      dtype: compute dtype (parameters stay float32).
      remat: recompute each scanned block (DRN) or group (RCAN) in the backward pass.
    """
    rcan = "rcan" in self.families
    return DRNSupernet(
      self.features,
      self.blocks,
      self.stages,
      self.families,
      self.rcan_groups if rcan else (1,),
      self.rcan_blocks if rcan else (1,),
      scale,
      self.reduction,
      dtype,
      remat,
    )

  def supernet_options(self) -> frozenset[str]:
    """Return the keyword options of `supernet` besides scale."""
    return frozenset({"dtype", "remat"})

  def child_params(self, supernet_params: dict, arch: DRNArch) -> dict:
    """Return the parameters of build(arch) sliced from the supernet's shared weights.

    Accepts the supernet's params tree or its variables ({"params": ...}) and returns the same
    form; scanned blocks come out stacked on a leading axis, as the child's `nn.scan` has them.
    """
    arch = self._check(arch)
    if "params" in supernet_params:
      return {"params": self.child_params(supernet_params["params"], arch)}
    sp, f = supernet_params, arch.features
    r = max(1, f // self.reduction)
    out = {
      "head": _conv_slice(sp["head"], (), 3, f),
      "body": _conv_slice(sp["body"], (), f, f),
      "upsample": {
        name: _conv_slice(conv, (), f, conv["kernel"].shape[-1] // max(self.features) * f)
        for name, conv in sp["upsample"].items()
      },
      "tail": _conv_slice(sp["tail"], (), f, 3),
    }
    if arch.family == "rcan":
      lead = (slice(0, arch.blocks), slice(0, arch.stages))
      rcab = sp["groups"]["rcab"]
      out["groups"] = {
        "group": {
          "rcabs": {
            "rcab": {
              "conv1": _conv_slice(rcab["conv1"], lead, f, f),
              "conv2": _conv_slice(rcab["conv2"], lead, f, f),
              "attention": _attention_slice(rcab["attention"], lead, f, r),
            }
          },
          "conv": _conv_slice(sp["groups"]["conv"], lead[:1], f, f),
        }
      }
      return out
    out["block0"] = _drb_slice(sp["block0"], (), arch.stages, f, r)
    if arch.blocks > 1:
      out["blocks"] = {
        "drb": _drb_slice(sp["blocks"], (slice(0, arch.blocks - 1),), arch.stages, f, r)
      }
    return out


def _drb_slice(p: dict, lead: tuple, stages: int, f: int, r: int) -> dict:
  """Return a child DRB's parameters (stage{j}_conv1/2, fuse, attention) from the supernet's."""
  out = {}
  for j in range(stages):
    for name in ("conv1", "conv2"):
      out[f"stage{j}_{name}"] = _conv_slice(p[f"stage_{name}"], (*lead, j), f, f)
  kernel = p["fuse"]["kernel"][lead]
  *front, lmax_fmax, fmax = kernel.shape
  # The child's fuse rows j * F + c are the supernet's rows j * F_max + c, for j < L and c < F.
  kernel = kernel.reshape(*front, lmax_fmax // fmax, fmax, fmax)[..., :stages, :f, :f]
  out["fuse"] = {
    "kernel": kernel.reshape(*front, stages * f, f),
    "bias": p["fuse"]["bias"][lead][..., :f],
  }
  out["attention"] = _attention_slice(p["attention"], lead, f, r)
  return out
