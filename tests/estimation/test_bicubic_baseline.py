"""Acceptance: MATLAB bicubic on Set5 scores the published baselines with our PSNR/SSIM."""

from pathlib import Path

import numpy as np
import pytest

from nasr.estimation import metrics

SET5 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "benchmarks" / "Set5"

# Published bicubic baselines (Y channel, shave = scale), e.g. VDSR Table 3 and later papers.
PUBLISHED = {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)}


@pytest.mark.skipif(not SET5.is_dir(), reason=f"Set5 not found at {SET5}")
@pytest.mark.parametrize("scale", sorted(PUBLISHED))
def test_set5_bicubic_matches_published(scale):
  from nasr.data import imresize, modcrop, read_image

  psnrs, ssims = [], []
  for path in sorted(SET5.glob("*.png")):
    hr = modcrop(read_image(path), scale)
    lr = imresize(hr, scale=1 / scale)  # uint8, rounded after each axis as MATLAB does
    assert lr.dtype == np.uint8
    sr = imresize(lr.astype(np.float64), scale=scale)  # the SR "model": float, quantised once
    assert sr.shape == hr.shape
    psnrs.append(metrics.psnr(sr, hr, crop_border=scale))
    ssims.append(metrics.ssim(sr, hr, crop_border=scale))
  assert len(psnrs) == 5
  psnr, ssim = PUBLISHED[scale]
  assert np.mean(psnrs) == pytest.approx(psnr, abs=0.02)
  assert np.mean(ssims) == pytest.approx(ssim, abs=0.001)
