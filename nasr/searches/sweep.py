"""A lambda sweep over the accuracy/cost trade-off of a reward: one search per lambda, one Pareto plot.

  python -m launch.search --config=configs/hnas.py --config.lambdas=0.2,0.6,0.9 --workdir=W

For each lambda the config's reward becomes R = lam * PSNR - (1 - lam) * Cost (every cost term of
`config.reward.terms` gets -(1 - lam), other terms such as entropy stay) and the search runs in
W/lambda_<lam>/. A killed sweep resumes: a finished lambda (its search_result.json exists) is read,
not searched again, and the one that was running resumes from its own checkpoint.

Then every derived candidate and each lambda's best architecture are costed as G multiply-adds of
one forward pass on a 480x480 LR image (every conv counted); an HNAS point also gets `table_ii`,
its cost in the units of HNAS's Table II (`reward.table_ii_mult_adds`).
W/pareto.json holds the points, all candidates and the non-dominated front (max PSNR, min GMACs);
W/pareto.png draws them. The PSNRs are those the search reports (shared weights, validation crops),
so they rank architectures within a sweep, not against retrained networks.
"""

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import logging

from nasr import plots, spaces, workdirs, writers
from nasr.core.errors import ConfigError
from nasr.estimation import cost
from nasr.searches.reward import COST_TERMS, table_ii_mult_adds
from nasr.spaces.hnas import HNAS

# The paper's three settings; any other lambda is labelled by its value.
PAPER_LABELS = {0.2: "HNAS-A", 0.6: "HNAS-B", 0.9: "HNAS-C"}


def parse_lambdas(value) -> list[float]:
  """Return the lambdas of a comma-separated string, each a float in (0, 1], in the given order."""
  pieces = [p.strip() for p in str(value).split(",") if p.strip()]
  if not pieces:
    raise ConfigError(f"config.lambdas={value!r} names no lambda: give e.g. 0.2,0.6,0.9")
  out = []
  for p in pieces:
    try:
      lam = float(p)
    except ValueError:
      lam = math.nan
    if not 0.0 < lam <= 1.0:  # NaN fails this too
      raise ConfigError(f"config.lambdas: {p!r} is not a number in (0, 1]")
    out.append(lam)
  names = [lambda_dir_name(lam) for lam in out]
  if len(set(names)) != len(names):
    raise ConfigError(f"config.lambdas={value!r} names the same lambda twice")
  return out


def lambda_dir_name(lam: float) -> str:
  """Return the sub-run folder name of a lambda ("lambda_0.2")."""
  return f"lambda_{lam:g}"


def label(lam: float) -> str:
  """Return the paper's name of a lambda ("HNAS-A" for 0.2) or "lambda=<lam>"."""
  return PAPER_LABELS.get(lam, f"lambda={lam:g}")


def lambda_config(config: ml_collections.ConfigDict, lam: float) -> ml_collections.ConfigDict:
  """Return a copy of `config` whose reward is lam * psnr - (1 - lam) * each cost term."""
  terms = {k: float(v) for k, v in config.reward.terms.items()}
  present = [k for k in COST_TERMS if k in terms]
  if not present:
    raise ConfigError(
      f"a lambda sweep needs a cost term ({', '.join(COST_TERMS)}) in config.reward.terms, "
      f"got {sorted(terms)}"
    )
  terms["psnr"] = lam
  for k in present:
    terms[k] = -(1.0 - lam)
  cfg = config.copy_and_resolve_references()
  with cfg.unlocked():  # a launcher's config is locked; the sub-run needs its own reward
    cfg.lambdas = ""  # the sub-run is one search, not another sweep
    if "lam" in cfg:  # a config's own trade-off knob (HNAS) tells the same story as its terms
      cfg.lam = lam
    cfg.reward.terms = terms
  return cfg


def _check_sweepable(config: ml_collections.ConfigDict) -> None:
  """Fail before any search when the config's reward cannot be swept."""
  if config.get("reward") is None or config.reward.get("terms") is None:
    raise ConfigError(
      f"config.lambdas needs a search with weighted reward terms (config.reward.terms); "
      f"method {config.get('method')!r} has none"
    )


