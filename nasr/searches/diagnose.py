"""Does the search work? Shared-weight ranking against stand-alone training, and a random baseline.

  python -m launch.diagnose --config=configs/diagnose.py --config.search=W --workdir=W/diagnose

Given a finished one-shot (DeCoNAS, HNAS) or DARTS-SR search in `config.search`, this

 1. draws `pool` uniformly random architectures of the searched space and scores each with the
    search's final shared weights, exactly as the search scored children (one-shot: the supernet at
    the tokens; DARTS: the supernet at the genotype's one-hot alpha), compiled once;
 2. picks `samples` of them stratified over that PSNR range (nasr.estimation.ranking), and takes
    the first `random` of the pool (a uniform sample) as the random baseline;
 3. for a one-shot search with `random_search`, runs the same search with the `random` strategy
    (same space, reward, supernet steps and number of scored children; Li & Talwalkar 2019) in
    W/random_search and takes the architecture it derives;
 4. trains every one of these architectures, the searched one included, from scratch under the
    same proxy budget and seeds (`config.train`, on the search's data), each a sub-run
    W/standalone/<id>/ that resumes by itself; <id> hashes the tokens and the budget, so a
    changed budget trains anew and a relaunch re-reads what finished;
 5. writes W/ranking.json (Kendall tau and Spearman rho of shared-weight vs stand-alone PSNR over
    the stratified sample and over every trained architecture; the searched architecture's
    stand-alone PSNR against the random ones' median and best-of-N) and W/ranking.png.

A search whose shared weights rank badly, or whose choice does not beat random at this budget, is a
finding to report, not an error.

With a benchmark table of the searched space (`nasr bench build`; the entry point passes
`standalone`, a lookup of its stand-alone PSNRs), step 4 trains nothing: each architecture's
stand-alone PSNR is the table's, and ranking.json's "table" also ranks every member of the space
with the shared weights (Kendall tau and Spearman rho over the whole space, the searched
architecture's true rank).
"""

import hashlib
import itertools
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from nasr import plots, spaces, workdirs, writers
from nasr.core.checks import check_numbers
from nasr.core.errors import ConfigError, TokenError
from nasr.estimation import ranking
from nasr.searches import loop, one_shot
from nasr.searches.methods import SEARCH_METHODS, with_shared_weights
from nasr.spaces.bench import Bench

RESULT_FILE = "ranking.json"
KIND = "diagnose"
# What a stand-alone run takes from the search's data section: the same images and validation split.
DATA_KEYS = ("train", "val", "num_val", "val_fraction", "max_val_images", "manual_dir", "tfds_dir")


def finished_search(search_dir: str | os.PathLike) -> tuple[ml_collections.ConfigDict, dict]:
  """Return (config, search_result.json) of the finished search in `search_dir`."""
  search_dir = Path(search_dir)
  if not str(search_dir) or not search_dir.is_dir():
    raise ConfigError(
      f"config.search must be the workdir of a finished search, got {str(search_dir)!r}"
    )
  result_file, run_file = search_dir / loop.RESULT_FILE, search_dir / workdirs.RUN_FILE
  if not run_file.is_file():
    raise ConfigError(f"{search_dir} holds no search ({workdirs.RUN_FILE} is missing)")
  if not result_file.is_file():
    raise ConfigError(
      f"{search_dir}: the search has not finished ({loop.RESULT_FILE} is missing); run the search "
      "to its end first"
    )
  try:
    record = json.loads(run_file.read_text())
    result = json.loads(result_file.read_text())
  except ValueError as e:
    raise ConfigError(
      f"{search_dir}: cannot read {run_file.name} or {result_file.name}: {e}"
    ) from None
  config = ml_collections.ConfigDict(record.get("config") or {})
  method = config.get("method")
  if method not in with_shared_weights():
    raise ConfigError(
      f"{search_dir} holds a {record.get('kind', 'unknown')} run; diagnose takes a search with "
      f"shared weights ({', '.join(with_shared_weights())}). GP-NAS trains every candidate stand-alone already: "
      "its gp.json has the leave-one-out ranking"
    )
  return config, result


