"""Deterministic training batches: aligned LR/HR patches with flips and 90-degree rotations."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np

from nasr.core.errors import ConfigError, DataError
from nasr.core.types import Batch
from nasr.data.datasets import SRPairs


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
    self.patch_size = int(patch_size)
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    self.augment = bool(augment)

  def batch(self, step: int) -> Batch:
    """Return batch number `step`: {"lr": uint8[B, p, p, 3], "hr": uint8[B, p*s, p*s, 3]}."""
    if int(step) < 0:
      raise ConfigError(f"step must be non-negative, got {step}")
    rng = np.random.default_rng([self.seed, int(step)])
    p, s, b = self.patch_size, self.pairs.scale, self.batch_size
    lr_out = np.empty((b, p, p, 3), np.uint8)
    hr_out = np.empty((b, p * s, p * s, 3), np.uint8)
    images = rng.integers(0, len(self.pairs), size=b)
    for k, i in enumerate(images):
      lr, hr = self.pairs.lr[i], self.pairs.hr[i]
      y = int(rng.integers(0, lr.shape[0] - p + 1))
      x = int(rng.integers(0, lr.shape[1] - p + 1))
      lr_patch = lr[y : y + p, x : x + p]
      hr_patch = hr[y * s : (y + p) * s, x * s : (x + p) * s]
      if self.augment:
        hflip, vflip, rot = rng.integers(0, 2, size=3)
        lr_patch = _augment(lr_patch, hflip, vflip, rot)
        hr_patch = _augment(hr_patch, hflip, vflip, rot)
      lr_out[k] = lr_patch
      hr_out[k] = hr_patch
    return {"lr": lr_out, "hr": hr_out}

  def iterate(self, start_step: int = 0) -> Iterator[Batch]:
    """Return an endless iterator over batches start_step, start_step + 1, ..."""
    return (self.batch(step) for step in itertools.count(int(start_step)))

  def __iter__(self) -> Iterator[Batch]:
    return self.iterate(0)


def _augment(img: np.ndarray, hflip: int, vflip: int, rot: int) -> np.ndarray:
  if hflip:
    img = img[:, ::-1]
  if vflip:
    img = img[::-1]
  if rot:
    img = img.transpose(1, 0, 2)
  return img
