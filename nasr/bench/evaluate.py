"""`nasr bench evaluate`: score search strategies against a benchmark table, by lookup.

Black-box strategies (random, reinforce, gp, evolution, local_search, ... any registered one)
search the bench space with the table as their oracle: a query of member m returns the
validation PSNR of one of its runs, the seed drawn at random (the noise a real search sees), and
costs one query the first time m is asked for (a search remembers what it measured). After each
query the search's pick is the member with the best observed value; its regret is the best
member's true PSNR minus the pick's (true: the seed mean on `config.metric`). Over
`config.search_seeds` searches: the mean regret after each number of queries with a 95% interval
(Student t over seeds), and the percentile of the final pick among all members.

The table's own predictors are scored too: Kendall tau and Spearman rho against the truth of
each zero-cost proxy, the parameter and multiply-add counts, and each earlier point of the
learning curve (a shorter run as a low-fidelity proxy of the full one).
"""

import copy
import os
import re
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from nasr import plots, spaces, strategies, workdirs, writers
from nasr.bench import table as table_lib
from nasr.core.errors import ConfigError
from nasr.searches import loop
from nasr.searches.methods import SEARCH_METHODS
from nasr.spaces import bench as bench_space

# The range each reported statistic can take: its interval is clipped to it (a t interval of
# three seeds' percentiles would otherwise reach past 100).
TAU_RANGE, PERCENTILE_RANGE, REGRET_RANGE = (-1.0, 1.0), (0.0, 100.0), (0.0, np.inf)


def interval(
  values, confidence: float = 0.95, bounds: tuple[float, float] = (-np.inf, np.inf)
) -> tuple[float, float, float]:
  """Return (mean, low, high): the Student-t interval of the mean of `values` (NaN-free),
  clipped to `bounds`, the range the values can take."""
  import scipy.stats  # here, not at the top: a second of every launcher's start

  x = np.asarray(values, np.float64)
  mean = float(np.mean(x))
  if len(x) < 2 or np.all(x == x[0]):
    return mean, mean, mean
  lo, hi = scipy.stats.t.interval(confidence, len(x) - 1, loc=mean, scale=scipy.stats.sem(x))
  return mean, float(max(lo, bounds[0])), float(min(hi, bounds[1]))


def search_once(strategy, signal, queries: int, batch: int, seed: int) -> list[int]:
  """Return the pick (member id) after each of `queries` distinct queries of one search.

  `strategy`'s propose/update are called as given: jit them once for all the searches
  (`score_strategy` does).
  """
  rng = np.random.default_rng([seed, 7])
  key = jax.random.key(seed)
  state = strategy.init(key)
  propose, update = strategy.propose, strategy.update
  seen: dict[int, float] = {}
  picks: list[int] = []
  best, best_value = -1, -np.inf
  for r in range(50 * queries):  # a strategy that stops proposing new members ends the search
    tokens, _ = propose(state, jax.random.fold_in(key, r), batch)
    rewards = []
    for t in np.asarray(tokens):
      m = bench_space.arch_id(t)
      if m not in seen:
        runs = signal[m][~np.isnan(signal[m])]
        if len(runs) == 0:
          raise ConfigError(f"member {m} has no run in the table: it is not complete")
        seen[m] = float(runs[rng.integers(len(runs))])
        if seen[m] > best_value:
          best, best_value = m, seen[m]
        picks.append(best)
      rewards.append(seen[m])
    state, _ = update(state, tokens, jnp.asarray(rewards, jnp.float32))
    if len(picks) >= queries:
      return picks[:queries]
  return picks + [best] * (queries - len(picks))


def _options(config, name: str) -> dict:
  section = config.strategy.get(name)
  return dict(section) if section is not None else {}


