"""The on-disk decode cache: same arrays and batches as memory, re-decodes what changed, bounded maps."""

import gc
import json
import logging
import os
import sys
from pathlib import Path

import chex
import jax
import ml_collections
import numpy as np
import pytest

from nasr import data, experiment
from nasr.configs import common
from nasr.data.cache import LAYOUT_DIR, CachedImages, DecodeCache, MapPool
from nasr.data.datasets import image_shapes

SCALE = 2


def _smooth(rng, h, w):
  """Return a smooth uint8 image (what photos look like to bicubic), quick to make."""
  small = rng.uniform(0, 255, (h // 8 + 2, w // 8 + 2, 3))
  big = np.repeat(np.repeat(small, 8, 0), 8, 1)[:h, :w]
  return np.clip(big + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)


def _hr_folder(root: Path, n: int = 5, seed: int = 0) -> Path:
  rng = np.random.default_rng(seed)
  for i in range(n):
    data.write_png(root / f"im{i:02d}.png", _smooth(rng, 40 + 3 * i, 45 - 2 * i))
  return root


def _assert_same_pairs(a, b):
  assert a.names == b.names and a.scale == b.scale and len(a) == len(b)
  for x, y in zip([*a.lr, *a.hr], [*b.lr, *b.hr], strict=True):
    assert x.dtype == y.dtype == np.uint8 and x.shape == y.shape
    np.testing.assert_array_equal(x, y)


def _data_config(train, cache_dir="", val="embedded"):
  d = common.data_config("tiny")
  d.train, d.val, d.cache_dir = str(train), val, str(cache_dir)
  return d


def test_cached_images_and_batches_equal_the_in_memory_ones(tmp_path):
  folder = _hr_folder(tmp_path / "hr")
  memory = data.load_hr_folder(folder, SCALE)
  cache = DecodeCache(tmp_path / "cache", MapPool(3))
  cached = data.load_hr_folder(folder, SCALE, cache=cache)
  assert isinstance(cached.lr, CachedImages) and (cache.decoded, cache.reused) == (5, 0)
  _assert_same_pairs(memory, cached)
  assert not cached.hr[0].flags.writeable  # read back memory-mapped, read-only
  assert image_shapes(cached.lr) == image_shapes(memory.lr)  # known without opening a file
  # PatchSampler.batch depends only on (seed, step): bit-identical from either source.
  a, b = data.PatchSampler(memory, 8, 4, seed=7), data.PatchSampler(cached, 8, 4, seed=7)
  for step in (0, 1, 5, 1000):
    ba, bb = a.batch(step), b.batch(step)
    for k in ("lr", "hr"):
      np.testing.assert_array_equal(ba[k], bb[k])
  # Train/validation carving and crops agree too.
  for x, y in zip(memory.split(2, seed=1), cached.split(2, seed=1), strict=True):
    _assert_same_pairs(x, y)
  for k in ("lr", "hr"):
    np.testing.assert_array_equal(
      data.center_crops(memory, 10)[k], data.center_crops(cached, 10)[k]
    )


def test_paired_folders_through_load_dataset_log_decoded_and_reused(tmp_path, caplog):
  rng = np.random.default_rng(1)
  for name in ("canon_001", "canon_002", "canon_003"):
    hr = _smooth(rng, 33, 30)  # odd HR: the pair loader crops it to 2 x the LR
    data.write_png(tmp_path / "d" / "HR" / f"{name}.png", hr)
    data.write_png(tmp_path / "d" / "LR" / f"{name}_LR2.png", data.bicubic_degrade(hr[:32], SCALE))
  memory = data.load_dataset(str(tmp_path / "d"), SCALE, "train", _data_config(tmp_path / "d"))
  d = _data_config(tmp_path / "d", tmp_path / "cache")
  with caplog.at_level(logging.INFO):
    first = data.load_dataset(str(tmp_path / "d"), SCALE, "train", d)
    again = data.load_dataset(str(tmp_path / "d"), SCALE, "train", d)
  lines = [r.getMessage() for r in caplog.records if "data cache" in r.getMessage()]
  assert len(lines) == 2, lines
  assert "3 image(s) decoded, 0 reused" in lines[0] and "0 image(s) decoded, 3 reused" in lines[1]
  _assert_same_pairs(memory, first)
  _assert_same_pairs(memory, again)
  # Every search and the trainer read through load_train_val: it passes the key on.
  train, val = data.load_train_val(d, SCALE, seed=0)
  assert isinstance(train.lr, CachedImages) and not isinstance(val.lr, CachedImages)  # embedded


def test_a_changed_file_is_decoded_again_and_the_others_are_reused(tmp_path):
  folder = _hr_folder(tmp_path / "hr")
  data.load_hr_folder(folder, SCALE, cache=DecodeCache(tmp_path / "cache"))
  changed = folder / "im02.png"
  stat = changed.stat()
  new = _smooth(np.random.default_rng(9), 30, 30)
  data.write_png(changed, new)
  os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
  cache = DecodeCache(tmp_path / "cache")
  pairs = data.load_hr_folder(folder, SCALE, cache=cache)
  assert (cache.decoded, cache.reused) == (1, 4)
  np.testing.assert_array_equal(pairs.hr[2], new)
  _assert_same_pairs(data.load_hr_folder(folder, SCALE), pairs)
  # The same content with only a new mtime is decoded again too (the key cannot know better).
  os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 9_000_000_000))
  cache = DecodeCache(tmp_path / "cache")
  data.load_hr_folder(folder, SCALE, cache=cache)
  assert (cache.decoded, cache.reused) == (1, 4)
  # Another scale is another entry.
  cache = DecodeCache(tmp_path / "cache")
  data.load_hr_folder(folder, 3, cache=cache)
  assert (cache.decoded, cache.reused) == (5, 0)


