"""Read, write and list images: uint8 HxWx3 RGB arrays, errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from nasr.core.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _one_line(err: BaseException) -> str:
  text = " ".join(str(err).split())
  return text or type(err).__name__


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
  mode = img.mode
  if mode == "P":
    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    mode = img.mode
  if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
    arr = np.asarray(img).astype(np.float64)
    if mode == "I" and arr.max(initial=0) <= 255:
      arr8 = np.clip(arr, 0, 255).astype(np.uint8)
    else:
      # 16-bit to 8-bit the way MATLAB im2uint8 does: round(x / 257).
      arr8 = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
    return np.repeat(arr8[..., None], 3, axis=2)
  if mode == "F":
    arr = np.asarray(img, dtype=np.float64)
    bad = int(np.sum(~np.isfinite(arr)))
    if bad:  # np.round/astype would make them 0 or 255 without a word
      raise ValueError(f"{bad} of its {arr.size} pixels are NaN or infinite")
    arr8 = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return np.repeat(arr8[..., None], 3, axis=2)
  if mode in ("1", "L", "LA"):
    arr = np.asarray(img.convert("L"), dtype=np.uint8)
    return np.repeat(arr[..., None], 3, axis=2)
  if mode != "RGB":
    img = img.convert("RGB")  # drops alpha; converts CMYK/YCbCr
  return np.asarray(img, dtype=np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
  """Return the image at `path` as a uint8 HxWx3 RGB array, or raise DataError naming the file.

  PNG, JPEG, BMP and TIFF are read with Pillow. Grayscale is repeated to three channels, alpha is
  dropped, palette images are expanded and 16-bit grayscale is scaled as round(x / 257) (MATLAB's
  im2uint8). Pillow itself reduces 16-bit colour PNGs to their high byte, which can differ from
  round(x / 257) by one level.
  """
  path = Path(path)
  if not path.is_file():
    raise DataError(f"cannot read image {path}: file does not exist")
  # A truncated file must fail, not come back half grey.
  ImageFile.LOAD_TRUNCATED_IMAGES = False
  try:
    with Image.open(path) as img:
      img.load()  # decode everything now so that truncation surfaces here
      arr = _to_rgb_uint8(img)
  except Exception as err:  # noqa: BLE001 - Pillow raises many types for bad files
    raise DataError(f"cannot read image {path}: {_one_line(err)}") from None
  if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
    raise DataError(f"cannot read image {path}: unexpected shape {arr.shape}")
  return np.ascontiguousarray(arr)


def write_png(path: str | os.PathLike, img: np.ndarray) -> None:
  """Write a uint8 (or float in [0, 255]) HxWx3 or HxW image to `path` as PNG, creating folders."""
  path = Path(path)
  arr = np.asarray(img)
  if arr.dtype != np.uint8:
    arr = np.clip(np.round(arr.astype(np.float64)), 0, 255).astype(np.uint8)
  if arr.ndim == 3 and arr.shape[2] == 1:
    arr = arr[..., 0]
  if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
    raise DataError(f"cannot write {path}: expected HxW or HxWx3 image, got shape {arr.shape}")
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(arr).save(path, format="PNG")


def list_images(folder: str | os.PathLike) -> list[Path]:
  """Return the image files in `folder`, sorted by name, or raise DataError when there are none."""
  folder = Path(folder)
  if not folder.is_dir():
    raise DataError(f"folder {folder} does not exist")
  files = sorted(
    p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
  )
  if not files:
    raise DataError(
      f"no images in folder {folder} (empty or no files with extensions "
      f"{', '.join(IMAGE_EXTENSIONS)})"
    )
  return files