def score_strategy(config, name: str, t: table_lib.Table, truth: np.ndarray) -> dict:
  """Return the regret curve and final-pick statistics of strategy `name` over the search seeds."""
  space = spaces.get("bench", **{k: v for k, v in config.space.items() if k != "name"})
  strategy = strategies.get(name, space.token_spec(), **_options(config, name))
  # compiled once for every search seed
  strategy = strategy._replace(
    propose=jax.jit(strategy.propose, static_argnums=2), update=jax.jit(strategy.update)
  )
  signal = t.per_seed("val")
  q, seeds = int(config.queries), int(config.search_seeds)
  top = float(np.nanmax(truth))
  regret = np.zeros((seeds, q))
  final = []
  for s in range(seeds):
    picks = search_once(strategy, signal, q, int(config.batch), s)
    regret[s] = top - truth[picks]
    final.append(picks[-1])
  pct = [float(100.0 * np.mean(truth[~np.isnan(truth)] <= truth[m])) for m in final]
  checkpoints = sorted({c for c in config.report_at if c <= q} | {q})
  return {
    "strategy": name,
    "options": _options(config, name),
    "regret": {str(c): interval(regret[:, c - 1], bounds=REGRET_RANGE) for c in checkpoints},
    "regret_curve": [interval(regret[:, c], bounds=REGRET_RANGE) for c in range(q)],
    "final_percentile": interval(pct, bounds=PERCENTILE_RANGE),
    "top10_rate": float(np.mean(np.asarray(pct) >= 90.0)),
    "picks": [int(m) for m in final],
  }


def predictors(t: table_lib.Table, truth: np.ndarray) -> dict:
  """Return {predictor: (Kendall tau, Spearman rho)} against `truth` over the complete members."""
  import scipy.stats  # here, not at the top: a second of every launcher's start

  ok = ~np.isnan(truth)
  cands = {f"proxy {k}": v for k, v in t.proxies.items()}
  cands["params"], cands["macs"] = t.params, t.macs
  for k, step in enumerate(t.steps[:-1]):
    cands[f"curve @{step} steps"] = table_lib.row_mean(t.curves[:, :, k])
  out = {}
  for name, values in cands.items():
    m = ok & ~np.isnan(values)
    if m.sum() < 3:
      continue
    tau = scipy.stats.kendalltau(values[m], truth[m]).statistic
    rho = scipy.stats.spearmanr(values[m], truth[m]).statistic
    out[name] = (round(float(tau), 4), round(float(rho), 4))
  # What a black-box search sees of a member: one run's validation PSNR (the mean over seeds).
  val = t.per_seed("val")
  per_run = [
    [f(val[m, s], truth[m]).statistic for f in (scipy.stats.kendalltau, scipy.stats.spearmanr)]
    for s in range(val.shape[1])
    if (m := ok & ~np.isnan(val[:, s])).sum() >= 3
  ]
  if per_run:
    tau, rho = np.mean(per_run, axis=0)
    out[SIGNAL] = (round(float(tau), 4), round(float(rho), 4))
  return out


# The predictors' name for one stand-alone run's validation PSNR: the black-box searches' signal.
SIGNAL = "val PSNR, one run"


def against_random(
  regret: tuple[float, float, float], random_regret, searches: int | None = None
) -> str:
  """Return whether a regret (mean, low, high) beats random search's at the same budget: only
  when the 95% intervals do not overlap is either side better. `searches`: how many searches the
  regret is the mean of (None: an exact value, as a proxy's pick); one has no interval."""
  if random_regret is None:
    return "no random search to compare with"
  if searches is not None and searches < 2:
    return "one search: no interval to compare"
  if regret[2] < random_regret[1]:
    return "beats random"
  if regret[1] > random_regret[2]:
    return "worse than random"
  return "ties random (intervals overlap)"


