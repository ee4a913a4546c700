"""TFDS builders for DIV2K archives and SR benchmark folders that work without TensorFlow.

Only one TFDS path works without TensorFlow (see ENVIRONMENT.md): a `GeneratorBasedBuilder`
written as `array_record` files and read back with `builder.as_data_source(split)`. TFDS is
imported lazily, inside functions, so `import nasr.data` never imports it.

  pairs = load_tfds("nasr_div2k/bicubic_x2", "train", 2, manual_dir="~/Downloads/DIV2K")
  pairs = load_tfds("nasr_sr_benchmark/set5", "test", 4, manual_dir="/data/Set5")
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from nasr.core.errors import ConfigError, DataError
from nasr.data.cache import DecodeCache, file_identity
from nasr.data.datasets import HR_DEGRADATION, SRPairs, pair_key
from nasr.data.imresize import bicubic_degrade, check_scale, modcrop
from nasr.data.io import IMAGE_EXTENSIONS, list_images, read_image

DIV2K_SCALES = (2, 3, 4)
BENCHMARKS = ("set5", "set14", "b100", "urban100", "manga109")
# Folder names a benchmark is commonly stored under, tried in order inside manual_dir.
_BENCHMARK_FOLDERS = {
  "set5": ("Set5",),
  "set14": ("Set14",),
  "b100": ("B100", "BSD100", "BSDS100"),
  "urban100": ("Urban100",),
  "manga109": ("Manga109",),
}
BUILDERS = ("nasr_div2k", "nasr_sr_benchmark")


def _png_bytes(img: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="PNG")
  return buf.getvalue()


def _rgb_png(data: bytes, where: str, crop_to: tuple[int, int] | None = None) -> bytes:
  """Return `data` as RGB PNG bytes (cropped to `crop_to`), passing an RGB PNG through untouched."""
  try:
    with Image.open(io.BytesIO(data)) as img:  # reads the header only: size and mode are free
      size = (img.height, img.width)
      if img.format == "PNG" and img.mode == "RGB" and crop_to in (None, size):
        return data  # DIV2K as shipped: no decode, no re-encode
      img.load()
      arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
  except Exception as err:  # noqa: BLE001 - Pillow raises many types for bad files
    raise DataError(f"cannot read image {where}: {' '.join(str(err).split())}") from None
  if crop_to is not None:
    arr = arr[: crop_to[0], : crop_to[1]]
  return _png_bytes(np.ascontiguousarray(arr))


def _image_size(data: bytes, where: str) -> tuple[int, int]:
  try:
    with Image.open(io.BytesIO(data)) as img:
      return img.height, img.width
  except Exception as err:  # noqa: BLE001 - Pillow raises many types for bad files
    raise DataError(f"cannot read image {where}: {' '.join(str(err).split())}") from None


# --- DIV2K layout -----------------------------------------------------------------------------
def div2k_expected(split: str, scale: int) -> tuple[str, str]:
  """Return the archive names of a DIV2K split ("train"/"valid"): (HR zip, LR bicubic zip)."""
  return f"DIV2K_{split}_HR.zip", f"DIV2K_{split}_LR_bicubic_X{scale}.zip"


def _div2k_splits(manual_dir: Path, scale: int) -> dict[str, tuple[Path, Path]]:
  """Return {TFDS split: (hr_source, lr_source)}, or raise DataError naming the expected files."""
  splits = {}
  for tfds_split, div2k_split in (("train", "train"), ("validation", "valid")):
    source = _div2k_source(manual_dir, div2k_split, scale) if manual_dir.is_dir() else None
    if source is not None:
      splits[tfds_split] = source
  if not splits:
    expected = [n for s in ("train", "valid") for n in div2k_expected(s, scale)]
    raise DataError(
      f"DIV2K x{scale} files not found in {manual_dir}: expected "
      f"{', '.join(expected)} (or their extracted folders)"
    )
  return splits


def _div2k_source(manual_dir: Path, split: str, scale: int) -> tuple[Path, Path] | None:
  """Return (hr_source, lr_source) for a split as folders or zip files, or None when absent."""
  hr_zip, lr_zip = (manual_dir / n for n in div2k_expected(split, scale))
  hr_dir = manual_dir / f"DIV2K_{split}_HR"
  lr_dir = manual_dir / f"DIV2K_{split}_LR_bicubic" / f"X{scale}"
  hr = hr_dir if hr_dir.is_dir() else (hr_zip if hr_zip.is_file() else None)
  lr = lr_dir if lr_dir.is_dir() else (lr_zip if lr_zip.is_file() else None)
  if hr is None or lr is None:
    return None
  return hr, lr


@contextlib.contextmanager
def _open_source(source: Path) -> Iterator[dict[str, tuple[str, str, Callable[[], bytes]]]]:
  """Yield {pair key: (stem, where, read)} for the images of a folder or zip archive.

  Nothing is read until `read()` is called: a DIV2K split is gigabytes.
  """
  if source.is_dir():
    files = list_images(source)
    yield _by_pair_key(((f.stem, str(f), f.read_bytes) for f in files), source)
    return
  try:
    archive = zipfile.ZipFile(source)
  except (zipfile.BadZipFile, OSError) as err:
    raise DataError(f"cannot read archive {source}: {err}") from None
  with archive:
    members = [
      m
      for m in archive.namelist()
      if not m.endswith("/") and Path(m).suffix.lower() in IMAGE_EXTENSIONS
    ]
    if not members:
      raise DataError(f"no images in archive {source}")
    items = ((Path(m).stem, f"{source}:{m}", functools.partial(archive.read, m)) for m in members)
    yield _by_pair_key(items, source)


def _by_pair_key(items, source: Path) -> dict[str, tuple[str, str, Callable[[], bytes]]]:
  index = {}
  for stem, where, read in items:
    key = pair_key(stem)
    if key in index:
      raise DataError(f"{index[key][1]} and {where} in {source} both match the name {key!r}")
    index[key] = (stem, where, read)
  return index


def _div2k_examples(hr_source: Path, lr_source: Path, scale: int) -> Iterator[tuple[str, dict]]:
  with _open_source(hr_source) as hr_items, _open_source(lr_source) as lr_items:
    # Pairing errors surface before any image is decoded.
    for key, (_, where, _) in sorted(hr_items.items()):
      if key not in lr_items:
        raise DataError(f"HR image {where} has no LR partner in {lr_source}")
    for key, (_, where, _) in sorted(lr_items.items()):
      if key not in hr_items:
        raise DataError(f"LR image {where} has no HR partner in {hr_source}")
    for key in sorted(hr_items):
      stem, hr_where, read_hr = hr_items[key]
      _, lr_where, read_lr = lr_items[key]
      lr_data, hr_data = read_lr(), read_hr()
      lr_h, lr_w = _image_size(lr_data, lr_where)
      hr_h, hr_w = _image_size(hr_data, hr_where)
      want = (lr_h * scale, lr_w * scale)
      # The LR may come from a modcropped HR: up to scale - 1 extra HR pixels are cropped away.
      if not (0 <= hr_h - want[0] < scale and 0 <= hr_w - want[1] < scale):
        raise DataError(
          f"HR {hr_where} is {hr_h}x{hr_w} but LR {lr_where} is {lr_h}x{lr_w}; "
          f"x{scale} needs HR {want[0]}x{want[1]}"
        )
      example = {
        "lr": _rgb_png(lr_data, lr_where),
        "hr": _rgb_png(hr_data, hr_where, crop_to=want),
        "name": stem,
      }
      yield stem, example


def _benchmark_folder(manual_dir: Path, config: str) -> Path:
  """Return the folder holding the HR images of benchmark `config` inside manual_dir."""
  candidates = [manual_dir]
  children = {p.name.lower(): p for p in manual_dir.iterdir() if p.is_dir()}
  for name in _BENCHMARK_FOLDERS[config]:
    if name.lower() in children:
      candidates.insert(0, children[name.lower()])
  for base in candidates:
    sub = {p.name.lower(): p for p in base.iterdir() if p.is_dir()}
    for name in ("hr", "gt"):
      if name in sub:
        return sub[name]
    if any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in base.iterdir()):
      return base
  raise DataError(
    f"no {config} images in {manual_dir}: expected image files there, in an HR/ "
    f"sub-folder, or in one of {', '.join(_BENCHMARK_FOLDERS[config])}/"
  )


# --- builders (defined lazily: TFDS registers a class by name when it is defined) -------------
@functools.cache
def builder_classes() -> dict[str, type]:
  """Return the nasr TFDS builder classes by name, defining (and registering) them once."""
  import tensorflow_datasets as tfds  # noqa: PLC0415 - optional and slow to import

  class _NoChecksums:
    # TFDS looks for a checksums file beside the builder's code via `code_path`, which imports
    # the optional `importlib_resources`; nothing here is downloaded, so there is nothing to check.
    code_path = None

  class NasrDiv2k(_NoChecksums, tfds.core.GeneratorBasedBuilder):
    """DIV2K bicubic pairs from manually downloaded archives or extracted folders."""

    name = "nasr_div2k"
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name=f"bicubic_x{s}", description=f"DIV2K bicubic x{s}")
      for s in DIV2K_SCALES
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Download from https://data.vision.ee.ethz.ch/cvl/DIV2K/ into manual_dir: "
      "DIV2K_train_HR.zip, DIV2K_train_LR_bicubic_X{2,3,4}.zip, DIV2K_valid_HR.zip, "
      "DIV2K_valid_LR_bicubic_X{2,3,4}.zip (or the extracted folders DIV2K_train_HR/, "
      "DIV2K_train_LR_bicubic/X2/, ...)."
    )

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        description="DIV2K: 800 training and 100 validation 2K images with bicubic LR.",
        features=tfds.features.FeaturesDict(
          {
            "lr": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            "hr": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            "name": tfds.features.Text(),
          }
        ),
        supervised_keys=("lr", "hr"),
        homepage="https://data.vision.ee.ethz.ch/cvl/DIV2K/",
      )

    def _split_generators(self, dl_manager):
      scale = int(self.builder_config.name.rsplit("x", 1)[1])
      return {
        split: self._generate_examples(hr, lr, scale)
        for split, (hr, lr) in _div2k_splits(Path(dl_manager.manual_dir), scale).items()
      }

    def _generate_examples(self, hr_source, lr_source, scale):
      yield from _div2k_examples(hr_source, lr_source, scale)

  class NasrSrBenchmark(_NoChecksums, tfds.core.GeneratorBasedBuilder):
    """HR images of an SR benchmark (Set5, Set14, B100, Urban100, Manga109) from a folder."""

    name = "nasr_sr_benchmark"
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name=n, description=f"{n} HR images") for n in BENCHMARKS
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put the HR images of the benchmark in manual_dir (flat, in an HR/ sub-folder, or in a "
      "sub-folder named after the set, e.g. Set5/)."
    )

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        description="Super-resolution benchmark HR images; LR is made by bicubic_degrade.",
        features=tfds.features.FeaturesDict(
          {
            "hr": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            "name": tfds.features.Text(),
          }
        ),
      )

    def _split_generators(self, dl_manager):
      manual_dir = Path(dl_manager.manual_dir)
      if not manual_dir.is_dir():
        raise DataError(f"benchmark folder {manual_dir} does not exist")
      return {
        "test": self._generate_examples(_benchmark_folder(manual_dir, self.builder_config.name))
      }

    def _generate_examples(self, folder):
      for f in list_images(folder):
        yield f.name, {"hr": _png_bytes(read_image(f)), "name": f.name}

  return {"nasr_div2k": NasrDiv2k, "nasr_sr_benchmark": NasrSrBenchmark}


def make_builder(name: str, data_dir: str | os.PathLike | None = None):
  """Return the TFDS builder for "<builder>/<config>", e.g. "nasr_div2k/bicubic_x2"."""
  builder_name, _, config = str(name).partition("/")
  classes = builder_classes()
  if builder_name not in classes:
    raise ConfigError(f"unknown TFDS builder {builder_name!r}; available: {', '.join(BUILDERS)}")
  cls = classes[builder_name]
  configs = [c.name for c in cls.BUILDER_CONFIGS]
  if config not in configs:
    raise ConfigError(
      f"unknown config {config!r} of {builder_name}; available: {', '.join(configs)}"
    )
  kwargs = {"config": config, "file_format": "array_record"}
  if data_dir is not None:
    kwargs["data_dir"] = os.fspath(Path(data_dir).expanduser())
  return cls(**kwargs)


def _check_manual_dir(builder_name: str, config: str, manual_dir: Path) -> None:
  if builder_name == "nasr_sr_benchmark":
    if not manual_dir.is_dir():
      raise DataError(f"benchmark folder {manual_dir} does not exist")
    _benchmark_folder(manual_dir, config)
    return
  _div2k_splits(manual_dir, int(config.rsplit("x", 1)[1]))


def load_tfds(
  name: str,
  split: str,
  scale: int,
  data_dir: str | os.PathLike | None = None,
  manual_dir: str | os.PathLike | None = None,
  cache: DecodeCache | None = None,
) -> SRPairs:
  """Return the x`scale` pairs of TFDS dataset `name` ("<builder>/<config>"), preparing it once.

  Args:
    name: "nasr_div2k/bicubic_x{2,3,4}" or "nasr_sr_benchmark/{set5,set14,b100,urban100,manga109}".
    split: "train"/"validation" for DIV2K; the benchmark builder has only "test" (asking it for
      "validation" or "val" also reads "test").
    scale: 2, 3 or 4; must match the DIV2K config.
    data_dir: where TFDS keeps prepared data (TFDS's default when None).
    manual_dir: where the archives or image folders are.
    cache: decode each example once into this cache, one at a time, and read the images back
      memory-mapped (keyed by builder, config, version, split and the prepared files).
  """
  import tensorflow_datasets as tfds  # noqa: PLC0415 - optional and slow to import

  scale = check_scale(scale)
  builder_name = str(name).partition("/")[0]
  if builder_name not in BUILDERS:
    raise ConfigError(f"unknown TFDS builder {builder_name!r}; available: {', '.join(BUILDERS)}")
  builder = make_builder(name, data_dir)
  if builder_name == "nasr_div2k":
    config_scale = int(builder.builder_config.name.rsplit("x", 1)[1])
    if config_scale != scale:
      raise ConfigError(f"TFDS dataset {name} is x{config_scale} but scale is {scale}")
  elif split in ("validation", "val"):
    split = "test"
  if not builder.is_prepared():
    if manual_dir is None:
      raise DataError(
        f"TFDS dataset {name} is not prepared in {builder.data_dir} and no "
        "manual_dir (data.manual_dir) says where its files are"
      )
    # Check the files first: TFDS's own error for a missing manual_dir is an AssertionError.
    _check_manual_dir(builder_name, builder.builder_config.name, Path(manual_dir).expanduser())
    download_config = tfds.download.DownloadConfig(
      manual_dir=os.fspath(Path(manual_dir).expanduser())
    )
    builder.download_and_prepare(download_config=download_config)
  if split not in builder.info.splits:
    raise DataError(
      f"TFDS dataset {name} has no split {split!r}; prepared: {', '.join(builder.info.splits)}"
    )
  source = builder.as_data_source(split)
  if cache is not None:
    return _cached_tfds(builder, source, split, scale, cache)
  names, lrs, hrs = [], [], []
  for i in range(len(source)):
    item_name, lr, hr = _example_arrays(source, i, builder.name, scale)
    names.append(item_name)
    lrs.append(lr)
    hrs.append(hr)
  order = sorted(range(len(names)), key=names.__getitem__)  # TFDS stores examples shuffled
  return SRPairs(
    tuple(names[i] for i in order),
    tuple(lrs[i] for i in order),
    tuple(hrs[i] for i in order),
    scale,
  )


def _example_arrays(
  source, i: int, builder_name: str, scale: int
) -> tuple[str, np.ndarray, np.ndarray]:
  """Return (name, LR, HR) of example `i` of a prepared nasr builder's data source."""
  example = source[i]
  item_name = example["name"]
  if isinstance(item_name, bytes):
    item_name = item_name.decode("utf-8")
  hr = np.asarray(example["hr"], dtype=np.uint8)
  if builder_name == "nasr_div2k":
    lr = np.asarray(example["lr"], dtype=np.uint8)
  else:
    hr = np.ascontiguousarray(modcrop(hr, scale))
    lr = bicubic_degrade(hr, scale)
  return str(item_name), lr, hr


def _cached_tfds(builder, source, split: str, scale: int, cache: DecodeCache) -> SRPairs:
  """Return the pairs of a prepared split through `cache`, decoding one example at a time."""
  data_dir = Path(os.fspath(builder.data_dir))
  # The prepared files say what the examples hold: re-preparing the data changes the key.
  files = [file_identity(p) for p in sorted(data_dir.iterdir()) if p.is_file()]
  dataset = {
    "kind": "tfds",
    "builder": builder.name,
    "config": builder.builder_config.name,
    "version": str(builder.version),
    "split": split,
    "scale": scale,
    "degradation": "stored LR" if builder.name == "nasr_div2k" else HR_DEGRADATION,
    "files": files,
  }
  entries = [
    cache.fetch_named(
      {**dataset, "index": i},
      functools.partial(_example_arrays, source, i, builder.name, scale),
    )
    for i in range(len(source))
  ]
  entries.sort(key=lambda e: e.name)  # TFDS stores examples shuffled
  names, lr, hr = cache.sequences(entries)
  return SRPairs(names, lr, hr, scale)
