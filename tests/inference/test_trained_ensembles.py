"""Acceptance: the patch ensemble of a trained SR network scores within 0.05 dB of the whole image."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import skimage.data

from nasr import data, inference, ops
from nasr.estimation import metrics

SCALE = 2


class _TinySR(nn.Module):
  """Test-only three-layer conv SR network on a bilinear skip (7 px receptive field)."""

  @nn.compact
  def __call__(self, x):
    h = nn.relu(ops.Conv(16, kernel=3)(x))
    h = nn.relu(ops.Conv(16, kernel=3)(h))
    residual = ops.pixel_shuffle(ops.Conv(3 * SCALE**2, kernel=3)(h), SCALE)
    return _bilinear(x) + residual


def _bilinear(x):
  n, h, w, c = x.shape
  return jax.image.resize(x, (n, h * SCALE, w * SCALE, c), "bilinear")


@functools.cache
def _trained():
  """Return (jitted apply_fn, LR uint8 test image, HR uint8): 600 Adam steps on astronaut patches."""
  photo = skimage.data.astronaut()
  hr_train = data.modcrop(photo[:256, 128:384], SCALE)
  lr_train = data.bicubic_degrade(hr_train, SCALE)
  model, tx = _TinySR(), optax.adam(1e-3)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, lr, hr):
    loss, grads = jax.value_and_grad(lambda p: jnp.mean(jnp.abs(model.apply(p, lr) - hr)))(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(0)
  p = 16
  for _ in range(600):
    ys = rng.integers(0, lr_train.shape[0] - p, 8)
    xs = rng.integers(0, lr_train.shape[1] - p, 8)
    lr = np.stack([lr_train[y : y + p, x : x + p] for y, x in zip(ys, xs, strict=True)])
    hr = np.stack(
      [
        hr_train[y * SCALE : (y + p) * SCALE, x * SCALE : (x + p) * SCALE]
        for y, x in zip(ys, xs, strict=True)
      ]
    )
    params, opt_state, _ = step(params, opt_state, lr / np.float32(255), hr / np.float32(255))
  # A held-out region of another photo, larger than a tile and of odd size: 61x51 LR.
  hr_test = data.modcrop(skimage.data.chelsea()[100:222, 150:252], SCALE)
  lr_test = data.bicubic_degrade(hr_test, SCALE)
  apply_fn = jax.jit(lambda x: model.apply(params, x))
  return apply_fn, lr_test, hr_test


def _psnr(sr, hr):
  return metrics.psnr(np.clip(sr, 0, 1) * 255.0, hr, crop_border=SCALE)


@pytest.mark.parametrize("tile, stride", [(24, 12), (20, 15)])
def test_patch_ensemble_of_trained_model_within_0_05_db(tile, stride):
  apply_fn, lr, hr = _trained()
  assert lr.shape == (61, 51, 3)
  whole = inference.upscale_tiled(apply_fn, lr, SCALE)
  tiled = inference.upscale_tiled(apply_fn, lr, SCALE, tile=tile, stride=stride)
  psnr_whole, psnr_tiled = _psnr(whole, hr), _psnr(tiled, hr)
  # The network learned something: it beats its own bilinear skip by a margin.
  assert psnr_whole > _psnr(np.asarray(_bilinear(lr[None] / 255.0))[0], hr) + 0.5
  assert abs(psnr_tiled - psnr_whole) < 0.05, (psnr_tiled, psnr_whole)
  # Tiling changes the output only where a tile's zero padding reached it, and only a little.
  assert 0 < np.abs(tiled - whole).max() < 0.2


def test_self_ensemble_and_tiles_compose_on_a_trained_model():
  apply_fn, lr, hr = _trained()
  whole = inference.upscale_tiled(inference.self_ensemble(apply_fn), lr, SCALE)
  tiled = inference.upscale_tiled(inference.self_ensemble(apply_fn), lr, SCALE, tile=24, stride=12)
  assert abs(_psnr(tiled, hr) - _psnr(whole, hr)) < 0.05
  # The self-ensemble of a trained (non-equivariant) network is not the network, and no worse.
  single = inference.upscale_tiled(apply_fn, lr, SCALE)
  assert np.abs(whole - single).max() > 1e-3
  assert _psnr(whole, hr) > _psnr(single, hr) - 0.05
