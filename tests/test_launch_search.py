"""DeCoNAS end to end through the launchers: search -> derive -> retrain -> evaluate; SIGKILL resume."""

import json

import chex
import numpy as np

from nasr.checkpoint import Checkpointer
from tests import pins
from tests.launch_utils import check_ok, kill_after_checkpoint, run_launcher

TINY = "--config=configs/deconas.py:tiny"


def test_search_derive_retrain_evaluate_tiny(tmp_path):
  w = tmp_path / "search"
  check_ok(run_launcher("search", TINY, f"--workdir={w}"))
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

  r = tmp_path / "retrain"
  check_ok(
    run_launcher(
      "train",
      "--config=configs/train.py:tiny",
      f"--config.arch={w / 'best.json'}",
      f"--workdir={r}",
    )
  )
  check_ok(
    run_launcher(
      "evaluate",
      "--config=configs/evaluate.py:tiny",
      f"--config.checkpoint={r}",
      f"--workdir={r / 'eval'}",
    )
  )
  result = json.loads((r / "eval" / "eval.json").read_text())
  assert result["params"] == rows[0]["params"]  # the retrained network is the chosen child


def test_search_sigkill_resume_matches_uninterrupted(tmp_path):
  args = [TINY, "--config.epochs=8", "--config.derive.candidates=2"]
  check_ok(run_launcher("search", *args, f"--workdir={tmp_path / 'ref'}"))
  killed = tmp_path / "killed"
  kill_after_checkpoint("search", args, killed, min_step=2)
  assert Checkpointer(killed).latest_step() < 8
  check_ok(run_launcher("search", *args, f"--workdir={killed}"))
  ref = Checkpointer(tmp_path / "ref").restore_arrays(8)
  res = Checkpointer(killed).restore_arrays(8)
  chex.assert_trees_all_close(ref["strategy"], res["strategy"], atol=0, rtol=0)
  chex.assert_trees_all_close(ref["w"], res["w"], atol=0, rtol=0)
  ref_best = json.loads((tmp_path / "ref" / "best.json").read_text())["tokens"]
  assert ref_best == json.loads((killed / "best.json").read_text())["tokens"]
  assert np.isfinite(json.loads((killed / "search_result.json").read_text())["best_psnr"])
