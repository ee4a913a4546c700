"""Where pixels come from: a data spec ("embedded", a folder, "tfds:...") to SR pairs, splits, crops.

The searches and the trainer read their data through these, so every method accepts the same
`config.data` section (see configs/common.py).
"""

from __future__ import annotations

import math

import numpy as np
from absl import logging

from nasr.core.errors import ConfigError, DataError
from nasr.data.cache import DecodeCache
from nasr.data.datasets import SRPairs, load_folder_or_pairs
from nasr.data.embedded import load_embedded
from nasr.data.real_pairs import filter_pairs, is_paired_folder
from nasr.data.tfds_builders import load_tfds


def load_dataset(spec: str, scale: int, split: str = "train", data_config=None) -> SRPairs:
  """Return the SR pairs named by `spec`: "embedded", "tfds:<builder>/<config>" or a folder path.

  With data_config.cache_dir set, folder and TFDS images are decoded once into that folder and
  read back memory-mapped (nasr/data/cache.py); one line logs how many were decoded vs reused.
  The embedded images are small and stay in memory.
  """
  spec = str(spec).format(scale=scale)
  if spec == "embedded":
    return load_embedded(split, scale)
  cache_dir = str(data_config.get("cache_dir", "") or "") if data_config else ""
  cache = DecodeCache(cache_dir) if cache_dir else None
  if spec.startswith("tfds:"):
    manual_dir = (data_config.get("manual_dir", "") if data_config else "") or None
    tfds_dir = (data_config.get("tfds_dir", "") if data_config else "") or None
    tfds_split = {"train": "train", "val": "validation"}.get(split, split)
    pairs = load_tfds(
      spec[len("tfds:") :],
      tfds_split,
      scale,
      data_dir=tfds_dir,
      manual_dir=manual_dir,
      cache=cache,
    )
    _log_cache(cache, spec, split)
    return pairs
  pairs = load_folder_or_pairs(spec, scale, cache=cache)
  _log_cache(cache, spec, split)
  threshold = float(data_config.get("ncc_threshold", 0) or 0) if data_config else 0.0
  if threshold > 0 and is_paired_folder(spec, scale):
    pairs = filter_misaligned(pairs, threshold, spec)
  return pairs


def _log_cache(cache: DecodeCache | None, spec: str, split: str) -> None:
  if cache is not None:
    logging.info("%s", cache.summary(f"{split} {spec}"))


def filter_misaligned(pairs: SRPairs, threshold: float, source: str) -> SRPairs:
  """Return `pairs` without those whose NCC is below `threshold`; log each excluded one."""
  kept, excluded = filter_pairs(pairs, threshold)
  for name, value in excluded:
    logging.warning(
      "%s: excluded %s, NCC %.4f < %.4f (misaligned pair)", source, name, value, threshold
    )
  if excluded:
    logging.warning(
      "%s: excluded %d of %d pairs with NCC < %g", source, len(excluded), len(pairs), threshold
    )
  if not len(kept):
    raise DataError(
      f"{source}: every pair has NCC < {threshold} (data.ncc_threshold); nothing is left to use"
    )
  return kept


def num_carved(num_train: int, num_val: int, val_fraction: float = 0.0) -> int:
  """Return how many of `num_train` training images become validation images when data.val is "".

  `val_fraction` in (0, 1) takes that fraction, rounded half up and kept between 1 and
  num_train - 1 (HNAS: 0.6); 0 takes `num_val` images.

  Raises:
    ConfigError: val_fraction outside [0, 1), num_val outside [1, num_train - 1], or fewer than
      two training images to split.
  """
  val_fraction = float(val_fraction)
  if not 0.0 <= val_fraction < 1.0:
    raise ConfigError(
      f"data.val_fraction={val_fraction} must be in [0, 1) (0 = carve data.num_val images)"
    )
  if val_fraction > 0:
    if num_train < 2:
      raise ConfigError(
        f"data.val_fraction={val_fraction}: the training set has {num_train} image(s); "
        "carving a validation split needs at least 2"
      )
    return min(max(int(math.floor(val_fraction * num_train + 0.5)), 1), num_train - 1)
  if num_val < 1 or num_val >= num_train:
    raise ConfigError(
      f"data.num_val={num_val} must be between 1 and {num_train - 1} "
      f"(the training set has {num_train} images)"
    )
  return int(num_val)


def load_train_val(data_config, scale: int, seed: int) -> tuple[SRPairs, SRPairs]:
  """Return (train, validation) pairs; validation is carved from train when data.val is empty.

  The carved split is data.num_val images, or the fraction data.val_fraction of them when it is
  above 0 (configs older than val_fraction carve num_val).
  """
  d = data_config
  train = load_dataset(d.train, scale, "train", d)
  if d.val:
    val = load_dataset(d.val, scale, "val", d)
  else:
    n = num_carved(len(train), d.num_val, d.get("val_fraction", 0.0) or 0.0)
    train, val = train.split(n, seed=seed)
  if d.max_val_images and len(val) > d.max_val_images:
    val = val.subset(range(d.max_val_images))
  return train, val


def center_crops(pairs: SRPairs, patch: int) -> dict[str, np.ndarray]:
  """Return centre crops (LR side `patch`) of every image, stacked as uint8 {"lr", "hr"} arrays.

  One fixed shape keeps a search's scoring function compiled once; searches crop the validation
  split carved from the training images, never a benchmark test set.
  """
  s = pairs.scale
  lrs, hrs = [], []
  for name, lr, hr in zip(pairs.names, pairs.lr, pairs.hr, strict=True):
    h, w = lr.shape[:2]
    if min(h, w) < patch:
      raise ConfigError(f"validation image {name!r} LR {h}x{w} is smaller than val_patch={patch}")
    top, left = (h - patch) // 2, (w - patch) // 2
    # Copies: a view would keep a cached image's whole memory map open until the stack.
    lrs.append(np.array(lr[top : top + patch, left : left + patch]))
    hrs.append(np.array(hr[top * s : (top + patch) * s, left * s : (left + patch) * s]))
  return {"lr": np.stack(lrs), "hr": np.stack(hrs)}