def uniform_architectures(space, rng: np.random.Generator, num: int) -> np.ndarray:
  """Return `num` distinct uniformly random valid token rows of `space` (fewer if it is smaller)."""
  spec = space.token_spec()
  rows, seen = [], set()
  tries = 0
  while len(rows) < num and tries < 50 * num:
    tries += 1
    t = spec.sample(rng)
    key = t.tobytes()
    if key in seen:
      continue
    try:
      space.decode(t)
    except TokenError:  # e.g. a DARTS node reading one input twice: rejected, so still uniform
      continue
    seen.add(key)
    rows.append(t)
  return np.asarray(rows, np.int32).reshape(len(rows), len(spec))


def _check(config: ml_collections.ConfigDict) -> None:
  check_numbers(config)
  if config.samples > config.pool or config.random > config.pool:
    raise ConfigError(
      f"config.samples ({config.samples}) and config.random ({config.random}) are drawn from "
      f"config.pool ({config.pool}); make the pool larger"
    )
  if "train" not in config:
    raise ConfigError("config.train (the stand-alone proxy training config) is missing")


def standalone_config(
  config: ml_collections.ConfigDict, search: ml_collections.ConfigDict, scale: int
) -> ml_collections.ConfigDict:
  """Return the proxy training config of every architecture: config.train on the search's data."""
  t = ml_collections.ConfigDict(config.train.to_dict())
  t.scale = int(scale)
  t.seed = int(search.get("seed", 0))  # every architecture sees the same batches
  for key in DATA_KEYS:
    if key in search.get("data", {}):
      t.data[key] = search.data[key]
  t.arch = ""
  return t


def _run_id(tokens: np.ndarray, train: ml_collections.ConfigDict) -> str:
  """Return the sub-run name of `tokens` under the budget `train` (a changed budget: a new one)."""
  blob = json.dumps({"tokens": [int(t) for t in tokens], "train": train.to_dict()}, sort_keys=True)
  return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _random_search(
  config: ml_collections.ConfigDict, search: ml_collections.ConfigDict, workdir: Path
) -> np.ndarray:
  """Return the tokens the `random` strategy derives at the searched run's budget (resuming)."""
  r = ml_collections.ConfigDict(search.to_dict())
  r.strategy = ml_collections.ConfigDict({"name": "random"})  # no options: no section
  sub = workdirs.prepare(workdir / "random_search")
  done = loop.finished(r, sub)
  if done is None:
    logging.info("random search at the same budget in %s", sub)
    done = one_shot.run(r, sub)
  return np.asarray(done["best_tokens"], np.int32)


# space, tokens [N, L] -> stand-alone PSNRs [N] (NaN where unknown), or None when the lookup does
# not hold that space: a benchmark table's (nasr.experiment builds it; searches do not import bench).
StandAlone = Callable[[Any, np.ndarray], np.ndarray | None]
# Spaces up to this size are ranked whole against a table (each member scored once).
MAX_RANKED = 20_000


def run(
  config: ml_collections.ConfigDict,
  workdir: str | os.PathLike,
  standalone: StandAlone | None = None,
) -> dict:
  """Diagnose the search in config.search; write ranking.json / ranking.png; return the summary."""
  t0 = time.time()
  search, result = finished_search(config.get("search", ""))
  _check(config)
  search_dir = Path(config.search).resolve()
  workdir = workdirs.prepare(workdir)
  if workdir.resolve() == search_dir:
    raise ConfigError(
      "--workdir must not be the search's workdir (config.search); use a sub-folder"
    )
  # The search workdir is only read, but a live run there would change its checkpoint under us.
  loop.finished(search, search_dir)
  config_dict = json.loads(config.to_json_best_effort())
  workdirs.claim(workdir, KIND, config_dict)
  try:
    return _diagnose(config, search, result, search_dir, workdir, t0, standalone)
  finally:
    workdirs.release(workdir)


