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
  "h, w, tile, stride",
  [
    (23, 17, 8, 5),
    (9, 31, 8, 8),
    (13, 13, 6, 1),
    (5, 7, 16, 12),
    (20, 5, 7, 5),
    (31, 29, 12, None),
  ],
)
def test_tiled_equals_whole_for_per_pixel_models(h, w, tile, stride):
  lr = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
  for fn, scale in [(nearest(3), 3), (_jax_fn(_PixelNet(2)), 2)]:
    whole = inference.upscale_tiled(fn, lr, scale)
    tiled = inference.upscale_tiled(fn, lr, scale, tile=tile, stride=stride)
    assert tiled.shape == (h * scale, w * scale, 3) and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, whole, atol=1e-6)
  np.testing.assert_array_equal(
    inference.upscale_tiled(nearest(2), lr, 2), lr.repeat(2, 0).repeat(2, 1) / np.float32(255)
  )


def test_apply_fn_sees_one_tile_shape():
  fn, shapes = _recording(nearest(2))
  inference.upscale_tiled(fn, RNG.uniform(size=(29, 21, 3)), 2, tile=10, stride=6)
  assert set(shapes) == {(1, 10, 10, 3)}
  assert len(shapes) == 5 * 3  # starts 0, 6, 12, 18, 19 by 0, 6, 11


def test_axis_shorter_than_tile_is_processed_whole():
  fn, shapes = _recording(nearest(2))
  inference.upscale_tiled(fn, RNG.uniform(size=(6, 40, 3)), 2, tile=16, stride=12)
  assert set(shapes) == {(1, 6, 16, 3)}


def test_no_tiling_calls_once():
  fn, shapes = _recording(nearest(4))
  out = inference.upscale_tiled(fn, RNG.uniform(size=(9, 11, 3)), 4, tile=0)
  assert shapes == [(1, 9, 11, 3)] and out.shape == (36, 44, 3)


def test_default_stride_is_half_a_tile_like_the_paper():
  fn, shapes = _recording(nearest(2))
  inference.upscale_tiled(fn, RNG.uniform(size=(300, 240, 3)), 2, tile=120)
  # 120 px tiles at 60 px: rows start at 0, 60, 120, 180; columns at 0, 60, 120.
  assert len(shapes) == 4 * 3 and set(shapes) == {(1, 120, 120, 3)}
  assert inference.check_tiling(120, 0) == (120, 60)
  assert inference.check_tiling(0, 7) == (0, 0)


@pytest.mark.parametrize("n", [1, 5, 16, 17, 23, 60, 61])
@pytest.mark.parametrize("tile, stride", [(16, 8), (16, 16), (16, 5), (7, 3), (1, 1)])
def test_tiles_cover_every_pixel_and_the_last_meets_the_edge(n, tile, stride):
  starts = inference.tile_starts(n, tile, stride)
  size = min(tile, n)
  covered = np.zeros(n, bool)
  for s in starts:
    covered[s : s + size] = True
  assert covered.all() and starts[0] == 0 and starts[-1] + size == n
  assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:], strict=False))


def test_smaller_than_a_tile_is_one_tile_of_the_image_size():
  fn, shapes = _recording(nearest(3))
  lr = RNG.uniform(size=(7, 11, 3)).astype(np.float32)
  out = inference.upscale_tiled(fn, lr, 3, tile=120, stride=60)
  assert shapes == [(1, 7, 11, 3)]
  np.testing.assert_array_equal(out, nearest(3)(lr[None])[0])


def test_tiles_blend_smoothly_for_a_context_model():
  lr = RNG.uniform(size=(30, 30, 3)).astype(np.float32)
  fn = _jax_fn(_ConvNet())
  whole = inference.upscale_tiled(fn, lr, 2)
  tiled = inference.upscale_tiled(fn, lr, 2, tile=12, stride=6)
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
  with pytest.raises(ConfigError, match="stride"):
    inference.upscale_tiled(nearest(2), np.zeros((20, 20, 3)), 2, tile=8, stride=9)
  with pytest.raises(ConfigError, match="stride"):
    inference.upscale_tiled(nearest(2), np.zeros((20, 20, 3)), 2, tile=8, stride=-1)
  # Settings are checked even when the image fits in one tile.
  with pytest.raises(ConfigError, match="stride"):
    inference.upscale_tiled(nearest(2), np.zeros((4, 4, 3)), 2, tile=8, stride=9)
  with pytest.raises(ConfigError, match="tile must be a positive"):
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


