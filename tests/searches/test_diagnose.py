"""The diagnostics' inputs: which runs it takes, what it says about the others, and its pool."""

import json

import numpy as np
import pytest

import nasr
from nasr import spaces
from nasr.core import ConfigError
from nasr.experiment import load_config
from nasr.searches import diagnose
from nasr.spaces import bench as bench_space
from tests.bench.test_evaluate import made_up_table


def _config(search) -> "diagnose.ml_collections.ConfigDict":
  config = load_config("diagnose", "tiny", lock=False)
  config.search = str(search)
  return config


def _fake_search(w, method: str, finished: bool = True):
  w.mkdir(parents=True, exist_ok=True)
  (w / "run.json").write_text(
    json.dumps({"kind": f"{method} search", "config": {"method": method}})
  )
  if finished:
    (w / "search_result.json").write_text("{}")
  return w


@pytest.mark.parametrize(
  ("make", "message"),
  [
    (lambda w: w / "missing", "must be the workdir of a finished search"),
    (lambda w: w, r"holds no search \(run.json is missing\)"),
    (lambda w: _fake_search(w / "s", "one_shot", finished=False), "has not finished"),
    (lambda w: _fake_search(w / "s", "gp"), "GP-NAS trains every candidate stand-alone already"),
  ],
)
def test_a_run_it_cannot_diagnose_is_named(tmp_path, make, message):
  with pytest.raises(ConfigError, match=message):
    diagnose.run(_config(make(tmp_path)), tmp_path / "d")


def test_samples_are_drawn_from_the_pool(tmp_path):
  config = _config(_fake_search(tmp_path / "s", "darts"))
  config.samples = config.pool + 1
  with pytest.raises(ConfigError, match=r"config.samples \(7\) and config.random \(2\) are drawn"):
    diagnose.run(config, tmp_path / "d")
  config.samples, config.random = 2, -1
  with pytest.raises(ConfigError, match="config.random must be an integer >= 0"):
    diagnose.run(config, tmp_path / "d")


def test_the_pool_is_distinct_valid_and_uniform():
  # DARTS tokens that read one input twice are not architectures: rejected, not repaired.
  space = spaces.get("darts_sr", cells=1, channels=4, nodes=3)
  pool = diagnose.uniform_architectures(space, np.random.default_rng(0), 400)
  assert len({t.tobytes() for t in pool}) == len(pool) == 400
  for t in pool:
    space.decode(t)
  # Node 2's first input takes each of its 4 values about equally often.
  counts = np.bincount(pool[:, 8], minlength=4)
  assert counts.min() > 70, counts
  # A space smaller than the request gives all it has.
  tiny = spaces.get("darts_sr", ops="skip_connect,none", cells=1, channels=4, nodes=1)
  assert len(diagnose.uniform_architectures(tiny, np.random.default_rng(0), 50)) == 2


def test_a_benchmark_table_replaces_stand_alone_training(tmp_path):
  # A one-shot search of the bench space, diagnosed against a table of that space: nothing is
  # trained stand-alone (no sub-run), every architecture's stand-alone PSNR is the table's, and
  # the whole space is ranked with the shared weights.
  search = load_config("bench_one_shot", "tiny", lock=False)
  search.epochs, search.train_steps_per_epoch, search.controller_steps_per_epoch = 1, 2, 1
  search.derive.candidates = 2
  nasr.run_search(search, tmp_path / "s")
  raw = made_up_table()
  table_file = tmp_path / "table.json"
  table_file.write_text(json.dumps(raw))
  config = _config(tmp_path / "s")
  config.random_search, config.table = False, str(table_file)
  summary = nasr.diagnose(config, tmp_path / "d")
  report = json.loads((tmp_path / "d" / "ranking.json").read_text())
  assert not (tmp_path / "d" / "standalone").exists() and report["standalone"]["source"]
  truth = {m["id"]: np.mean([r["curve"][-1][1] for r in m["runs"]]) for m in raw["members"]}
  for row in report["architectures"]:
    assert row["standalone_psnr"] == pytest.approx(truth[bench_space.arch_id(row["tokens"])])
  t = report["table"]
  assert t["members"] == 216 and -1 <= t["kendall_tau"] <= 1 and 1 <= t["searched_rank"] <= 216
  assert summary["searched_true_rank"] == f"{t['searched_rank']} of 216 members"
  # A table of another space is not used: the architectures are trained as before.
  assert (
    nasr.bench.table.standalone_lookup(table_file)(spaces.get("bench"), np.zeros((1, 3))) is None
  )
  # Named in the config but of another space: refused before anything is trained.
  other = dict(
    raw, protocol={**raw["protocol"], "space": {**raw["protocol"]["space"], "channels": 3}}
  )
  (tmp_path / "other.json").write_text(json.dumps(other))
  config.table = str(tmp_path / "other.json")
  with pytest.raises(
    ConfigError, match=r"config.table=.*other.json: the table is of another space"
  ):
    nasr.diagnose(config, tmp_path / "d2")
  assert not (tmp_path / "d2" / "standalone").exists()