def _diagnose(
  config, search, result, search_dir: Path, workdir: Path, t0: float, standalone
) -> dict:
  """Score, sample, train stand-alone (or look up), report (the workdir is claimed)."""
  method = search.method
  scorer = SEARCH_METHODS.get(method).scorer(search, search_dir, result)
  table = standalone(scorer.space, scorer.searched[None]) if standalone else None
  if table is not None:
    logging.info("stand-alone PSNRs: the benchmark table's (nothing is trained)")
  elif config.get("table"):  # asked for by name, but of another space: say so before any training
    raise ConfigError(
      f"config.table={config.table}: the table is of another space than the search's "
      f"({type(scorer.space).__name__}), so its stand-alone results cannot stand in for this "
      "search's; drop config.table to train the architectures stand-alone"
    )
  elif standalone is not None and isinstance(scorer.space, Bench):
    # the shipped table holds the bench space at the `bench` config's size only (a tiny search
    # shrinks it): say why this diagnosis trains instead of looking up
    logging.info(
      "stand-alone PSNRs: trained here; the shipped benchmark table holds the bench space at the "
      "bench config's size only (this search's: %s)", scorer.space,
    )  # fmt: skip
  rng = np.random.default_rng(int(config.get("seed", 0)))
  pool = uniform_architectures(scorer.space, rng, config.pool)
  if len(pool) < max(config.samples, config.random):
    raise ConfigError(
      f"the {scorer.space_name} space has only {len(pool)} distinct architectures; lower "
      "config.samples and config.random"
    )
  shared = scorer.score(pool)
  logging.info(
    "shared-weight PSNR of %d random architectures: %.3f .. %.3f dB (median %.3f)",
    len(pool),
    float(np.nanmin(shared)),
    float(np.nanmax(shared)),
    float(np.nanmedian(shared)),
  )
  rows: dict[bytes, dict] = {}

  def add(tokens: np.ndarray, role: str, psnr: float | None = None) -> None:
    row = rows.setdefault(tokens.tobytes(), {"tokens": tokens, "roles": [], "shared_psnr": psnr})
    if role not in row["roles"]:
      row["roles"].append(role)

  add(np.asarray(scorer.searched, np.int32), "searched")
  if method == "one_shot" and config.get("random_search", True):
    add(_random_search(config, search, workdir), "random_search")
  for i in ranking.stratified_sample(shared, config.samples, rng):
    add(pool[i], "stratified", float(shared[i]))
  for i in range(config.random):
    add(pool[i], "random", float(shared[i]))
  unscored = [r for r in rows.values() if r["shared_psnr"] is None]
  if unscored:
    psnr = scorer.score(np.stack([r["tokens"] for r in unscored]))
    for r, p in zip(unscored, psnr, strict=True):
      r["shared_psnr"] = float(p)

  train = standalone_config(config, search, scorer.scale)
  if table is not None:
    trained = _looked_up(scorer, list(rows.values()), standalone)
  else:
    trained = [
      _train(scorer, train, row, workdir, i, len(rows)) for i, row in enumerate(rows.values())
    ]
  report = _report(config, search, scorer, trained, shared, search_dir, time.time() - t0)
  if table is not None:
    report["standalone"] = {"source": "benchmark table"}
    report["table"] = _rank_space(scorer, standalone)
  if jax.process_index() == 0:
    writers.write_json(workdir / RESULT_FILE, report)
    plots.plot_ranking(
      trained,
      workdir / "ranking.png",
      title=f"{scorer.space_name} x{scorer.scale}: {method} search, {train.steps} stand-alone steps",
      kendall_tau=report["kendall_tau"],
      spearman_rho=report["spearman_rho"],
      bicubic_psnr=report["bicubic_psnr"],
    )
  return _summary(report, workdir)


