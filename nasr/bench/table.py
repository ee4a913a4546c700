"""The benchmark table: every member's stand-alone results, and lookups by member id.

The table is one JSON file (`srbench_x2.json` ships in this package):

  {"format": 1, "nasr_version": ..., "protocol": {...}, "provenance": {...},
   "members": [{"id": 37, "ops": [...], "params": ..., "macs": ..., "proxies": {...},
                "runs": [{"seed": 0, "curve": [[step, psnr, ssim], ...],
                          "tests": {"Set5": [psnr, ssim], ...}, "train_s": ...}, ...]}, ...]}

`curve` is the validation Y-PSNR/SSIM at the protocol's steps; its last point is the member's
result. `Table` turns it into arrays indexed by member id for the strategies' lookups.
"""

import datetime
import json
import platform
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import jax
import ml_collections
import numpy as np

from nasr import spaces
from nasr.core.errors import ConfigError
from nasr.spaces import bench as bench_space

FORMAT = 1
SHIPPED = "srbench_x2.json"


def protocol(config: ml_collections.ConfigDict) -> dict:
  """Return what defines a run's result: space, scale, steps, curve, data, optimiser, evaluation.

  The members and the number of seeds are not part of it: a table grows by either.
  """
  return {
    "space": dict(config.space),
    "scale": int(config.scale),
    "steps": int(config.steps),
    "curve": [int(s) for s in config.curve],
    "data": {k: config.data[k] for k in ("train", "val", "patch_size", "batch_size", "augment")},
    "optim": dict(config.optim),
    "loss": "l1",
    "eval": {
      "tile": int(config.eval_tile),
      "stride": int(config.eval_tile) - int(config.eval_tile) // 4,
      "metric": "Y-PSNR/SSIM, shave = scale, 8-bit output",
    },
    "shifted": bool(config.shifted),
  }


def assemble(runs_by_member: dict[int, list[dict]], config: ml_collections.ConfigDict) -> dict:
  """Return the table of the finished runs {member id: [run record, ...]} (members without one
  are left out)."""
  rows = []
  for m in sorted(runs_by_member):
    runs = runs_by_member[m]
    if not runs:
      continue
    names = sorted(runs[0]["proxies"])
    rows.append(
      {
        "id": m,
        "ops": runs[0]["ops"],
        "params": runs[0]["params"],
        "macs": runs[0].get("macs"),
        "proxies": {k: float(np.mean([r["proxies"][k] for r in runs])) for k in names},
        "runs": [
          {k: r[k] for k in ("seed", "curve", "tests", "train_s", "diverged_at") if k in r}
          for r in runs
        ],
      }
    )
  tests = sorted({t for row in rows for r in row["runs"] for t in r["tests"]})
  return {
    "format": FORMAT,
    "nasr_version": _version(),
    "created": datetime.date.today().isoformat(),
    "protocol": protocol(config),
    "provenance": {
      "train": f"{config.data.train} (train split)",
      "val": f"{config.data.val} (val split)",
      "tests": tests,
      "jax": jax.__version__,
      "backend": jax.default_backend(),
      "machine": platform.machine(),
      "seeds": int(config.seeds),
    },
    "members": rows,
  }


def _version() -> str:
  from nasr import __version__  # noqa: PLC0415 - nasr/__init__ imports the rooms

  return __version__


def load(path: str | Path | None = None) -> dict | None:
  """Return the table at `path`, or the shipped one (None when the package ships none yet)."""
  if path:
    p = Path(path)
    if not p.is_file():
      raise ConfigError(f"{p}: no benchmark table there (build one with `nasr bench build`)")
    text = p.read_text()
  else:
    res = resources.files("nasr.bench") / "data" / SHIPPED
    if not res.is_file():
      return None
    text = res.read_text()
  try:
    table = json.loads(text)
  except json.JSONDecodeError as e:
    raise ConfigError(f"{path or SHIPPED}: not a benchmark table ({e})") from None
  if not isinstance(table, dict) or table.get("format") != FORMAT:
    raise ConfigError(f"{path or SHIPPED}: not a format-{FORMAT} benchmark table")
  return table