def lead(result: dict, t: table_lib.Table, truth: np.ndarray) -> list[dict]:
  """Return the lead table's rows: every search method scored (pick percentile, regret, tau of
  what it ranks members by), with random search's regret at the same budget beside it.

  A budget is counted in stand-alone trainings: a black-box search's queries; a weight-sharing
  search's median recorded wall time over the table's median training time (both as recorded:
  a ratio of runs that may have shared their machine). The best zero-cost proxy (the largest
  tau) picks its top-scored member with no training.
  """
  random = next((r for r in result["strategies"] if r["strategy"] == "random"), None)

  def random_at(budget: float):
    if random is None or not np.isfinite(budget):
      return None
    q = min(max(int(np.ceil(budget)), 1), len(random["regret_curve"]))
    return {"queries": q, "regret": random["regret_curve"][q - 1]}

  signal_tau = result["predictors"].get(SIGNAL, (np.nan, np.nan))[0]
  rows = []
  for r in result["strategies"]:
    q = int(result["queries"])
    rand = random_at(q)
    rows.append(
      {
        "method": r["strategy"],
        "kind": "lookup",
        "budget": float(q),
        "percentile": r["final_percentile"],
        "regret": r["regret"][str(q)],
        "top10_rate": r["top10_rate"],
        "tau": (signal_tau,) * 3,
        "random": rand,
        "verdict": "(random search itself)"
        if r["strategy"] == "random"
        else against_random(r["regret"][str(q)], rand and rand["regret"], result["search_seeds"]),
      }
    )
  train_s = np.array([run["train_s"] for m in t.raw["members"] for run in m["runs"]], float)
  member_s = float(np.median(train_s)) if len(train_s) else np.nan
  for r in result.get("weight_sharing", []):
    budget = r["search_wall_s"] / member_s
    rand = random_at(budget)
    rows.append(
      {
        "method": r["search"],
        "kind": "weight sharing",
        "budget": budget,
        "percentile": r["pick_percentile"],
        "regret": r["regret"],
        "top10_rate": r["top10_rate"],
        "tau": r["tau"],
        "random": rand,
        "verdict": against_random(r["regret"], rand and rand["regret"], len(r["runs"])),
      }
    )
  taus = {k: v[0] for k, v in result["predictors"].items() if k.startswith("proxy ")}
  if taus:
    name = max(taus, key=taus.get)
    values = np.where(np.isnan(truth), np.nan, t.proxies[name.removeprefix("proxy ")])
    pick = int(np.nanargmax(values))
    pct = float(100.0 * np.mean(truth[~np.isnan(truth)] <= truth[pick]))
    regret = float(np.nanmax(truth) - truth[pick])
    rand = random_at(1.0)  # no training: random search's first query is its fairest match
    rows.append(
      {
        "method": f"zero-cost {name}",  # the best proxy's top member
        "kind": "proxy",
        "budget": 0.0,
        "percentile": (pct,) * 3,
        "regret": (regret,) * 3,
        "top10_rate": float(pct >= 90.0),
        "tau": (taus[name],) * 3,
        "random": rand,
        "verdict": against_random((regret,) * 3, rand and rand["regret"]),
      }
    )
  return rows


# (config name or file, preset) -> the loaded config: the entry points' loader (experiment).
ConfigLoader = Callable[[str, str], ml_collections.ConfigDict]


def _override(c: ml_collections.ConfigDict, spec: str, assignment: str) -> None:
  """Set `key=value` (a dotted key the config has) in `c`, typed as the value it replaces."""
  key, sep, text = assignment.partition("=")
  *path, leaf = key.split(".")
  node = c
  for part in path:
    node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
  if not sep or not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    raise ConfigError(
      f"weight_sharing search {spec!r}: {assignment!r} is not key=value of a key its config has"
    )
  old = node[leaf]
  if isinstance(old, bool):
    value = {"true": True, "false": False}.get(text.lower())
  else:
    try:
      value = type(old)(text) if isinstance(old, int | float | str) else None
    except ValueError:
      value = None
  if value is None:
    raise ConfigError(
      f"weight_sharing search {spec!r}: {key}={text!r} is not a {type(old).__name__}"
    )
  node[leaf] = value


