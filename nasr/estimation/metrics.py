"""PSNR and SSIM with the reference conventions of SR papers (DESIGN rule 7).

Conventions, as in the MATLAB evaluation scripts of RCAN and its descendants (and BasicSR's
`calculate_psnr` / `calculate_ssim`, up to the rounding of Y):

- images are HxWx3 RGB in [0, 255] (uint8 or float); the super-resolved image is quantised to 8 bits
  (clip, round) before scoring, the reference is used as given;
- scores are taken on the luma channel Y of BT.601 by default, rounded to integers as MATLAB
  `rgb2ycbcr` returns it for uint8 images (`round_y=True`);
- `crop_border` pixels (the scale, by convention) are shaved from every side;
- SSIM is Wang et al.'s: 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255,
  statistics only where the window fits inside the (shaved) image ("valid" filtering), the mean of
  the SSIM map.

Why rounded Y: the MATLAB scripts behind most published tables (RCAN's `Evaluate_PSNR_SSIM.m` and
its descendants) call `rgb2ycbcr` on uint8 images, which returns uint8 luma. With rounded Y, MATLAB
bicubic on RGB reproduces the published Set5 bicubic baselines (33.66 / 0.9299 at x2, 30.39 /
0.8682 at x3, 28.42 / 0.8104 at x4) to 0.012 dB / 0.0004; unrounded float Y (BasicSR, EDSR's
PyTorch code) scores 0.01-0.03 dB and ~0.0008 SSIM higher and misses x2 by 0.022 dB. Pass
`round_y=False` for BasicSR-comparable numbers. The published figures themselves come from the
VDSR-era protocol that resizes the rounded Y plane alone: done that way, these metrics give
33.6614 / 0.9299, 30.3922 / 0.8682 and 28.4207 / 0.8104, the published values to every digit.
`rgb_to_y` itself returns unrounded float64 luma.

Rounding is half up, in exact integer arithmetic for 8-bit inputs (Y * 255000 is an integer), so
the 194 RGB triples whose luma is exactly k + 1/2 round the same way here and in `psnr_jax`.
"""

import jax.numpy as jnp
import numpy as np

from nasr.core.errors import DataError

# BT.601 luma for RGB in [0, 255]: Y in [16, 235] (MATLAB rgb2ycbcr).
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0
_Y_OFFSET = 16.0
_Y_WEIGHTS_INT = np.array([65481, 128553, 24966])  # the weights times 1000
_Y_DENOM = 255000
_Y_OFFSET_INT = 16 * _Y_DENOM

_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_K1, _SSIM_K2 = 0.01, 0.03
_PIXEL_MAX = 255.0


def rgb_to_y(img: np.ndarray) -> np.ndarray:
  """Return the BT.601 luma (float64, unrounded) of an HxWx3 RGB image in [0, 255]."""
  img = np.asarray(img, dtype=np.float64)
  if img.ndim < 3 or img.shape[-1] != 3:
    raise DataError(f"rgb_to_y expects an RGB image with 3 channels last, got shape {img.shape}")
  return img @ _Y_WEIGHTS + _Y_OFFSET


