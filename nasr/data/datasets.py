"""Paired LR/HR datasets: from an HR folder, from paired folders, or from either.

Images are held in memory, or, given a `DecodeCache` (data.cache_dir), decoded once to disk and
read back memory-mapped, a bounded number of files at a time (nasr/data/cache.py).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from nasr.core.errors import DataError
from nasr.data.cache import DecodeCache, file_identity
from nasr.data.imresize import bicubic_degrade, check_scale, modcrop
from nasr.data.io import list_images, read_image


@dataclasses.dataclass(frozen=True, eq=False)  # arrays: compare by identity, hashable
class SRPairs:
  """Matched uint8 HxWx3 LR and HR images; hr[i] is lr[i] upscaled by `scale` in both sides.

  Attributes:
    names: one name per image (a file name or an embedded image name).
    lr: the low-resolution images: a tuple of arrays, or a lazy `CachedImages` sequence whose
      items are memory-mapped on access (a cache folder).
    hr: the high-resolution images, exactly `scale` times larger than `lr` (same kind).
    scale: the upscaling factor (2, 3 or 4).
  """

  names: tuple[str, ...]
  lr: Sequence[np.ndarray]
  hr: Sequence[np.ndarray]
  scale: int

  def __post_init__(self):
    if not len(self.names) == len(self.lr) == len(self.hr):
      raise DataError(
        f"SRPairs needs as many names, LR and HR images; got {len(self.names)}, "
        f"{len(self.lr)}, {len(self.hr)}"
      )

  def __len__(self) -> int:
    return len(self.names)

  def subset(self, indices: Iterable[int]) -> SRPairs:
    """Return the pairs at `indices`, in that order (cached images stay lazy: nothing is read)."""
    idx = [int(i) for i in indices]
    return SRPairs(
      tuple(self.names[i] for i in idx), _take(self.lr, idx), _take(self.hr, idx), self.scale
    )

  def split(self, num_val: int, seed: int = 0) -> tuple[SRPairs, SRPairs]:
    """Return (train, val): `num_val` images drawn with `seed` go to val, the rest to train."""
    n = len(self)
    if not 0 <= num_val <= n:
      raise DataError(f"cannot split {num_val} validation images from a dataset of {n}")
    chosen = np.random.default_rng(seed).permutation(n)[:num_val]
    val_idx = sorted(int(i) for i in chosen)
    train_idx = sorted(set(range(n)) - set(val_idx))
    return self.subset(train_idx), self.subset(val_idx)


def _take(images: Sequence[np.ndarray], idx: list[int]) -> Sequence[np.ndarray]:
  take = getattr(images, "take", None)
  return take(idx) if take is not None else tuple(images[i] for i in idx)


def image_shapes(images: Sequence[np.ndarray]) -> tuple[tuple[int, ...], ...]:
  """Return the shape of each image; a cached sequence knows them without opening a file."""
  shapes = getattr(images, "shapes", None)
  return tuple(shapes) if shapes is not None else tuple(im.shape for im in images)


# What turns an HR file into the cached arrays; part of every HR-folder cache key, so a change
# to modcrop or the bicubic degradation must change this string.
HR_DEGRADATION = "modcrop+matlab_bicubic_v1"


def _cached_pairs(cache: DecodeCache, entries, scale: int) -> SRPairs:
  names, lr, hr = cache.sequences(entries)
  return SRPairs(names, lr, hr, scale)


def _hr_pair(path: Path, scale: int) -> tuple[np.ndarray, np.ndarray]:
  """Return (LR, HR) made from HR file `path`: modcropped HR, MATLAB-bicubic LR."""
  hr = modcrop(read_image(path), scale)
  if min(hr.shape[:2]) < scale:
    raise DataError(
      f"image {path} of size {hr.shape[0]}x{hr.shape[1]} is too small for scale {scale}"
    )
  return bicubic_degrade(hr, scale), np.ascontiguousarray(hr)


def load_hr_folder(
  folder: str | os.PathLike,
  scale: int,
  limit: int | None = None,
  cache: DecodeCache | None = None,
) -> SRPairs:
  """Return pairs made from every HR image in `folder`: modcropped HR, MATLAB-bicubic LR.

  With `cache`, each image is decoded once into the cache folder and read back memory-mapped.
  """
  scale = check_scale(scale)
  files = list_images(folder)
  if limit is not None:
    files = files[: int(limit)]
  if cache is not None:
    entries = [
      cache.fetch(
        {"kind": "hr_file", "scale": scale, "degradation": HR_DEGRADATION, "hr": file_identity(f)},
        f.name,
        functools.partial(_hr_pair, f, scale),
      )
      for f in files
    ]
    return _cached_pairs(cache, entries, scale)
  names, lrs, hrs = [], [], []
  for f in files:
    lr, hr = _hr_pair(f, scale)
    names.append(f.name)
    hrs.append(hr)
    lrs.append(lr)
  return SRPairs(tuple(names), tuple(lrs), tuple(hrs), scale)


# Suffixes that name the role or scale of a file: "0001x2", "Canon_001_LR2", "img_HR", "baby_lr_x4".
_SUFFIX_PATTERNS = [
  re.compile(p, re.IGNORECASE)
  for p in (
    r"[_\-.](lr|hr|gt)[_\-.]?x?\d*$",
    r"[_\-.](bicubic|lrbi|bi)[_\-.]?x?\d*$",
    r"[_\-.]?x\d+$",
  )
]


def pair_key(stem: str) -> str:
  """Return `stem` lower-cased without role/scale suffixes: "Canon_001_LR2" -> "canon_001"."""
  key = stem
  changed = True
  while changed:
    changed = False
    for pattern in _SUFFIX_PATTERNS:
      new = pattern.sub("", key)
      if new and new != key:
        key, changed = new, True
  return key.lower()


def _index_by_key(files: list[Path], folder: Path) -> dict[str, Path]:
  index: dict[str, Path] = {}
  for f in files:
    key = pair_key(f.stem)
    if key in index:
      raise DataError(f"files {index[key]} and {f} in {folder} both match the name {key!r}")
    index[key] = f
  return index


def _file_pair(lr_path: Path, hr_path: Path, scale: int) -> tuple[np.ndarray, np.ndarray]:
  """Return (LR, HR) read from a matched pair of files, the HR cropped to `scale` x the LR."""
  lr, hr = read_image(lr_path), read_image(hr_path)
  want = (lr.shape[0] * scale, lr.shape[1] * scale)
  if hr.shape[:2] != want:
    extra_h, extra_w = hr.shape[0] - want[0], hr.shape[1] - want[1]
    if 0 <= extra_h < scale and 0 <= extra_w < scale:
      hr = hr[: want[0], : want[1]]  # the LR was made from the modcropped HR
    else:
      raise DataError(
        f"HR {hr_path} is {hr.shape[0]}x{hr.shape[1]} but LR {lr_path} is "
        f"{lr.shape[0]}x{lr.shape[1]}; x{scale} needs HR {want[0]}x{want[1]}"
      )
  return lr, np.ascontiguousarray(hr)


def load_paired_folders(
  lr_folder: str | os.PathLike,
  hr_folder: str | os.PathLike,
  scale: int,
  cache: DecodeCache | None = None,
) -> SRPairs:
  """Return pairs read from matching files of `lr_folder` and `hr_folder` (matched by file stem).

  With `cache`, each pair is decoded once into the cache folder and read back memory-mapped.
  """
  scale = check_scale(scale)
  lr_folder, hr_folder = Path(lr_folder), Path(hr_folder)
  lr_index = _index_by_key(list_images(lr_folder), lr_folder)
  hr_index = _index_by_key(list_images(hr_folder), hr_folder)
  for key, f in lr_index.items():
    if key not in hr_index:
      raise DataError(f"LR image {f} has no HR partner in {hr_folder}")
  for key, f in hr_index.items():
    if key not in lr_index:
      raise DataError(f"HR image {f} has no LR partner in {lr_folder}")
  ordered = sorted(hr_index, key=lambda k: hr_index[k].name)
  if cache is not None:
    entries = []
    for key in ordered:
      lr_path, hr_path = lr_index[key], hr_index[key]
      identity = {"lr": file_identity(lr_path), "hr": file_identity(hr_path)}
      decode = functools.partial(_file_pair, lr_path, hr_path, scale)
      entries.append(
        cache.fetch({"kind": "file_pair", "scale": scale, **identity}, hr_path.name, decode)
      )
    return _cached_pairs(cache, entries, scale)
  names, lrs, hrs = [], [], []
  for key in ordered:
    lr, hr = _file_pair(lr_index[key], hr_index[key], scale)
    names.append(hr_index[key].name)
    lrs.append(lr)
    hrs.append(hr)
  return SRPairs(tuple(names), tuple(lrs), tuple(hrs), scale)


def pair_subfolders(folder: Path, scale: int) -> tuple[Path | None, Path | None]:
  """Return (HR sub-folder, LR sub-folder) of `folder`, each None when absent (LR only with HR)."""
  hr_sub = _find_sub(folder, ["HR", "GT"])
  if hr_sub is None:
    return None, None
  lr_names = [f"LR/X{scale}", f"LR_bicubic/X{scale}", "LR_bicubic", f"LR{scale}", f"LR_X{scale}"]
  return hr_sub, _find_sub(folder, [*lr_names, f"X{scale}", "LR"])


def _find_sub(folder: Path, names: Iterable[str]) -> Path | None:
  children = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
  for name in names:
    parts = name.lower().split("/")
    current: Path | None = children.get(parts[0])
    for part in parts[1:]:
      if current is None:
        break
      sub = {p.name.lower(): p for p in current.iterdir() if p.is_dir()}
      current = sub.get(part)
    if current is not None and current.is_dir():
      return current
  return None


def load_folder_or_pairs(
  spec: str | os.PathLike, scale: int, cache: DecodeCache | None = None
) -> SRPairs:
  """Return pairs from `spec`: HR/ + LR/ sub-folders when present, else an HR-only folder.

  Recognised LR sub-folders (case-insensitive): LR/X{scale}, LR_bicubic/X{scale}, LR_bicubic,
  LR{scale}, LR. A folder without an HR sub-folder is read as HR images, LR made by bicubic_degrade.
  With `cache`, images are decoded once into the cache folder and read back memory-mapped.
  """
  scale = check_scale(scale)
  folder = Path(spec).expanduser()
  if not folder.exists():
    raise DataError(f"data path {folder} does not exist")
  if not folder.is_dir():
    raise DataError(f"data path {folder} is not a folder")
  hr_sub, lr_sub = pair_subfolders(folder, scale)
  if hr_sub is not None:
    if lr_sub is not None:
      return load_paired_folders(lr_sub, hr_sub, scale, cache=cache)
    return load_hr_folder(hr_sub, scale, cache=cache)
  return load_hr_folder(folder, scale, cache=cache)
