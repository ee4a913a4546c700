"""GP-NAS end to end through launch.search (tiny preset), resuming after SIGKILL, and the same
from-scratch search run by another strategy."""

import json

import chex
import numpy as np
import pytest

from nasr import spaces
from nasr.checkpoint import Checkpointer
from tests import pins
from tests.launch_utils import check_ok, kill_after_checkpoint, run_launcher

TINY = "--config=configs/gpnas.py:tiny"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """Return the workdir of an uninterrupted tiny search (2 rounds x 2 candidates)."""
  w = tmp_path_factory.mktemp("gpnas") / "ref"
  check_ok(run_launcher("search", TINY, f"--workdir={w}"))
  return w


def _observations(w):
  return [(o["tokens"], o["psnr"]) for o in json.loads((w / "gp.json").read_text())["observed"]]


def test_tiny_search_writes_consistent_results(reference):
  w = reference
  gp = json.loads((w / "gp.json").read_text())
  observed = gp["observed"]
  assert gp["space"] == "drn" and gp["grid_size"] == 16 and len(observed) == 4
  assert len({tuple(o["tokens"]) for o in observed}) == 4  # never the same architecture twice
  for o in observed:
    train = json.loads(
      (w / "candidates" / f"{o['candidate']:03d}" / "train_result.json").read_text()
    )
    assert o["psnr"] == train["val"]["psnr"] and np.isfinite(o["psnr"])  # the reward is measured
    assert np.isfinite(o["pred_mean"]) and o["pred_std"] >= 0 and np.isfinite(o["loo_mean"])
  assert [o["proposed_mean"] for o in observed[:2]] == [None, None]  # round 1: nothing known yet
  assert all(np.isfinite(o["proposed_mean"]) for o in observed[2:])
  preds = [r["pred_psnr"] for r in gp["grid_top"]]
  assert preds == sorted(preds, reverse=True)
  by_tokens = {tuple(r["tokens"]): r for r in gp["grid_top"]}

  topk = json.loads((w / "topk.json").read_text())
  assert len(topk) == 2 and {r["family"] for r in topk} == {"drn", "rcan"}  # heterogeneous
  assert topk[0]["tokens"] == gp["grid_top"][0]["tokens"]  # the best prediction leads
  for rank, r in enumerate(topk):
    assert r["rank"] == rank
    if tuple(r["tokens"]) in by_tokens:
      assert r["pred_psnr"] == by_tokens[tuple(r["tokens"])]["pred_psnr"]
    assert np.isfinite(r["measured_psnr"])  # measure_topk trains the unobserved ones
    space, arch = spaces.load_arch(r["arch_file"])  # ready for launch.train --config.arch
    assert space.encode(arch).tolist() == r["tokens"] and arch.family == r["family"]
  assert (w / "gp.png").stat().st_size > 1000
  history = [json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()]
  assert [h["step"] for h in history] == [1, 2] and history[-1]["count"] == 4
  summary = json.loads((w / "search_result.json").read_text())
  assert summary["best_name"] == topk[0]["name"] and summary["observed"] == 4


def test_sigkill_resume_reaches_the_same_observations(reference, tmp_path):
  killed = tmp_path / "killed"
  kill_after_checkpoint("search", [TINY], killed, min_step=1)
  assert Checkpointer(killed).latest_step() == 1  # killed once round 1 is saved
  check_ok(run_launcher("search", TINY, f"--workdir={killed}"))
  assert _observations(killed) == _observations(reference)
  ref = pins.restore_arrays(reference, 2)
  res = pins.restore_arrays(killed, 2)
  chex.assert_trees_all_close(ref["strategy"], res["strategy"], atol=0, rtol=0)
  ref_topk = [r["tokens"] for r in json.loads((reference / "topk.json").read_text())]
  assert ref_topk == [r["tokens"] for r in json.loads((killed / "topk.json").read_text())]


def test_tiny_search_ends_where_its_stable_pin_says(reference):
  pins.check_stable("gpnas", reference)  # any CPU: choices exact, floats to 1e-4


def test_tiny_search_is_bit_identical_to_its_pin_on_a_recorded_host(reference):
  pins.check_exact("gpnas", reference)  # the refactors kept the tiny search bit-identical


def test_the_from_scratch_search_runs_the_random_strategy(tmp_path):
  """Any registered strategy runs the loop; without hooks of its own it gets the default report."""
  w = tmp_path / "random"
  check_ok(run_launcher("search", TINY, "--config.strategy.name=random", f"--workdir={w}"))
  candidates = json.loads((w / "candidates.json").read_text())
  assert [c["candidate"] for c in candidates] == [0, 1, 2, 3]
  for c in candidates:
    train = json.loads(
      (w / "candidates" / f"{c['candidate']:03d}" / "train_result.json").read_text()
    )
    assert c["psnr"] == train["val"]["psnr"] and np.isfinite(c["psnr"])
    assert "proposed_log_prob" in c  # the default records what the strategy said of its proposal
  topk = json.loads((w / "topk.json").read_text())
  assert len(topk) == 2 and topk[0]["measured_psnr"] == max(c["psnr"] for c in candidates)
  assert topk[0]["measured_psnr"] >= topk[1]["measured_psnr"]
  assert topk[0]["tokens"] != topk[1]["tokens"]
  for rank, r in enumerate(topk):
    space, arch = spaces.load_arch(w / "topk" / f"{rank}.json")  # ready for launch.train
    assert space.encode(arch).tolist() == r["tokens"] and r["arch_file"] == str(
      w / "topk" / f"{rank}.json"
    )
  assert not (w / "gp.json").exists()  # the GP's report is the gp strategy's hook
  history = [json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()]
  assert [h["step"] for h in history] == [1, 2] and history[-1]["count"] == 4
  summary = json.loads((w / "search_result.json").read_text())
  assert summary["best_name"] == topk[0]["name"] and summary["observed"] == 4
