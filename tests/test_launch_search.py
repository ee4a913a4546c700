"""DeCoNAS end to end through the launchers: search -> derive -> retrain -> evaluate; Ctrl-C resume.

One tiny search serves both tests: the end-to-end test checks and retrains its best.json, the
resume test compares it with a search stopped by SIGINT after its second epoch and resumed.
"""

import json
import shutil
import signal
from pathlib import Path

import chex
import numpy as np
import pytest

from nasr import experiment, spaces
from nasr.checkpoint import Checkpointer
from nasr.core.errors import Interrupted
from nasr.estimation import ranking
from nasr.experiment import load_config, run_search
from tests import pins
from tests.launch_utils import (
  REPO,
  check_ok,
  kill_after_checkpoint,
  random_search,
  retrain_and_evaluate,
  run_launcher,
  run_nasr,
  signal_at_batch,
)

TINY = "--config=configs/deconas.py:tiny"
EPOCHS = 3  # the tiny preset's
_CONFIG = load_config(REPO / "configs" / "deconas.py", "tiny")
W_STEPS = _CONFIG.train_steps_per_epoch  # shared-weight steps per epoch
STEPS = W_STEPS + _CONFIG.controller_steps_per_epoch  # checkpoint ids per epoch
TIMED = {"NASR_RETRAIN_TIMING": "1"}  # this module's first search times the retrain (next commands)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
  """Return the workdir of the uninterrupted tiny search, run as a user would after pip install.

  The installed `nasr` command, from a folder outside the checkout, with the config by name.
  """
  outside = tmp_path_factory.mktemp("deconas")
  r = check_ok(
    run_nasr("search", "--config=deconas:tiny", "--workdir=search", cwd=outside, env=TIMED)
  )
  (outside / "first_run.out").write_text(r.stdout)
  return outside / "search"


def _summary(stdout: str) -> dict:
  lines = stdout.split("next:")[0].splitlines()
  return {k: v for k, _, v in (line.partition(": ") for line in lines) if not k.endswith("_json")}


def _timed(step_s: float, scaled: bool = False, platform: str = "cpu") -> dict:
  size = {"batch": 1, "patch": 16} if scaled else {"batch": 16, "patch": 32}
  return {"step_s": step_s, "scaled": scaled, "platform": platform, **size}


def test_retrain_lines_estimate_the_time_and_add_a_short_retrain_when_it_is_long():
  retrain = load_config("train", lock=False)  # 3000 steps, batch 16 of 32x32
  w, flags = Path("W"), ("--config.arch_channels=64",)
  lines = experiment.retrain_lines(w / "best.json", w, flags, retrain, _timed(3.13))
  assert lines == [
    "next: retrain the architecture found (3000 steps, about 2.6 h on this host), then score it "
    "against bicubic:",
    "  nasr train --config=train --config.arch=W/best.json --config.arch_channels=64 "
    "--workdir=W/retrain",
    "  nasr evaluate --config=evaluate --config.checkpoint=W/retrain --workdir=W/retrain/eval",
    "or first a short retrain (190 steps, about 10 min; a rougher network, for a first look):",
    "  nasr train --config=train --config.arch=W/best.json --config.arch_channels=64 "
    "--config.steps=190 --workdir=W/retrain_short",
    "  nasr evaluate --config=evaluate --config.checkpoint=W/retrain_short "
    "--workdir=W/retrain_short/eval",
    "(estimates from 3.13 s a training step of this network, timed on this host at batch 16 of "
    "32x32 LR patches; validation not counted)",
  ]
  # 25 minutes: no short variant; a step count the search set is replaced in the short one.
  quick = experiment.retrain_lines(w / "best.json", w, (), retrain, _timed(0.5))
  assert "(3000 steps, about 25 min on this host)" in quick[0] and len(quick) == 4
  long = experiment.retrain_lines(
    w / "best.json", w, ("--config.steps=9000",), retrain, _timed(3.13)
  )
  assert long[4].endswith(" --config.steps=190 --workdir=W/retrain_short")
  assert "--config.steps=9000" not in long[4]
  # Scaled from a small probe: on a CPU a lower bound, elsewhere an estimate.
  slow = experiment.retrain_lines(w / "best.json", w, flags, retrain, _timed(124.0, scaled=True))
  assert "(3000 steps, at least 4.3 days on this host)" in slow[0] and len(slow) == 4
  assert (
    "scaled from one timed on this host at batch 1 of 16x16 LR patches to batch 16 of 32x32"
    in (slow[-1])
  )
  assert "a lower bound" in slow[-1]
  gpu = experiment.retrain_lines(w / "best.json", w, flags, retrain, _timed(20.0, True, "gpu"))
  assert "(3000 steps, about 16.7 h on this host)" in gpu[0]
  assert "(30 steps, about 10 min;" in gpu[3] and "lower bound" not in gpu[-1]
  # Not timed: the commands alone.
  assert experiment.retrain_lines(w / "best.json", w, flags, retrain, None) == [
    "next: retrain the architecture found, then score it against bicubic:",
    *lines[1:3],
  ]