def _search_config(
  load: ConfigLoader, spec: str, preset: str, seed: int, space: dict
) -> ml_collections.ConfigDict:
  """Return the search config of `spec` at `preset` with `seed`.

  `spec` is "<config>[/<strategy>]" and then any " key=value" overrides (a supernet-training try:
  "bench_one_shot/random sampling.mode=fair train_steps_per_epoch=120").
  """
  head, *assignments = spec.split()
  name, _, strategy = head.partition("/")
  c = load(name, preset)
  with c.unlocked():
    c.seed = seed
    if strategy:
      c.strategy.name = strategy
    for a in assignments:
      _override(c, spec, a)
  got = {k: v for k, v in c.space.items()}
  if got != space:
    raise ConfigError(
      f"weight_sharing search {spec!r} searches the space {got}, the table's is {space}: its "
      "shared weights would rank other networks"
    )
  return c


def _few_shot(spec: str) -> tuple[str, int | None, int]:
  """Return (spec without its few-shot words, the decision it splits on or None, the epochs of
  each sub-supernet): "few_shot=D" and "few_shot_epochs=N" (default 10) are evaluate's own."""
  words, split, epochs = [], None, 10
  for w in spec.split():
    key, _, value = w.partition("=")
    if key in ("few_shot", "few_shot_epochs"):
      if not value.isdigit() or (key == "few_shot_epochs" and int(value) < 1):
        raise ConfigError(f"weight_sharing search {spec!r}: {w!r} needs a non-negative integer")
      if key == "few_shot":
        split = int(value)
      else:
        epochs = int(value)
    else:
      words.append(w)
  return " ".join(words), split, epochs


def _run_and_score(c, wd: Path, members: np.ndarray) -> tuple[np.ndarray, int, float]:
  """Return (the shared-weight PSNR of each of `members`, the search's pick, its recorded wall
  time) of the search of config `c` in `wd`, run unless it finished there before."""
  method = SEARCH_METHODS.get(c.method)
  result = loop.finished(c, wd) or method.run(c, wd)
  scorer = method.scorer(c, wd, result)
  shared = np.asarray(scorer.score(members), np.float64)
  return shared, bench_space.arch_id(scorer.searched), float(result.get("search_wall_s", np.nan))


def _split(
  c, parent: Path, members: np.ndarray, decision: int, epochs: int
) -> tuple[np.ndarray, int, float]:
  """Few-shot NAS (Zhao et al. 2021) after the one-shot search of `c` in `parent`: per choice of
  `decision`, a sub-supernet starts from the parent's weights and trains `epochs` epochs on the
  members with that choice only; each member is scored by its own sub-supernet and the pick is
  the best-scored member. Return (scores, pick, the sub-supernets' wall time)."""
  if c.get("method") != "one_shot":
    raise ConfigError(f"few_shot splits a one-shot search's supernet, not a {c.method} search")
  spec = bench_space.Bench().token_spec()
  if not 0 <= decision < len(spec):
    raise ConfigError(f"few_shot={decision}: the bench space has decisions 0-{len(spec) - 1}")
  shared, wall = np.full(len(members), np.nan), 0.0
  for choice in range(spec.choices[decision]):
    sub = copy.deepcopy(c)
    with sub.unlocked():
      sub.sampling.fix, sub.init_from, sub.epochs = f"{decision}={choice}", str(parent), epochs
    wd = workdirs.prepare(parent.parent / f"{parent.name}_split{decision}={choice}")
    rows = members[:, decision] == choice  # a sub-supernet scores only its own members
    shared[rows], _, sub_wall = _run_and_score(sub, wd, members[rows])
    wall += sub_wall
  return shared, int(np.nanargmax(shared)), wall


