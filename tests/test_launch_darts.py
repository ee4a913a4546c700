"""DARTS-SR end to end through the launchers: search -> derive -> retrain -> evaluate; SIGKILL resume.

One tiny search serves both the end-to-end test and the resume test (which compares it with a
search SIGKILLed after its second epoch and resumed). The launchers share a persistent XLA
compilation cache (tests.launch_utils), so the second-order step compiles once for the module.
"""

import json
import signal

import chex
import numpy as np
import pytest

from nasr import spaces
from nasr.checkpoint import Checkpointer
from nasr.core.errors import Interrupted
from nasr.experiment import diagnose, load_config, run_search
from tests import pins
from tests.launch_utils import (
  REPO,
  check_ok,
  kill_after_checkpoint,
  retrain_and_evaluate,
  run_launcher,
  signal_at_batch,
)

TINY = "--config=configs/darts_sr.py:tiny"
EPOCHS = 3  # the tiny preset's
STEPS = load_config(REPO / "configs" / "darts_sr.py", "tiny").steps_per_epoch  # ids per epoch


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
  """Return the workdir of the uninterrupted tiny search."""
  w = tmp_path_factory.mktemp("darts") / "search"
  check_ok(run_launcher("search", TINY, f"--workdir={w}"))
  return w


def test_search_derive_retrain_evaluate_tiny(searched, tmp_path):
  w = searched
  record = json.loads((w / "genotype.json").read_text())
  assert record["space"] == "darts_sr" and record["alpha_mode"] == "exact"
  assert record["space_kwargs"] == {
    "ops": "improved",
    "cells": 2,
    "channels": 8,
    "nodes": 2,
    "node_reduce": "mean",
  }
  space, genotype = spaces.load_arch(w / "genotype.json")
  assert genotype.nodes == 2 and record["num_skip"] == genotype.num_skip()
  alphas = json.loads((w / "alphas.json").read_text())
  softmax = np.asarray(alphas["softmax"])
  assert softmax.shape == space.alpha_shape and np.allclose(softmax.sum(axis=1), 1.0)
  assert space.derive(np.asarray(alphas["alpha"])) == genotype
  assert (w / "alpha.png").stat().st_size > 1000
  history = [json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()]
  assert [h["step"] for h in history] == [1, 2, 3]
  assert all(np.isfinite(h["val_psnr"]) and 0 <= h["num_skip"] <= 4 for h in history)
  meta = Checkpointer(w).restore_meta()
  assert len(meta["history"][-1]["alpha_softmax"]) == space.num_edges
  summary = json.loads((w / "search_result.json").read_text())
  assert summary["step_compiles"] == 1  # the exact second-order step, over every step of the run

  result = retrain_and_evaluate(w / "genotype.json", tmp_path / "retrain")
  assert result["params"] == summary["retrain_params"]  # the retrained network is the genotype's
  assert result["macs_per_lr_pixel"] > 0


def test_diagnose_scores_genotypes_with_the_supernets_weights(searched, tmp_path):
  config = load_config("diagnose", "tiny", lock=False)
  config.update(search=str(searched), pool=3, samples=2, random=1)
  summary = diagnose(config, tmp_path / "diag")
  report = json.loads((tmp_path / "diag" / "ranking.json").read_text())
  assert report["method"] == "darts" and report["n"] == summary["n"] == 2
  rows = report["architectures"]
  # The searched genotype is genotype.json's, trained at the search's size (not the retrain size).
  space, genotype = spaces.load_arch(searched / "genotype.json")
  assert rows[0]["roles"] == ["searched"] and rows[0]["tokens"] == list(space.encode(genotype))
  arch = json.loads((tmp_path / "diag" / "standalone" / rows[0]["id"] / "arch.json").read_text())
  assert arch["space_kwargs"]["cells"] == 2 and arch["space_kwargs"]["channels"] == 8
  assert not any("random_search" in r["roles"] for r in rows)  # one-shot searches only
  psnr = [r["shared_psnr"] for r in rows]
  assert all(np.isfinite(psnr)) and len(set(psnr)) > 1  # other genotypes, other scores
  assert all(np.isfinite(r["standalone_psnr"]) for r in rows)


