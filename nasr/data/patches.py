"""Deterministic training batches: aligned LR/HR patches with flips and 90-degree rotations."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np

from nasr.core.errors import ConfigError, DataError
from nasr.core.types import Batch
from nasr.data.datasets import SRPairs, image_shapes


class PatchSampler:
  """Samples batches of aligned patches; batch `step` depends only on (seed, step).

  Because every batch is drawn from `np.random.default_rng([seed, step])`, a resumed run sees
  exactly the batches an uninterrupted run would have seen.

  Example:
    sampler = PatchSampler(pairs, patch_size=48, batch_size=16, seed=0)
    batch = sampler.batch(0)  # {"lr": uint8[16, 48, 48, 3], "hr": uint8[16, 96, 96, 3]} at x2
    for step, batch in enumerate(sampler.iterate(start_step=1000), start=1000): ...
  """

  def __init__(
    self,
    pairs: SRPairs,
    patch_size: int = 48,
    batch_size: int = 16,
    seed: int = 0,
    augment: bool = True,
  ):
    if int(patch_size) < 1:
      raise ConfigError(f"patch_size must be positive, got {patch_size}")
    if int(batch_size) < 1:
      raise ConfigError(f"batch_size must be positive, got {batch_size}")
    if int(seed) < 0:
      raise ConfigError(f"seed must be non-negative (numpy seeds are), got {seed}")
    if len(pairs) == 0:
      raise DataError("the training set is empty: no images to sample patches from")
    # Fail before training starts, naming the culprit, not at a random later step.
    for name, lr, hr in zip(pairs.names, pairs.lr, pairs.hr, strict=True):
      for role, img in (("LR", lr), ("HR", hr)):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
          raise DataError(
            f"image {name!r}: {role} must be uint8 HxWx3, got {img.dtype} {img.shape}"
          )
      h, w = lr.shape[:2]
      if min(h, w) < patch_size:
        raise DataError(f"image {name!r} LR {h}x{w} is smaller than the LR patch {patch_size}")
      if hr.shape[:2] != (h * pairs.scale, w * pairs.scale):
        raise DataError(
          f"image {name!r}: HR {hr.shape[0]}x{hr.shape[1]} is not x{pairs.scale} of LR {h}x{w}"
        )
    self.pairs = pairs
    # A process draws every patch's position but reads only its rows' images (batch(rows=)).
    self._lr_sizes = [shape[:2] for shape in image_shapes(pairs.lr)]
    self.patch_size = int(patch_size)
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    self.augment = bool(augment)

  def batch(self, step: int, rows: tuple[int, int] | None = None) -> Batch:
    """Return batch number `step`: {"lr": uint8[B, p, p, 3], "hr": uint8[B, p*s, p*s, 3]}.

    `rows=(lo, hi)` returns only patches lo..hi-1 of that batch (a process's shard of the global
    batch): every random number is still drawn, so they are exactly those rows of the whole
    batch, but only they are cropped and only their images are read.
    """
    if int(step) < 0:
      raise ConfigError(f"step must be non-negative, got {step}")
    p, s, b = self.patch_size, self.pairs.scale, self.batch_size
    lo, hi = (0, b) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= lo <= hi <= b:
      raise ConfigError(f"rows {rows} are not within the batch of {b}")
    rng = np.random.default_rng([self.seed, int(step)])
    lr_out = np.empty((hi - lo, p, p, 3), np.uint8)
    hr_out = np.empty((hi - lo, p * s, p * s, 3), np.uint8)
    images = rng.integers(0, len(self.pairs), size=b)
    for k, i in enumerate(images):
      h, w = self._lr_sizes[i]
      y = int(rng.integers(0, h - p + 1))
      x = int(rng.integers(0, w - p + 1))
      flips = rng.integers(0, 2, size=3) if self.augment else None
      if not lo <= k < hi:
        continue
      lr_patch = self.pairs.lr[i][y : y + p, x : x + p]
      hr_patch = self.pairs.hr[i][y * s : (y + p) * s, x * s : (x + p) * s]
      if flips is not None:
        hflip, vflip, rot = flips
        _put(lr_out[k - lo], _augment(lr_patch, hflip, vflip, rot))
        _put(hr_out[k - lo], _augment(hr_patch, hflip, vflip, rot))
      else:
        lr_out[k - lo] = lr_patch
        hr_out[k - lo] = hr_patch
    return {"lr": lr_out, "hr": hr_out}

  def iterate(self, start_step: int = 0) -> Iterator[Batch]:
    """Return an endless iterator over batches start_step, start_step + 1, ..."""
    return (self.batch(step) for step in itertools.count(int(start_step)))

  def __iter__(self) -> Iterator[Batch]:
    return self.iterate(0)


def _put(out: np.ndarray, patch: np.ndarray) -> None:
  """Copy the (flipped or transposed) HxWx3 view `patch` into `out`, one channel at a time."""
  if patch.strides[1:] == (3, 1):  # pixel rows are contiguous: one plain copy
    out[...] = patch
    return
  # A mirrored or transposed view has no contiguous pixel rows; numpy then copies it with an
  # inner loop of 3 bytes, 3-4x slower than three 2-D copies of one channel each
  # (BENCHMARKS.md, input pipeline).
  for c in range(3):
    out[:, :, c] = patch[:, :, c]


def _augment(img: np.ndarray, hflip: int, vflip: int, rot: int) -> np.ndarray:
  if hflip:
    img = img[:, ::-1]
  if vflip:
    img = img[::-1]
  if rot:
    img = img.transpose(1, 0, 2)
  return img