def weight_sharing(
  config, t: table_lib.Table, truth: np.ndarray, workdir: Path, load: ConfigLoader
) -> list[dict]:
  """Return, per search of config.weight_sharing, tau/rho of its shared weights over every member
  against `truth` and the true rank of its pick, over its seeds (each search resumable)."""
  import scipy.stats  # here, not at the top: a second of every launcher's start

  ws = config.weight_sharing
  members = np.stack([bench_space.from_id(i) for i in range(t.size)])
  ok_truth = ~np.isnan(truth)
  out, panels = [], {}
  for spec in ws.searches:
    runs = []
    base, split, split_epochs = _few_shot(spec)
    for seed in range(int(ws.seeds)):
      preset = ws.get("preset") or config.preset
      c = _search_config(load, base, preset, seed, dict(t.raw["protocol"]["space"]))
      name = re.sub(r"[^\w.=-]+", "_", base)  # overrides name the workdir too
      wd = workdirs.prepare(workdir / "searches" / f"{name}_{seed}")
      shared, pick, wall = _run_and_score(c, wd, members)
      if split is not None:
        shared, pick, split_wall = _split(c, wd, members, split, split_epochs)
        wall += split_wall
      ok = ok_truth & np.isfinite(shared)
      runs.append(
        {
          "seed": seed,
          "tau": float(scipy.stats.kendalltau(shared[ok], truth[ok]).statistic),
          "rho": float(scipy.stats.spearmanr(shared[ok], truth[ok]).statistic),
          "pick": pick,
          "pick_rank": int(1 + np.sum(truth[ok_truth] > truth[pick])),
          "pick_percentile": float(100.0 * np.mean(truth[ok_truth] <= truth[pick])),
          "regret": float(np.nanmax(truth) - truth[pick]),
          # as recorded by the run (a search reused from the workdir: by its first run)
          "search_wall_s": wall,
          # every member's score by id (None: not finite), for a look past tau
          "shared_psnr": [round(float(v), 4) if np.isfinite(v) else None for v in shared],
        }
      )
      shown = {k: v for k, v in runs[-1].items() if k != "shared_psnr"}
      logging.info("bench evaluate: %s seed %d: %s", spec, seed, shown)
      panels.setdefault(spec, []).append(
        {"shared": shared, "truth": truth, "pick": pick, "tau": runs[-1]["tau"]}
      )
    out.append(
      {
        "search": spec,
        "tau": interval([r["tau"] for r in runs], bounds=TAU_RANGE),
        "rho": interval([r["rho"] for r in runs], bounds=TAU_RANGE),
        "pick_percentile": interval([r["pick_percentile"] for r in runs], bounds=PERCENTILE_RANGE),
        "regret": interval([r["regret"] for r in runs], bounds=REGRET_RANGE),
        "top10_rate": float(np.mean([r["pick_percentile"] >= 90.0 for r in runs])),
        "search_wall_s": float(np.median([r["search_wall_s"] for r in runs])),
        "runs": runs,
      }
    )
  plots.plot_weight_sharing(
    panels,
    workdir / "weight_sharing.png",
    f"shared weights against the table ({ws.seeds} seeds; star: each seed's pick)",
  )
  return out


def _fmt(ci: tuple[float, float, float], digits: int = 3) -> str:
  m, lo, hi = ci
  return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def report(result: dict) -> str:
  """Return the printed form of an evaluation result."""
  lines = [
    f"table: {result['table']} ({result['members']} members, truth: {result['metric']} PSNR, "
    f"best {result['best_psnr']:.3f} dB, median {result['median_psnr']:.3f} dB)",
  ]
  if result.get("lead"):
    w = max(len(r["method"]) for r in result["lead"])
    lines += [
      "every search method (budget in stand-alone trainings; regret in dB; tau: what the method "
      "ranks members by, against the truth; mean [95% interval]):",
      f"  {'method':<{w}} {'budget':>6}  {'pick percentile':<20} {'regret':<22} {'top 10%':>7}  "
      f"{'tau':<22} random at that budget",
    ]
    for r in result["lead"]:
      rand = r["random"]
      vs = "-" if rand is None else f"@{rand['queries']} {_fmt(rand['regret'])}: {r['verdict']}"
      lines.append(
        f"  {r['method']:<{w}} {r['budget']:>6.1f}  {_fmt(r['percentile'], 1):<20} "
        f"{_fmt(r['regret']):<22} {100 * r['top10_rate']:>6.0f}%  {_fmt(r['tau']):<22} {vs}"
      )
  if result["strategies"]:
    lines.append(
      f"black-box strategies, {result['search_seeds']} searches each, regret in dB "
      "(mean [95% interval]):"
    )
  for r in result["strategies"]:
    at = ", ".join(f"@{c} {_fmt(v)}" for c, v in r["regret"].items())
    lines.append(
      f"  {r['strategy']:<13} regret {at}; final pick percentile "
      f"{_fmt(r['final_percentile'], 1)}, top 10% in {100 * r['top10_rate']:.0f}% of searches"
    )
  if result.get("weight_sharing"):
    lines.append(
      f"weight-sharing searches on the bench space, {len(result['weight_sharing'][0]['runs'])} "
      "seeds each: shared-weight vs table PSNR over every member, and the pick's true rank:"
    )
  w = max((len(r["search"]) for r in result.get("weight_sharing", [])), default=0)
  for r in result.get("weight_sharing", []):
    ranks = ", ".join(str(x["pick_rank"]) for x in r["runs"])
    lines.append(
      f"  {r['search']:<{w}} tau {_fmt(r['tau'])}  rho {_fmt(r['rho'])}  pick ranks {ranks} of "
      f"{result['members']} (percentile {_fmt(r['pick_percentile'], 1)})"
    )
  lines.append("predictors of the truth over all members (Kendall tau, Spearman rho):")
  for name, (tau, rho) in result["predictors"].items():
    lines.append(f"  {name:<22} tau {tau:+.3f}  rho {rho:+.3f}")
  return "\n".join(lines)


