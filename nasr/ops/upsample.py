"""Upsamplers (sub-pixel, transposed conv, fixed resize) and the DIV2K mean shift."""

import numbers
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nasr.core.errors import ConfigError
from nasr.ops.conv import Conv

Dtype = Any

# Mean RGB of the DIV2K training set in [0, 1] (as in EDSR/RCAN).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)

SUBPIXEL_SCALES = (2, 3, 4)
RESIZE_METHODS = ("nearest", "bilinear", "bicubic")


def pixel_shuffle(x: jax.Array, r: int) -> jax.Array:
  """Return the NHWC depth-to-space rearrangement of `x` by factor `r` (PyTorch's ordering).

  Input channel c * r * r + i * r + j goes to output channel c at (h * r + i, w * r + j).
  """
  n, h, w, cr2 = x.shape
  if cr2 % (r * r):
    raise ValueError(f"pixel_shuffle by {r} needs channels divisible by {r * r}, got {cr2}")
  c = cr2 // (r * r)
  x = x.reshape(n, h, w, c, r, r)
  x = x.transpose(0, 1, 4, 2, 5, 3)  # n, h, i, w, j, c
  return x.reshape(n, h * r, w * r, c)


def check_subpixel_scale(scale: int) -> int:
  """Return `scale` if the sub-pixel upsampler supports it, else raise ConfigError."""
  # A float such as 2.0 passes `in (2, 3, 4)` and would fail later inside the conv, less clearly.
  if not isinstance(scale, numbers.Integral) or scale not in SUBPIXEL_SCALES:
    raise ConfigError(f"scale must be one of {SUBPIXEL_SCALES}, got {scale!r}")
  return scale


def _linear(t: float) -> float:
  return max(0.0, 1.0 - abs(t))


def _keys_cubic(t: float, a: float = -0.5) -> float:
  t = abs(t)
  if t <= 1:
    return ((a + 2) * t - (a + 3)) * t * t + 1
  if t < 2:
    return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
  return 0.0


_KERNELS = {"bilinear": (_linear, 1), "bicubic": (_keys_cubic, 2)}


def _interpolate_axis(x: jax.Array, factor: int, axis: int, method: str) -> jax.Array:
  kernel, radius = _KERNELS[method]
  n = x.shape[axis]
  symbolic = jax.export.is_symbolic_dim(n)
  pad = [(radius, radius) if a == axis else (0, 0) for a in range(x.ndim)]
  # any symbolic dimension (a free batch too): jax2onnx cannot convert such a lax.pad
  exported = any(jax.export.is_symbolic_dim(d) for d in x.shape)
  xp = _zero_pad(x, radius, axis) if exported else jnp.pad(x, pad)
  bshape = [n if a == axis else 1 for a in range(x.ndim)]
  phases = []
  for r in range(factor):
    # Output pixel i * factor + r samples the input at i + d (half-pixel centres).
    d = (2 * r + 1 - factor) / (2 * factor)
    taps = range(int(np.floor(d)) - radius + 1, int(np.floor(d)) + radius + 1)
    weights = np.array([kernel(k - d) for k in taps])
    if symbolic:
      phases.append(_symbolic_phase(x, xp, weights, taps, axis, radius, bshape))
      continue
    index = np.arange(n)
    valid = np.stack([(index + k >= 0) & (index + k < n) for k in taps])
    # Taps outside the image are dropped and the rest renormalised, as jax.image.resize does.
    coef = weights[:, None] * valid / np.sum(weights[:, None] * valid, axis=0)
    out = 0.0
    for c, k in zip(coef, taps, strict=True):
      if np.any(c):
        window = jax.lax.slice_in_dim(xp, radius + k, radius + k + n, axis=axis)
        out = out + jnp.asarray(c.reshape(bshape), x.dtype) * window
    phases.append(out)
  y = jnp.stack(phases, axis=axis + 1)
  return y.reshape(*x.shape[:axis], n * factor, *x.shape[axis + 1 :])


def _zero_pad(x: jax.Array, radius: int, axis: int) -> jax.Array:
  """Return `x` with `radius` zeros before and after it along `axis`, by concatenation: jax2onnx
  (0.17.1) cannot convert a `lax.pad` of an array whose size is symbolic."""
  zeros = jnp.zeros((*x.shape[:axis], radius, *x.shape[axis + 1 :]), x.dtype)
  return jnp.concatenate([zeros, x, zeros], axis=axis)


