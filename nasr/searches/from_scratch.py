"""From-scratch search: any black-box strategy proposes, every candidate is trained stand-alone.

Each round (a) the strategy `config.strategy.name` proposes `batch` architectures, (b) each is
written to W/candidates/<i>/arch.json and trained from scratch by the trainer under the proxy
budget of `config.train`, its final validation PSNR becoming its reward, and (c) the strategy is
updated with the rewards. The strategy state and the observations are checkpointed after every
round; a candidate's training resumes from its own checkpoints, so a search killed at any moment
resumes and reaches the same observations as an uninterrupted one.

What a strategy adds to the loop is declared under its name in `HOOKS` (`StrategyHooks`): its
options, what an observation records of the proposal, and the report that ends the search. A
strategy without an entry runs with its config.strategy.<name> options and the default report:
  W/candidates.json  every trained candidate: tokens, architecture, parameters, measured PSNR
  W/topk.json        the `topk` best measured architectures, best first; W/topk/<r>.json are their
                     architecture files for `nasr train --config.arch=W/topk/0.json`
GP-NAS (the `gp` strategy, nasr.searches.gp) reports the GP's posterior over the whole grid.
"""

import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from nasr import data as data_lib
from nasr import spaces, strategies, writers
from nasr.core.checks import check_scale
from nasr.core.errors import ConfigError, DivergedError
from nasr.core.registry import Registry
from nasr.searches import loop

Config = ml_collections.ConfigDict


@dataclasses.dataclass(frozen=True)
class Observed:
  """What a finished from-scratch search hands its strategy's report."""

  config: Config
  space: Any
  space_kwargs: dict  # the searched space's (architecture files are written with them)
  state: Any  # the strategy's final state
  observations: list[dict]  # one row per trained candidate, in the order they were proposed
  workdir: Path


def proposal_fields(aux: dict[str, np.ndarray], j: int, observed: list[dict]) -> dict:
  """Return what an observation records of proposal `j`: each aux value as `proposed_<key>`."""
  del observed  # the default records the proposal as the strategy gave it
  return {f"proposed_{k}": finite(v[j]) for k, v in sorted(aux.items())}


def report_measured(done: Observed) -> dict:
  """Write candidates.json, topk.json and topk/<r>.json of the best measured architectures;
  return the search's summary."""
  config, skw = done.config, done.space_kwargs
  best: dict[tuple, dict] = {}  # tokens -> the best row of an architecture proposed more than once
  for o in done.observations:
    key = tuple(o["tokens"])
    if o["psnr"] is not None and (key not in best or o["psnr"] > best[key]["psnr"]):
      best[key] = o
  ranked = sorted(best.values(), key=lambda o: -o["psnr"])[: config.topk]  # stable: ties by order
  if not ranked:
    raise DivergedError(f"every candidate of {done.workdir} diverged: no architecture to report")
  topk_dir = done.workdir / "topk"
  topk_dir.mkdir(exist_ok=True)
  topk = []
  for rank, o in enumerate(ranked):
    arch_file = topk_dir / f"{rank}.json"
    arch = done.space.decode(np.asarray(o["tokens"]))
    spaces.save_arch(arch_file, config.space.name, skw, arch, measured_psnr=o["psnr"])
    keep = ("candidate", "tokens", "name", "params")
    topk.append({"rank": rank, **{k: o[k] for k in keep}, "family": arch.group()})
    topk[-1].update(measured_psnr=o["psnr"], candidate_workdir=o["workdir"])
    topk[-1]["arch_file"] = str(arch_file)
  writers.write_json(done.workdir / "candidates.json", done.observations)
  writers.write_json(done.workdir / "topk.json", topk)
  return {
    "topk": [r["name"] for r in topk],
    "best_name": topk[0]["name"],
    "best_tokens": topk[0]["tokens"],
    "best_psnr": round(topk[0]["measured_psnr"], 4),
    "observed": len(done.observations),
    "topk_json": str(done.workdir / "topk.json"),
  }


@dataclasses.dataclass(frozen=True)
class StrategyHooks:
  """What a from-scratch search does for one strategy beyond propose -> train -> update."""

  # config -> the strategy's keyword arguments.
  options: Callable[[Config], dict] = loop.strategy_options
  # (aux of the proposal as numpy arrays, index j, observations before this round) -> the fields
  # candidate j's observation row records of its proposal.
  proposal: Callable[[dict, int, list[dict]], dict] = proposal_fields
  # The finished search -> its summary; writes the report and the architecture files.
  report: Callable[[Observed], dict] = report_measured


# strategy name -> its hooks; registered beside the report they name (GP-NAS: nasr.searches.gp).
HOOKS: Registry[StrategyHooks] = Registry("from-scratch strategy hooks")


def hooks(name: str) -> StrategyHooks:
  """Return the hooks registered for strategy `name`, or the defaults."""
  return HOOKS.get(name) if name in HOOKS else StrategyHooks()


