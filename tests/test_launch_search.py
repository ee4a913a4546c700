"""DeCoNAS end to end through the launchers: search -> derive -> retrain -> evaluate; Ctrl-C resume.

One tiny search serves both tests: the end-to-end test checks and retrains its best.json, the
resume test compares it with a search stopped by SIGINT after its second epoch and resumed.
"""

import json
import signal

import chex
import numpy as np
import pytest

from nasr.checkpoint import Checkpointer
from tests import pins
from tests.launch_utils import check_ok, kill_after_checkpoint, retrain_and_evaluate, run_launcher

TINY = "--config=configs/deconas.py:tiny"
EPOCHS = 3  # the tiny preset's


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
  """Return the workdir of the uninterrupted tiny search."""
  w = tmp_path_factory.mktemp("deconas") / "search"
  check_ok(run_launcher("search", TINY, f"--workdir={w}"))
  return w


def test_search_derive_retrain_evaluate_tiny(searched, tmp_path):
  w = searched
  rows = json.loads((w / "candidates.json").read_text())
  rewards = [r["reward"] for r in rows]
  assert rewards == sorted(rewards, reverse=True) and len(rows) >= 1
  assert {"tokens", "psnr", "params", "macs_per_lr_pixel", "reward"} <= set(rows[0])
  best = json.loads((w / "best.json").read_text())
  assert best["space"] == "deconas" and best["tokens"] == rows[0]["tokens"]
  assert (w / "candidates.png").stat().st_size > 1000
  pins.check("deconas", w)  # the refactors kept the tiny search bit-identical
  history = [json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()]
  assert [h["step"] for h in history] == [1, 2, 3]

  result = retrain_and_evaluate(w / "best.json", tmp_path / "retrain")
  assert result["params"] == rows[0]["params"]  # the retrained network is the chosen child


def test_search_ctrl_c_resume_matches_uninterrupted(searched, tmp_path):
  # (The DARTS, HNAS and GP-NAS launcher tests SIGKILL theirs.)
  killed = tmp_path / "killed"
  code, err = kill_after_checkpoint("search", [TINY], killed, min_step=2, sig=signal.SIGINT)
  assert code == 130 and "Traceback" not in err, err[-2000:]
  assert err.strip().splitlines()[-1].startswith("interrupted: ")
  assert Checkpointer(killed).latest_step() < EPOCHS
  check_ok(run_launcher("search", TINY, f"--workdir={killed}"))
  ref = Checkpointer(searched).restore_arrays(EPOCHS)
  res = Checkpointer(killed).restore_arrays(EPOCHS)
  chex.assert_trees_all_close(ref["strategy"], res["strategy"], atol=0, rtol=0)
  chex.assert_trees_all_close(ref["w"], res["w"], atol=0, rtol=0)
  ref_best = json.loads((searched / "best.json").read_text())["tokens"]
  assert ref_best == json.loads((killed / "best.json").read_text())["tokens"]
  assert np.isfinite(json.loads((killed / "search_result.json").read_text())["best_psnr"])
