"""GP-NAS search: a Gaussian process over an enumerable grid, fed by training real candidates.

Each round (a) the GP strategy proposes `batch` unobserved architectures (mutual-information
sampling; the first round is a space-filling design under the prior), (b) each is written to
W/candidates/<i>/arch.json and trained from scratch with `nasr.training.train` under the proxy budget
of `config.train`, its final validation PSNR becoming the observation, and (c) the GP is updated
and its hyper-parameters refitted. The GP state and the observations are checkpointed after every
round; a candidate's training resumes from its own checkpoints, so a search killed at any moment
resumes and reaches the same observations as an uninterrupted one.

Finally the whole grid is ranked by predicted PSNR. Outputs:
  W/gp.json     every observed candidate (measured PSNR, posterior and leave-one-out predictions),
                the top of the grid by predicted PSNR, the fitted hyper-parameters
  W/topk.json   the k architectures for the ensemble: the best predicted architecture of each family
                first (heterogeneous models ensemble better), then the next best; W/topk/<r>.json
                are their architecture files for launch.train (--config.arch=W/topk/0.json)
  W/gp.png      leave-one-out predicted against measured PSNR, one marker per family
Any space with an enumerable token grid fits (config.space.name); the strategy is space-agnostic.
"""

import math
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from nasr import data as data_lib
from nasr import plots, spaces, strategies, writers
from nasr.core.checks import check_scale
from nasr.core.errors import ConfigError
from nasr.estimation import ranking
from nasr.searches import loop
from nasr.spaces.base import Families
from nasr.strategies import gp as gp_lib


def strategy_kwargs(config: ml_collections.ConfigDict) -> dict:
  """Return the GP strategy's keyword arguments; its capacity holds every planned observation."""
  kwargs = loop.strategy_options(config)
  kwargs["capacity"] = max(1, int(config.rounds) * int(config.batch))
  return kwargs


def candidate_config(
  config: ml_collections.ConfigDict, arch_file: Path
) -> ml_collections.ConfigDict:
  """Return the proxy training config of one candidate: config.train with its arch, scale, seed."""
  t = ml_collections.ConfigDict(config.train.to_dict())
  t.arch = str(arch_file)
  t.scale = int(config.scale)
  t.seed = int(config.seed)  # every candidate sees the same batches: a fairer comparison
  return t


def _check(config: ml_collections.ConfigDict) -> None:
  for key in ("rounds", "batch", "topk"):
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ConfigError(f"config.{key} must be a positive integer, got {value!r}")
  if "train" not in config:
    raise ConfigError("config.train (the candidates' proxy training config) is missing")
  if config.strategy.get("name", "gp") != "gp":
    raise ConfigError(
      f"the gp search needs config.strategy.name = 'gp', got {config.strategy.name!r}"
    )


def _finite(v) -> float | None:
  v = float(v)
  return v if math.isfinite(v) else None