def _looked_up(scorer: loop.Scorer, rows: list[dict], standalone: StandAlone) -> list[dict]:
  """Return `rows` completed with the table's stand-alone PSNRs (as `_train` completes them)."""
  psnr = standalone(scorer.space, np.stack([r["tokens"] for r in rows]))
  out = []
  for row, p in zip(rows, psnr, strict=True):
    arch = scorer.space.decode(row["tokens"])
    out.append(
      {
        "id": "table",
        "roles": row["roles"],
        "tokens": [int(v) for v in row["tokens"]],
        "shared_psnr": row["shared_psnr"],
        "standalone_psnr": float(p),
        "params": int(scorer.space.count_params(arch, scorer.scale)),
        "diverged": False,
        "bicubic_psnr": None,
        "workdir": None,
      }
    )
  return out


def _rank_space(scorer: loop.Scorer, standalone: StandAlone) -> dict | None:
  """Return tau / rho of shared-weight vs table PSNR over every member, and the searched one's
  true rank; None for a space too large to score whole."""
  import scipy.stats  # here, not at the top: a second of every launcher's start

  spec = scorer.space.token_spec()
  if spec.size > MAX_RANKED:
    return None
  members = np.asarray(list(itertools.product(*(range(c) for c in spec.choices))), np.int32)
  shared = np.asarray(scorer.score(members), np.float64)
  truth = np.asarray(standalone(scorer.space, members), np.float64)
  ok = np.isfinite(shared) & np.isfinite(truth)
  searched = float(standalone(scorer.space, scorer.searched[None])[0])
  return {
    "members": int(ok.sum()),
    "kendall_tau": float(scipy.stats.kendalltau(shared[ok], truth[ok]).statistic),
    "spearman_rho": float(scipy.stats.spearmanr(shared[ok], truth[ok]).statistic),
    "searched_psnr": searched,
    "searched_rank": int(1 + np.sum(truth[ok] > searched)),
    "best_psnr": float(truth[ok].max()),
  }


def _train(scorer: loop.Scorer, train, row: dict, workdir: Path, i: int, n: int) -> dict:
  """Return `row` completed with its stand-alone result (training or re-reading its sub-run)."""
  tokens = row["tokens"]
  arch = scorer.space.decode(tokens)
  sub = workdir / "standalone" / _run_id(tokens, train)
  sub.mkdir(parents=True, exist_ok=True)
  arch_file = sub / "arch.json"
  if not arch_file.is_file():
    spaces.save_arch(arch_file, scorer.space_name, scorer.space_kwargs, arch)
  t = ml_collections.ConfigDict(train.to_dict())
  t.arch = str(arch_file)
  logging.info(
    "stand-alone %d of %d (%s): shared-weight PSNR %.3f dB, %s",
    i + 1,
    n,
    ", ".join(row["roles"]),
    row["shared_psnr"],
    sub,
  )
  result, diverged = loop.train_from_scratch(t, sub)
  psnr = loop.val_psnr(result)
  bicubic = ((result or {}).get("val_bicubic") or {}).get("psnr")
  return {
    "id": sub.name,
    "roles": row["roles"],
    "tokens": [int(v) for v in tokens],
    "shared_psnr": row["shared_psnr"],
    "standalone_psnr": psnr,
    "params": int(scorer.space.count_params(arch, scorer.scale)),
    "diverged": diverged,
    "bicubic_psnr": None if bicubic is None else float(bicubic),
    "workdir": str(sub),
  }


def _correlation(rows: list[dict]) -> tuple[float, float, int]:
  """Return (Kendall tau, Spearman rho, n) over the rows whose two PSNRs are finite."""
  pairs = [
    (r["shared_psnr"], r["standalone_psnr"])
    for r in rows
    if math.isfinite(r["shared_psnr"]) and math.isfinite(r["standalone_psnr"])
  ]
  if len(pairs) < 2:
    return math.nan, math.nan, len(pairs)
  a, b = zip(*pairs, strict=True)
  return ranking.kendall_tau(a, b), ranking.spearman_rho(a, b), len(pairs)