def _entry_files(cache_dir: Path, suffix: str) -> list[Path]:
  return sorted((cache_dir / LAYOUT_DIR).glob(f"*/*{suffix}"))


def test_partial_or_damaged_entries_are_decoded_again(tmp_path, monkeypatch):
  folder = _hr_folder(tmp_path / "hr")
  memory = data.load_hr_folder(folder, SCALE)
  # A build killed half-way through writing the third image's HR array (its LR array is already
  # in place): the two images before it are complete, the third has no manifest and no stray
  # temporary file, and the rerun decodes it again.
  real_save, saves = np.save, []

  def killed_on_the_sixth_array(f, arr, **kw):
    saves.append(arr.shape)
    if len(saves) == 6:
      f.write(b"\x93NUMPY half an array")
      raise KeyboardInterrupt
    return real_save(f, arr, **kw)

  monkeypatch.setattr(np, "save", killed_on_the_sixth_array)
  with pytest.raises(KeyboardInterrupt):
    data.load_hr_folder(folder, SCALE, cache=DecodeCache(tmp_path / "cache"))
  monkeypatch.undo()
  assert len(_entry_files(tmp_path / "cache", ".lr.npy")) == 3
  assert len(_entry_files(tmp_path / "cache", ".hr.npy")) == 2
  assert len(_entry_files(tmp_path / "cache", ".json")) == 2
  assert not list((tmp_path / "cache").rglob("*.tmp-*"))
  cache = DecodeCache(tmp_path / "cache")
  _assert_same_pairs(memory, data.load_hr_folder(folder, SCALE, cache=cache))
  assert (cache.decoded, cache.reused) == (3, 2)
  # Damage: a truncated array, a manifest cut short, a lost manifest (with a stray temporary
  # file), an array of the wrong shape under the right size.
  manifests = _entry_files(tmp_path / "cache", ".json")
  with open(manifests[0].with_name(manifests[0].stem + ".hr.npy"), "r+b") as f:
    f.truncate(100)
  manifests[1].write_text(manifests[1].read_text()[:20])
  manifests[2].unlink()
  (manifests[2].parent / f".{manifests[2].name}.tmp-1-abc").write_text("{")
  lr3 = manifests[3].with_name(manifests[3].stem + ".lr.npy")
  shape = tuple(json.loads(manifests[3].read_text())["lr"]["shape"])
  np.save(lr3, np.zeros((shape[0] * shape[1], 1, 3), np.uint8))  # same bytes, another shape
  cache = DecodeCache(tmp_path / "cache")
  pairs = data.load_hr_folder(folder, SCALE, cache=cache)
  assert (cache.decoded, cache.reused) == (4, 1)
  assert "3 damaged entries decoded again" in cache.summary("train")  # the lost one was absent
  _assert_same_pairs(memory, pairs)


