"""Writers: the progress line (speed in the unit it counts) and strict JSON files."""

import json
from unittest import mock

import numpy as np
import pytest

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


def test_rough_duration_says_an_estimate_in_the_unit_a_person_would():
  assert writers.rough_duration(30) == "under a minute"
  assert writers.rough_duration(600) == "about 10 min"
  assert writers.rough_duration(9390) == "about 2.6 h"
  assert writers.rough_duration(3 * 86400) == "about 3.0 days"
  with pytest.raises(ValueError, match="finite number of seconds"):
    writers.rough_duration(float("nan"))


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


def test_progress_keeps_the_unit_of_its_first_line():
  # A slow first epoch (compiling), then fast ones: still seconds per epoch, one unit per run.
  with mock.patch.object(writers.time, "monotonic", side_effect=[0.0, 10.0, 10.5]):
    progress = writers.Progress(10, name="epoch", every_s=0)
    first = progress.update(1)
    second = progress.update(2)
  assert first.startswith("epoch 1/10 | 10.0 s/epoch") and second.startswith(
    "epoch 2/10 | 0.5 s/epoch"
  )


def _events(logdir):
  """Return [(tag, step, value)] of the scalar events in TensorBoard event files (TFRecord frames)."""
  import struct

  from tensorboardX.proto import event_pb2

  out = []
  for path in sorted(logdir.glob("events.out.tfevents.*")):
    data = path.read_bytes()
    i = 0
    while i < len(data):
      (length,) = struct.unpack("<Q", data[i : i + 8])
      event = event_pb2.Event.FromString(data[i + 12 : i + 12 + length])
      i += 12 + length + 4
      out += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
  return out


def test_tensorboard_event_files_hold_every_finite_scalar(tmp_path):
  w = writers.MetricWriter(tmp_path, log=False)
  w.write_scalars(1, {"loss": 0.5, "psnr": 30.0})
  w.write_scalars(2, {"loss": float("nan"), "psnr": 31.0})
  w.close()
  assert _events(tmp_path / "tb") == [("loss", 1, 0.5), ("psnr", 1, 30.0), ("psnr", 2, 31.0)]
