"""Score an upscaling function on whole images with the SR papers' conventions."""

from collections.abc import Callable, Iterable

import numpy as np

from nasr.estimation import metrics

UpscaleFn = Callable[[np.ndarray], np.ndarray]


def score_images(
  upscale: UpscaleFn,
  images: Iterable[tuple[str, np.ndarray, np.ndarray]],
  scale: int,
  test_y_channel: bool = True,
  per_image: bool = False,
) -> dict:
  """Return mean PSNR/SSIM (Y channel, shave = scale) of `upscale` over (name, lr, hr) triples.

  `upscale(lr_uint8)` returns the SR image as floats in [0, 1]; it is quantised to 8 bits before
  scoring, as the published tables do.
  """
  psnrs, ssims, rows = [], [], []
  for name, lr, hr in images:
    sr = np.asarray(upscale(lr), np.float64) * 255.0
    if sr.shape != hr.shape:
      raise ValueError(f"upscaled {name!r} has shape {sr.shape}, expected the HR shape {hr.shape}")
    p = metrics.psnr(sr, hr, crop_border=scale, test_y_channel=test_y_channel)
    s = metrics.ssim(sr, hr, crop_border=scale, test_y_channel=test_y_channel)
    psnrs.append(p)
    ssims.append(s)
    rows.append({"name": name, "psnr": p, "ssim": s})
  if not psnrs:
    raise ValueError("no images to score")
  out = {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "images": len(psnrs)}
  if per_image:
    out["per_image"] = rows
  return out
