"""On-disk decode cache: each training image decoded once to .npy, read back memory-mapped.

Decoding DIV2K (PNG, modcrop, MATLAB bicubic) takes minutes and holding it decoded takes
gigabytes. With a cache folder (`data.cache_dir`), every LR/HR pair is decoded once into

  <cache_dir>/nasr-decode-v1/<key[:2]>/<key>.lr.npy  the LR image, uint8 HxWx3
  <cache_dir>/nasr-decode-v1/<key[:2]>/<key>.hr.npy  the HR image, uint8 (sH)x(sW)x3
  <cache_dir>/nasr-decode-v1/<key[:2]>/<key>.json    the manifest: key, name, shapes, file sizes

where `key` hashes what the arrays depend on (the source files' paths, sizes and mtimes, the
scale, the degradation; see `entry_key`). The manifest is written last and every file goes to a
temporary name first and is moved into place with os.replace, so an interrupted build leaves no
manifest and the entry is decoded again; an entry whose files do not match its manifest is too.

Reading it back, images are a lazy `CachedImages` sequence: `seq[i]` memory-maps the file. The
pages of a map that were read count in the process's resident memory until the map is closed, so
every sequence shares a `MapPool` that keeps at most `max_open` maps and unmaps the least recently
used: training that samples patches from every image for many steps stays within about
`max_open` image files of resident memory, whatever the dataset's size.

  cache = DecodeCache("/data/cache")
  entry = cache.fetch(key, "0001.png", lambda: (lr, hr))  # decodes only when missing
  names, lr, hr = cache.sequences([entry, ...])
"""

from __future__ import annotations

import collections
import hashlib
import json
import operator
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from nasr.core.errors import DataError

CACHE_VERSION = 1  # bump when the layout or the meaning of an entry changes
LAYOUT_DIR = f"nasr-decode-v{CACHE_VERSION}"
# 32 maps = 16 LR/HR pairs: about 170 MB of DIV2K x2 even when every page of each was read.
MAX_OPEN_MAPS = 32


class MapPool:
  """At most `max_open` memory-mapped .npy files held open; the least recently used is unmapped.

  Shared by every `CachedImages` made with it (LR and HR, subsets, train and validation), so the
  bound holds for the whole process. Thread-safe: training prefetches batches on a thread while
  validation reads images on the main one.
  """

  def __init__(self, max_open: int = MAX_OPEN_MAPS):
    if int(max_open) < 1:
      raise ValueError(f"max_open must be at least 1, got {max_open}")
    self.max_open = int(max_open)
    self._maps: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
    self._lock = threading.Lock()
    self.opened = 0  # maps made so far (evicted ones included)

  def get(self, path: str, shape: tuple[int, ...]) -> np.ndarray:
    """Return the read-only uint8 array in .npy file `path`, memory-mapped, checked to be `shape`."""
    with self._lock:
      arr = self._maps.get(path)
      if arr is not None:
        self._maps.move_to_end(path)
        return arr
      arr = _open_map(path, shape)
      self._maps[path] = arr
      self.opened += 1
      while len(self._maps) > self.max_open:
        # Dropping the pool's reference unmaps the file once no caller holds a view of it.
        self._maps.popitem(last=False)
      return arr

  def discard(self, path: str) -> None:
    """Drop the map of `path`, if held: its file was replaced, and the map shows the old one."""
    with self._lock:
      self._maps.pop(str(path), None)

  def clear(self) -> None:
    """Drop every map the pool holds (each is unmapped once no caller holds a view of it)."""
    with self._lock:
      self._maps.clear()


def _open_map(path: str, shape: tuple[int, ...]) -> np.ndarray:
  try:
    mapped = np.load(path, mmap_mode="r", allow_pickle=False)
  except Exception as err:  # noqa: BLE001 - numpy raises many types for damaged files
    raise DataError(
      f"cache file {path} cannot be read ({err}); delete it and its .json to decode it again"
    ) from None
  if mapped.dtype != np.uint8 or mapped.shape != tuple(shape):
    raise DataError(
      f"cache file {path} holds {mapped.dtype} {mapped.shape}, its manifest says uint8 "
      f"{tuple(shape)}; delete it and its .json to decode it again"
    )
  return np.asarray(mapped)  # a plain ndarray view: keeps the map alive, hides the subclass


_SHARED_POOL = MapPool()