def _maps_of(folder: Path) -> int:
  """Return how many memory maps of files under `folder` this process has (Linux)."""
  text = Path("/proc/self/maps").read_text()
  return sum(str(folder) in line for line in text.splitlines())


def test_the_map_pool_unmaps_the_least_recently_used_files(tmp_path):
  folder = _hr_folder(tmp_path / "hr", n=8)
  pool = MapPool(max_open=4)
  pairs = data.load_hr_folder(folder, SCALE, cache=DecodeCache(tmp_path / "cache", pool))
  sampler = data.PatchSampler(pairs, 8, 4, seed=0)
  for step in range(30):
    sampler.batch(step)
    assert len(pool._maps) <= 4  # held open now
  assert pool.opened > 16  # every image was visited, more than once
  if sys.platform.startswith("linux"):
    gc.collect()
    assert 1 <= _maps_of(tmp_path / "cache") <= 4  # really unmapped, not merely forgotten
    pool.clear()
    gc.collect()
    assert _maps_of(tmp_path / "cache") == 0


def test_subsets_splits_and_shapes_open_no_file(tmp_path):
  folder = _hr_folder(tmp_path / "hr", n=6)
  pool = MapPool(max_open=2)
  pairs = data.load_hr_folder(folder, SCALE, cache=DecodeCache(tmp_path / "cache", pool))
  before = pool.opened
  train, val = pairs.split(2, seed=0)
  sub = train.subset([3, 0])
  assert isinstance(sub.hr, CachedImages) and len(sub) == 2 and len(sub.lr[:1]) == 1
  assert image_shapes(sub.lr) == tuple(pairs.lr.shapes[pairs.names.index(n)] for n in sub.names)
  assert pool.opened == before  # nothing read yet
  np.testing.assert_array_equal(sub.hr[1], pairs.hr[pairs.names.index(sub.names[1])])
  assert [im.shape for im in sub.lr] == list(sub.lr.shapes)
  with pytest.raises(IndexError):
    sub.lr[2]


def test_tfds_examples_stream_into_the_cache(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  folder = _hr_folder(tmp_path / "Set5" / "HR", n=3)
  kw = dict(data_dir=tmp_path / "tfds", manual_dir=tmp_path)
  memory = data.load_tfds("nasr_sr_benchmark/set5", "test", SCALE, **kw)
  _assert_same_pairs(data.load_hr_folder(folder, SCALE), memory)
  cache = DecodeCache(tmp_path / "cache")
  cached = data.load_tfds("nasr_sr_benchmark/set5", "test", SCALE, cache=cache, **kw)
  assert (cache.decoded, cache.reused) == (3, 0) and isinstance(cached.lr, CachedImages)
  _assert_same_pairs(memory, cached)
  cache = DecodeCache(tmp_path / "cache")
  again = data.load_tfds("nasr_sr_benchmark/set5", "test", SCALE, cache=cache, **kw)
  assert (cache.decoded, cache.reused) == (0, 3)
  _assert_same_pairs(memory, again)


def test_cache_dir_is_a_documented_data_key():
  from launch import cli

  assert common.data_config("default").cache_dir == ""
  helps = cli.key_help([Path(common.__file__)])
  assert "memory-mapped" in helps["cache_dir"]  # what `nasr config` shows beside the key


def test_training_from_the_cache_gives_bit_identical_parameters(tmp_path):
  folder = _hr_folder(tmp_path / "hr", n=4)
  params = []
  for cache_dir in ("", tmp_path / "cache"):
    config = experiment.load_config("train", "tiny", lock=False)
    config.data = ml_collections.ConfigDict(_data_config(folder, cache_dir).to_dict())
    config.steps, config.eval_every, config.checkpoint_every, config.log_every = 4, 4, 4, 4
    workdir = tmp_path / ("cached" if cache_dir else "memory")
    experiment.train(config, workdir)
    params.append(jax.device_get(experiment.load_trained(workdir)[1]))
  chex.assert_trees_all_close(params[0], params[1], atol=0, rtol=0)
  assert _entry_files(tmp_path / "cache", ".json")  # the second run really read the cache
