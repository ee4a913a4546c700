"""GP-NAS: the `gp` strategy's part of a from-scratch search (nasr.searches.from_scratch).

The GP over an enumerable grid proposes `batch` unobserved architectures a round (mutual-
information sampling; the first round is a space-filling design under the prior), the search
trains each from scratch, and the GP is updated and its hyper-parameters refitted. What the GP
adds to the loop is registered here as its hooks: its buffer holds every planned observation, an
observation records the GP's prediction when it proposed the candidate, and the report ranks the
whole grid by predicted PSNR. Outputs:
  W/gp.json     every observed candidate (measured PSNR, posterior and leave-one-out predictions),
                the top of the grid by predicted PSNR, the fitted hyper-parameters
  W/topk.json   the k architectures for the ensemble: the best predicted architecture of each family
                first (heterogeneous models ensemble better), then the next best; W/topk/<r>.json
                are their architecture files for launch.train (--config.arch=W/topk/0.json)
  W/gp.png      leave-one-out predicted against measured PSNR, one marker per family, and the
                GP's mean +- 2 sd over the whole grid with the measured PSNRs where they rank
Any space with an enumerable token grid fits (config.space.name); the strategy is space-agnostic.
"""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nasr import plots, spaces, writers
from nasr.estimation import ranking
from nasr.searches import from_scratch, loop
from nasr.searches.from_scratch import finite
from nasr.spaces.base import Families
from nasr.strategies import gp as gp_lib


def strategy_options(config: ml_collections.ConfigDict) -> dict:
  """Return the GP strategy's keyword arguments; its capacity holds every planned observation."""
  kwargs = loop.strategy_options(config)
  kwargs["capacity"] = max(1, int(config.rounds) * int(config.batch))
  return kwargs


def proposal_fields(aux: dict[str, np.ndarray], j: int, observed: list[dict]) -> dict:
  """Return the GP's prediction for proposal `j` when it proposed it (None before any
  measurement: the prior's numbers say nothing)."""
  informed = any(o["psnr"] is not None for o in observed)
  return {
    "proposed_mean": finite(aux["mean"][j]) if informed else None,
    "proposed_std": finite(aux["std"][j]) if informed else None,
  }


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


def _with_predictions(observations, s_state, choices, mean, std) -> list[dict]:
  """Return the observation rows with the GP's posterior and leave-one-out predictions."""
  loo_mean, loo_var = (np.asarray(a, np.float64) for a in jax.jit(gp_lib.loo_predict)(s_state))
  observed = []
  for i, r in enumerate(observations):
    g = int(gp_lib.grid_index(np.asarray(r["tokens"]), choices))
    observed.append(
      {
        **r,
        "pred_mean": finite(mean[g]),
        "pred_std": finite(std[g]),
        "loo_mean": finite(loo_mean[i]) if i < len(loo_mean) else None,
        "loo_std": finite(math.sqrt(loo_var[i])) if i < len(loo_var) and loo_var[i] >= 0 else None,
      }
    )
  return observed


def report(done: from_scratch.Observed) -> dict:
  """Predict the whole grid, write gp.json, topk.json (+ topk/<r>.json) and gp.png; return a summary."""
  space, skw, config, s_state = done.space, done.space_kwargs, done.config, done.state
  observations, workdir, scale = done.observations, done.workdir, int(done.config.scale)
  grid = gp_lib.grid_tokens(space.token_spec())
  mean, var = jax.jit(gp_lib.predict)(s_state, jnp.asarray(grid))
  mean, std = np.asarray(mean, np.float64), np.sqrt(np.asarray(var, np.float64))
  index = {tuple(r["tokens"]): r for r in observations}
  choices = space.token_spec().choices
  observed = _with_predictions(observations, s_state, choices, mean, std)
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
    grid_mean=mean,
    grid_std=std,
    observed_grid=[int(gp_lib.grid_index(np.asarray(o["tokens"]), choices)) for o in observed],
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
      psnr, _ = from_scratch.train_candidate(config, cand_dir, arch_file)
      r["measured_psnr"], r["candidate_workdir"] = finite(psnr), str(cand_dir)
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


# What the from-scratch search does for config.strategy.name = "gp" beyond propose -> train -> update.
from_scratch.HOOKS.register(
  "gp",
  from_scratch.StrategyHooks(options=strategy_options, proposal=proposal_fields, report=report),
)
