"""imresize against a per-pixel loop written straight from MATLAB's imresize.m formulas."""

import math

import numpy as np
import pytest

from nasr.core.errors import ConfigError
from nasr.data import bicubic_degrade, check_scale, imresize, list_images, modcrop, read_image


def _cubic(x):
  ax = abs(x)
  if ax <= 1:
    return 1.5 * ax**3 - 2.5 * ax**2 + 1
  if ax <= 2:
    return -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
  return 0.0


def _reference_axis(x, axis, scale):
  """Resize one axis with explicit loops: MATLAB contributions() + resizeAlongDim()."""
  x = np.moveaxis(x, axis, 0)
  n_in = x.shape[0]
  n_out = math.ceil(n_in * scale - 1e-9)
  width = 4.0 / scale if scale < 1 else 4.0
  out = np.zeros((n_out,) + x.shape[1:])
  for i in range(1, n_out + 1):  # 1-based, as in MATLAB
    u = i / scale + 0.5 * (1 - 1 / scale)
    left = math.floor(u - width / 2)
    taps = math.ceil(width) + 2
    ws, idx = [], []
    for p in range(taps):
      j = left + p
      w = scale * _cubic(scale * (u - j)) if scale < 1 else _cubic(u - j)
      # Mirror: ... 2 1 | 1 2 ... n | n n-1 ...
      m = (j - 1) % (2 * n_in)
      jj = m if m < n_in else 2 * n_in - 1 - m
      ws.append(w)
      idx.append(jj)
    total = sum(ws)
    for w, jj in zip(ws, idx, strict=True):
      out[i - 1] += (w / total) * x[jj]
  return np.moveaxis(out, 0, axis)


def _reference(img, scale):
  return _reference_axis(_reference_axis(img.astype(np.float64), 0, scale), 1, scale)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2, 3, 4])
@pytest.mark.parametrize("shape", [(12, 12), (13, 17, 3), (7, 10), (24, 9, 3)])
def test_matches_reference_loop(scale, shape):
  img = np.random.default_rng(0).random(shape) * 255.0
  got = imresize(img, scale=scale)
  want = _reference(img, scale)
  assert got.dtype == np.float64
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(11, 14), (12, 12), (25, 7)])
def test_output_shape_is_ceil(scale, size):
  img = np.zeros(size + (3,), np.uint8)
  down = imresize(img, scale=1 / scale)
  assert down.shape == (math.ceil(size[0] / scale), math.ceil(size[1] / scale), 3)
  up = imresize(img, scale=scale)
  assert up.shape == (size[0] * scale, size[1] * scale, 3)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_constant_image_stays_constant(scale):
  f = np.full((24, 36, 3), 123.25)
  down = imresize(f, scale=1 / scale)
  np.testing.assert_array_equal(np.round(down, 9), 123.25)
  np.testing.assert_allclose(imresize(down, scale=scale), 123.25, atol=1e-12)
  u = np.full((24, 36, 3), 200, np.uint8)
  lr = bicubic_degrade(u, scale)
  assert lr.dtype == np.uint8 and np.all(lr == 200)
  sr = imresize(lr, scale=scale)
  assert sr.dtype == np.uint8 and sr.shape == u.shape and np.all(sr == 200)


def _to_uint8(x):
  return np.floor(np.clip(x, 0, 255) + 0.5).astype(np.uint8)  # MATLAB: half away from zero


@pytest.mark.parametrize("scale", [1 / 3, 2])
def test_uint8_rounds_after_each_axis_like_matlab(scale):
  img = np.random.default_rng(1).integers(0, 256, (30, 42, 3)).astype(np.uint8)
  got = imresize(img, scale=scale)
  # MATLAB's imresizemex returns uint8 after the first axis too, not only at the end.
  want = _to_uint8(_reference_axis(_to_uint8(_reference_axis(img, 0, scale)), 1, scale))
  assert got.dtype == np.uint8
  np.testing.assert_array_equal(got, want)
  assert not np.array_equal(got, _to_uint8(_reference(img, scale)))  # the test can tell


def test_uint8_clips_overshoot():
  # A sharp edge overshoots when upscaling: the result is clipped, not wrapped.
  edge = np.zeros((8, 8), np.uint8)
  edge[:, 4:] = 255
  up = imresize(edge, scale=2)
  assert up.min() == 0 and up.max() == 255


def test_smaller_scale_axis_first_with_output_shape():
  img = np.random.default_rng(2).random((12, 20))
  got = imresize(img, output_shape=(6, 40))
  want = _reference_axis(_reference_axis(img, 0, 0.5), 1, 2.0)
  np.testing.assert_allclose(got, want, atol=1e-9)


def test_modcrop_and_bicubic_degrade_shapes():
  hr = np.zeros((50, 37, 3), np.uint8)
  assert modcrop(hr, 4).shape == (48, 36, 3)
  assert modcrop(hr, 3).shape == (48, 36, 3)
  assert bicubic_degrade(hr, 3).shape == (16, 12, 3)
  np.testing.assert_array_equal(
    bicubic_degrade(np.arange(48 * 36 * 3).reshape(48, 36, 3).astype(np.uint8) % 251, 4),
    imresize(np.arange(48 * 36 * 3).reshape(48, 36, 3).astype(np.uint8) % 251, scale=1 / 4),
  )


@pytest.mark.parametrize("bad", [0, -2, float("nan")])
def test_bad_scale_raises(bad):
  with pytest.raises(ConfigError, match="positive"):
    imresize(np.zeros((4, 4)), scale=bad)


def test_check_scale():
  assert check_scale(3) == 3
  with pytest.raises(ConfigError, match="scale must be one of 2, 3, 4, got 5"):
    check_scale(5)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set5_shapes(set5, scale):
  for path in list_images(set5):
    hr = read_image(path)
    lr = bicubic_degrade(hr, scale)
    assert lr.dtype == np.uint8
    assert lr.shape == (hr.shape[0] // scale, hr.shape[1] // scale, 3), path.name
    assert imresize(lr, scale=scale).shape == modcrop(hr, scale).shape, path.name
