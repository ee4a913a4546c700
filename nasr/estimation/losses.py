"""Reconstruction losses on NHWC batches (JAX): L1, Charbonnier, MS-SSIM and the MS-SSIM/L1 mix.

Every loss takes `(pred, target)` of the same shape and returns a scalar mean to minimise. They are
registered in `LOSSES` by name, so a config names its loss: `LOSSES.get(config.loss)(pred, target)`.
"""

import functools

import jax
import jax.numpy as jnp

from nasr.core.errors import ConfigError
from nasr.core.registry import Registry

LOSSES: Registry = Registry("loss")

# Wang, Simoncelli & Bovik (2003), the five-scale weights.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _check_shapes(pred, target, name: str) -> None:
  """Raise ValueError naming both shapes when they differ."""
  if pred.shape != target.shape:
    raise ValueError(f"{name}: pred shape {pred.shape} does not match target shape {target.shape}")


@LOSSES.register("l1")
def l1(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Return the mean absolute error."""
  _check_shapes(pred, target, "l1")
  return jnp.mean(jnp.abs(pred - target))


@LOSSES.register("charbonnier")
def charbonnier(pred: jax.Array, target: jax.Array, eps: float = 1e-3) -> jax.Array:
  """Return the mean Charbonnier penalty sqrt((pred - target)^2 + eps^2) (a smooth L1).

  eps enters squared, as in LapSRN; the loss of a perfect prediction is therefore eps, not 0.
  """
  _check_shapes(pred, target, "charbonnier")
  diff = pred - target
  return jnp.mean(jnp.sqrt(diff * diff + eps * eps))


def _gaussian_1d(size: int, sigma: float) -> jax.Array:
  """Return a normalised 1-D Gaussian of `size` taps."""
  x = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2.0
  g = jnp.exp(-(x**2) / (2.0 * sigma**2))
  return g / g.sum()


def _filter_valid(x: jax.Array, g: jax.Array) -> jax.Array:
  """Return the separable depthwise correlation of NHWC `x` with g x g, "valid" region only."""
  n, h, w, c = x.shape
  planes = jnp.transpose(x, (0, 3, 1, 2)).reshape(n * c, h, w, 1)
  k = g.shape[0]
  dn = ("NHWC", "HWIO", "NHWC")
  planes = jax.lax.conv_general_dilated(
    planes, g.reshape(k, 1, 1, 1), (1, 1), "VALID", dimension_numbers=dn
  )
  planes = jax.lax.conv_general_dilated(
    planes, g.reshape(1, k, 1, 1), (1, 1), "VALID", dimension_numbers=dn
  )
  ho, wo = planes.shape[1:3]
  return jnp.transpose(planes.reshape(n, c, ho, wo), (0, 2, 3, 1))


def _ssim_terms(x, y, g, max_val, k1, k2):
  """Return per-image means of the SSIM map and of its contrast-structure factor, each [N]."""
  c1 = (k1 * max_val) ** 2
  c2 = (k2 * max_val) ** 2
  mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
  var_x = _filter_valid(x * x, g) - mu_x**2
  var_y = _filter_valid(y * y, g) - mu_y**2
  cov = _filter_valid(x * y, g) - mu_x * mu_y
  cs = (2 * cov + c2) / (var_x + var_y + c2)
  luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
  return jnp.mean(luminance * cs, axis=(1, 2, 3)), jnp.mean(cs, axis=(1, 2, 3))


def _avg_pool2(x: jax.Array) -> jax.Array:
  """Return the 2x2 average of NHWC `x`; an odd last row or column is dropped."""
  n, h, w, c = x.shape
  x = x[:, : h - h % 2, : w - w % 2]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def ms_ssim_plan(
  height: int, width: int, window: int = 11, sigma: float = 1.5, weights=MS_SSIM_WEIGHTS
) -> tuple[int, float, tuple[float, ...]]:
  """Return the (window, sigma, weights) MS-SSIM uses on an image of height x width.

  Five scales with an 11x11 window need a side of at least 11 * 2**4 = 176. Smaller images use the
  most scales whose coarsest image still holds the window (weights truncated and renormalised to sum
  to 1); an image smaller than the window at full resolution uses one scale (plain SSIM) with a
  window of its odd side and sigma scaled in proportion (as tf.image.ssim does).
  """
  side = min(height, width)
  scales = len(weights)
  while scales > 1 and side // 2 ** (scales - 1) < window:
    scales -= 1
  if side < window:
    new_window = side if side % 2 else side - 1
    if new_window < 1:
      raise ValueError(f"ms_ssim: a {height}x{width} image is too small")
    sigma = sigma * new_window / window
    window = new_window
  used = tuple(weights[:scales])
  total = sum(used)
  return window, sigma, tuple(w / total for w in used)


@functools.partial(jax.jit, static_argnames=("max_val", "window", "sigma", "k1", "k2", "weights"))
def ms_ssim_per_image(
  pred: jax.Array,
  target: jax.Array,
  max_val: float = 1.0,
  window: int = 11,
  sigma: float = 1.5,
  k1: float = 0.01,
  k2: float = 0.03,
  weights=MS_SSIM_WEIGHTS,
) -> jax.Array:
  """Return the MS-SSIM of each image of two NHWC batches, shape [N].

  MS-SSIM = prod_j cs_j^w_j for the finer scales times ssim_M^w_M at the coarsest, with 2x2 average
  pooling between scales (`ms_ssim_plan` says how small images are handled). Channels are filtered
  separately and averaged. Negative factors are clamped at 1e-6 before the fractional powers, which
  keeps the value real and the gradient finite (tf.image.ssim_multiscale clamps at 0).
  """
  if pred.ndim == 3:
    pred, target = pred[None], target[None]
  _check_shapes(pred, target, "ms_ssim")
  if pred.ndim != 4:
    raise ValueError(f"ms_ssim: expected NHWC (or HWC) images, got shape {pred.shape}")
  window, sigma, used = ms_ssim_plan(pred.shape[1], pred.shape[2], window, sigma, weights)
  g = _gaussian_1d(window, sigma)
  x, y = pred.astype(jnp.float32), target.astype(jnp.float32)
  log_total = 0.0
  for j, w in enumerate(used):
    ssim_j, cs_j = _ssim_terms(x, y, g, max_val, k1, k2)
    factor = ssim_j if j == len(used) - 1 else cs_j
    log_total = log_total + w * jnp.log(jnp.maximum(factor, 1e-6))
    if j < len(used) - 1:
      x, y = _avg_pool2(x), _avg_pool2(y)
  return jnp.exp(log_total)


def ms_ssim(pred: jax.Array, target: jax.Array, max_val: float = 1.0, **kwargs) -> jax.Array:
  """Return the batch mean of MS-SSIM, a similarity (1 for equal images); see `ms_ssim_loss`.

  Args:
    pred: NHWC (or HWC) batch in [0, max_val].
    target: same shape.
    max_val: dynamic range of the pixel values.
    **kwargs: window, sigma, k1, k2, weights (see `ms_ssim_per_image`).
  """
  return jnp.mean(ms_ssim_per_image(pred, target, max_val, **kwargs))


@LOSSES.register("ms_ssim")
def ms_ssim_loss(pred: jax.Array, target: jax.Array, max_val: float = 1.0, **kwargs) -> jax.Array:
  """Return 1 - MS-SSIM, the loss registered as "ms_ssim" (every registered loss is minimised)."""
  return 1.0 - ms_ssim(pred, target, max_val, **kwargs)


@LOSSES.register("ms_ssim_l1")
def ms_ssim_l1(
  pred: jax.Array, target: jax.Array, alpha: float = 0.84, max_val: float = 1.0
) -> jax.Array:
  """Return alpha * (1 - MS-SSIM) + (1 - alpha) * L1 (Zhao et al. 2017, with plain L1)."""
  return alpha * (1.0 - ms_ssim(pred, target, max_val)) + (1.0 - alpha) * l1(pred, target)


def make_loss(name: str, ms_ssim_weight: float | None = None):
  """Return the loss registered as `name`; "ms_ssim_l1" mixes by `ms_ssim_weight` when it is set.

  ms_ssim_l1 = w * (1 - MS-SSIM) + (1 - w) * L1, w = 0.84 (Zhao et al. 2017) unless configured.
  Every trainer and search builds its loss here, so `config.ms_ssim_weight` reaches all of them.
  """
  loss_fn = LOSSES.get(name)
  if name == "ms_ssim_l1" and ms_ssim_weight is not None:
    if not 0.0 <= float(ms_ssim_weight) <= 1.0:
      raise ConfigError(f"config.ms_ssim_weight must be in [0, 1], got {ms_ssim_weight}")
    loss_fn = functools.partial(loss_fn, alpha=float(ms_ssim_weight))
  return loss_fn