def _train_candidate(config, cand_dir: Path, arch_file: Path) -> tuple[float, bool]:
  """Return (final validation PSNR, diverged) of one candidate, training or resuming it."""
  result, diverged = loop.train_from_scratch(candidate_config(config, arch_file), cand_dir)
  if diverged:
    logging.warning("candidate %s diverged; its reward is NaN", cand_dir.name)
  return loop.val_psnr(result), diverged


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Search the grid with GP-NAS; return a summary (top-k, best predicted PSNR, wall time)."""
  _check(config)
  scale = check_scale(config.scale, "config.scale")
  skw = loop.space_kwargs(config)
  space = spaces.get(config.space.name, **skw)
  strategy = strategies.get("gp", space.token_spec(), **strategy_kwargs(config))
  grid = gp_lib.grid_tokens(space.token_spec())
  # Bad data should fail now, not after the first candidate's compilation.
  train_cfg = candidate_config(config, Path("arch.json"))
  data_lib.load_train_val(train_cfg.data, scale, train_cfg.seed)
  logging.info(
    "GP-NAS over %s: %d architectures; %d rounds x %d candidates",
    config.space.name,
    len(grid),
    config.rounds,
    config.batch,
  )
  s_state = strategy.init(jax.random.PRNGKey(config.seed))
  capacity = int(s_state.rewards.shape[0])
  search = loop.SearchRun(
    config, workdir, config.rounds, "round", {"observations": [], "capacity": capacity}
  )
  s_state = search.resume({"strategy": s_state}, _capacity_check(capacity, search.workdir))
  s_state = jax.device_put(s_state["strategy"], jax.devices()[0])
  propose = jax.jit(strategy.propose, static_argnums=2)
  update = jax.jit(strategy.update)
  rng = jax.random.PRNGKey(config.seed)
  (search.workdir / "candidates").mkdir(exist_ok=True)
  t0 = time.time()
  with search:  # rounds: propose -> train each candidate -> update the GP -> checkpoint
    for rnd in range(search.done, config.rounds):
      tokens, aux = propose(s_state, jax.random.fold_in(rng, rnd), config.batch)
      rows, rewards = _measure(config, space, skw, search, rnd, np.asarray(tokens), aux)
      s_state, m = update(s_state, jnp.asarray(tokens), jnp.asarray(rewards, jnp.float32))
      search.meta["observations"].extend(rows)
      finite = [r for r in rewards if math.isfinite(r)]
      scalars = {k: float(v) for k, v in m.items()}
      scalars["round_best_psnr"] = max(finite) if finite else float("nan")
      search.end(rnd + 1, {"strategy": s_state}, {"round": rnd + 1, **scalars}, {}, scalars)
  observations = search.meta["observations"]
  summary = report(space, skw, config, s_state, observations, grid, search.workdir)
  summary.update(search_wall_s=round(time.time() - t0, 1), rounds=config.rounds)
  search.write_json(loop.RESULT_FILE, summary)
  return summary


def _capacity_check(capacity: int, workdir: Path):
  """Return a check that a resumed workdir was planned for the same number of candidates."""

  def check(meta: dict) -> None:
    saved = meta.get("capacity", capacity)
    if saved != capacity:
      raise ConfigError(
        f"{workdir} holds a search planned for {saved} candidates; config.rounds x config.batch "
        f"= {capacity} now: use a new workdir (or the old rounds and batch)"
      )

  return check


def _measure(config, space, skw, search, rnd: int, tokens: np.ndarray, aux):
  """Train each proposed candidate (or resume it); return (observation rows, measured PSNRs)."""
  scale = int(config.scale)
  informed = any(o["psnr"] is not None for o in search.meta["observations"])
  rows, rewards = [], []
  for j, t in enumerate(tokens):
    index = rnd * config.batch + j
    arch = space.decode(t)
    if search.stop_requested:  # between candidates; each one's training stops and saves itself
      search.pause(0, None)
    cand_dir = search.workdir / "candidates" / f"{index:03d}"
    cand_dir.mkdir(parents=True, exist_ok=True)
    arch_file = cand_dir / "arch.json"
    spaces.save_arch(arch_file, config.space.name, skw, arch)
    logging.info("round %d candidate %d: %s", rnd + 1, index, arch.describe())
    t_c = time.time()
    psnr, diverged = _train_candidate(config, cand_dir, arch_file)
    rewards.append(psnr)
    rows.append(
      {
        "candidate": index,
        "round": rnd + 1,
        "tokens": [int(v) for v in t],
        "arch": arch.to_dict(),
        "name": arch.describe(),
        "params": int(space.count_params(arch, scale)),
        "psnr": _finite(psnr),
        "diverged": diverged,
        # The GP's prediction when it proposed the candidate (before measuring it).
        "proposed_mean": _finite(aux["mean"][j]) if informed else None,
        "proposed_std": _finite(aux["std"][j]) if informed else None,
        "workdir": str(cand_dir),
        "train_s": round(time.time() - t_c, 1),
      }
    )
  return rows, rewards


def select_topk(rows: list[dict], k: int) -> list[dict]:
  """Return `k` rows (sorted by "pred_psnr") preferring distinct families: each family's best first.

  The paper's ensemble gains most from different architectures (DRN* + RCAN beats RCAN* + RCAN), so
  the first picks take the best predicted architecture of every family in turn; the rest follow by
  predicted PSNR.
  """
  ranked = sorted(rows, key=lambda r: -r["pred_psnr"])
  chosen, families = [], set()
  for r in ranked:
    if len(chosen) == k:
      break
    if r["family"] not in families:
      chosen.append(r)
      families.add(r["family"])
  for r in ranked:
    if len(chosen) == k:
      break
    if r not in chosen:
      chosen.append(r)
  return sorted(chosen, key=lambda r: -r["pred_psnr"])


def report(space, skw, config, s_state, observations, grid, workdir: Path) -> dict:
  """Predict the whole grid, write gp.json, topk.json (+ topk/<r>.json) and gp.png; return a summary."""
  scale = int(config.scale)
  mean, var = jax.jit(gp_lib.predict)(s_state, jnp.asarray(grid))
  mean, std = np.asarray(mean, np.float64), np.sqrt(np.asarray(var, np.float64))
  loo_mean, loo_var = (np.asarray(a, np.float64) for a in jax.jit(gp_lib.loo_predict)(s_state))
  index = {tuple(r["tokens"]): r for r in observations}
  choices = space.token_spec().choices
  observed = []
  for i, r in enumerate(observations):
    g = int(gp_lib.grid_index(np.asarray(r["tokens"]), choices))
    observed.append(
      {
        **r,
        "pred_mean": _finite(mean[g]),
        "pred_std": _finite(std[g]),
        "loo_mean": _finite(loo_mean[i]) if i < len(loo_mean) else None,
        "loo_std": _finite(math.sqrt(loo_var[i])) if i < len(loo_var) and loo_var[i] >= 0 else None,
      }
    )
  order = np.argsort(-mean, kind="stable")

  def grid_row(g: int) -> dict:
    arch = space.decode(grid[g])
    seen = index.get(tuple(int(v) for v in grid[g]))
    return {
      "tokens": [int(v) for v in grid[g]],
      "arch": arch.to_dict(),
      "name": arch.describe(),
      "family": arch.group(),
      "pred_psnr": float(mean[g]),
      "pred_std": float(std[g]),
      "measured_psnr": seen["psnr"] if seen else None,
      "candidate_workdir": seen["workdir"] if seen else None,
    }

  # The pool: the best predicted architectures plus the best of every family not among them.
  pool = [grid_row(int(g)) for g in order[: max(config.report_top, 10 * config.topk)]]
  pool += [grid_row(g) for g in _best_of_missing_families(space, grid, order, pool)]
  topk = select_topk(pool, config.topk)
  _write_topk(config, space, skw, topk, workdir / "topk")
  measured = [
    (o["loo_mean"], o["psnr"]) for o in observed if o["psnr"] is not None and o["loo_mean"]
  ]
  rho = ranking.spearman_rho(*zip(*measured, strict=True)) if len(measured) >= 3 else None
  rho = None if rho is None or math.isnan(rho) else rho  # constant predictions rank nothing
  doc = {
    "space": config.space.name,
    "space_kwargs": skw,
    "scale": scale,
    "grid_size": int(len(grid)),
    "hyperparameters": gp_lib.hyperparameters(s_state),
    "loo_spearman": rho,
    "observed": observed,
    "grid_top": [grid_row(int(g)) for g in order[: config.report_top]],
  }
  writers.write_json(workdir / "gp.json", doc)
  writers.write_json(workdir / "topk.json", topk)
  # The grid's own families name it: a "drn" space searching DRN and RCAN is a drn+rcan grid.
  grid_name = "+".join(space.families) if isinstance(space, Families) else config.space.name
  plots.plot_gp(
    observed,
    workdir / "gp.png",
    title=f"GP-NAS {grid_name} x{scale}",
    families=[space.decode(np.asarray(o["tokens"])).group() for o in observed],
  )
  best = topk[0]
  return {
    "topk": [r["name"] for r in topk],
    "best_name": best["name"],
    "best_tokens": best["tokens"],
    "best_pred_psnr": round(best["pred_psnr"], 4),
    "observed": len(observed),
    "grid_size": int(len(grid)),
    "loo_spearman": None if rho is None else round(rho, 4),
    "topk_json": str(workdir / "topk.json"),
  }


def _write_topk(config, space, skw, topk: list[dict], topk_dir: Path) -> None:
  """Write topk/<rank>.json for each of the top-k (training the unmeasured ones if asked)."""
  topk_dir.mkdir(exist_ok=True)
  for rank, r in enumerate(topk):
    arch = space.decode(np.asarray(r["tokens"]))
    r["rank"] = rank
    r["arch_file"] = str(topk_dir / f"{rank}.json")
    r["params"] = int(space.count_params(arch, int(config.scale)))
    if config.get("measure_topk", False) and r["measured_psnr"] is None:
      # Train the unobserved top-k with the same proxy budget, so their predicted PSNR can be
      # checked against a measurement (a killed run resumes these trainings too).
      cand_dir = topk_dir / f"{rank}_train"
      arch_file = cand_dir.with_suffix(".arch.json")
      spaces.save_arch(arch_file, config.space.name, skw, arch)
      psnr, _ = _train_candidate(config, cand_dir, arch_file)
      r["measured_psnr"], r["candidate_workdir"] = _finite(psnr), str(cand_dir)
    spaces.save_arch(
      r["arch_file"],
      config.space.name,
      skw,
      arch,
      pred_psnr=r["pred_psnr"],
      pred_std=r["pred_std"],
      measured_psnr=r["measured_psnr"],
    )


def _best_of_missing_families(space, grid, order, pool: list[dict]) -> list[int]:
  """Return the best-predicted grid row of every family missing from `pool`."""
  out, found = [], {r["family"] for r in pool}
  for g in order:
    fam = space.decode(grid[int(g)]).group()
    if fam not in found:
      found.add(fam)
      out.append(int(g))
  return out
