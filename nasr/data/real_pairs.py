"""Real-image SR pairs: drop LR/HR pairs from real cameras that are not aligned.

LR and HR images shot separately (different lenses, focal lengths, a moved camera) are registered
afterwards, and some pairs stay misaligned. Yu et al. (AIM 2020 real-SR winner) exclude every pair
whose normalised cross-correlation, with the LR upscaled to the HR size, is below 0.99:

  kept, excluded = filter_pairs(load_paired_folders(lr_dir, hr_dir, 4), threshold=0.99)
  for name, value in excluded: print(f"{name}: NCC {value:.4f}")
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nasr.core.errors import ConfigError, DataError
from nasr.data.datasets import SRPairs, pair_subfolders
from nasr.data.imresize import imresize

NCC_THRESHOLD = 0.99  # the paper's threshold


def ncc(a: np.ndarray, b: np.ndarray) -> float:
  """Return the normalised cross-correlation of two same-shape images, in [-1, 1].

  Both images are centred on their mean over all pixels and channels; the result is the cosine of
  the angle between them (1 = equal up to brightness and contrast). Two constant images give 1 when
  they are equal and 0 otherwise.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise DataError(f"ncc needs images of one shape, got {a.shape} and {b.shape}")
  a, b = a - a.mean(), b - b.mean()
  denom = np.sqrt(np.sum(a * a) * np.sum(b * b))
  if denom == 0.0:
    return 1.0 if np.array_equal(a, b) else 0.0
  return float(np.sum(a * b) / denom)


def pair_ncc(lr: np.ndarray, hr: np.ndarray) -> float:
  """Return the NCC of `hr` and `lr` upscaled to the HR size with MATLAB bicubic `imresize`."""
  up = imresize(np.asarray(lr, np.float64), output_shape=np.shape(hr)[:2])
  return ncc(up, hr)


def filter_pairs(
  pairs: SRPairs, threshold: float = NCC_THRESHOLD
) -> tuple[SRPairs, list[tuple[str, float]]]:
  """Return (kept pairs, [(name, ncc) of each excluded pair]): pairs with NCC < threshold go.

  Args:
    pairs: LR/HR pairs, e.g. from `load_paired_folders`.
    threshold: the smallest NCC (LR upscaled to HR size vs HR) a pair may have to be kept.
  """
  if not -1.0 <= float(threshold) <= 1.0:
    raise ConfigError(f"ncc_threshold must be in [-1, 1], got {threshold}")
  keep, excluded = [], []
  for i, (name, lr, hr) in enumerate(zip(pairs.names, pairs.lr, pairs.hr, strict=True)):
    value = pair_ncc(lr, hr)
    if value < threshold:
      excluded.append((name, value))
    else:
      keep.append(i)
  return pairs.subset(keep), excluded


def is_paired_folder(spec: str | os.PathLike, scale: int) -> bool:
  """Return True when `load_folder_or_pairs(spec, scale)` reads LR files (not bicubic from HR)."""
  folder = Path(spec).expanduser()
  if not folder.is_dir():
    return False
  return pair_subfolders(folder, scale)[1] is not None
