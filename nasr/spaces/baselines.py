"""Hand-designed baseline networks (EDSR, bicubic) and the model registry.

`build_model("edsr", scale=2, blocks=16)` builds a registered model by name; unknown names and
unknown fields raise ConfigError naming what exists.
"""

import dataclasses
import numbers
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nasr.core.errors import ConfigError
from nasr.core.registry import Registry
from nasr.ops.blocks import ResBlock
from nasr.ops.frame import SRFrame, sr_frame

Dtype = Any

MODELS: Registry[type[nn.Module]] = Registry("model")

# Fields every linen module has; they are not user settings.
_LINEN_FIELDS = ("parent", "name")


@MODELS.register("edsr")
class EDSR(SRFrame, nn.Module):
  """EDSR (Lim et al. 2017): mean shift, head conv, residual blocks, long skip, sub-pixel upsampler.

  Input NHWC RGB in [0, 1]; output NHWC float32 at `scale` times the size, not clipped.
  """

  blocks: int = 8  # number of residual blocks
  channels: int = 32  # feature width
  scale: int = 2  # upscaling factor: 2, 3 or 4
  res_scale: float = 1.0  # residual branch scale inside each block
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)

  def __post_init__(self):
    # Fail at construction, before any tracing or data loading (SRFrame checks the scale).
    whole = all(
      isinstance(v, numbers.Real) and not isinstance(v, bool) and float(v).is_integer()
      for v in (self.blocks, self.channels)
    )
    if not whole or self.blocks < 0 or self.channels < 1:
      raise ConfigError(
        f"EDSR needs blocks >= 0 and channels >= 1, got blocks={self.blocks}, "
        f"channels={self.channels}"
      )
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return the super-resolved NHWC batch."""

    def body(h):
      for i in range(self.blocks):
        h = ResBlock(self.channels, res_scale=self.res_scale, dtype=self.dtype, name=f"block{i}")(h)
      return h

    return sr_frame(x, body, self.channels, self.scale, self.dtype)


@MODELS.register("bicubic")
class Bicubic(nn.Module):
  """Parameter-free bicubic upscaling with `jax.image.resize` (a graph stand-in).

  The published bicubic baseline uses the MATLAB-exact `nasr.data` imresize instead; this one
  differs at the borders.
  """

  scale: int = 2  # upscaling factor
  dtype: Dtype = jnp.float32  # compute dtype

  def __post_init__(self):
    if (
      isinstance(self.scale, bool) or not isinstance(self.scale, numbers.Integral) or self.scale < 1
    ):
      raise ConfigError(f"scale must be a positive integer, got {self.scale!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return the bicubic upscaled NHWC batch as float32."""
    n, h, w, c = x.shape
    y = jax.image.resize(x.astype(self.dtype), (n, h * self.scale, w * self.scale, c), "bicubic")
    return y.astype(jnp.float32)


def model_fields(name: str) -> list[str]:
  """Return the settable fields of the registered model `name` (besides `scale`)."""
  cls = MODELS.get(name)
  return [
    f.name
    for f in dataclasses.fields(cls)
    if f.init and f.name not in _LINEN_FIELDS and f.name != "scale"
  ]


def build_model(name: str, scale: int, **kwargs) -> nn.Module:
  """Return the registered model `name` at `scale`, or raise ConfigError for bad names or kwargs."""
  cls = MODELS.get(name)
  fields = model_fields(name)
  for key in kwargs:
    if key not in fields:
      raise ConfigError(f"model {name!r} has no field {key!r}; valid fields: {', '.join(fields)}")
  if isinstance(kwargs.get("dtype"), str):
    try:
      kwargs["dtype"] = jnp.dtype(kwargs["dtype"])
    except TypeError as e:
      raise ConfigError(f"model {name!r}: unknown dtype {kwargs['dtype']!r}") from e
  return cls(scale=scale, **kwargs)
