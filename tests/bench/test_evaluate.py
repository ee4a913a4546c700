"""`nasr bench evaluate` scores strategies against a table by lookup: checked on a made-up table
whose truth is known, so what the report says can be verified."""

import json

import numpy as np
import pytest

import nasr
from nasr.bench import evaluate, table
from nasr.configs import bench_eval
from nasr.configs.common import TINY_SPACES
from nasr.core.errors import ConfigError
from nasr.spaces import bench as bench_space

OP_VALUE = {"zero": 0.0, "skip": 0.1, "conv3x3": 0.5, "sep3x3": 0.3, "dil3x3": 0.4, "rcab": 0.6}


def made_up_table(seeds=3, noise=0.01, rng_seed=0) -> dict:
  """Return a complete table where a member's PSNR is 30 dB + the sum of its ops' values."""
  rng = np.random.default_rng(rng_seed)
  members = []
  for m in range(216):
    ops = [bench_space.OPS[t] for t in bench_space.from_id(m)]
    true = 30.0 + sum(OP_VALUE[o] for o in ops)
    runs = []
    for s in range(seeds):
      final = true + noise * rng.standard_normal()
      curve = [[10, final - 0.5, 0.8], [20, final, 0.85]]
      runs.append(
        {"seed": s, "curve": curve, "tests": {"Set5": [final + 2.0, 0.9]}, "train_s": 1.0}
      )
    members.append(
      {
        "id": m,
        "ops": ops,
        "params": 1000 + 100 * sum(o not in ("zero", "skip") for o in ops),
        "macs": 10.0 * m,
        "proxies": {"synflow": true + rng.standard_normal(), "grad_norm": float(rng.random())},
        "runs": runs,
      }
    )
  return {
    "format": table.FORMAT,
    "protocol": {
      "curve": [10, 20],
      "space": {"name": "bench", **TINY_SPACES["bench"], "skip": "bilinear"},
    },
    "provenance": {"tests": ["Set5"]},
    "members": members,
  }


@pytest.fixture
def table_file(tmp_path):
  path = tmp_path / "table.json"
  path.write_text(json.dumps(made_up_table()))
  return path


def test_the_table_reads_back_as_arrays_by_member_id(table_file):
  t = table.Table(table.load(table_file))
  assert t.complete() and t.per_seed("val").shape == (216, 3)
  best = int(np.nanargmax(t.psnr("val")))
  assert best == bench_space.arch_id([5, 5, 5])  # three RCABs: the made-up landscape's top
  np.testing.assert_allclose(t.psnr("Set5"), t.psnr("val") + 2.0)
  with pytest.raises(ConfigError, match="no metric 'Set14'"):
    t.psnr("Set14")
  s = table.spreads(t.per_seed("val"))
  assert s["members"] == 216 and s["ratio"] > 5


def test_evaluate_reports_regret_and_percentiles_that_match_the_table(table_file, tmp_path):
  c = bench_eval.get_config("tiny")
  c.table = str(table_file)
  c.strategy_names = ("random", "evolution", "local_search")
  c.search_seeds, c.queries = 4, 40
  c.weight_sharing.seeds = 0
  c.report_at = (10, 40)
  text = evaluate.run(c, tmp_path / "w")
  result = json.loads((tmp_path / "w" / "evaluate.json").read_text())
  assert result["metric"] == "val" and result["members"] == 216
  truth = table.Table(table.load(table_file)).psnr("val")
  for r in result["strategies"]:
    curve = np.array([m for m, _, _ in r["regret_curve"]])
    assert curve.shape == (40,) and np.all(np.diff(curve) <= 1e-12)  # the pick only improves
    for pick in r["picks"]:  # the reported percentile is the pick's rank in the table
      assert 0.0 <= np.nanmax(truth) - truth[pick] <= curve[0] + 1e-9
    assert 0 <= r["final_percentile"][0] <= 100
  by = {r["strategy"]: r for r in result["strategies"]}
  # on an additive landscape, hill climbing finds the top quickly; random search rarely does
  assert by["local_search"]["regret"]["40"][0] < by["random"]["regret"]["40"][0]
  assert "synflow" in text and "regret" in text and (tmp_path / "w" / "regret.png").is_file()
  # the made-up curve's first point is its final one minus 0.5: a perfect low-fidelity proxy
  assert result["predictors"]["curve @10 steps"][0] > 0.95
  # one run's validation PSNR (what a search sees): the truth plus 0.01 dB of seed noise
  assert result["predictors"][evaluate.SIGNAL][0] > 0.9
  # the lead table: each strategy at its 40 queries, then the best proxy's top member
  lead = {r["method"]: r for r in result["lead"]}
  assert list(lead)[:3] == ["random", "evolution", "local_search"]
  local = lead["local_search"]
  assert local["regret"] == by["local_search"]["regret"]["40"] and local["budget"] == 40
  assert local["random"]["regret"] == by["random"]["regret"]["40"]
  assert local["verdict"] == evaluate.against_random(local["regret"], by["random"]["regret"]["40"])
  # synflow is the made-up truth plus noise: the best proxy; its row is its top member's rank
  (proxy,) = [r for r in result["lead"] if r["kind"] == "proxy"]
  t = table.Table(table.load(table_file))
  top = int(np.argmax(t.proxies["synflow"]))
  assert proxy["method"] == "zero-cost proxy synflow" and proxy["budget"] == 0
  assert proxy["percentile"][0] == pytest.approx(100.0 * np.mean(truth <= truth[top]))
  assert proxy["regret"][0] == pytest.approx(np.nanmax(truth) - truth[top])
  assert "every search method" in text and "zero-cost proxy synflow" in text