def _report(config, search, scorer, rows: list[dict], shared, search_dir: Path, wall_s) -> dict:
  """Return ranking.json: correlations, the random baseline and every trained architecture."""
  tau, rho, n = _correlation([r for r in rows if "stratified" in r["roles"]])
  tau_all, rho_all, n_all = _correlation(rows)
  randoms = [r["standalone_psnr"] for r in rows if "random" in r["roles"]]
  randoms = [p for p in randoms if math.isfinite(p)]

  def role_psnr(role: str) -> float | None:
    found = [r["standalone_psnr"] for r in rows if role in r["roles"]]
    return found[0] if found else None

  searched = role_psnr("searched")
  baseline = {
    "random_n": len(randoms),
    "random_median": float(np.median(randoms)) if randoms else None,
    "random_best": max(randoms) if randoms else None,
    "random_mean": float(np.mean(randoms)) if randoms else None,
    "searched": searched,
    "random_search": role_psnr("random_search"),
  }
  if randoms and searched is not None and math.isfinite(searched):
    baseline["searched_minus_median_db"] = searched - baseline["random_median"]
    baseline["searched_minus_best_db"] = searched - baseline["random_best"]
    baseline["searched_beats"] = sum(searched > p for p in randoms)
  bicubic = next((r["bicubic_psnr"] for r in rows if r["bicubic_psnr"] is not None), None)
  finite_shared = np.asarray(shared, np.float64)[np.isfinite(shared)]
  return {
    "search": str(search_dir),
    "method": search.method,
    "space": scorer.space_name,
    "space_kwargs": scorer.space_kwargs,
    "scale": scorer.scale,
    "kendall_tau": tau,
    "spearman_rho": rho,
    "n": n,
    "kendall_tau_all": tau_all,
    "spearman_rho_all": rho_all,
    "n_all": n_all,
    "baseline": baseline,
    "bicubic_psnr": bicubic,
    "pool": {
      "size": int(len(shared)),
      "shared_psnr_min": float(finite_shared.min()) if finite_shared.size else None,
      "shared_psnr_median": float(np.median(finite_shared)) if finite_shared.size else None,
      "shared_psnr_max": float(finite_shared.max()) if finite_shared.size else None,
    },
    "standalone": {
      "steps": int(config.train.steps),
      "patch_size": int(config.train.data.patch_size),
      "batch_size": int(config.train.data.batch_size),
      "seed": int(search.get("seed", 0)),
    },
    "architectures": rows,
    "wall_s": round(wall_s, 1),
  }


def _summary(report: dict, workdir: Path) -> dict:
  """Return the few numbers the launcher prints."""
  b = report["baseline"]
  out = {
    "kendall_tau": report["kendall_tau"],
    "spearman_rho": report["spearman_rho"],
    "n": report["n"],
    "kendall_tau_all": report["kendall_tau_all"],
    "n_all": report["n_all"],
    "searched_psnr": b["searched"],
    "random_median_psnr": b["random_median"],
    "random_best_psnr": b["random_best"],
    "random_n": b["random_n"],
  }
  if b.get("random_search") is not None:
    out["random_search_psnr"] = b["random_search"]
  if "searched_beats" in b:
    out["searched_beats"] = f"{b['searched_beats']} of {b['random_n']} random architectures"
  out["bicubic_psnr"] = report["bicubic_psnr"]
  if report.get("table"):  # the whole space ranked against the benchmark table
    t = report["table"]
    out["table_kendall_tau"], out["table_spearman_rho"] = t["kendall_tau"], t["spearman_rho"]
    out["searched_true_rank"] = f"{t['searched_rank']} of {t['members']} members"
  out["ranking_json"] = str(workdir / RESULT_FILE)
  out["wall_s"] = report["wall_s"]
  return out
