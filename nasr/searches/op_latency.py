"""The per-host latency table of a space's ops: each cost piece timed once, a network's latency
predicted as the sum of its pieces (the one-shot reward's `latency` term).

Hardware-aware NAS (FBNet, ProxylessNAS, HW-NAS-Bench) measures each op once on the target and
adds the ops up; so does this module, on the pieces (`CostPieces`) that `reward.child_cost` sums
for parameters and multiply-adds:

  table = PieceLatency()              # per-host cache: $NASR_LATENCY_CACHE or ~/.cache/nasr/latency.json
  predict_ms(space, arch, scale=2, side=128, table=table)

A piece is timed as a jitted forward pass of its module at its input shape, after warm-up calls,
and kept per host (backend, device kind, CPU model, JAX version) in a JSON cache, so a search
measures each op once per machine. The prediction leaves out what no piece holds (the adds of a
cell's sum, fusion across ops); `benchmarks/latency.py` reports its error against measurement.
"""

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import jax

from nasr import writers
from nasr.core.errors import ConfigError
from nasr.estimation import latency
from nasr.spaces.base import CostPieces

CACHE_ENV = "NASR_LATENCY_CACHE"  # a file path; default ~/.cache/nasr/latency.json


def default_cache() -> Path:
  """Return the latency cache file: $NASR_LATENCY_CACHE or ~/.cache/nasr/latency.json."""
  env = os.environ.get(CACHE_ENV)
  return Path(env) if env else Path.home() / ".cache" / "nasr" / "latency.json"


class PieceLatency:
  """The per-host latency of cost pieces, measured once each and kept in a JSON cache.

  table(key, module, shape) -> ms: the cached median for this host, or a new measurement (written
  back at once, so an interrupted search keeps what it measured). `measure` replaces the timing
  (tests, or a table measured elsewhere).
  """

  def __init__(
    self,
    path: str | os.PathLike | None = None,
    measure: Callable[[object, Sequence[int]], float] = latency.module_median_ms,
    host: str | None = None,
  ):
    self.path = Path(path) if path else default_cache()
    self.host = host or latency.host_key()
    self._measure = measure
    self.measured = 0  # pieces timed by this object (the rest came from the cache)
    self._all = self._read()
    self._mine = self._all.setdefault(self.host, {})

  def _read(self) -> dict:
    if not self.path.exists():
      return {}
    try:
      data = json.loads(self.path.read_text())
    except (OSError, json.JSONDecodeError) as e:
      raise ConfigError(
        f"{self.path}: not a latency cache ({e}); delete it to measure again"
      ) from None
    if not isinstance(data, dict):
      raise ConfigError(f"{self.path}: not a latency cache; delete it to measure again")
    return data

  @staticmethod
  def key(key, shape: Sequence[int]) -> str:
    """Return the cache key of a piece: its cost-piece key and input shape."""
    return f"{key!r} @ {tuple(int(s) for s in shape)}"

  def __call__(self, key, module, shape: Sequence[int]) -> float:
    """Return the piece's median latency in ms on this host (measured at most once)."""
    k = self.key(key, shape)
    if k not in self._mine:
      self._mine[k] = float(self._measure(module, shape))
      self.measured += 1
      if jax.process_index() == 0:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writers.write_json(self.path, self._all)
    return self._mine[k]

  def __len__(self) -> int:
    return len(self._mine)


def predict_ms(space, arch, scale: int, side: int, table: PieceLatency) -> float:
  """Return the predicted latency (ms) of build(arch, scale) on a side x side LR image: the sum
  of its cost pieces' measured latencies (a space without pieces: the whole network, measured)."""
  if not isinstance(space, CostPieces):
    return table(("network", repr(arch), scale), space.build(arch, scale), (1, side, side, 3))
  return float(
    sum(
      table((side, scale, *key), module, shape)
      for key, module, shape in space.cost_pieces(arch, scale, side)
    )
  )