# Slow (a minute): a SIGKILLed search's restore in a new process is the checkpointer's and the
# metrics log's, which the default suite checks for DeCoNAS, HNAS, GP-NAS and training; DARTS'
# own state (alpha, both optimizers, a mid-epoch carry) resumes bit-identically in the SIGTERM test.
@pytest.mark.slow
def test_search_sigkill_resume_matches_uninterrupted(searched, tmp_path):
  killed = tmp_path / "killed"
  kill_after_checkpoint("search", [TINY], killed, min_step=STEPS)
  assert Checkpointer(killed).restore_meta()["epoch"] < EPOCHS
  check_ok(run_launcher("search", TINY, f"--workdir={killed}"))
  ref = pins.restore_arrays(searched, EPOCHS * STEPS)
  res = pins.restore_arrays(killed, EPOCHS * STEPS)
  np.testing.assert_array_equal(ref["search"]["alpha"], res["search"]["alpha"])
  chex.assert_trees_all_close(ref, res, atol=0, rtol=0)  # w, both optimizers, RNG, step
  ref_genotype = json.loads((searched / "genotype.json").read_text())["tokens"]
  assert ref_genotype == json.loads((killed / "genotype.json").read_text())["tokens"]
  steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
  assert steps == list(range(1, EPOCHS + 1))  # the resumed run logs no epoch twice
  assert len(Checkpointer(killed).restore_meta()["history"]) == EPOCHS


def test_sigterm_inside_an_epoch_saves_that_step_and_resumes_bit_identically(searched, tmp_path):
  config = load_config(REPO / "configs" / "darts_sr.py", "tiny")
  stopped = tmp_path / "stopped"
  # SIGTERM while the first step of epoch 2 runs: the search saves before the second one.
  with signal_at_batch(STEPS, signal.SIGTERM) as sent:
    with pytest.raises(
      Interrupted, match=f"SIGTERM in epoch 2 of 3, step 1 of {STEPS}: checkpoint"
    ):
      run_search(config, stopped)
  assert sent == [STEPS]
  ckpt = Checkpointer(stopped)
  meta = ckpt.restore_meta()
  assert ckpt.latest_step() == STEPS + 1 and meta["epoch"] == 1 and meta["partial"]["at"] == 1
  assert len(meta["partial"]["carry"]["train_loss"]) == 1
  run_search(config, stopped)
  ref, res = pins.restore_arrays(searched), pins.restore_arrays(stopped)
  chex.assert_trees_all_close(ref, res, atol=0, rtol=0)
  timing = {"steps_per_sec"}
  ref_h, res_h = (
    [
      {k: v for k, v in h.items() if k not in timing}
      for h in Checkpointer(w).restore_meta()["history"]
    ]
    for w in (searched, stopped)
  )
  assert ref_h == res_h  # the stopped epoch's losses and alphas, as if it had not stopped
  assert "partial" not in Checkpointer(stopped).restore_meta()


@pytest.mark.parametrize(
  ("flag", "message"),
  [
    ("--config.alpha_mode=second", "unknown alpha mode 'second'"),
    ("--config.space.ops=none,conv_7x7", "unknown op 'conv_7x7'"),
    ("--config.retrain.cells=-2", "cells must be a positive integer"),
  ],
)
def test_bad_settings_fail_fast_with_one_line(tmp_path, flag, message):
  result = run_launcher("search", TINY, flag, f"--workdir={tmp_path}")
  assert result.returncode == 2
  assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_original_operation_set_searches(tmp_path):
  w = tmp_path / "original"
  args = ["--config.space.ops=original", "--config.epochs=1", "--config.alpha_mode=first_order"]
  check_ok(run_launcher("search", TINY, *args, f"--workdir={w}"))
  space, genotype = spaces.load_arch(w / "genotype.json")
  assert space.ops == "original" and space.alpha_shape == (5, 8)
  assert all(op in space.edge_ops for op, _ in genotype.edges)


def test_tiny_search_ends_where_its_stable_pin_says(searched):
  pins.check_stable("darts_sr", searched)  # any CPU: choices exact, floats to 1e-4


def test_tiny_search_is_bit_identical_to_its_pin_on_a_recorded_host(searched):
  pins.check_exact("darts_sr", searched)  # the refactors kept the tiny search bit-identical