def _symbolic_phase(x, xp, weights, taps, axis: int, radius: int, bshape) -> jax.Array:
  """Return one output phase of `_interpolate_axis` when the axis has a symbolic size (an export
  for any image size): the taps' weighted sum over the zero-padded `xp`, divided by the weights
  of the taps inside the image, i.e. the same renormalised edges without per-pixel constants
  (equal to the concrete form up to float rounding)."""
  n = x.shape[axis]
  inside = _zero_pad(jnp.ones((n,), x.dtype), radius, 0)
  total, norm = 0.0, 0.0
  for w, k in zip(weights, taps, strict=True):
    if w == 0:
      continue
    window = jax.lax.slice_in_dim(xp, radius + k, radius + k + n, axis=axis)
    total = total + jnp.asarray(w, x.dtype) * window
    norm = norm + jnp.asarray(w, x.dtype) * jax.lax.slice_in_dim(inside, radius + k, radius + k + n)
  return total / norm.reshape(bshape)


def interpolate(x: jax.Array, factor: int, method: str = "bilinear") -> jax.Array:
  """Return NHWC `x` upscaled by the integer `factor` (nearest, bilinear or bicubic).

  Equals `jax.image.resize` (half-pixel centres, Keys cubic a=-0.5, edge taps renormalised) but
  is written as shifted multiply-adds: `jax.image.resize` contracts with dense interpolation
  matrices, which cost O(H) per pixel and would count as multiply-adds of the network
  (nasr.estimation.cost counts contractions).
  """
  if method not in RESIZE_METHODS:
    raise ConfigError(f"resize method must be one of {RESIZE_METHODS}, got {method!r}")
  if not isinstance(factor, int) or factor < 1:
    raise ConfigError(f"interpolate needs a positive integer factor, got {factor!r}")
  if factor == 1:
    return x
  if method == "nearest":
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)
  return _interpolate_axis(_interpolate_axis(x, factor, 1, method), factor, 2, method)


class SubPixelUpsampler(nn.Module):
  """Upsample by conv to r*r*C channels then pixel shuffle; x4 is two x2 stages."""

  channels: int  # feature width (input = output)
  scale: int = 2  # 2, 3 or 4
  kernel: int = 3  # kernel size of each expansion conv
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)

  def __post_init__(self):
    check_subpixel_scale(self.scale)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Return the NHWC batch upsampled by `scale`, with `channels` channels.

    `mask` [channels] multiplies each stage's output: a weight-sharing supernet keeps the channels
    a narrower child lacks at zero. The child's F * r * r conv outputs are the first ones of this
    conv's (pixel_shuffle is channel-major), so its kernels are prefixes of these.
    """
    factors = (2, 2) if self.scale == 4 else (self.scale,)
    for i, r in enumerate(factors):
      x = Conv(r * r * self.channels, self.kernel, dtype=self.dtype, name=f"conv{i}")(x)
      x = pixel_shuffle(x, r)
      if mask is not None:
        x = x * mask.astype(x.dtype)
    return x


class Deconv(nn.Module):
  """Upsample with one stride-`scale` transposed convolution ('SAME': output = input * scale)."""

  channels: int  # output channels
  scale: int = 2  # upsampling factor (the stride)
  kernel: int = 0  # transposed-conv kernel size; 0 means 2 * scale
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)

  def __post_init__(self):
    if not isinstance(self.scale, int) or self.scale < 1:
      raise ConfigError(f"Deconv scale must be a positive integer, got {self.scale!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return the NHWC batch upsampled by `scale`."""
    k = self.kernel or 2 * self.scale
    return nn.ConvTranspose(
      self.channels,
      (k, k),
      strides=(self.scale, self.scale),
      padding="SAME",
      dtype=self.dtype,
      param_dtype=jnp.float32,
      name="deconv",
    )(x.astype(self.dtype))


class MeanShift(nn.Module):
  """Add `sign` times the DIV2K RGB mean (no parameters)."""

  sign: float = -1.0  # -1 subtracts the mean (network input), +1 adds it back (output)
  dtype: Dtype = jnp.float32  # compute dtype

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return x + sign * DIV2K_RGB_MEAN."""
    return x.astype(self.dtype) + self.sign * jnp.asarray(DIV2K_RGB_MEAN, self.dtype)
