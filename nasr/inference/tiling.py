"""Patch ensemble: upscale an image of any size in overlapping tiles blended by distance weights.

Tiles of `tile` LR pixels start every `stride` pixels, the last one aligned to the image edge, and
their SR outputs are averaged with per-pixel weights that fall with the distance from the tile
centre (Yu et al. 2020, AIM real-SR winner: 120 px tiles at 60 px stride). Every tile has the same
shape, so a jitted `apply_fn` compiles once; memory for the model is bounded by the tile size, and
the output is accumulated into one HR image and one weight sum.
"""

from collections.abc import Callable

import numpy as np

from nasr.core.errors import ConfigError, DataError

ApplyFn = Callable[[np.ndarray], np.ndarray]


def tile_weights(h: int, w: int) -> np.ndarray:
  """Return an [h, w] float32 separable tent, highest at the centre and positive everywhere."""

  def tent(n: int) -> np.ndarray:
    # Pixel centres at i + 0.5 keep the edge weight at 1/n instead of 0, so a pixel covered by a
    # single tile (the image border) still has a positive total weight.
    d = np.abs(np.arange(n, dtype=np.float64) + 0.5 - n / 2) / (n / 2)
    return 1.0 - d

  if h < 1 or w < 1:
    raise ValueError(f"tile_weights needs a positive size, got {h}x{w}")
  return np.outer(tent(h), tent(w)).astype(np.float32)


def _as_float_image(lr) -> np.ndarray:
  """Return an HxWx3 float32 image in [0, 1] from uint8 or float input."""
  lr = np.asarray(lr)
  if lr.ndim != 3 or lr.shape[-1] != 3:
    raise DataError(f"upscale expects an HxWx3 RGB image, got shape {lr.shape}")
  if lr.dtype == np.uint8:
    return lr.astype(np.float32) / 255.0
  if np.issubdtype(lr.dtype, np.floating):
    return lr.astype(np.float32)
  raise DataError(f"upscale expects uint8 or float pixels, got dtype {lr.dtype}")


def tile_starts(n: int, tile: int, stride: int) -> list[int]:
  """Return the tile starts along an axis of length n: every `stride`, the last one at n - tile.

  An axis no longer than the tile has one tile, at 0, of the axis length.
  """
  if n <= tile:
    return [0]
  starts = list(range(0, n - tile + 1, stride))
  if starts[-1] != n - tile:
    starts.append(n - tile)
  return starts


def check_tiling(tile: int | None, stride: int | None) -> tuple[int, int]:
  """Return (tile, stride) checked, with stride None/0 -> tile // 2; (0, 0) means no tiling."""
  if tile is None or tile == 0:
    return 0, 0
  if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
    raise ConfigError(f"tile must be a positive integer (or 0/None for no tiling), got {tile!r}")
  if stride is None or stride == 0:
    stride = max(1, tile // 2)  # the paper's half-tile stride (120 px tiles, 60 px apart)
  if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)):
    raise ConfigError(f"stride must be an integer, got {stride!r}")
  if not 1 <= stride <= tile:
    # A stride longer than the tile would leave pixels that no tile covers.
    raise ConfigError(f"stride must be in [1, tile={tile}] (or 0 for tile // 2), got {stride}")
  return int(tile), int(stride)


def _run(apply_fn: ApplyFn, x: np.ndarray, scale: int) -> np.ndarray:
  """Return apply_fn on one HxWx3 tile as an (H*s)x(W*s)x3 float32 array, checking its shape."""
  y = np.asarray(apply_fn(x[None]), dtype=np.float32)
  h, w, c = x.shape
  expected = (1, h * scale, w * scale, c)
  if y.shape != expected:
    raise ValueError(
      f"apply_fn mapped {(1, h, w, c)} to {y.shape}, expected {expected} for scale {scale}"
    )
  return y[0]


def upscale_tiled(
  apply_fn: ApplyFn, lr, scale: int, tile: int | None = None, stride: int | None = None
) -> np.ndarray:
  """Return the HxW*scale float32 SR image (not clipped), computed in overlapping tiles.

  Args:
    apply_fn: maps an NHWC float batch [1, h, w, 3] in [0, 1] to [1, h*scale, w*scale, 3].
    lr: HxWx3 uint8 (divided by 255) or float image in [0, 1].
    scale: upscaling factor of `apply_fn`.
    tile: LR tile side; None or 0 runs the whole image at once. An axis shorter than the tile is
      processed whole, so tiles may be rectangular, but all tiles of an image have one shape.
    stride: LR pixels between the starts of neighbouring tiles, in [1, tile]; None or 0 means
      tile // 2. The last tile of each axis is aligned to the image edge.
  """
  x = _as_float_image(lr)
  if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
    raise ConfigError(f"scale must be a positive integer, got {scale!r}")
  # Settings are checked whatever the image size, so a bad config fails on the first image.
  tile, stride = check_tiling(tile, stride)
  h, w, _ = x.shape
  if not tile or (h <= tile and w <= tile):
    return _run(apply_fn, x, scale)
  th, tw = min(tile, h), min(tile, w)
  weights = tile_weights(th * scale, tw * scale)[..., None]
  out = np.zeros((h * scale, w * scale, 3), np.float32)
  wsum = np.zeros((h * scale, w * scale, 1), np.float32)
  for y0 in tile_starts(h, th, stride):
    for x0 in tile_starts(w, tw, stride):
      sr = _run(apply_fn, x[y0 : y0 + th, x0 : x0 + tw], scale)
      ys, xs = slice(y0 * scale, (y0 + th) * scale), slice(x0 * scale, (x0 + tw) * scale)
      out[ys, xs] += weights * sr
      wsum[ys, xs] += weights
  return out / wsum
