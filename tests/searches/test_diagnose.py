"""The diagnostics' inputs: which runs it takes, what it says about the others, and its pool."""

import json

import numpy as np
import pytest

from nasr import spaces
from nasr.core import ConfigError
from nasr.experiment import load_config
from nasr.searches import diagnose


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