def candidate_config(config: Config, arch_file: Path) -> Config:
  """Return the proxy training config of one candidate: config.train with its arch, scale, seed."""
  t = ml_collections.ConfigDict(config.train.to_dict())
  t.arch = str(arch_file)
  t.scale = int(config.scale)
  t.seed = int(config.seed)  # every candidate sees the same batches: a fairer comparison
  return t


def train_candidate(config: Config, cand_dir: Path, arch_file: Path) -> tuple[float, bool]:
  """Return (final validation PSNR, diverged) of one candidate, training or resuming it."""
  result, diverged = loop.train_from_scratch(candidate_config(config, arch_file), cand_dir)
  if diverged:
    logging.warning("candidate %s diverged; its reward is NaN", cand_dir.name)
  return loop.val_psnr(result), diverged


def finite(v) -> float | None:
  """Return `v` as a float, or None when it is not finite (strict JSON has no NaN)."""
  v = float(v)
  return v if math.isfinite(v) else None


def _check(config: Config) -> None:
  for key in ("rounds", "batch", "topk"):
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ConfigError(f"config.{key} must be a positive integer, got {value!r}")
  if "train" not in config:
    raise ConfigError("config.train (the candidates' proxy training config) is missing")


def run(config: Config, workdir: str | os.PathLike) -> dict:
  """Search with the configured strategy, training every candidate; return the report's summary."""
  _check(config)
  scale = check_scale(config.scale, "config.scale")
  skw = loop.space_kwargs(config)
  space = spaces.get(config.space.name, **skw)
  name = config.strategy.name
  hook = hooks(name)
  strategy = strategies.get(name, space.token_spec(), **hook.options(config))
  # Bad data should fail now, not after the first candidate's compilation.
  train_cfg = candidate_config(config, Path("arch.json"))
  data_lib.load_train_val(train_cfg.data, scale, train_cfg.seed)
  logging.info(
    "from-scratch search with strategy %s over %s: %d rounds x %d candidates",
    name,
    config.space.name,
    config.rounds,
    config.batch,
  )
  s_state = strategy.init(jax.random.PRNGKey(config.seed))
  planned = int(config.rounds) * int(config.batch)
  search = loop.SearchRun(
    config, workdir, config.rounds, "round", {"observations": [], "capacity": planned}
  )
  s_state = search.resume({"strategy": s_state}, _planned_check(planned, search.workdir))
  s_state = jax.device_put(s_state["strategy"], jax.devices()[0])
  propose = jax.jit(strategy.propose, static_argnums=2)
  update = jax.jit(strategy.update)
  rng = jax.random.PRNGKey(config.seed)
  (search.workdir / "candidates").mkdir(exist_ok=True)
  t0 = time.time()
  with search:  # rounds: propose -> train each candidate -> update the strategy -> checkpoint
    for rnd in range(search.done, config.rounds):
      tokens, aux = propose(s_state, jax.random.fold_in(rng, rnd), config.batch)
      aux = {k: np.asarray(v) for k, v in aux.items()}
      rows, rewards = _measure(config, space, skw, search, rnd, np.asarray(tokens), aux)
      s_state, m = update(s_state, jnp.asarray(tokens), jnp.asarray(rewards, jnp.float32))
      search.meta["observations"].extend(rows)
      measured = [r for r in rewards if math.isfinite(r)]
      scalars = {k: float(v) for k, v in m.items()}
      scalars["round_best_psnr"] = max(measured) if measured else float("nan")
      search.end(rnd + 1, {"strategy": s_state}, {"round": rnd + 1, **scalars}, {}, scalars)
  done = Observed(config, space, skw, s_state, search.meta["observations"], search.workdir)
  summary = hook.report(done)
  summary.update(search_wall_s=round(time.time() - t0, 1), rounds=config.rounds)
  search.write_json(loop.RESULT_FILE, summary)
  return summary


def _planned_check(planned: int, workdir: Path):
  """Return a check that a resumed workdir was planned for the same number of candidates (the
  GP's state holds a buffer of that size)."""

  def check(meta: dict) -> None:
    saved = meta.get("capacity", planned)
    if saved != planned:
      raise ConfigError(
        f"{workdir} holds a search planned for {saved} candidates; config.rounds x config.batch "
        f"= {planned} now: use a new workdir (or the old rounds and batch)"
      )

  return check


def _measure(config, space, skw, search, rnd: int, tokens: np.ndarray, aux: dict):
  """Train each proposed candidate (or resume it); return (observation rows, measured PSNRs)."""
  scale = int(config.scale)
  proposal = hooks(config.strategy.name).proposal
  before = list(search.meta["observations"])
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
    psnr, diverged = train_candidate(config, cand_dir, arch_file)
    rewards.append(psnr)
    rows.append(
      {
        "candidate": index,
        "round": rnd + 1,
        "tokens": [int(v) for v in t],
        "arch": arch.to_dict(),
        "name": arch.describe(),
        "params": int(space.count_params(arch, scale)),
        "psnr": finite(psnr),
        "diverged": diverged,
        **proposal(aux, j, before),
        "workdir": str(cand_dir),
        "train_s": round(time.time() - t_c, 1),
      }
    )
  return rows, rewards
