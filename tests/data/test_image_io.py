"""read_image / write_png / list_images: every common format to uint8 RGB, errors name the file."""

import numpy as np
import pytest
from PIL import Image

from nasr.core.errors import DataError
from nasr.data import list_images, read_image, write_png

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (9, 11, 3)).astype(np.uint8)


def test_png_roundtrip(tmp_path):
  path = tmp_path / "deep" / "er" / "x.png"
  write_png(path, RGB)
  out = read_image(path)
  assert out.dtype == np.uint8 and out.shape == (9, 11, 3)
  np.testing.assert_array_equal(out, RGB)


def test_write_png_rounds_and_clips_floats(tmp_path):
  img = np.array([[[-3.0, 10.4, 10.6], [254.6, 300.0, 0.49]]])
  write_png(tmp_path / "f.png", img)
  np.testing.assert_array_equal(read_image(tmp_path / "f.png"), [[[0, 10, 11], [255, 255, 0]]])


def test_grayscale_is_repeated(tmp_path):
  gray = RGB[..., 0]
  Image.fromarray(gray).save(tmp_path / "g.png")
  out = read_image(tmp_path / "g.png")
  assert out.shape == (9, 11, 3)
  for c in range(3):
    np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_drops_alpha(tmp_path):
  rgba = np.concatenate([RGB, np.full((9, 11, 1), 7, np.uint8)], axis=2)
  Image.fromarray(rgba).save(tmp_path / "a.png")
  np.testing.assert_array_equal(read_image(tmp_path / "a.png"), RGB)


def test_16bit_grayscale_is_scaled_like_im2uint8(tmp_path):
  g16 = RNG.integers(0, 65536, (9, 11)).astype(np.uint16)
  g16[0, :4] = [0, 128, 129, 65535]
  Image.fromarray(g16).save(tmp_path / "g16.png")
  out = read_image(tmp_path / "g16.png")
  want = np.round(g16 / 257.0).astype(np.uint8)
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out[..., 1], want)
  assert list(out[0, :4, 0]) == [0, 0, 1, 255]


def test_palette_is_expanded(tmp_path):
  pal = Image.fromarray(RGB).quantize(colors=16)
  pal.save(tmp_path / "p.png")
  want = np.asarray(pal.convert("RGB"))
  np.testing.assert_array_equal(read_image(tmp_path / "p.png"), want)


@pytest.mark.parametrize(
  "ext,lossless",
  [(".bmp", True), (".tif", True), (".tiff", True), (".jpg", False), (".JPEG", False)],
)
def test_other_formats(tmp_path, ext, lossless):
  path = tmp_path / f"img{ext}"
  Image.fromarray(RGB).save(path)
  out = read_image(path)
  assert out.dtype == np.uint8 and out.shape == RGB.shape
  if lossless:
    np.testing.assert_array_equal(out, RGB)


def test_missing_file_names_path(tmp_path):
  with pytest.raises(DataError, match="nope.png"):
    read_image(tmp_path / "nope.png")


def test_truncated_png_names_path(tmp_path):
  big = RNG.integers(0, 256, (64, 64, 3)).astype(np.uint8)
  good = tmp_path / "good.png"
  write_png(good, big)
  data = good.read_bytes()
  bad = tmp_path / "cut.png"
  bad.write_bytes(data[: len(data) // 2])
  with pytest.raises(DataError) as err:
    read_image(bad)
  msg = str(err.value)
  assert str(bad) in msg and "\n" not in msg
  assert msg.startswith(f"cannot read image {bad}: ")


def test_not_an_image_names_path(tmp_path):
  path = tmp_path / "notes.png"
  path.write_text("hello, I am not a PNG\nsecond line\n")
  with pytest.raises(DataError, match="cannot read image .*notes.png") as err:
    read_image(path)
  assert "\n" not in str(err.value)


def test_list_images_sorted_and_filtered(tmp_path):
  for name in ("b.PNG", "a.jpg", "c.tiff", "d.Bmp", "e.jpeg", "f.tif"):
    (tmp_path / name).write_bytes(b"")
  (tmp_path / "readme.txt").write_text("x")
  (tmp_path / "sub.png").mkdir()
  names = [p.name for p in list_images(tmp_path)]
  assert names == ["a.jpg", "b.PNG", "c.tiff", "d.Bmp", "e.jpeg", "f.tif"]


def test_list_images_errors_name_folder(tmp_path):
  with pytest.raises(DataError, match=f"folder {tmp_path / 'missing'} does not exist"):
    list_images(tmp_path / "missing")
  (tmp_path / "notes.txt").write_text("x")
  with pytest.raises(DataError, match=f"no images in folder {tmp_path}"):
    list_images(tmp_path)


def test_float_tiff_with_nan_or_inf_names_the_file(tmp_path):
  arr = np.full((6, 5), 100.0, np.float32)
  Image.fromarray(arr, mode="F").save(tmp_path / "ok.tif")
  assert read_image(tmp_path / "ok.tif")[0, 0].tolist() == [100, 100, 100]
  for name, value in (("nan.tif", np.nan), ("inf.tif", np.inf)):
    bad = arr.copy()
    bad[2, 3] = value
    Image.fromarray(bad, mode="F").save(tmp_path / name)
    with pytest.raises(DataError, match=f"{name}: 1 of its 30 pixels are NaN or infinite"):
      read_image(tmp_path / name)
