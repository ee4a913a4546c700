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

Example:
  space = nasr.spaces.get("drn", features=(32, 64), blocks=(4, 8), stages=(2, 3))
  arch = space.decode([0, 1, 0, 1])        # DRN, F=64, D=4, L=3
  model = space.build(arch, scale=2)
"""

import dataclasses
import functools
import json
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
from nasr.ops.upsample import MeanShift, SubPixelUpsampler, check_subpixel_scale
from nasr.spaces.registry import register

Dtype = Any

FAMILIES = ("drn", "rcan")


def ibsc_stages(stages: int) -> tuple[int, ...]:
  """Return the stages of a DRB that receive the inter-block skip connection (first and middle)."""
  return tuple(sorted({0, stages // 2}))


@dataclasses.dataclass(frozen=True)
class DRNArch:
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

  def to_dict(self) -> dict:
    """Return the architecture as a JSON-serialisable dict."""
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    """Return the architecture as a JSON string."""
    return json.dumps(self.to_dict())

  @classmethod
  def from_dict(cls, d: dict) -> "DRNArch":
    """Return the architecture stored by `to_dict`, or raise TokenError naming the bad key."""
    names = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(d, dict) or sorted(d) != sorted(names):
      got = sorted(d) if isinstance(d, dict) else type(d).__name__
      raise TokenError(f"a DRN architecture needs the keys {names}, got {got}")
    return cls(**d)


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


class DRNNet(nn.Module):
  """A dense residual network: NHWC [0, 1] RGB to `scale` times it (float32)."""

  features: int = 64  # F
  blocks: int = 4  # D
  stages: int = 3  # L
  scale: int = 2  # 2, 3 or 4
  reduction: int = 16  # channel-attention reduction
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)

  def __post_init__(self):
    check_subpixel_scale(self.scale)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return the super-resolved NHWC batch."""
    f, dt = self.features, self.dtype
    x = MeanShift(-1.0, dtype=dt)(x)
    head = Conv(f, 3, dtype=dt, name="head")(x)
    h = DenseResidualBlock(f, self.stages, self.reduction, dt, name="block0")(head)
    if self.blocks > 1:
      scan = nn.scan(
        _DRBStep,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        length=self.blocks - 1,
      )
      (h, _), _ = scan(f, self.stages, self.reduction, dt, name="blocks")((h, head), None)
    h = Conv(f, 3, dtype=dt, name="body")(h) + head
    h = SubPixelUpsampler(f, self.scale, dtype=dt, name="upsample")(h)
    y = Conv(3, 3, dtype=dt, name="tail")(h)
    return MeanShift(1.0, dtype=jnp.float32)(y.astype(jnp.float32))


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


class RCANNet(nn.Module):
  """An RCAN-style network of `groups` x `blocks` RCABs: NHWC [0, 1] RGB to `scale` times it."""

  features: int = 64  # F
  groups: int = 10  # residual groups
  blocks: int = 20  # RCABs per group
  scale: int = 2  # 2, 3 or 4
  reduction: int = 16  # channel-attention reduction
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)

  def __post_init__(self):
    check_subpixel_scale(self.scale)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return the super-resolved NHWC batch."""
    f, dt = self.features, self.dtype
    x = MeanShift(-1.0, dtype=dt)(x)
    head = Conv(f, 3, dtype=dt, name="head")(x)
    scan = nn.scan(
      _GroupStep, variable_axes={"params": 0}, split_rngs={"params": True}, length=self.groups
    )
    h, _ = scan(f, self.blocks, self.reduction, dt, name="groups")(head, None)
    h = Conv(f, 3, dtype=dt, name="body")(h) + head
    h = SubPixelUpsampler(f, self.scale, dtype=dt, name="upsample")(h)
    y = Conv(3, 3, dtype=dt, name="tail")(h)
    return MeanShift(1.0, dtype=jnp.float32)(y.astype(jnp.float32))


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
class DRN:
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
    return TokenSpec(
      (len(self.families), len(self.features), len(self.blocks), len(self.stages)),
      ("family", "features", "blocks (rcan: groups)", "stages (rcan: blocks per group)"),
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

  def build(self, arch: DRNArch, scale: int, dtype: Dtype = jnp.float32) -> nn.Module:
    """Return the stand-alone network of `arch` at `scale`."""
    arch = self._check(arch)
    if arch.family == "rcan":
      return RCANNet(arch.features, arch.blocks, arch.stages, scale, self.reduction, dtype)
    return DRNNet(arch.features, arch.blocks, arch.stages, scale, self.reduction, dtype)

  def count_params(self, arch: DRNArch, scale: int) -> int:
    """Return the exact parameter count of build(arch, scale) (shapes only, no compute)."""
    return _count_params(self.build(arch, check_subpixel_scale(scale)))

  def all_archs(self) -> list[DRNArch]:
    """Return every architecture of the grid, in token order (last position fastest)."""
    spec = self.token_spec()
    grid = np.indices(spec.choices).reshape(len(spec), -1).T
    return [self.decode(t) for t in grid]


@functools.lru_cache(maxsize=512)
def _count_params(model: nn.Module) -> int:
  x = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes)))
