"""Writers: the progress line (speed in the unit it counts) and strict JSON files."""

import json
from unittest import mock

import numpy as np

from nasr import writers


def test_progress_reports_slow_epochs_as_seconds_per_epoch():
  with mock.patch.object(writers.time, "monotonic", side_effect=[0.0, 96.0]):
    progress = writers.Progress(10, name="epoch", every_s=0)
    line = progress.update(2, {"psnr": 31.5})
  assert line.startswith("epoch 2/10 | 48.0 s/epoch | ETA 6m24s")
  assert "psnr 31.5" in line


def test_progress_reports_fast_training_as_steps_per_second():
  with mock.patch.object(writers.time, "monotonic", side_effect=[0.0, 10.0]):
    progress = writers.Progress(1000)
    line = progress.update(250)
  assert line.startswith("train 250/1000 | 25.00 steps/s | ETA")


def _strict_load(text: str):
  def refuse(name):
    raise ValueError(f"non-standard JSON constant {name}")

  return json.loads(text, parse_constant=refuse)


def test_json_files_are_strict_json_with_null_for_non_finite_numbers(tmp_path):
  writers.write_json(tmp_path / "r.json", {"best": float("-inf"), "v": [np.float32("nan"), 1.5]})
  assert _strict_load((tmp_path / "r.json").read_text()) == {"best": None, "v": [None, 1.5]}
  w = writers.MetricWriter(tmp_path, log=False, tensorboard=False)
  w.write_scalars(3, {"loss": float("nan"), "psnr": 30.0})
  w.close()
  line = (tmp_path / "metrics.jsonl").read_text().strip()
  assert _strict_load(line) == {"step": 3, "loss": None, "psnr": 30.0}