class Table:
  """A finished table as arrays indexed by member id (members missing from it are NaN)."""

  def __init__(self, table: dict, size: int = 216):
    self.raw = table
    self.size = size
    rows = {int(r["id"]): r for r in table["members"]}
    self.ids = np.array(sorted(rows), np.int64)
    self.steps = list(table["protocol"]["curve"])
    seeds = max((len(r["runs"]) for r in rows.values()), default=0)
    # [member, seed, curve point]: validation PSNR
    self.curves = np.full((size, seeds, len(self.steps)), np.nan)
    self.tests = {t: np.full((size, seeds), np.nan) for t in table["provenance"]["tests"]}
    self.params = np.full(size, np.nan)
    self.macs = np.full(size, np.nan)
    self.proxies: dict[str, np.ndarray] = {}
    self.ops: dict[int, list[str]] = {}
    for m, r in rows.items():
      self.ops[m] = r["ops"]
      self.params[m] = r["params"]
      self.macs[m] = np.nan if r.get("macs") is None else r["macs"]
      for name, v in r["proxies"].items():
        self.proxies.setdefault(name, np.full(size, np.nan))[m] = v
      for s, run in enumerate(r["runs"]):
        for k, point in enumerate(run["curve"]):
          self.curves[m, s, k] = point[1]
        for t, (p, _) in run["tests"].items():
          self.tests[t][m, s] = p

  def complete(self) -> bool:
    """Return whether every member of the space has every seed's final result."""
    return len(self.ids) == self.size and not np.isnan(self.curves[:, :, -1]).any()

  def psnr(self, metric: str = "val") -> np.ndarray:
    """Return each member's seed-mean final PSNR [size] on `metric` ("val" or a test name)."""
    if metric != "val" and metric not in self.tests:
      raise ConfigError(f"the table has no metric {metric!r}; it has val, {', '.join(self.tests)}")
    return row_mean(self.per_seed(metric))

  def per_seed(self, metric: str = "val") -> np.ndarray:
    """Return the final PSNR of every member and seed [size, seeds] on `metric`."""
    return self.curves[:, :, -1] if metric == "val" else self.tests[metric]


def row_mean(a: np.ndarray) -> np.ndarray:
  """Return the mean of each row over its non-NaN entries (NaN for a row without any)."""
  n = (~np.isnan(a)).sum(axis=1)
  return np.where(n > 0, np.nansum(a, axis=1) / np.maximum(n, 1), np.nan)


def spreads(per_seed: np.ndarray) -> dict:
  """Return member-to-member and mean seed-to-seed standard deviations of a [members, seeds] array."""
  ok = ~np.isnan(per_seed).any(axis=1)
  x = per_seed[ok]
  if len(x) < 2 or x.shape[1] < 2:
    return {"members": int(len(x))}
  between = float(np.std(x.mean(axis=1), ddof=1))
  within = float(np.mean(np.std(x, axis=1, ddof=1)))
  return {
    "members": int(len(x)),
    "member_std": round(between, 4),
    "seed_std": round(within, 4),
    "ratio": round(between / within, 2) if within > 0 else None,
  }


def summary(table: dict) -> dict:
  """Return the table's headline: members, seeds, spreads per metric, best and worst member."""
  t = Table(table)
  out = {"members": int(len(t.ids)), "complete": t.complete()}
  for metric in ("val", *t.tests):
    out[f"spread_{metric}"] = spreads(t.per_seed(metric))
  if len(t.ids):
    psnr = t.psnr("val")
    best, worst = int(np.nanargmax(psnr)), int(np.nanargmin(psnr))
    out["best"] = {"id": best, "ops": t.ops[best], "val_psnr": round(float(psnr[best]), 4)}
    out["worst"] = {"id": worst, "ops": t.ops[worst], "val_psnr": round(float(psnr[worst]), 4)}
  return out


def compare(table: dict, shipped: dict | None) -> dict:
  """Return how the runs of `table` differ from the same (member, seed) runs of `shipped`."""
  if shipped is None:
    return {"check": "no shipped table to compare with"}
  if shipped["protocol"] != table["protocol"]:
    return {"check": "the shipped table has another protocol: not compared"}
  a, b = Table(table), Table(shipped)
  x, y = a.per_seed("val"), b.per_seed("val")
  n = min(x.shape[1], y.shape[1])
  diff = np.abs(x[:, :n] - y[:, :n])
  ok = ~np.isnan(diff)
  if not ok.any():
    return {"check": "no run in common with the shipped table"}
  return {
    "check": "compared with the shipped table",
    "check_runs": int(ok.sum()),
    "check_max_abs_db": round(float(diff[ok].max()), 4),
    "check_mean_abs_db": round(float(diff[ok].mean()), 4),
  }


def standalone_lookup(path: str | Path | None = None) -> Callable | None:
  """Return lookup(space, tokens [N, L]) -> the table's stand-alone val PSNRs [N] (NaN where a
  member is missing; None for another space), or None when there is no table (`nasr diagnose`
  then trains its architectures itself)."""
  raw = load(path or None)
  if raw is None:
    return None
  t = Table(raw)
  truth = t.psnr("val")
  p = dict(raw["protocol"]["space"])
  table_space = spaces.get(p.pop("name"), **p)

  def lookup(space, tokens: np.ndarray) -> np.ndarray | None:
    if space != table_space:
      return None
    return np.asarray([truth[bench_space.arch_id(row)] for row in np.asarray(tokens)], np.float64)

  return lookup
