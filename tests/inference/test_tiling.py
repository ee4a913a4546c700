"""Tests of tiled inference and the ensembles."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasr import inference, ops
from nasr.core.errors import ConfigError, DataError


def nearest(scale):
  """Return a per-pixel apply_fn: nearest-neighbour upsampling (shift- and flip-equivariant)."""
  return lambda x: np.asarray(x).repeat(scale, axis=1).repeat(scale, axis=2)


class _PixelNet(nn.Module):
  """Test-only per-pixel network: 1x1 conv to 3*s*s channels, then pixel shuffle."""

  scale: int = 2

  @nn.compact
  def __call__(self, x):
    return ops.pixel_shuffle(ops.Conv(3 * self.scale**2, kernel=1)(x), self.scale)


class _ConvNet(nn.Module):
  """Test-only network with 3x3 context, so flips and transposes change its output."""

  @nn.compact
  def __call__(self, x):
    return ops.pixel_shuffle(ops.Conv(12, kernel=3)(nn.relu(ops.Conv(8, kernel=3)(x))), 2)


def _jax_fn(module, shape=(1, 4, 4, 3)):
  params = module.init(jax.random.PRNGKey(0), jnp.zeros(shape))
  return jax.jit(lambda x: module.apply(params, x))


def _recording(fn):
  shapes = []

  def wrapped(x):
    shapes.append(tuple(np.shape(x)))
    return fn(x)

  return wrapped, shapes


RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
  "h, w, tile, overlap",
  [(23, 17, 8, 3), (9, 31, 8, 0), (13, 13, 6, 5), (5, 7, 16, 4), (20, 5, 7, 2)],
)
def test_tiled_equals_whole_for_per_pixel_models(h, w, tile, overlap):
  lr = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
  for fn, scale in [(nearest(3), 3), (_jax_fn(_PixelNet(2)), 2)]:
    whole = inference.upscale_tiled(fn, lr, scale)
    tiled = inference.upscale_tiled(fn, lr, scale, tile=tile, overlap=overlap)
    assert tiled.shape == (h * scale, w * scale, 3) and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, whole, atol=1e-6)
  np.testing.assert_array_equal(
    inference.upscale_tiled(nearest(2), lr, 2), lr.repeat(2, 0).repeat(2, 1) / np.float32(255)
  )


def test_apply_fn_sees_one_tile_shape():
  fn, shapes = _recording(nearest(2))
  inference.upscale_tiled(fn, RNG.uniform(size=(29, 21, 3)), 2, tile=10, overlap=4)
  assert set(shapes) == {(1, 10, 10, 3)}
  assert len(shapes) == 5 * 3  # starts 0, 6, 12, 18, 19 by 0, 6, 11


def test_axis_shorter_than_tile_is_processed_whole():
  fn, shapes = _recording(nearest(2))
  inference.upscale_tiled(fn, RNG.uniform(size=(6, 40, 3)), 2, tile=16, overlap=4)
  assert set(shapes) == {(1, 6, 16, 3)}


def test_no_tiling_calls_once():
  fn, shapes = _recording(nearest(4))
  out = inference.upscale_tiled(fn, RNG.uniform(size=(9, 11, 3)), 4, tile=0)
  assert shapes == [(1, 9, 11, 3)] and out.shape == (36, 44, 3)


def test_tiles_blend_smoothly_for_a_context_model():
  lr = RNG.uniform(size=(30, 30, 3)).astype(np.float32)
  fn = _jax_fn(_ConvNet())
  whole = inference.upscale_tiled(fn, lr, 2)
  tiled = inference.upscale_tiled(fn, lr, 2, tile=12, overlap=6)
  # Only the zero-padded tile borders differ, and the tent down-weights them.
  assert np.abs(tiled - whole).mean() < 0.1 * np.abs(whole).mean()


def test_tile_weights_positive_and_peak_in_centre():
  for h, w in [(1, 1), (2, 5), (16, 16), (7, 9)]:
    wt = inference.tile_weights(h, w)
    assert wt.shape == (h, w) and np.all(wt > 0)
    assert wt[h // 2, w // 2] == wt.max()
    np.testing.assert_allclose(wt, wt[::-1, ::-1])


def test_bad_inputs_raise():
  with pytest.raises(DataError, match="HxWx3"):
    inference.upscale_tiled(nearest(2), np.zeros((4, 4)), 2)
  with pytest.raises(DataError, match="int32"):
    inference.upscale_tiled(nearest(2), np.zeros((4, 4, 3), np.int32), 2)
  with pytest.raises(ConfigError, match="overlap"):
    inference.upscale_tiled(nearest(2), np.zeros((20, 20, 3)), 2, tile=8, overlap=8)
  # Settings are checked even when the image fits in one tile.
  with pytest.raises(ConfigError, match="overlap"):
    inference.upscale_tiled(nearest(2), np.zeros((4, 4, 3)), 2, tile=8, overlap=8)
  with pytest.raises(ConfigError, match="tile must be positive"):
    inference.upscale_tiled(nearest(2), np.zeros((4, 4, 3)), 2, tile=-1)
  with pytest.raises(ConfigError, match="scale"):
    inference.upscale_tiled(nearest(2), np.zeros((4, 4, 3)), 2.0)
  with pytest.raises(ValueError, match="expected"):
    inference.upscale_tiled(nearest(3), np.zeros((4, 4, 3)), 2)


def test_self_ensemble_of_equivariant_model_is_the_model():
  x = RNG.uniform(size=(1, 5, 7, 3)).astype(np.float32)
  fn, shapes = _recording(nearest(2))
  np.testing.assert_allclose(inference.self_ensemble(fn)(x), nearest(2)(x), atol=1e-7)
  assert len(shapes) == 8 and set(shapes) == {(1, 5, 7, 3), (1, 7, 5, 3)}


def test_self_ensemble_of_conv_net_differs_with_right_shape():
  x = jnp.asarray(RNG.uniform(size=(1, 6, 6, 3)), jnp.float32)
  fn = _jax_fn(_ConvNet(), (1, 6, 6, 3))
  y, ens = fn(x), inference.self_ensemble(fn)(x)
  assert ens.shape == y.shape == (1, 12, 12, 3)
  assert np.abs(np.asarray(ens) - np.asarray(y)).max() > 1e-4
  # Jittable end to end, and composes with tiling.
  np.testing.assert_allclose(jax.jit(inference.self_ensemble(fn))(x), ens, atol=1e-5)
  tiled = inference.upscale_tiled(
    inference.self_ensemble(nearest(2)), np.asarray(x[0]), 2, tile=4, overlap=1
  )
  np.testing.assert_allclose(tiled, nearest(2)(x)[0], atol=1e-6)


def test_model_ensemble_averages():
  x = RNG.uniform(size=(1, 3, 3, 3))
  fn = inference.model_ensemble([lambda a: a, lambda a: 3 * a])
  np.testing.assert_allclose(fn(x), 2 * x)
  with pytest.raises(ValueError, match="at least one"):
    inference.model_ensemble([])