def rgb_to_y_rounded(img: np.ndarray) -> np.ndarray:
  """Return the BT.601 luma rounded half up to integers (MATLAB rgb2ycbcr on uint8), float64."""
  img = np.asarray(img)
  if img.ndim < 3 or img.shape[-1] != 3:
    raise DataError(
      f"rgb_to_y_rounded expects an RGB image with 3 channels last, got shape {img.shape}"
    )
  if np.issubdtype(img.dtype, np.integer) or np.all(img == np.round(img)):
    # Exact: Y * 255000 = 65481 R + 128553 G + 24966 B + 4080000 is an integer for integer RGB.
    y_int = img.astype(np.int64) @ _Y_WEIGHTS_INT + _Y_OFFSET_INT
    return ((y_int + _Y_DENOM // 2) // _Y_DENOM).astype(np.float64)
  return np.floor(rgb_to_y(img) + 0.5)


def quantize(img: np.ndarray) -> np.ndarray:
  """Return `img` clipped to [0, 255] and rounded to integers, as float64."""
  return np.round(np.clip(np.asarray(img, dtype=np.float64), 0.0, _PIXEL_MAX))


def _prepare(sr, hr, crop_border: int, test_y_channel: bool, round_y: bool, metric: str):
  """Return the quantised, shaved (and Y-converted) planes of sr and hr, HxWxC float64."""
  sr = np.asarray(sr)
  hr = np.asarray(hr)
  if sr.shape != hr.shape:
    raise DataError(f"{metric}: sr shape {sr.shape} does not match hr shape {hr.shape}")
  if sr.ndim not in (2, 3):
    raise DataError(f"{metric}: expected an HxW or HxWxC image, got shape {sr.shape}")
  if crop_border < 0:
    raise DataError(f"{metric}: crop_border must be >= 0, got {crop_border}")
  sr = quantize(sr)
  hr = np.asarray(hr, dtype=np.float64)
  if sr.ndim == 2:
    sr, hr = sr[..., None], hr[..., None]
  h, w = sr.shape[:2]
  if 2 * crop_border >= min(h, w):
    raise DataError(f"{metric}: crop_border {crop_border} leaves nothing of a {h}x{w} image")
  if crop_border:
    sr = sr[crop_border:-crop_border, crop_border:-crop_border]
    hr = hr[crop_border:-crop_border, crop_border:-crop_border]
  if test_y_channel and sr.shape[-1] == 3:
    luma = rgb_to_y_rounded if round_y else rgb_to_y
    sr, hr = luma(sr)[..., None], luma(hr)[..., None]
  return sr, hr


def psnr(
  sr: np.ndarray,
  hr: np.ndarray,
  crop_border: int,
  test_y_channel: bool = True,
  *,
  round_y: bool = True,
) -> float:
  """Return the PSNR in dB of `sr` against `hr` (inf when they are equal after quantisation).

  Args:
    sr: super-resolved image, HxWx3 in [0, 255]; quantised to 8 bits before scoring.
    hr: reference image of the same shape.
    crop_border: pixels shaved from each side (the scale, by convention).
    test_y_channel: score the BT.601 luma; otherwise all RGB channels together.
    round_y: round the luma to integers (MATLAB); False gives BasicSR's float luma.
  """
  sr, hr = _prepare(sr, hr, crop_border, test_y_channel, round_y, "psnr")
  mse = np.mean((sr - hr) ** 2)
  if mse == 0:
    return float("inf")
  return float(10.0 * np.log10(_PIXEL_MAX**2 / mse))


def _gaussian_1d(size: int = _SSIM_WINDOW, sigma: float = _SSIM_SIGMA) -> np.ndarray:
  """Return a normalised 1-D Gaussian of `size` taps (cv2.getGaussianKernel)."""
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  g = np.exp(-(x**2) / (2.0 * sigma**2))
  return g / g.sum()


def _filter_valid(plane: np.ndarray, g: np.ndarray) -> np.ndarray:
  """Return the separable correlation of a 2-D plane with g x g where the window fits."""
  k = g.shape[0]
  rows = np.lib.stride_tricks.sliding_window_view(plane, k, axis=0) @ g
  return np.lib.stride_tricks.sliding_window_view(rows, k, axis=1) @ g


def _ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Return the SSIM map of two 2-D planes in [0, 255] ("valid" region only)."""
  g = _gaussian_1d()
  c1 = (_SSIM_K1 * _PIXEL_MAX) ** 2
  c2 = (_SSIM_K2 * _PIXEL_MAX) ** 2
  mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
  # E[x^2] - E[x]^2 as BasicSR/MATLAB do (population covariance), not a sample covariance.
  var_x = _filter_valid(x * x, g) - mu_x**2
  var_y = _filter_valid(y * y, g) - mu_y**2
  cov = _filter_valid(x * y, g) - mu_x * mu_y
  num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
  den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
  return num / den


def ssim(
  sr: np.ndarray,
  hr: np.ndarray,
  crop_border: int,
  test_y_channel: bool = True,
  *,
  round_y: bool = True,
) -> float:
  """Return the SSIM of `sr` against `hr` (the mean over channels when not on Y).

  Args:
    sr: super-resolved image, HxWx3 in [0, 255]; quantised to 8 bits before scoring.
    hr: reference image of the same shape.
    crop_border: pixels shaved from each side (the scale, by convention).
    test_y_channel: score the BT.601 luma; otherwise the mean of per-channel SSIMs.
    round_y: round the luma to integers (MATLAB); False gives BasicSR's float luma.
  """
  sr, hr = _prepare(sr, hr, crop_border, test_y_channel, round_y, "ssim")
  if min(sr.shape[:2]) < _SSIM_WINDOW:
    raise DataError(
      f"ssim: the shaved image is {sr.shape[0]}x{sr.shape[1]}, smaller than the "
      f"{_SSIM_WINDOW}x{_SSIM_WINDOW} window"
    )
  scores = [_ssim_map(sr[..., c], hr[..., c]).mean() for c in range(sr.shape[-1])]
  return float(np.mean(scores))


def psnr_jax(sr, hr, crop_border: int, test_y_channel: bool = True, *, round_y: bool = True):
  """Return the per-image PSNR in dB, shape [N], of NHWC batches in [0, 1] (jit-friendly).

  Both `sr` and `hr` are quantised with round(clip(x * 255)): `hr` is taken to be 8-bit data scaled
  to [0, 1], and rounding undoes the float32 error of that scaling. Agrees with `psnr` to about
  1e-5 dB (exactly up to float32 rounding on 8-bit images; a float `sr` whose values lie within
  float32 precision of k + 1/2 may quantise differently).

  Args:
    sr: super-resolved batch, NHWC (C = 3, or 1 for luma) in [0, 1].
    hr: reference batch of the same shape.
    crop_border: pixels shaved from each side (a Python int).
    test_y_channel: score the BT.601 luma; otherwise all channels together.
    round_y: round the luma to integers (MATLAB); False gives BasicSR's float luma.
  """
  sr = jnp.asarray(sr)
  hr = jnp.asarray(hr)
  if sr.shape != hr.shape:
    raise DataError(f"psnr_jax: sr shape {sr.shape} does not match hr shape {hr.shape}")
  if sr.ndim != 4:
    raise DataError(f"psnr_jax: expected an NHWC batch, got shape {sr.shape}")
  h, w = sr.shape[1:3]
  if crop_border < 0 or 2 * crop_border >= min(h, w):
    raise DataError(f"psnr_jax: crop_border {crop_border} does not fit a {h}x{w} image")

  def q(x):
    x = jnp.round(jnp.clip(x.astype(jnp.float32) * _PIXEL_MAX, 0.0, _PIXEL_MAX))
    if crop_border:
      x = x[:, crop_border:-crop_border, crop_border:-crop_border, :]
    return x

  sr, hr = q(sr), q(hr)
  if test_y_channel and sr.shape[-1] == 3 and round_y:
    # Integer luma (Y * 255000 < 2**31): exact, so it rounds exactly as `rgb_to_y_rounded` does.
    weights = jnp.asarray(_Y_WEIGHTS_INT, jnp.int32)

    def luma(x):
      y_int = x.astype(jnp.int32) @ weights + _Y_OFFSET_INT
      return ((y_int + _Y_DENOM // 2) // _Y_DENOM).astype(jnp.float32)

    diff = luma(sr) - luma(hr)
  elif test_y_channel and sr.shape[-1] == 3:
    # Y is linear and the offset cancels: converting the (exact) RGB difference avoids the
    # cancellation of subtracting two float32 luma planes near 200.
    diff = (sr - hr) @ jnp.asarray(_Y_WEIGHTS, jnp.float32)
  else:
    diff = sr - hr
  mse = jnp.mean(diff.reshape(diff.shape[0], -1) ** 2, axis=1)
  return 10.0 * jnp.log10(_PIXEL_MAX**2 / mse)