def shared_pool() -> MapPool:
  """Return the process-wide map pool every `DecodeCache` uses unless given its own."""
  return _SHARED_POOL


class CachedImages(Sequence):
  """A lazy, read-only sequence of uint8 images stored as .npy files, memory-mapped on access.

  `seq[i]` returns the image (through the shared `MapPool`), `seq[a:b]` and `seq.take(indices)`
  return sequences over the same files without opening any; `shapes` are known without opening.
  """

  def __init__(self, paths: Sequence[str], shapes: Sequence[tuple[int, ...]], pool: MapPool):
    if len(paths) != len(shapes):
      raise ValueError(f"CachedImages needs one shape per path, got {len(paths)} and {len(shapes)}")
    self.paths = tuple(str(p) for p in paths)
    self.shapes = tuple(tuple(int(n) for n in s) for s in shapes)
    self.pool = pool

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.take(range(len(self))[index])
    i = operator.index(index)  # numpy integers too (PatchSampler draws them)
    if not -len(self) <= i < len(self):
      raise IndexError(f"image index {i} out of range for {len(self)} cached images")
    return self.pool.get(self.paths[i], self.shapes[i])

  def __iter__(self) -> Iterator[np.ndarray]:
    # One image at a time: the previous one is released as the loop moves on.
    for path, shape in zip(self.paths, self.shapes, strict=True):
      yield self.pool.get(path, shape)

  def take(self, indices: Iterable[int]) -> CachedImages:
    """Return the images at `indices`, in that order, as a lazy sequence (no file is opened)."""
    idx = [int(i) for i in indices]
    return CachedImages([self.paths[i] for i in idx], [self.shapes[i] for i in idx], self.pool)

  def __repr__(self) -> str:
    return f"CachedImages({len(self)} images, pool of {self.pool.max_open} maps)"


class Entry(NamedTuple):
  """One cached LR/HR pair: its name, its two .npy files and their shapes."""

  name: str
  lr_path: str
  hr_path: str
  lr_shape: tuple[int, ...]
  hr_shape: tuple[int, ...]