def test_a_short_retrain_takes_about_ten_minutes_in_two_significant_digits():
  assert experiment.short_retrain_steps(3000, 3.13) == 190
  assert experiment.short_retrain_steps(3000, 0.6) is None  # 30 min: not long
  assert experiment.short_retrain_steps(3000, 0.61) == 980
  assert experiment.short_retrain_steps(400_000, 0.0071) == 84_000
  assert experiment.short_retrain_steps(100, 70.0) is None  # 8 steps would say nothing


def test_a_finished_search_relaunched_shows_its_summary_and_the_next_commands(searched, tmp_path):
  first = (searched.parent / "first_run.out").read_text()
  assert "next: retrain the architecture found (3000 steps, about " in first
  assert " on this host), then score it against bicubic:" in first
  assert (
    "nasr train --config=train --config.arch=search/best.json --workdir=search/retrain" in first
  )
  w = tmp_path / "search"
  shutil.copytree(searched, w)  # (times kept) the other tests read the original
  before = sorted(p.name for p in (w / "checkpoints").iterdir())
  r = check_ok(
    run_nasr("search", "--config=deconas:tiny", "--workdir=search", cwd=tmp_path, env=TIMED)
  )
  # The same summary, read back (a path key names the original workdir), and the same commands.
  assert (
    _summary(r.stdout) == _summary(first) and r.stdout.split("next:")[1] == first.split("next:")[1]
  )
  assert "this search has finished" in r.stderr and "epoch 1/" not in r.stderr
  assert sorted(p.name for p in (w / "checkpoints").iterdir()) == before
  # More epochs is another config: the run continues from its last checkpoint.
  more = run_nasr(
    "search", "--config=deconas:tiny", "--config.epochs=4", "--workdir=search", cwd=tmp_path
  )
  assert "resumed the search after epoch 3" in check_ok(more).stderr and "epoch 4/4" in more.stderr
  assert f"resuming {w} after epoch 3 of a run now 4 epochs long (was 3): " in more.stderr


def test_diagnose_ranks_shared_weights_and_compares_the_searched_with_random(searched, tmp_path):
  def diagnose():
    return check_ok(
      run_nasr(
        "diagnose",
        "--config=diagnose:tiny",
        f"--config.search={searched}",
        "--workdir=diag",
        cwd=tmp_path,
      )
    )

  out = diagnose().stdout
  w = tmp_path / "diag"
  report = json.loads((w / "ranking.json").read_text())
  rows = report["architectures"]
  best = json.loads((searched / "search_result.json").read_text())["best_tokens"]
  assert rows[0]["roles"][0] == "searched" and rows[0]["tokens"] == best
  assert any("random_search" in r["roles"] for r in rows)
  # The random search ran at the searched run's budget, with the random strategy.
  r_config = json.loads((w / "random_search" / "run.json").read_text())["config"]
  s_config = json.loads((searched / "run.json").read_text())["config"]
  assert r_config["strategy"] == {"name": "random"}
  assert {k: v for k, v in r_config.items() if k != "strategy"} == {
    k: v for k, v in s_config.items() if k != "strategy"
  }
  stratified = [r for r in rows if "stratified" in r["roles"]]
  randoms = [r["standalone_psnr"] for r in rows if "random" in r["roles"]]
  assert len(stratified) == report["n"] == 3 and len(randoms) == 2
  a = [r["shared_psnr"] for r in stratified]
  b = [r["standalone_psnr"] for r in stratified]
  assert report["kendall_tau"] == pytest.approx(ranking.kendall_tau(a, b))
  assert report["spearman_rho"] == pytest.approx(ranking.spearman_rho(a, b))
  assert a == sorted(a)  # drawn over the pool's range, lowest first
  pool = report["pool"]
  assert pool["shared_psnr_min"] <= a[0] and a[-1] <= pool["shared_psnr_max"]
  baseline = report["baseline"]
  assert baseline["random_median"] == pytest.approx(float(np.median(randoms)))
  assert baseline["searched"] == rows[0]["standalone_psnr"]
  assert baseline["searched_beats"] == sum(rows[0]["standalone_psnr"] > p for p in randoms)
  # Every number comes from a stand-alone sub-run of its own, with the same budget and seed.
  for r in rows:
    sub = json.loads((w / "standalone" / r["id"] / "train_result.json").read_text())
    assert sub["val"]["psnr"] == pytest.approx(r["standalone_psnr"]) and sub["step"] == 4
    arch = json.loads((w / "standalone" / r["id"] / "arch.json").read_text())
    assert arch["tokens"] == r["tokens"]
  assert (w / "ranking.png").stat().st_size > 0
  assert f"kendall_tau: {report['kendall_tau']:.4f}" in out
  # Relaunched: every sub-run is read back, nothing is trained again, the report is the same.
  stamps = sorted((p, p.stat().st_mtime) for p in w.glob("standalone/*/train_result.json"))
  diagnose()
  again = json.loads((w / "ranking.json").read_text())
  assert sorted((p, p.stat().st_mtime) for p in w.glob("standalone/*/train_result.json")) == stamps
  assert again["architectures"] == rows


