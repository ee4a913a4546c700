"""Tests of the reconstruction losses: known values, MS-SSIM properties, gradients, registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from nasr.core.errors import ConfigError
from nasr.estimation import losses


def _images(shape, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.0, 1.0, shape).astype(np.float32)
  y = np.clip(x + rng.normal(0.0, 0.1, shape), 0.0, 1.0).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(y)


def test_l1_and_charbonnier_known_values():
  pred = jnp.array([[0.0, 1.0], [2.0, -1.0]])
  target = jnp.zeros((2, 2))
  assert float(losses.l1(pred, target)) == pytest.approx(1.0)
  expected = np.mean(np.sqrt(np.array([0.0, 1.0, 4.0, 1.0]) + 1e-6))
  assert float(losses.charbonnier(pred, target)) == pytest.approx(expected, rel=1e-6)
  assert float(losses.charbonnier(target, target, eps=0.1)) == pytest.approx(0.1, rel=1e-6)


def test_ms_ssim_of_equal_images_is_one():
  x, _ = _images((1, 176, 176, 2))
  assert float(losses.ms_ssim(x, x)) == pytest.approx(1.0, abs=1e-6)
  assert float(losses.LOSSES.get("ms_ssim")(x, x)) == pytest.approx(0.0, abs=1e-6)
  assert float(losses.ms_ssim_l1(x, x)) == pytest.approx(0.0, abs=1e-6)


def test_ms_ssim_single_scale_is_ssim():
  # A 20x20 image fits the 11x11 window at one scale only: MS-SSIM is then plain SSIM.
  x, y = _images((1, 20, 20, 1), seed=1)
  expected = structural_similarity(
    np.asarray(x[0, ..., 0], np.float64),
    np.asarray(y[0, ..., 0], np.float64),
    gaussian_weights=True,
    sigma=1.5,
    use_sample_covariance=False,
    data_range=1.0,
  )
  assert float(losses.ms_ssim(x, y)) == pytest.approx(expected, abs=1e-5)


def test_ms_ssim_decreases_with_noise_and_is_per_image():
  x, y = _images((1, 176, 176, 1), seed=2)
  noisier = jnp.clip(x + 3 * (y - x), 0.0, 1.0)
  clean = float(losses.ms_ssim(x, y))
  assert 0.0 < float(losses.ms_ssim(x, noisier)) < clean < 1.0
  batch = losses.ms_ssim_per_image(jnp.concatenate([x, x]), jnp.concatenate([x, y]))
  np.testing.assert_allclose(np.asarray(batch), [1.0, clean], atol=1e-5)


@pytest.mark.parametrize(
  "size,expected_scales,expected_window",
  [(176, 5, 11), (175, 4, 11), (48, 3, 11), (21, 1, 11), (8, 1, 7), (10, 1, 9)],
)
def test_ms_ssim_plan_for_small_images(size, expected_scales, expected_window):
  window, sigma, weights = losses.ms_ssim_plan(size, size + 40)
  assert len(weights) == expected_scales
  assert window == expected_window
  assert sigma == pytest.approx(1.5 * window / 11)
  assert sum(weights) == pytest.approx(1.0)
  if expected_scales == 5:
    assert weights == pytest.approx(losses.MS_SSIM_WEIGHTS, rel=1e-3)


@pytest.mark.parametrize("shape", [(2, 40, 48, 3), (1, 8, 8, 1)])
def test_ms_ssim_small_images_and_hwc(shape):
  x, y = _images(shape, seed=3)
  value = float(losses.ms_ssim(x, y))
  assert 0.0 < value < 1.0
  assert float(losses.ms_ssim(x[0], y[0])) == pytest.approx(
    float(losses.ms_ssim_per_image(x, y)[0]), abs=1e-6
  )


def test_ms_ssim_l1_mix():
  x, y = _images((2, 40, 40, 3), seed=4)
  expected = 0.84 * (1 - losses.ms_ssim(x, y)) + 0.16 * losses.l1(x, y)
  assert float(losses.ms_ssim_l1(x, y)) == pytest.approx(float(expected), rel=1e-6)
  assert float(losses.ms_ssim_l1(x, y, alpha=0.0)) == pytest.approx(float(losses.l1(x, y)))


@pytest.mark.parametrize("name", ["l1", "charbonnier", "ms_ssim", "ms_ssim_l1"])
def test_registered_losses_have_finite_gradients(name):
  loss = losses.LOSSES.get(name)
  x, y = _images((2, 24, 24, 3), seed=5)
  for pred in (x, y):  # also at pred == target, where L1 and the powers are not smooth
    value, grad = jax.jit(jax.value_and_grad(loss))(pred, y)
    assert value.shape == ()
    assert np.all(np.isfinite(np.asarray(grad)))
  # A gradient step lowers the loss.
  _, grad = jax.value_and_grad(loss)(x, y)
  assert float(loss(x - 0.05 * grad / jnp.abs(grad).max(), y)) < float(loss(x, y))


def test_negative_structure_does_not_give_nan():
  x, _ = _images((1, 24, 24, 1), seed=6)
  value, grad = jax.value_and_grad(losses.ms_ssim)(x, 1.0 - x)  # anti-correlated: cs < 0
  assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))


def test_registry_and_errors():
  assert losses.LOSSES.names() == ["charbonnier", "l1", "ms_ssim", "ms_ssim_l1"]
  with pytest.raises(ConfigError, match="charbonnier"):
    losses.LOSSES.get("l2")
  with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
    losses.l1(jnp.zeros((2, 3)), jnp.zeros((3, 2)))