def test_intervals_stay_in_the_range_their_values_can_take():
  # three percentiles near the top: the t interval reaches past 100 unless clipped
  mean, lo, hi = evaluate.interval([99.0, 100.0, 80.0], bounds=evaluate.PERCENTILE_RANGE)
  assert hi == 100.0 and lo < mean < hi
  assert evaluate.interval([99.0, 100.0, 80.0])[2] > 100.0
  assert evaluate.interval([0.9, -0.9, 0.8], bounds=evaluate.TAU_RANGE)[1:] == (-1.0, 1.0)


def test_a_method_beats_random_only_when_the_intervals_do_not_overlap():
  rand = (0.5, 0.4, 0.6)
  assert evaluate.against_random((0.1, 0.05, 0.39), rand) == "beats random"
  assert evaluate.against_random((0.1, 0.05, 0.41), rand).startswith("ties")
  assert evaluate.against_random((0.9, 0.61, 1.2), rand) == "worse than random"
  assert evaluate.against_random((0.9, 0.61, 1.2), None).startswith("no random")
  # one search's regret has no interval: its zero width would "beat" any interval it misses
  assert evaluate.against_random((0.1, 0.1, 0.1), rand, searches=1).startswith("one search")
  assert evaluate.against_random((0.1, 0.1, 0.1), rand, searches=2) == "beats random"
  assert evaluate.against_random((0.1, 0.1, 0.1), rand) == "beats random"  # an exact value


def test_a_search_is_reproducible_from_its_seed():
  from nasr import strategies

  t = table.Table(made_up_table(seeds=2, noise=1.0))
  spec = bench_space.Bench().token_spec()
  args = (strategies.get("evolution", spec, population=5, sample_size=2), t.per_seed("val"))
  a = evaluate.search_once(*args, 30, 4, 0)
  assert len(a) == 30
  assert evaluate.search_once(*args, 30, 4, 0) == a
  assert evaluate.search_once(*args, 30, 4, 1) != a


def test_bad_evaluation_settings_fail_in_one_line(table_file, tmp_path):
  c = bench_eval.get_config("tiny")
  c.table = str(table_file)
  c.weight_sharing.seeds = 0
  c.queries = 500
  with pytest.raises(ConfigError, match="exceeds the space's 216 members"):
    evaluate.run(c, tmp_path / "a")
  c.queries, c.metric = 10, "Urban100"
  with pytest.raises(ConfigError, match="no metric 'Urban100'"):
    evaluate.run(c, tmp_path / "b")
  c.metric, c.table = "", str(tmp_path / "missing.json")
  with pytest.raises(ConfigError, match="no benchmark table there"):
    evaluate.run(c, tmp_path / "c")


def test_weight_sharing_searches_run_on_the_bench_space_and_rank_every_member(table_file, tmp_path):
  c = bench_eval.get_config("tiny")
  c.table = str(table_file)
  c.strategy_names = ("random",)
  # DARTS here; the one-shot search on the bench space: tests/searches/test_one_shot.py
  c.weight_sharing.searches = ("bench_darts",)
  text = nasr.bench_evaluate(c, tmp_path / "w")
  result = json.loads((tmp_path / "w" / "evaluate.json").read_text())
  for r in result["weight_sharing"]:
    (run,) = r["runs"]
    assert -1.0 <= run["tau"] <= 1.0 and 1 <= run["pick_rank"] <= 216
  assert "bench_darts" in text and "pick ranks" in text
  assert (tmp_path / "w" / "weight_sharing.png").is_file()
  # its lead row: the pick's regret, a budget from the search's recorded wall time
  (row,) = [r for r in result["lead"] if r["kind"] == "weight sharing"]
  truth = table.Table(table.load(table_file)).psnr("val")
  assert row["regret"][0] == pytest.approx(np.nanmax(truth) - truth[run["pick"]])
  assert row["budget"] == pytest.approx(run["search_wall_s"] / 1.0)  # made-up runs take 1 s
  # a search's space must be the table's: otherwise its weights rank other networks
  raw = json.loads(table_file.read_text())
  raw["protocol"]["space"]["channels"] = 8
  table_file.write_text(json.dumps(raw))
  with pytest.raises(ConfigError, match="the table's is"):
    nasr.bench_evaluate(c, tmp_path / "w2")


