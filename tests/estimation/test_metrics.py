"""Tests of PSNR/SSIM: agreement with scikit-image, known values, conventions, the JAX PSNR."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from nasr.core.errors import DataError
from nasr.estimation import metrics


def _pair(shape=(40, 48, 3), seed=0, noise=12.0):
  """Return a smooth uint8 image and a noisy float copy of it (values outside [0, 255] too)."""
  rng = np.random.default_rng(seed)
  h, w, c = shape
  yy, xx = np.mgrid[0:h, 0:w]
  base = 128 + 90 * np.sin(xx[..., None] / 5.0 + np.arange(c)) * np.cos(yy[..., None] / 7.0)
  hr = np.clip(np.round(base + rng.normal(0, 10, shape)), 0, 255).astype(np.uint8)
  sr = hr.astype(np.float64) + rng.normal(0, noise, shape)
  return sr, hr


def _skimage_ssim(x, y):
  return structural_similarity(
    x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
  )


@pytest.mark.parametrize("crop", [0, 2, 4])
@pytest.mark.parametrize("round_y", [True, False])
def test_psnr_and_ssim_match_skimage_on_y(crop, round_y):
  sr, hr = _pair(seed=crop)
  ys = metrics.rgb_to_y(metrics.quantize(sr))
  yh = metrics.rgb_to_y(hr)
  if round_y:
    ys, yh = np.round(ys), np.round(yh)
  if crop:
    ys, yh = ys[crop:-crop, crop:-crop], yh[crop:-crop, crop:-crop]
  # skimage averages the SSIM map over the region (win_size-1)//2 = 5 pixels inside the border,
  # where its reflect-padded filtering equals "valid" filtering: the same quantity as ours.
  assert metrics.psnr(sr, hr, crop, round_y=round_y) == pytest.approx(
    peak_signal_noise_ratio(yh, ys, data_range=255), abs=1e-6
  )
  assert metrics.ssim(sr, hr, crop, round_y=round_y) == pytest.approx(
    _skimage_ssim(ys, yh), abs=1e-6
  )


def test_psnr_and_ssim_match_skimage_on_rgb():
  sr, hr = _pair(seed=3)
  q = metrics.quantize(sr)[2:-2, 2:-2]
  h = hr[2:-2, 2:-2].astype(np.float64)
  assert metrics.psnr(sr, hr, 2, test_y_channel=False) == pytest.approx(
    peak_signal_noise_ratio(h, q, data_range=255), abs=1e-6
  )
  expected = np.mean([_skimage_ssim(q[..., c], h[..., c]) for c in range(3)])
  assert metrics.ssim(sr, hr, 2, test_y_channel=False) == pytest.approx(expected, abs=1e-6)


def test_rgb_to_y_known_values():
  img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [10, 20, 30]]], np.uint8)
  y = metrics.rgb_to_y(img)
  assert y.dtype == np.float64
  expected = [16.0, 235.0, 16 + 65.481, 16 + (65.481 * 10 + 128.553 * 20 + 24.966 * 30) / 255]
  np.testing.assert_allclose(y[0], expected, atol=1e-12)
  assert y[0, 3] != np.round(y[0, 3])  # not rounded to integers
  np.testing.assert_array_equal(metrics.rgb_to_y_rounded(img)[0], [16, 235, 81, 32])


def test_rgb_to_y_rounded_is_exact_half_up():
  weights = np.array([65481, 128553, 24966])
  # Exact ties (194 of the 2**24 RGB triples): 65481 R + 128553 G + 24966 B + 4080000 is an odd
  # multiple of 127500, so Y = k + 1/2 exactly.
  ties = np.array([[0, 204, 68], [46, 146, 246], [101, 151, 76], [165, 105, 145], [216, 218, 175]])
  assert np.all((ties @ weights + 4080000) % 255000 == 127500)
  sample = np.concatenate([ties, np.random.default_rng(0).integers(0, 256, (5000, 3))])[None]
  expected = (sample @ weights + 4080000 + 127500) // 255000
  np.testing.assert_array_equal(metrics.rgb_to_y_rounded(sample.astype(np.uint8)), expected)
  np.testing.assert_array_equal(metrics.rgb_to_y_rounded(sample.astype(np.float32)), expected)
  tie_y = metrics.rgb_to_y(ties[None])
  np.testing.assert_array_equal(metrics.rgb_to_y_rounded(ties[None]), np.floor(tie_y + 0.1) + 1)


def test_quantize_clips_and_rounds():
  out = metrics.quantize(np.array([-3.0, 0.4, 0.6, 254.5, 255.7, 300.0]))
  np.testing.assert_array_equal(out, [0, 0, 1, 254, 255, 255])  # np.round: half to even


def test_psnr_known_values():
  hr = np.full((16, 16, 3), 100, np.uint8)
  assert metrics.psnr(hr, hr, 0) == float("inf")
  # A +1 offset on every RGB channel moves Y by 219/255: MSE = (219/255)^2; rounded, Y goes from
  # round(101.88) = 102 to round(102.74) = 103: MSE = 1.
  expected_y = 10 * np.log10(255.0**2 / (219 / 255) ** 2)
  assert metrics.psnr(hr + 1, hr, 0, round_y=False) == pytest.approx(expected_y, abs=1e-9)
  assert metrics.psnr(hr + 1, hr, 0) == pytest.approx(20 * np.log10(255.0), abs=1e-9)
  # Rounded luma hides a change of one blue level here: Y moves by 24.966/255 < 0.5.
  blue = hr.copy()
  blue[..., 2] += 1
  assert metrics.psnr(blue, hr, 0) == float("inf")
  assert np.isfinite(metrics.psnr(blue, hr, 0, round_y=False))
  assert metrics.psnr(hr + 1, hr, 0, test_y_channel=False) == pytest.approx(
    20 * np.log10(255.0), abs=1e-9
  )
  # Differences inside the shaved border do not count.
  sr = hr.copy()
  sr[:2] = 0
  assert metrics.psnr(sr, hr, 2) == float("inf")
  assert metrics.psnr(sr, hr, 1) < 30


def test_sr_is_quantised_before_scoring():
  hr = np.full((16, 16, 3), 100, np.uint8)
  assert metrics.psnr(hr + 0.4, hr, 0) == float("inf")
  assert metrics.ssim(hr + 0.4, hr, 0) == pytest.approx(1.0, abs=1e-12)
  assert np.isfinite(metrics.psnr(hr + 0.6, hr, 0))


def test_ssim_properties():
  sr, hr = _pair(seed=5)
  assert metrics.ssim(hr, hr, 4) == pytest.approx(1.0, abs=1e-12)
  noisier, _ = _pair(seed=5, noise=40.0)
  assert metrics.ssim(noisier, hr, 4) < metrics.ssim(sr, hr, 4) < 1.0


def test_grayscale_planes_are_scored_as_luma():
  sr, hr = _pair(shape=(32, 32, 1), seed=6)
  q = metrics.quantize(sr)[1:-1, 1:-1, 0]
  h = hr[1:-1, 1:-1, 0].astype(np.float64)
  assert metrics.psnr(sr[..., 0], hr[..., 0], 1) == pytest.approx(
    peak_signal_noise_ratio(h, q, data_range=255), abs=1e-6
  )
  assert metrics.ssim(sr, hr, 1) == pytest.approx(_skimage_ssim(q, h), abs=1e-6)


def test_bad_inputs_raise():
  a = np.zeros((16, 16, 3))
  with pytest.raises(DataError, match=r"\(16, 16, 3\).*\(16, 12, 3\)"):
    metrics.psnr(a, np.zeros((16, 12, 3)), 0)
  with pytest.raises(ValueError, match="crop_border"):
    metrics.psnr(a, a, 8)
  with pytest.raises(ValueError, match="window"):
    metrics.ssim(a, a, 3)
  with pytest.raises(DataError, match="3 channels"):
    metrics.rgb_to_y(np.zeros((4, 4, 4)))


@pytest.mark.parametrize("test_y,round_y", [(True, True), (True, False), (False, True)])
def test_psnr_jax_matches_numpy(test_y, round_y):
  imgs = [_pair(shape=(24, 20, 3), seed=s, noise=3.0 + 5 * s) for s in range(3)]
  sr = np.stack([s for s, _ in imgs]) / 255.0
  hr = np.stack([h for _, h in imgs])
  fn = functools.partial(metrics.psnr_jax, crop_border=3, test_y_channel=test_y, round_y=round_y)
  got = jax.jit(fn)(jnp.asarray(sr, jnp.float32), jnp.asarray(hr / 255.0, jnp.float32))
  assert got.shape == (3,)
  expected = [
    metrics.psnr(s * 255.0, h, 3, test_y, round_y=round_y) for s, h in zip(sr, hr, strict=True)
  ]
  np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4)


def test_psnr_jax_identical_is_inf_and_checks_shapes():
  x = jnp.full((2, 8, 8, 3), 0.5)
  assert np.all(np.isinf(metrics.psnr_jax(x, x, 1)))
  with pytest.raises(DataError, match="does not match"):
    metrics.psnr_jax(x, x[:, :4], 1)