def test_search_derive_retrain_evaluate_tiny(searched, tmp_path):
  w = searched
  rows = json.loads((w / "candidates.json").read_text())
  rewards = [r["reward"] for r in rows]
  assert rewards == sorted(rewards, reverse=True) and len(rows) >= 1
  assert {"tokens", "psnr", "params", "macs_per_lr_pixel", "reward"} <= set(rows[0])
  best = json.loads((w / "best.json").read_text())
  assert best["space"] == "deconas" and best["tokens"] == rows[0]["tokens"]
  assert (w / "candidates.png").stat().st_size > 1000
  history = [json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()]
  assert [h["step"] for h in history] == [1, 2, 3]

  result = retrain_and_evaluate(w / "best.json", tmp_path / "retrain")
  assert result["params"] == rows[0]["params"]  # the retrained network is the chosen child


def test_search_ctrl_c_resume_matches_uninterrupted(searched, tmp_path):
  # (The DARTS, HNAS and GP-NAS launcher tests SIGKILL theirs.)
  killed = tmp_path / "killed"
  code, err = kill_after_checkpoint("search", [TINY], killed, min_step=STEPS, sig=signal.SIGINT)
  assert code == 130 and "Traceback" not in err, err[-2000:]
  assert err.strip().splitlines()[-1].startswith("interrupted: SIGINT ")
  assert Checkpointer(killed).restore_meta()["epoch"] < EPOCHS
  check_ok(run_launcher("search", TINY, f"--workdir={killed}"))
  ref = pins.restore_arrays(searched, EPOCHS * STEPS)
  res = pins.restore_arrays(killed, EPOCHS * STEPS)
  chex.assert_trees_all_close(ref["strategy"], res["strategy"], atol=0, rtol=0)
  chex.assert_trees_all_close(ref["w"], res["w"], atol=0, rtol=0)
  ref_best = json.loads((searched / "best.json").read_text())["tokens"]
  assert ref_best == json.loads((killed / "best.json").read_text())["tokens"]
  assert np.isfinite(json.loads((killed / "search_result.json").read_text())["best_psnr"])


def _history(workdir) -> list[dict]:
  timing = {"supernet_steps_per_sec", "controller_steps_per_sec"}
  meta = Checkpointer(workdir).restore_meta()
  return [{k: v for k, v in h.items() if k not in timing} for h in meta["history"]]


def test_stops_in_either_phase_of_an_epoch_save_that_step_and_resume_bit_identically(
  searched, tmp_path
):
  config = load_config(REPO / "configs" / "deconas.py", "tiny")
  stopped = tmp_path / "stopped"
  # Ctrl-C during shared-weight step 1 of epoch 2: saved before step 2.
  with signal_at_batch(W_STEPS + 1, signal.SIGINT):
    with pytest.raises(Interrupted, match=f"SIGINT in epoch 2 of 3, step 2 of {STEPS}: checkpoint"):
      run_search(config, stopped)
  meta = Checkpointer(stopped).restore_meta()
  assert meta["epoch"] == 1 and meta["partial"]["at"] == 2
  assert len(meta["partial"]["carry"]["w_losses"]) == 2
  # SIGTERM during the last shared-weight step of epoch 3: saved before its controller steps.
  with signal_at_batch(3 * W_STEPS - 1, signal.SIGTERM):
    with pytest.raises(Interrupted, match=f"SIGTERM in epoch 3 of 3, step {W_STEPS} of {STEPS}"):
      run_search(config, stopped)
  meta = Checkpointer(stopped).restore_meta()
  assert Checkpointer(stopped).latest_step() == 2 * STEPS + W_STEPS
  assert meta["epoch"] == 2 and "supernet_loss" in meta["partial"]["carry"]
  run_search(config, stopped)
  ref = pins.restore_arrays(searched)
  res = pins.restore_arrays(stopped)
  chex.assert_trees_all_close(ref, res, atol=0, rtol=0)
  assert _history(stopped) == _history(searched)  # losses, rewards: as if it had not stopped
  ref_best = json.loads((searched / "best.json").read_text())
  assert ref_best == json.loads((stopped / "best.json").read_text())


def test_one_override_switches_the_strategy_to_random_search(tmp_path):
  w, stderr = random_search("deconas:tiny", tmp_path)
  assert "strategy random: not using config.strategy.reinforce" in stderr
  assert spaces.load_arch(w / "best.json")[0].token_spec().op_heads == (0, 1, 2)


def test_tiny_search_ends_where_its_stable_pin_says(searched):
  pins.check_stable("deconas", searched)  # any CPU: choices exact, floats to 1e-4


def test_tiny_search_is_bit_identical_to_its_pin_on_a_recorded_host(searched):
  pins.check_exact("deconas", searched)  # the refactors kept the tiny search bit-identical
