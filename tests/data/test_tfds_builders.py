"""The TFDS builders prepare and read back without TensorFlow (array_record + data source)."""

import io
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from nasr.core.errors import ConfigError, DataError
from nasr.data import bicubic_degrade, load_hr_folder, load_tfds, write_png

pytest.importorskip("tensorflow_datasets")


def _png(img):
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="PNG")
  return buf.getvalue()


def test_importing_nasr_data_does_not_import_tfds():
  import subprocess

  code = "import nasr.data, sys; print('tensorflow_datasets' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip().splitlines()[-1] == "False"


def test_benchmark_builder_reads_hr_and_makes_lr(tmp_path):
  rng = np.random.default_rng(0)
  folder = tmp_path / "Set5" / "HR"
  images = {}
  for name in ("bird", "baby", "head"):
    images[name] = rng.integers(0, 256, (13, 18, 3)).astype(np.uint8)
    write_png(folder / f"{name}.png", images[name])
  pairs = load_tfds(
    "nasr_sr_benchmark/set5", "test", 2, data_dir=tmp_path / "tfds", manual_dir=tmp_path
  )
  assert pairs.names == ("baby.png", "bird.png", "head.png")
  assert pairs.scale == 2
  for name, lr, hr in zip(pairs.names, pairs.lr, pairs.hr, strict=True):
    want = images[name[:-4]][:12, :18]
    np.testing.assert_array_equal(hr, want)
    np.testing.assert_array_equal(lr, bicubic_degrade(want, 2))
  # "validation" of a benchmark reads its only split, "test".
  again = load_tfds(
    "nasr_sr_benchmark/set5", "validation", 2, data_dir=tmp_path / "tfds", manual_dir=tmp_path
  )
  assert again.names == pairs.names


def _fake_div2k(root, rng, scale):
  images = {}
  for split, count in (("train", 3), ("valid", 2)):
    hr_zip = zipfile.ZipFile(root / f"DIV2K_{split}_HR.zip", "w")
    lr_zip = zipfile.ZipFile(root / f"DIV2K_{split}_LR_bicubic_X{scale}.zip", "w")
    with hr_zip, lr_zip:
      for i in range(count):
        name = f"{i + 1 + (800 if split == 'valid' else 0):04d}"
        hr = rng.integers(0, 256, (8 * scale, 5 * scale, 3)).astype(np.uint8)
        lr = rng.integers(0, 256, (8, 5, 3)).astype(np.uint8)
        hr_zip.writestr(f"DIV2K_{split}_HR/{name}.png", _png(hr))
        lr_zip.writestr(f"DIV2K_{split}_LR_bicubic/X{scale}/{name}x{scale}.png", _png(lr))
        images[name] = (lr, hr)
  return images


def test_div2k_builder_reads_zip_archives(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  images = _fake_div2k(manual, np.random.default_rng(1), 3)
  kw = dict(data_dir=tmp_path / "tfds", manual_dir=manual)
  train = load_tfds("nasr_div2k/bicubic_x3", "train", 3, **kw)
  val = load_tfds("nasr_div2k/bicubic_x3", "validation", 3, **kw)
  assert train.names == ("0001", "0002", "0003")
  assert val.names == ("0801", "0802")
  for pairs in (train, val):
    for name, lr, hr in zip(pairs.names, pairs.lr, pairs.hr, strict=True):
      np.testing.assert_array_equal(lr, images[name][0])
      np.testing.assert_array_equal(hr, images[name][1])


def test_div2k_missing_files_lists_expected_names(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match="DIV2K_train_HR.zip.*DIV2K_train_LR_bicubic_X2.zip"):
    load_tfds(
      "nasr_div2k/bicubic_x2", "train", 2, data_dir=tmp_path / "tfds", manual_dir=tmp_path / "empty"
    )


def test_unknown_builder_and_scale_mismatch(tmp_path):
  with pytest.raises(ConfigError, match="nasr_div2k, nasr_sr_benchmark"):
    load_tfds("div2k/bicubic_x2", "train", 2, data_dir=tmp_path)
  with pytest.raises(ConfigError, match="x2 but scale is 4"):
    load_tfds("nasr_div2k/bicubic_x2", "train", 4, data_dir=tmp_path)
  with pytest.raises(ConfigError, match="bicubic_x2"):
    load_tfds("nasr_div2k/unknown_x2", "train", 2, data_dir=tmp_path)


def test_div2k_builder_reads_extracted_folders(tmp_path):
  rng = np.random.default_rng(2)
  manual = tmp_path / "manual"
  hr = rng.integers(0, 256, (13, 9, 3)).astype(np.uint8)  # one row and column over 12x8
  lr = rng.integers(0, 256, (6, 4)).astype(np.uint8)  # grayscale: stored as RGB
  write_png(manual / "DIV2K_train_HR" / "0001.png", hr)
  lr_dir = manual / "DIV2K_train_LR_bicubic" / "X2"
  lr_dir.mkdir(parents=True)
  Image.fromarray(lr).save(lr_dir / "0001x2.png")
  pairs = load_tfds(
    "nasr_div2k/bicubic_x2", "train", 2, data_dir=tmp_path / "tfds", manual_dir=manual
  )
  assert pairs.names == ("0001",)
  np.testing.assert_array_equal(pairs.hr[0], hr[:12, :8])
  np.testing.assert_array_equal(pairs.lr[0], np.repeat(lr[..., None], 3, axis=2))


def test_div2k_pairing_errors_name_the_file(tmp_path):
  rng = np.random.default_rng(3)
  manual = tmp_path / "manual"
  write_png(manual / "DIV2K_train_HR" / "0001.png", rng.integers(0, 256, (8, 8, 3), np.uint8))
  write_png(manual / "DIV2K_train_HR" / "0002.png", rng.integers(0, 256, (8, 8, 3), np.uint8))
  lr_dir = manual / "DIV2K_train_LR_bicubic" / "X2"
  write_png(lr_dir / "0001x2.png", rng.integers(0, 256, (4, 4, 3), np.uint8))
  kw = dict(data_dir=tmp_path / "tfds", manual_dir=manual)
  with pytest.raises(DataError, match="0002.png has no LR partner"):
    load_tfds("nasr_div2k/bicubic_x2", "train", 2, **kw)
  write_png(lr_dir / "0002x2.png", rng.integers(0, 256, (3, 4, 3), np.uint8))
  with pytest.raises(DataError, match="0002.png is 8x8 but LR .*0002x2.png is 3x4"):
    load_tfds("nasr_div2k/bicubic_x2", "train", 2, **kw)


def test_set5_through_tfds_equals_the_folder_loader(set5, tmp_path):
  via_tfds = load_tfds("nasr_sr_benchmark/set5", "test", 4, data_dir=tmp_path, manual_dir=set5)
  direct = load_hr_folder(set5, 4)
  assert via_tfds.names == direct.names
  for a, b in zip(via_tfds.hr + via_tfds.lr, direct.hr + direct.lr, strict=True):
    np.testing.assert_array_equal(a, b)
