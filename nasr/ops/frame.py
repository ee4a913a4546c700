"""The frame every super-resolution network here shares, written once.

  x -> MeanShift(-1) -> head conv3x3 (3 -> F) -> body -> [body conv3x3] -> + head (long skip)
    -> sub-pixel upsampler (F -> F, x scale) -> tail conv3x3 (F -> 3) -> MeanShift(+1)

EDSR, DRN, RCAN, DeCoNAS and DARTS-SR networks and supernets differ only in their body (and in
the names of the head and body convs, which their parameter trees keep). `sr_frame` is called
inside the network's own `@nn.compact` method, so its convs, upsampler and mean shifts are the
network's submodules: parameter paths are "head", "body", "upsample", "tail" of the network itself.

The upsampler's position is a parameter: with `upsample_at="body"` there is no final upsampler
(the body upsamples, as HNAS's upsampling cell does), and the long skip adds the head features
interpolated to the body's resolution; `skip="image"` instead adds the interpolated input image to
the output (a global residual in image space).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from nasr.core.errors import ConfigError
from nasr.ops.conv import Conv
from nasr.ops.upsample import (
  RESIZE_METHODS,
  MeanShift,
  SubPixelUpsampler,
  check_subpixel_scale,
  interpolate,
)

Dtype = Any

UPSAMPLE_AT = ("end", "body")  # a sub-pixel upsampler after the body, or the body upsamples
SKIPS = ("head", "image", "none")  # the long skip: head features, the input image, or none


class SRFrame:
  """Mixin of an SR network with a `scale` field: the scale is checked once, at construction.

  Use it before `nn.Module` (`class Net(SRFrame, nn.Module)`) and call `sr_frame` in `__call__`;
  a bad scale then fails when the network is built, before any tracing or data loading.
  """

  def __post_init__(self):
    check_subpixel_scale(self.scale)
    super().__post_init__()


def _resize_to(x: jax.Array, like: jax.Array, method: str) -> jax.Array:
  factor = like.shape[1] // x.shape[1]
  if like.shape[1:3] == (factor * x.shape[1], factor * x.shape[2]):
    # Shifted multiply-adds: no dense interpolation matrix in the multiply-add count.
    return interpolate(x, factor, method).astype(like.dtype)
  return jax.image.resize(x, (*like.shape[:3], x.shape[-1]), method).astype(like.dtype)


def sr_frame(
  x: jax.Array,
  body: Callable[[jax.Array], jax.Array],
  features: int,
  scale: int,
  dtype: Dtype = jnp.float32,
  *,
  head: str = "head",
  head_bias: bool = True,
  body_conv: str | None = "body",
  upsample_at: str = "end",
  skip: str = "head",
  skip_method: str = "bilinear",
  out_dtype: Dtype = jnp.float32,
  mask: jax.Array | None = None,
) -> jax.Array:
  """Return the super-resolved NHWC batch of the frame around `body` (call inside @nn.compact).

  Args:
    x: NHWC RGB in [0, 1].
    body: maps the head features [N, H, W, features] to body features of the same width (at the
      input resolution, or at `scale` times it with upsample_at="body"); it may create submodules.
    features: the feature width F of the head, body conv and upsampler.
    scale: the upscaling factor of the final upsampler.
    dtype: compute dtype (parameters stay float32).
    head: the head conv's name ("sfe1" in DeCoNAS).
    head_bias: whether the head conv has a bias (HNAS's released stem has none).
    body_conv: the name of the 3x3 conv after the body ("gff_conv" in DeCoNAS), None for none.
    upsample_at: "end" (a sub-pixel upsampler named "upsample" before the tail) or "body".
    skip: "head" adds the head features to the body output (interpolated when the body
      upsamples), "image" adds the interpolated input to the tail output, "none" adds nothing.
    skip_method: the interpolation of the long skip when it changes resolution.
    out_dtype: the output dtype (the mean is added back in it).
    mask: [features] channel mask of a weight-sharing supernet whose child is narrower: the head,
      body conv and upsampler outputs are multiplied by it, so the channels the child lacks stay
      zero.
  """
  if upsample_at not in UPSAMPLE_AT:
    raise ConfigError(f"upsample_at must be one of {UPSAMPLE_AT}, got {upsample_at!r}")
  if skip not in SKIPS:
    raise ConfigError(f"skip must be one of {SKIPS}, got {skip!r}")
  if skip_method not in RESIZE_METHODS:
    raise ConfigError(f"skip_method must be one of {RESIZE_METHODS}, got {skip_method!r}")
  masked = (lambda h: h) if mask is None else (lambda h: h * mask.astype(h.dtype))
  x = MeanShift(-1.0, dtype=dtype)(x)
  h0 = masked(Conv(features, 3, use_bias=head_bias, dtype=dtype, name=head)(x))
  h = body(h0)
  if body_conv is not None:
    h = masked(Conv(features, 3, dtype=dtype, name=body_conv)(h))
  if skip == "head":
    h = h + (h0 if h.shape[1:3] == h0.shape[1:3] else _resize_to(h0, h, skip_method))
  if upsample_at == "end":
    h = SubPixelUpsampler(features, scale, dtype=dtype, name="upsample")(h, mask)
  y = Conv(3, 3, dtype=dtype, name="tail")(h)
  if skip == "image":
    y = y + _resize_to(x, y, skip_method)
  return MeanShift(1.0, dtype=out_dtype)(y)
