"""The embedded default data: photographs bundled with scikit-image, so nothing is downloaded.

Splits (in this order; an image that fails to load offline is skipped):

  train: astronaut, rocket, hubble_deep_field, immunohistochemistry, motorcycle_left (left view
         of stereo_motorcycle), retina, camera, brick, grass, gravel, moon
  val:   chelsea, coffee

camera, brick, grass, gravel and moon are grayscale and repeated to RGB. Images whose long side
exceeds 640 px (retina 1411x1411, hubble_deep_field 872x1000, motorcycle_left 500x741) are shrunk
once with MATLAB-bicubic `imresize` so the long side is 640. HR is then modcropped and LR made with
`bicubic_degrade`, exactly as for a folder of HR images. skimage's `text` is left out: it is
rendered text, not a photograph, and at 172 px high its x4 LR (43 px) is smaller than the usual
48 px training patch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from nasr.core.errors import ConfigError, DataError
from nasr.data.datasets import SRPairs
from nasr.data.imresize import bicubic_degrade, check_scale, imresize, modcrop

MAX_SIDE = 640  # long side after the one-off shrink; keeps the embedded set small and fast

_TRAIN = (
  "astronaut",
  "rocket",
  "hubble_deep_field",
  "immunohistochemistry",
  "motorcycle_left",
  "retina",
  "camera",
  "brick",
  "grass",
  "gravel",
  "moon",
)
_VAL = ("chelsea", "coffee")
_SPLITS = {"train": _TRAIN, "val": _VAL}


def _loader(name: str) -> Callable[[], np.ndarray]:
  import skimage.data  # noqa: PLC0415 - only needed when the embedded data is used

  if name == "motorcycle_left":
    return lambda: skimage.data.stereo_motorcycle()[0]
  return getattr(skimage.data, name)


@functools.cache
def _embedded_image(name: str) -> np.ndarray | None:
  """Return the named image as uint8 HxWx3 (long side <= MAX_SIDE), or None when unavailable."""
  try:
    img = np.asarray(_loader(name)())
  except Exception:  # noqa: BLE001 - some skimage images need a download: skip them offline
    return None
  if img.dtype != np.uint8:
    return None  # every listed image is uint8; anything else is a changed skimage: skip it too
  if img.ndim == 2:
    img = np.repeat(img[..., None], 3, axis=2)
  img = img[..., :3]
  h, w = img.shape[:2]
  if max(h, w) > MAX_SIDE:
    factor = MAX_SIDE / max(h, w)
    shape = (max(1, round(h * factor)), max(1, round(w * factor)))
    img = imresize(img, output_shape=shape)
  img = np.ascontiguousarray(img)
  img.flags.writeable = False  # shared through the cache
  return img


def embedded_names() -> dict[str, list[str]]:
  """Return the image names of each embedded split ("train", "val"), as loaded offline here."""
  return {
    split: [n for n in names if _embedded_image(n) is not None] for split, names in _SPLITS.items()
  }


@functools.cache
def load_embedded(split: str, scale: int) -> SRPairs:
  """Return the embedded scikit-image photographs of `split` ("train" or "val") as pairs."""
  if split not in _SPLITS:
    raise ConfigError(f"embedded split must be one of {', '.join(_SPLITS)}, got {split!r}")
  scale = check_scale(scale)
  names, lrs, hrs = [], [], []
  for name in _SPLITS[split]:
    img = _embedded_image(name)
    if img is None:
      continue
    hr = np.ascontiguousarray(modcrop(img, scale))
    lr = bicubic_degrade(hr, scale)
    hr.flags.writeable = False
    lr.flags.writeable = False
    names.append(name)
    hrs.append(hr)
    lrs.append(lr)
  if not names:
    raise DataError(f"no embedded {split} image could be loaded from scikit-image")
  return SRPairs(tuple(names), tuple(lrs), tuple(hrs), scale)
