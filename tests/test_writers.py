"""The progress line: speed in the unit it counts, never 0.00 for slow units."""

from unittest import mock

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
