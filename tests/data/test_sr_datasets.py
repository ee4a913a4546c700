"""SRPairs and the folder loaders: modcrop + MATLAB bicubic, pairing by stem, helpful errors."""

import numpy as np
import pytest

from nasr.core.errors import ConfigError, DataError
from nasr.data import (
  SRPairs,
  bicubic_degrade,
  load_folder_or_pairs,
  load_hr_folder,
  load_paired_folders,
  write_png,
)
from nasr.data.datasets import pair_key

RNG = np.random.default_rng(0)


def _img(h, w):
  return RNG.integers(0, 256, (h, w, 3)).astype(np.uint8)


def _pairs(n, scale=2):
  lrs = tuple(_img(6, 7) for _ in range(n))
  hrs = tuple(np.repeat(np.repeat(x, scale, 0), scale, 1) for x in lrs)
  return SRPairs(tuple(f"im{i}" for i in range(n)), lrs, hrs, scale)


def test_srpairs_subset_split():
  pairs = _pairs(6)
  assert len(pairs) == 6
  sub = pairs.subset([4, 1])
  assert sub.names == ("im4", "im1") and sub.lr[0] is pairs.lr[4]
  train, val = pairs.split(2, seed=3)
  assert len(train) == 4 and len(val) == 2
  assert set(train.names) | set(val.names) == set(pairs.names)
  assert not set(train.names) & set(val.names)
  again_train, again_val = pairs.split(2, seed=3)
  assert again_val.names == val.names and again_train.names == train.names
  other = {pairs.split(2, seed=s)[1].names for s in range(10)}
  assert len(other) > 1  # the seed matters


def test_load_hr_folder_modcrops_and_degrades(tmp_path):
  hr = _img(25, 31)
  write_png(tmp_path / "x.png", hr)
  write_png(tmp_path / "y.png", _img(12, 12))
  pairs = load_hr_folder(tmp_path, 3)
  assert pairs.names == ("x.png", "y.png") and pairs.scale == 3
  np.testing.assert_array_equal(pairs.hr[0], hr[:24, :30])
  np.testing.assert_array_equal(pairs.lr[0], bicubic_degrade(hr, 3))
  assert pairs.lr[0].shape == (8, 10, 3)
  assert len(load_hr_folder(tmp_path, 3, limit=1)) == 1
  with pytest.raises(ConfigError, match="got 5"):
    load_hr_folder(tmp_path, 5)


def test_pair_key_tolerates_suffixes():
  assert pair_key("0001x2") == pair_key("0001") == "0001"
  assert pair_key("Canon_001_LR2") == pair_key("Canon_001_HR") == "canon_001"
  assert pair_key("baby_LRBI_x4") == pair_key("baby_HR") == "baby"
  assert pair_key("img_lr") == pair_key("img-GT") == "img"


def test_paired_folders_div2k_and_realsr_names(tmp_path):
  lr_dir, hr_dir = tmp_path / "LR", tmp_path / "HR"
  lr1, lr2 = _img(5, 6), _img(4, 4)
  write_png(lr_dir / "0001x2.png", lr1)
  write_png(hr_dir / "0001.png", _img(10, 12))
  write_png(lr_dir / "Canon_001_LR2.png", lr2)
  write_png(hr_dir / "Canon_001_HR.png", _img(9, 9))  # one pixel over: modcropped
  pairs = load_paired_folders(lr_dir, hr_dir, 2)
  assert pairs.names == ("0001.png", "Canon_001_HR.png")
  np.testing.assert_array_equal(pairs.lr[0], lr1)
  assert pairs.hr[1].shape == (8, 8, 3)
  # The folder loader finds HR/ and LR/ on its own.
  assert load_folder_or_pairs(tmp_path, 2).names == pairs.names


def test_paired_folders_missing_partner_names_file(tmp_path):
  write_png(tmp_path / "LR" / "0001x2.png", _img(5, 5))
  write_png(tmp_path / "LR" / "0002x2.png", _img(5, 5))
  write_png(tmp_path / "HR" / "0001.png", _img(10, 10))
  with pytest.raises(DataError, match="0002x2.png has no HR partner"):
    load_paired_folders(tmp_path / "LR", tmp_path / "HR", 2)
  write_png(tmp_path / "HR" / "0002.png", _img(10, 10))
  write_png(tmp_path / "HR" / "0003.png", _img(10, 10))
  with pytest.raises(DataError, match="0003.png has no LR partner"):
    load_paired_folders(tmp_path / "LR", tmp_path / "HR", 2)


def test_paired_folders_shape_mismatch_names_both(tmp_path):
  write_png(tmp_path / "LR" / "a.png", _img(5, 5))
  write_png(tmp_path / "HR" / "a.png", _img(15, 15))
  with pytest.raises(DataError) as err:
    load_paired_folders(tmp_path / "LR", tmp_path / "HR", 2)
  msg = str(err.value)
  assert str(tmp_path / "HR" / "a.png") in msg and str(tmp_path / "LR" / "a.png") in msg
  assert "15x15" in msg and "5x5" in msg


def test_folder_or_pairs_variants(tmp_path):
  write_png(tmp_path / "flat" / "a.png", _img(8, 8))
  assert load_folder_or_pairs(tmp_path / "flat", 2).names == ("a.png",)
  root = tmp_path / "div2k"
  write_png(root / "HR" / "0001.png", _img(12, 12))
  write_png(root / "LR_bicubic" / "X3" / "0001x3.png", _img(4, 4))
  write_png(root / "LR_bicubic" / "X2" / "0001x2.png", _img(6, 6))
  assert load_folder_or_pairs(root, 3).lr[0].shape == (4, 4, 3)
  assert load_folder_or_pairs(root, 2).lr[0].shape == (6, 6, 3)
  with pytest.raises(DataError, match="does not exist"):
    load_folder_or_pairs(tmp_path / "nowhere", 2)
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match=f"no images in folder {tmp_path / 'empty'}"):
    load_folder_or_pairs(tmp_path / "empty", 2)