def test_a_weight_sharing_search_spec_carries_typed_overrides():
  # A supernet-training try is one line of config.weight_sharing.searches.
  load = nasr.load_config
  c = evaluate._search_config(
    load,
    "bench_one_shot/random sampling.mode=fair sampling.warmup_epochs=2 train_steps_per_epoch=7",
    "tiny",
    3,
    dict(load("bench_one_shot", "tiny").space),
  )
  assert (c.seed, c.strategy.name, c.sampling.mode) == (3, "random", "fair")
  assert (c.sampling.warmup_epochs, c.train_steps_per_epoch) == (2, 7)
  for bad, match in (
    ("bench_one_shot sampling.modes=fair", "not key=value of a key"),
    ("bench_one_shot epochs=many", "epochs='many' is not a int"),
    ("bench_one_shot epochs", "not key=value"),
  ):
    with pytest.raises(ConfigError, match=match):
      evaluate._search_config(load, bad, "tiny", 0, dict(load("bench_one_shot", "tiny").space))


def test_the_tries_preset_runs_without_black_box_strategies(table_file, tmp_path):
  c = bench_eval.get_config("tries")
  assert c.strategy_names == () and c.weight_sharing.preset == "default"
  assert len(c.weight_sharing.searches) >= 4  # each try one line, judged by its tau
  c.table, c.weight_sharing.seeds = str(table_file), 0  # the searches themselves: tested above
  text = nasr.bench_evaluate(c, tmp_path / "w")
  result = json.loads((tmp_path / "w" / "evaluate.json").read_text())
  assert result["strategies"] == [] and "synflow" in text
  assert not (tmp_path / "w" / "regret.png").exists()  # nothing to draw


def test_few_shot_words_are_split_off_a_search_spec():
  assert evaluate._few_shot("bench_one_shot/random few_shot=0 epochs=3") == (
    "bench_one_shot/random epochs=3",
    0,
    10,
  )
  assert evaluate._few_shot("bench_one_shot few_shot_epochs=4 few_shot=2")[1:] == (2, 4)
  assert evaluate._few_shot("bench_darts") == ("bench_darts", None, 10)
  for bad in ("few_shot=x", "few_shot=-1", "few_shot_epochs=0"):
    with pytest.raises(ConfigError, match=f"{bad!r} needs a non-negative integer"):
      evaluate._few_shot(f"bench_one_shot/random {bad}")


@pytest.mark.slow  # seven tiny searches, 80 s (the pieces: tests/searches/test_one_shot.py)
def test_a_few_shot_split_scores_each_member_with_its_own_sub_supernet(table_file, tmp_path):
  from nasr.searches.methods import SEARCH_METHODS

  c = bench_eval.get_config("tiny")
  c.table, c.strategy_names = str(table_file), ("random",)
  c.weight_sharing.searches = ("bench_one_shot/random few_shot=1 few_shot_epochs=1",)
  nasr.bench_evaluate(c, tmp_path / "w")
  (r,) = json.loads((tmp_path / "w" / "evaluate.json").read_text())["weight_sharing"]
  (run,) = r["runs"]
  searches = tmp_path / "w" / "searches"
  parent = searches / "bench_one_shot_random_0"  # the plain search's workdir: shared with it
  subs = sorted(searches.glob("bench_one_shot_random_0_split1=*"))
  assert len(subs) == 6 and parent.is_dir()
  walls = [json.loads((d / "search_result.json").read_text())["search_wall_s"] for d in subs]
  parent_wall = json.loads((parent / "search_result.json").read_text())["search_wall_s"]
  assert run["search_wall_s"] == pytest.approx(parent_wall + sum(walls))
  shared = np.array(run["shared_psnr"], float)
  assert run["pick"] == int(np.nanargmax(shared))
  # the members with choice 2 at decision 1 are scored by the sub-supernet trained on them
  sub = evaluate._search_config(
    nasr.load_config, "bench_one_shot/random", "tiny", 0, dict(_table_space(c))
  )
  with sub.unlocked():
    sub.sampling.fix, sub.init_from, sub.epochs = "1=2", str(parent), 1
  result = json.loads((subs[2] / "search_result.json").read_text())
  scorer = SEARCH_METHODS.get("one_shot").scorer(sub, subs[2], result)
  members = np.stack([bench_space.from_id(i) for i in range(216)])
  rows = members[:, 1] == 2
  np.testing.assert_allclose(shared[rows], np.asarray(scorer.score(members[rows])), atol=1e-4)
  parent_scores = evaluate._run_and_score(
    evaluate._search_config(nasr.load_config, "bench_one_shot/random", "tiny", 0, _table_space(c)),
    parent,
    members[rows],
  )[0]
  assert not np.allclose(shared[rows], parent_scores)  # not the parent's weights


def _table_space(c) -> dict:
  """Return the bench space of the table `c` evaluates against."""
  return dict(table.load(c.table)["protocol"]["space"])