class _SymmetricNet(nn.Module):
  """Test-only network equivariant to flips and transposes: dihedral-symmetric 3x3 kernels."""

  @nn.compact
  def __call__(self, x):
    def sym_conv(h, cout, name):
      k = self.param(name, nn.initializers.lecun_normal(), (3, 3, h.shape[-1], cout))
      k = sum(
        jnp.flip(jnp.swapaxes(k, 0, 1) if t else k, axis=[a for a, f in ((0, fh), (1, fw)) if f])
        for t in (0, 1)
        for fh in (0, 1)
        for fw in (0, 1)
      )
      return jax.lax.conv_general_dilated(
        h, k / 8, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
      )

    h = nn.relu(sym_conv(x, 8, "k1"))
    return jnp.repeat(jnp.repeat(sym_conv(h, 3, "k2"), 2, axis=1), 2, axis=2)


def test_self_ensemble_of_equivariant_network_is_the_network():
  x = jnp.asarray(RNG.uniform(size=(1, 6, 9, 3)), jnp.float32)
  fn = _jax_fn(_SymmetricNet(), (1, 6, 9, 3))
  y = np.asarray(fn(x))
  assert np.abs(y).max() > 1e-2  # not trivially zero
  np.testing.assert_allclose(np.asarray(inference.self_ensemble(fn)(x)), y, atol=1e-5)


def test_self_ensemble_of_conv_net_differs_with_right_shape():
  x = jnp.asarray(RNG.uniform(size=(1, 6, 6, 3)), jnp.float32)
  fn = _jax_fn(_ConvNet(), (1, 6, 6, 3))
  y, ens = fn(x), inference.self_ensemble(fn)(x)
  assert ens.shape == y.shape == (1, 12, 12, 3)
  assert np.abs(np.asarray(ens) - np.asarray(y)).max() > 1e-4
  # Jittable end to end, and composes with tiling.
  np.testing.assert_allclose(jax.jit(inference.self_ensemble(fn))(x), ens, atol=1e-5)
  tiled = inference.upscale_tiled(
    inference.self_ensemble(nearest(2)), np.asarray(x[0]), 2, tile=4, stride=3
  )
  np.testing.assert_allclose(tiled, nearest(2)(x)[0], atol=1e-6)


def test_model_ensemble_averages():
  x = RNG.uniform(size=(1, 3, 3, 3))
  fn = inference.model_ensemble([lambda a: a, lambda a: 3 * a])
  np.testing.assert_allclose(fn(x), 2 * x)
  with pytest.raises(ValueError, match="at least one"):
    inference.model_ensemble([])


def test_a_network_upscaler_returns_floats_in_0_1_as_it_says():
  import flax.linen as nn
  import jax

  from nasr.inference import network_upscaler

  class Loud(nn.Module):  # an untrained network's output is not bounded
    scale: int = 2

    @nn.compact
    def __call__(self, x):
      y = 3.0 * self.param("w", nn.initializers.ones, ()) * x - 1.0  # [-1, 2]
      return jax.image.resize(y, (y.shape[0], 2 * y.shape[1], 2 * y.shape[2], 3), "nearest")

  net = Loud()
  params = net.init(jax.random.PRNGKey(0), np.zeros((1, 4, 4, 3), np.float32))["params"]
  lr = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
  sr = network_upscaler(net, params)(lr)
  assert sr.shape == (12, 10, 3) and sr.min() == 0.0 and sr.max() == 1.0
  raw = network_upscaler(net, params, clip=False)(lr)
  assert raw.min() < 0.0 and raw.max() > 1.0
  np.testing.assert_array_equal(sr, np.clip(raw, 0.0, 1.0))