def file_identity(path: str | os.PathLike) -> dict:
  """Return {"path", "size", "mtime_ns"} of a source file: a changed file gets a new cache key."""
  path = Path(path).expanduser().resolve()
  try:
    st = path.stat()
  except OSError as err:
    raise DataError(f"cannot read {path}: {err.strerror or err}") from None
  return {"path": str(path), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def entry_key(key: dict) -> str:
  """Return the hex digest naming the cache entry of `key` (a JSON-able dict)."""
  text = json.dumps({"cache_version": CACHE_VERSION, **key}, sort_keys=True)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


class DecodeCache:
  """A folder of decoded LR/HR pairs (see the module docstring); counts decoded vs reused entries.

  Args:
    root: the cache folder (`data.cache_dir`); created when missing.
    pool: the map pool its sequences share (the process-wide one when None).
  """

  def __init__(self, root: str | os.PathLike, pool: MapPool | None = None):
    self.root = Path(root).expanduser()
    self.dir = self.root / LAYOUT_DIR
    try:
      self.dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
      raise DataError(
        f"cannot use the cache folder {self.root} (data.cache_dir): {err.strerror or err}"
      ) from None
    self.pool = pool if pool is not None else shared_pool()
    self.decoded = 0
    self.reused = 0
    self.rebuilt: list[str] = []  # names of entries found damaged and decoded again

  def paths(self, key: dict) -> tuple[Path, Path, Path]:
    """Return (LR .npy, HR .npy, manifest .json) of the entry of `key`."""
    digest = entry_key(key)
    folder = self.dir / digest[:2]
    return folder / f"{digest}.lr.npy", folder / f"{digest}.hr.npy", folder / f"{digest}.json"

  def fetch(
    self, key: dict, name: str, decode: Callable[[], tuple[np.ndarray, np.ndarray]]
  ) -> Entry:
    """Return the entry of `key`, calling `decode()` -> (lr, hr) and writing it when missing.

    The arrays `decode` returns are written and dropped: building a cache holds one pair at a time.
    `name` is stored in the manifest (a reused entry keeps the name it was written with).
    """
    return self.fetch_named(key, lambda: (name, *decode()))

  def fetch_named(
    self, key: dict, decode: Callable[[], tuple[str, np.ndarray, np.ndarray]]
  ) -> Entry:
    """Return the entry of `key` like `fetch`, for sources whose name comes with the pixels:
    `decode()` returns (name, lr, hr)."""
    entry, damage = self._check(key)
    if entry is not None:
      self.reused += 1
      return entry
    name, lr, hr = decode()
    if damage:
      self.rebuilt.append(f"{name} ({damage})")
    entry = self._write(key, str(name), lr, hr)
    self.decoded += 1
    return entry

  def sequences(
    self, entries: Sequence[Entry]
  ) -> tuple[tuple[str, ...], CachedImages, CachedImages]:
    """Return (names, lazy LR images, lazy HR images) of `entries`, sharing this cache's pool."""
    names = tuple(e.name for e in entries)
    lr = CachedImages([e.lr_path for e in entries], [e.lr_shape for e in entries], self.pool)
    hr = CachedImages([e.hr_path for e in entries], [e.hr_shape for e in entries], self.pool)
    return names, lr, hr

  def summary(self, what: str) -> str:
    """Return the one-line report of what `what` took from the cache: decoded vs reused."""
    line = (
      f"data cache {self.root}: {what}: {self.decoded} image(s) decoded, "
      f"{self.reused} reused from the cache"
    )
    if self.rebuilt:
      shown = ", ".join(self.rebuilt[:3]) + (", ..." if len(self.rebuilt) > 3 else "")
      line += f"; {len(self.rebuilt)} damaged entries decoded again: {shown}"
    return line

  # --- internals ------------------------------------------------------------------------------
  def _check(self, key: dict) -> tuple[Entry | None, str]:
    """Return (entry, "") when intact, (None, why) when damaged, (None, "") when absent."""
    lr_path, hr_path, manifest_path = self.paths(key)
    try:
      manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
      return None, ""
    except (OSError, ValueError):
      return None, "unreadable manifest"
    try:
      if manifest.get("key") != json.loads(json.dumps(key)):
        return None, "manifest of another key"
      shapes = {}
      for role, path in (("lr", lr_path), ("hr", hr_path)):
        want = manifest[role]
        if path.stat().st_size != int(want["bytes"]):
          return None, f"{role} file has the wrong size"
        shapes[role] = tuple(int(n) for n in want["shape"])
        # The header too: a file of the right size from another writer must not be trusted.
        header = np.load(path, mmap_mode="r", allow_pickle=False)
        if header.dtype != np.uint8 or header.shape != shapes[role]:
          return None, f"{role} file holds {header.dtype} {header.shape}"
        del header
      name = str(manifest["name"])
    except FileNotFoundError:
      return None, "a file is missing"
    except Exception as err:  # noqa: BLE001 - any damage means: decode again
      return None, f"{type(err).__name__}"
    return Entry(name, str(lr_path), str(hr_path), shapes["lr"], shapes["hr"]), ""

  def _write(self, key: dict, name: str, lr: np.ndarray, hr: np.ndarray) -> Entry:
    lr_path, hr_path, manifest_path = self.paths(key)
    lr_path.parent.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for role, path, arr in (("lr", lr_path, lr), ("hr", hr_path, hr)):
      arr = np.ascontiguousarray(arr)
      if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise DataError(
          f"image {name!r}: {role.upper()} must be uint8 HxWx3, got {arr.dtype} {arr.shape}"
        )
      _atomic_write(path, lambda f, a=arr: np.save(f, a, allow_pickle=False))
      sizes[role] = {"shape": list(arr.shape), "bytes": path.stat().st_size}
    for path in (lr_path, hr_path):
      self.pool.discard(str(path))  # a damaged entry rebuilt while this process maps it
    manifest = {"key": key, "name": name, "version": CACHE_VERSION, **sizes}
    text = json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8")
    _atomic_write(manifest_path, lambda f: f.write(text))  # last: it makes the entry valid
    return Entry(
      name, str(lr_path), str(hr_path), tuple(sizes["lr"]["shape"]), tuple(sizes["hr"]["shape"])
    )


def _atomic_write(path: Path, write: Callable) -> None:
  """Write `path` through a temporary file moved into place, so readers never see a partial file."""
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
  try:
    with open(tmp, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())  # the data is on disk before the name is
    os.replace(tmp, path)
  except OSError as err:
    tmp.unlink(missing_ok=True)
    raise DataError(f"cannot write the cache file {path}: {err.strerror or err}") from None
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
