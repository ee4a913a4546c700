"""Acceptance: `launch.evaluate` with model=bicubic reproduces the published Set5 baselines."""

import json

import pytest

from tests.conftest import shared_benchmark
from tests.launch_utils import run_launcher

PUBLISHED = {2: (33.66, 0.9299), 4: (28.42, 0.8104)}


@pytest.mark.parametrize("scale", sorted(PUBLISHED))
def test_bicubic_set5_through_the_launcher(tmp_path, scale):
  set5 = shared_benchmark("Set5")
  r = run_launcher(
    "evaluate",
    "--config=configs/evaluate.py",
    "--config.model=bicubic",
    f"--config.scale={scale}",
    f"--config.benchmarks={set5}",
    f"--workdir={tmp_path}",
  )
  assert r.returncode == 0, r.stderr[-2000:]
  result = json.loads((tmp_path / "eval.json").read_text())
  assert result["params"] == 0
  set5_result = result["results"]["Set5"]
  assert set5_result["images"] == 5
  psnr, ssim = PUBLISHED[scale]
  assert set5_result["psnr"] == pytest.approx(psnr, abs=0.02)
  assert set5_result["ssim"] == pytest.approx(ssim, abs=0.001)
  assert "Set5" in r.stdout and "PSNR" in r.stdout  # the printed table
