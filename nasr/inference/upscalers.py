"""Upscalers: functions lr_uint8 -> SR floats in [0, 1], from a trained network or MATLAB bicubic."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from nasr.data.imresize import imresize
from nasr.inference.ensemble import self_ensemble as self_ensemble_fn
from nasr.inference.tiling import check_tiling, upscale_tiled


def network_upscaler(
  network, params, tile: int = 0, stride: int = 0, self_ensemble: bool = False, clip: bool = True
) -> Callable[[np.ndarray], np.ndarray]:
  """Return upscale(lr_uint8) -> SR floats in [0, 1]: the network's multi-level ensemble.

  Args:
    network: a Flax SR module with a `scale` field.
    params: its parameters.
    tile: LR tile side of the patch ensemble (0 = the whole image at once).
    stride: LR pixels between tile starts (0 = tile // 2); tiles are blended by distance weights.
    self_ensemble: average each tile over its 8 flips/transposes.
    clip: clip to [0, 1] (False: the raw output, for a model ensemble that averages first).
  """
  tile, stride = check_tiling(tile or None, stride or None)
  predict = jax.jit(lambda p, x: network.apply({"params": p}, x))
  fn = lambda x: np.asarray(predict(params, jnp.asarray(x, jnp.float32)))  # noqa: E731
  if self_ensemble:
    fn = self_ensemble_fn(fn)
  scale = network.scale
  if not clip:
    return lambda lr: upscale_tiled(fn, lr, scale, tile=tile, stride=stride)
  # a network's output is not bounded: clipped here, as it is when written or scored
  return lambda lr: np.clip(upscale_tiled(fn, lr, scale, tile=tile, stride=stride), 0.0, 1.0)


def bicubic_upscaler(scale: int) -> Callable[[np.ndarray], np.ndarray]:
  """Return upscale(lr_uint8) -> MATLAB-bicubic floats in [0, 1] (the published baseline).

  The LR image is 8-bit (MATLAB `imresize` on uint8 rounds after each axis, as DIV2K's LR files
  were made); the upscaling is an SR method like any other, so it runs in float64 and is
  quantised once, when scored.
  """
  return lambda lr: imresize(np.asarray(lr, np.float64), scale=scale) / 255.0
