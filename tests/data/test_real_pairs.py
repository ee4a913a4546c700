"""Real-image SR pairs: the NCC filter keeps aligned pairs and drops shifted ones, with a log."""

import logging

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import skimage.data

from nasr import compute, data
from nasr.core.errors import ConfigError, DataError
from nasr.estimation import losses

SCALE = 2
PHOTO = skimage.data.astronaut()


def _aligned():
  hr = PHOTO[:256, 100:356]
  return data.bicubic_degrade(hr, SCALE), np.ascontiguousarray(hr)


def _shifted(by: int = 4):
  """Return an LR image and an HR image of the same scene moved by `by` HR pixels."""
  lr = data.bicubic_degrade(PHOTO[:256, 100:356], SCALE)
  return lr, np.ascontiguousarray(PHOTO[by : by + 256, 100 + by : 356 + by])


def test_ncc_of_simple_images():
  a = np.random.default_rng(0).uniform(size=(9, 7, 3))
  assert data.ncc(a, a) == pytest.approx(1.0)
  assert data.ncc(a, 3.0 * a + 10.0) == pytest.approx(1.0)  # blind to brightness and contrast
  assert data.ncc(a, -a) == pytest.approx(-1.0)
  b = np.random.default_rng(1).uniform(size=(9, 7, 3))
  assert abs(data.ncc(a, b)) < 0.3
  assert data.ncc(np.ones((4, 4, 3)), np.ones((4, 4, 3))) == 1.0
  assert data.ncc(np.ones((4, 4, 3)), a[:4, :4]) == 0.0
  with pytest.raises(DataError, match="one shape"):
    data.ncc(a, a[:5])


def test_filter_keeps_the_aligned_pair_and_excludes_the_shifted_one():
  (lr_a, hr_a), (lr_s, hr_s) = _aligned(), _shifted()
  assert data.pair_ncc(lr_a, hr_a) > 0.99
  assert data.pair_ncc(lr_s, hr_s) < 0.99
  pairs = data.SRPairs(("aligned.png", "shifted.png"), (lr_a, lr_s), (hr_a, hr_s), SCALE)
  kept, excluded = data.filter_pairs(pairs, threshold=0.99)
  assert kept.names == ("aligned.png",) and kept.lr[0] is lr_a and kept.hr[0] is hr_a
  assert [name for name, _ in excluded] == ["shifted.png"]
  assert excluded[0][1] == pytest.approx(data.pair_ncc(lr_s, hr_s))
  # A lower threshold keeps both; the paper's 0.99 is the default.
  assert len(data.filter_pairs(pairs, threshold=0.5)[0]) == 2
  assert data.filter_pairs(pairs)[0].names == ("aligned.png",)
  with pytest.raises(ConfigError, match="ncc_threshold"):
    data.filter_pairs(pairs, threshold=1.5)


def _write_pairs(root, pairs):
  for name, (lr, hr) in pairs.items():
    data.write_png(root / "LR" / f"{name}.png", lr)
    data.write_png(root / "HR" / f"{name}.png", hr)


def _data_config(threshold):
  return ml_collections.ConfigDict(
    {"manual_dir": "", "tfds_dir": "", "ncc_threshold": float(threshold)}
  )


def test_load_dataset_filters_paired_folders_and_logs_each_exclusion(tmp_path, caplog):
  _write_pairs(tmp_path, {"canon_001": _aligned(), "canon_002": _shifted()})
  assert data.is_paired_folder(tmp_path, SCALE)
  with caplog.at_level(logging.WARNING):
    pairs = data.load_dataset(str(tmp_path), SCALE, "train", _data_config(0.99))
  assert pairs.names == ("canon_001.png",)
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  value = f"NCC {data.pair_ncc(*_shifted()):.4f}"
  assert any("canon_002.png" in m and value in m for m in warnings), warnings
  assert not any("canon_001" in m for m in warnings)
  # Off (the default, 0): every pair is kept.
  pairs = data.load_dataset(str(tmp_path), SCALE, "train", _data_config(0))
  assert pairs.names == ("canon_001.png", "canon_002.png")
  # A filter that leaves nothing is an error naming the setting, not an empty training set.
  _write_pairs(tmp_path / "bad", {"x": _shifted()})
  with pytest.raises(DataError, match="ncc_threshold"):
    data.load_dataset(str(tmp_path / "bad"), SCALE, "train", _data_config(0.99))


def test_hr_only_folders_are_not_filtered(tmp_path, caplog):
  # Their LR is made by bicubic from the HR, aligned by construction; a textured image can still
  # have a low NCC, and must not be dropped.
  data.write_png(tmp_path / "rough.png", np.ascontiguousarray(PHOTO[:64, :64]))
  assert not data.is_paired_folder(tmp_path, SCALE)
  with caplog.at_level(logging.WARNING):
    pairs = data.load_dataset(str(tmp_path), SCALE, "train", _data_config(0.9999))
  assert len(pairs) == 1 and not caplog.records


def test_train_val_from_filtered_pairs_with_120_px_patches(tmp_path):
  _write_pairs(tmp_path, {"a": _aligned(), "b": _shifted(), "c": _aligned()})
  config = ml_collections.ConfigDict(
    {"seed": 0, "data": _data_config(0.99).to_dict() | {"train": str(tmp_path), "val": ""}}
  )
  config.data.update({"num_val": 1, "max_val_images": 0})
  train, val = data.load_train_val(config.data, SCALE, config.seed)
  assert sorted(train.names + val.names) == ["a.png", "c.png"]
  # The paper's recipe: a random 120x120 LR patch with flips and transposes.
  sampler = data.PatchSampler(train, patch_size=120, batch_size=2, seed=0, augment=True)
  batch = sampler.batch(0)
  assert batch["lr"].shape == (2, 120, 120, 3) and batch["hr"].shape == (2, 240, 240, 3)


def test_ms_ssim_l1_mix_weight_comes_from_the_config():
  rng = np.random.default_rng(0)
  pred = jnp.asarray(rng.uniform(size=(2, 24, 24, 3)), jnp.float32)
  target = jnp.asarray(rng.uniform(size=(2, 24, 24, 3)), jnp.float32)
  ms, l1 = 1.0 - float(losses.ms_ssim(pred, target)), float(losses.l1(pred, target))
  for weight, want in [(None, 0.84 * ms + 0.16 * l1), (0.0, l1), (1.0, ms), (0.5, (ms + l1) / 2)]:
    cfg = ml_collections.ConfigDict({"loss": "ms_ssim_l1", "ms_ssim_weight": weight})
    if weight is None:
      cfg = ml_collections.ConfigDict({"loss": "ms_ssim_l1"})
    assert float(compute.make_config_loss(cfg)(pred, target)) == pytest.approx(want, rel=1e-5)
  cfg = ml_collections.ConfigDict({"loss": "l1", "ms_ssim_weight": 0.5})  # ignored for other losses
  assert float(compute.make_config_loss(cfg)(pred, target)) == pytest.approx(l1, rel=1e-6)
  with pytest.raises(ConfigError, match="ms_ssim_weight"):
    compute.make_config_loss(
      ml_collections.ConfigDict({"loss": "ms_ssim_l1", "ms_ssim_weight": 2.0})
    )