def run_sweep(
  config: ml_collections.ConfigDict, workdir: str | os.PathLike, run_fn: Callable
) -> dict:
  """Run `run_fn` once per lambda of config.lambdas; return the points and pareto.json/png paths."""
  lambdas = parse_lambdas(config.lambdas)
  _check_sweepable(config)
  configs = [lambda_config(config, lam) for lam in lambdas]  # all checked before any search
  workdir = workdirs.prepare(workdir)
  for lam, cfg in zip(lambdas, configs, strict=True):
    sub = workdir / lambda_dir_name(lam)
    if (sub / "search_result.json").exists():
      logging.info("lambda %g: finished in %s, read, not searched again", lam, sub)
      continue
    logging.info(
      "lambda %g: searching in %s with reward terms %s", lam, sub, dict(cfg.reward.terms)
    )
    run_fn(cfg, sub)
  if jax.process_index() != 0:  # only the chief writes (and so reads) the derived files
    return {"lambdas": lambdas}
  pareto = collect(workdir, lambdas, configs, int(config.scale))
  writers.write_json(workdir / "pareto.json", pareto)
  plots.plot_pareto(pareto, workdir / "pareto.png", title=_title(config))
  return {
    "points": [
      {k: p[k] for k in ("label", "lambda", "psnr", "gmacs_480", "params")}
      for p in pareto["points"]
    ],
    "front": len(pareto["front"]),
    "pareto_json": str(workdir / "pareto.json"),
    "pareto_png": str(workdir / "pareto.png"),
  }


def _title(config: ml_collections.ConfigDict) -> str:
  return f"{config.space.name} x{config.scale}: lambda sweep" if config.get("space") else ""


def collect(workdir: Path, lambdas: Sequence[float], configs: Sequence, scale: int) -> dict:
  """Return the pareto.json record of the finished sub-runs of `workdir`."""
  counter = Gmacs480(scale)
  points, candidates, table_ii_cache = [], [], {}
  for lam, cfg in zip(lambdas, configs, strict=True):
    sub = workdir / lambda_dir_name(lam)
    best_path, best, rows = _read_sub_run(sub, cfg)
    space, arch = spaces.load_arch(best_path)
    # The same space in every sub-run of a sweep, but key on what best.json says to be sure.
    space_id = json.dumps([best["space"], best.get("space_kwargs", {})], sort_keys=True)
    points.append(
      {
        "lambda": lam,
        "label": label(lam),
        "psnr": float(best["psnr"]),
        "gmacs_480": counter(space_id, space, arch),
        "params": int(best["params"]),
        "tokens": [int(t) for t in best["tokens"]],
        "reward": best.get("reward"),
        "reward_terms": {k: float(v) for k, v in cfg.reward.terms.items()},
        "best_json": str(best_path),
      }
    )
    if isinstance(space, HNAS):
      points[-1]["table_ii"] = table_ii_mult_adds(space, arch, scale, table_ii_cache)
    for r in rows:
      candidates.append(
        {
          "lambda": lam,
          "psnr": float(r["psnr"]),
          "gmacs_480": counter(space_id, space, space.decode(np.asarray(r["tokens"]))),
          "params": int(r["params"]),
          "tokens": [int(t) for t in r["tokens"]],
        }
      )
  front = plots.pareto_front([c["gmacs_480"] for c in candidates], [c["psnr"] for c in candidates])
  return {
    "scale": scale,
    "input": list(cost.PAPER_INPUT),
    "points": points,
    "candidates": candidates,
    "front": front,
  }


def _read_sub_run(sub: Path, cfg) -> tuple[Path, dict, list[dict]]:
  """Return (best.json path, its record, candidates.json rows) of a finished sub-run."""
  best, cands = sub / "best.json", sub / "candidates.json"
  for f in (best, cands):
    if not f.exists():
      raise ConfigError(
        f"{f} is missing: a lambda sweep reads the candidates.json and best.json that "
        f"search method {cfg.get('method')!r} writes (the one-shot search does)"
      )
  return best, json.loads(best.read_text()), json.loads(cands.read_text())


class Gmacs480:
  """gmacs(space_id, space, arch) -> GMACs of one forward pass on a 480x480 LR image, cached."""

  def __init__(self, scale: int):
    self.scale = scale
    self._cache: dict[tuple, float] = {}

  def __call__(self, space_id: str, space, arch) -> float:
    """Return the GMACs of build(arch, scale) at 480x480 (shapes only, nothing computed)."""
    # Candidates of different lambdas often coincide, and tracing a network is the slow part.
    key = (space_id, tuple(int(t) for t in space.encode(arch)))
    if key not in self._cache:
      self._cache[key] = cost.gmacs_480(space.build(arch, self.scale))
    return self._cache[key]
