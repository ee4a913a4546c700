"""MATLAB-compatible bicubic `imresize` and the standard SR degradation built on it."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from nasr.core.checks import SCALES, check_scale  # noqa: F401 - re-exported
from nasr.core.errors import ConfigError

_KERNEL_WIDTH = 4.0  # support of the cubic kernel, in input pixels, before antialiasing


def _cubic(x: np.ndarray) -> np.ndarray:
  """Return Keys' cubic kernel with a = -0.5 (MATLAB imresize.m `cubic`)."""
  absx = np.abs(x)
  absx2 = absx * absx
  absx3 = absx2 * absx
  return (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1) + (
    -0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0
  ) * ((absx > 1) & (absx <= 2))


@functools.lru_cache(maxsize=256)
def contributions(in_length: int, out_length: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
  """Return (weights, indices), each [out_length, taps]: MATLAB imresize.m `contributions`.

  Indices are 0-based. The arrays are cached and read-only.
  """
  antialias = scale < 1
  kernel_width = _KERNEL_WIDTH / scale if antialias else _KERNEL_WIDTH
  x = np.arange(1, out_length + 1, dtype=np.float64)[:, None]
  u = x / scale + 0.5 * (1.0 - 1.0 / scale)
  left = np.floor(u - kernel_width / 2.0)
  taps = int(math.ceil(kernel_width)) + 2
  ind = left + np.arange(taps, dtype=np.float64)[None, :]  # 1-based, like MATLAB
  if antialias:
    # Shrinking: stretch the kernel by 1/scale so it also low-passes (antialiasing).
    weights = scale * _cubic(scale * (u - ind))
  else:
    weights = _cubic(u - ind)
  weights = weights / np.sum(weights, axis=1, keepdims=True)
  # Symmetric (mirror) padding: index sequence 1..n, n..1 repeated.
  aux = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
  ind0 = aux[np.mod(ind.astype(np.int64) - 1, aux.size)]
  keep = np.any(weights != 0, axis=0)
  weights = np.ascontiguousarray(weights[:, keep])
  ind0 = np.ascontiguousarray(ind0[:, keep])
  weights.flags.writeable = False
  ind0.flags.writeable = False
  return weights, ind0


def _resize_axis(x: np.ndarray, axis: int, out_length: int, scale: float) -> np.ndarray:
  weights, indices = contributions(x.shape[axis], out_length, float(scale))
  x = np.moveaxis(x, axis, 0)
  w = weights.reshape(weights.shape + (1,) * (x.ndim - 1))
  # A gather per tap instead of a dense [out, in] matrix: taps << in for every SR scale.
  out = w[:, 0] * x[indices[:, 0]]
  for p in range(1, indices.shape[1]):
    out += w[:, p] * x[indices[:, p]]
  return np.moveaxis(out, 0, axis)


def _check_positive(scale: float) -> float:
  try:
    value = float(scale)
  except (TypeError, ValueError):
    raise ConfigError(f"imresize scale must be a positive number, got {scale!r}") from None
  if not math.isfinite(value) or value <= 0:
    raise ConfigError(f"imresize scale must be a positive number, got {scale!r}")
  return value


def _output_length(in_length: int, scale: float) -> int:
  # MATLAB: ceil(in * scale); the tolerance keeps 1/3 * 9 at 3, not 4, after rounding error.
  return max(1, int(math.ceil(in_length * scale - 1e-9)))


def imresize(
  img: np.ndarray,
  scale: float | Sequence[float] | None = None,
  output_shape: Sequence[int] | None = None,
) -> np.ndarray:
  """Return `img` (HxW or HxWxC) resized like MATLAB's bicubic `imresize` (antialiased shrink).

  Args:
    img: the image. uint8 is computed in float64 and rounded and clipped back to uint8 after each
      axis, as MATLAB does; any other dtype is returned as float64 without rounding.
    scale: a positive factor, or (scale_h, scale_w). Output size is ceil(in * scale).
    output_shape: (out_h, out_w) instead of `scale`; the scale per axis is then out / in.

  Returns:
    The resized image.
  """
  arr = np.asarray(img)
  if arr.ndim not in (2, 3):
    raise ConfigError(f"imresize expects an HxW or HxWxC image, got shape {arr.shape}")
  in_shape = arr.shape[:2]
  if output_shape is not None:
    out_shape = tuple(int(s) for s in output_shape)[:2]
    if len(out_shape) != 2 or min(out_shape) < 1:
      raise ConfigError(f"imresize output_shape must be two positive sizes, got {output_shape!r}")
    if scale is None:
      scales = (out_shape[0] / in_shape[0], out_shape[1] / in_shape[1])
    else:
      scales = _scale_pair(scale)
  elif scale is not None:
    scales = _scale_pair(scale)
    out_shape = (_output_length(in_shape[0], scales[0]), _output_length(in_shape[1], scales[1]))
  else:
    raise ConfigError("imresize needs scale or output_shape")
  is_uint8 = arr.dtype == np.uint8
  out = arr if is_uint8 else arr.astype(np.float64)
  # MATLAB resizes the axis with the smaller scale first (stable sort: height on ties).
  order = (0, 1) if scales[0] <= scales[1] else (1, 0)
  for axis in order:
    out = _resize_axis(out, axis, out_shape[axis], scales[axis])
    if is_uint8:
      # MATLAB's imresizemex returns the input class after each axis, so a uint8 image is
      # rounded (half away from zero; values are >= 0 after the clip) between the two passes.
      out = np.floor(np.clip(out, 0.0, 255.0) + 0.5).astype(np.uint8)
  return out


def _scale_pair(scale: float | Sequence[float]) -> tuple[float, float]:
  if np.ndim(scale) == 0:
    s = _check_positive(scale)
    return s, s
  values = tuple(scale)
  if len(values) != 2:
    raise ConfigError(f"imresize scale must be a number or a pair, got {scale!r}")
  return _check_positive(values[0]), _check_positive(values[1])


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
  """Return `img` cropped at the bottom and right so both sides are multiples of `scale`."""
  h, w = img.shape[:2]
  return img[: h - h % scale, : w - w % scale]


def bicubic_degrade(hr: np.ndarray, scale: int) -> np.ndarray:
  """Return the LR uint8 image of `hr`: MATLAB imresize(modcrop(hr, scale), 1/scale)."""
  hr = modcrop(np.asarray(hr), scale)
  out_shape = (hr.shape[0] // scale, hr.shape[1] // scale)
  return imresize(hr, scale=1.0 / scale, output_shape=out_shape)