def _check(config, t: table_lib.Table) -> str:
  for key in ("queries", "search_seeds", "batch"):
    v = config.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ConfigError(f"config.{key} must be a positive integer, got {v!r}")
  if config.queries > t.size:
    raise ConfigError(f"config.queries ({config.queries}) exceeds the space's {t.size} members")
  metric = config.metric or ("Set14" if "Set14" in t.tests else "val")
  t.psnr(metric)  # an unknown metric fails here, naming the table's
  for name in config.strategy_names:
    strategies.STRATEGIES.get(name)
  return metric


def run(
  config: ml_collections.ConfigDict, workdir: str | os.PathLike, load: ConfigLoader | None = None
) -> str:
  """Score the strategies of `config` against the table; write W/evaluate.json, W/regret.png and
  W/weight_sharing.png; return the report. `load` loads the weight-sharing searches' configs
  (needed when there are)."""
  raw = table_lib.load(config.table or None)
  if raw is None:
    raise ConfigError(
      "this nasr ships no benchmark table yet: give one with --config.table=W/table.json "
      "(nasr bench build writes it)"
    )
  t = table_lib.Table(raw)
  metric = _check(config, t)
  if not t.complete():
    logging.warning("the table is not complete: %d of %d members", len(t.ids), t.size)
  workdir = workdirs.prepare(workdir)
  truth = t.psnr(metric)
  result = {
    "table": str(config.table or table_lib.SHIPPED),
    "members": int(len(t.ids)),
    "metric": metric,
    "best_psnr": float(np.nanmax(truth)),
    "median_psnr": float(np.nanmedian(truth)),
    "search_seeds": int(config.search_seeds),
    "queries": int(config.queries),
    "strategies": [],
    "predictors": predictors(t, truth),
  }
  for name in config.strategy_names:
    logging.info(
      "bench evaluate: %s, %d searches of %d queries", name, config.search_seeds, config.queries
    )
    result["strategies"].append(score_strategy(config, name, t, truth))
  if config.weight_sharing.seeds > 0:
    if load is None:
      raise ConfigError(
        "weight-sharing searches need a config loader (nasr.bench_evaluate has one)"
      )
    result["weight_sharing"] = weight_sharing(config, t, truth, workdir, load)
  result["lead"] = lead(result, t, truth)
  writers.write_json(workdir / "evaluate.json", result)
  if result["strategies"]:  # the tries preset scores weight sharing only: no regret to draw
    plots.plot_regret(
      {r["strategy"]: r["regret_curve"] for r in result["strategies"]},
      workdir / "regret.png",
      f"regret against queries ({metric} PSNR, {config.search_seeds} searches, 95% intervals)",
    )
  text = report(result)
  (Path(workdir) / "evaluate.txt").write_text(text + "\n")
  return text
