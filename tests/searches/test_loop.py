"""SearchRun: a stop request inside a unit saves that step with what the unit carried so far; a
strategy's options come from its own section of config.strategy."""

import os
import signal
from unittest import mock

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from nasr import strategies
from nasr.checkpoint import Checkpointer
from nasr.core.errors import ConfigError, Interrupted
from nasr.experiment import load_config
from nasr.searches import loop


def _config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"method": "toy", "keep_checkpoints": 3})


def _count(workdir, stop_at: tuple[int, int] | None = None, epochs: int = 3, steps: int = 4):
  """Run a toy search that adds 1 per step (stopping with SIGINT before step stop_at[1] of epoch
  stop_at[0]); return its final state and history."""
  run = loop.SearchRun(_config(), workdir, total=epochs, steps_per_unit=steps)
  state = run.resume({"x": jnp.zeros(())})
  with run:
    for epoch in range(run.done, epochs):
      at, carry = run.resumed_at()
      seen = list(carry.get("seen", []))
      for i in range(at, steps):
        if (epoch, i) == stop_at:
          os.kill(os.getpid(), signal.SIGINT)
        if run.stop_requested:
          run.pause(i, state, {"seen": seen})
        state = {"x": state["x"] + 1}
        seen.append(float(state["x"]))
      run.end(epoch + 1, state, {"epoch": epoch + 1, "mean": float(np.mean(seen))}, {})
  return state, run.history


def test_a_stop_inside_an_epoch_saves_its_step_and_the_rerun_ends_as_an_unstopped_run(tmp_path):
  ref_state, ref_history = _count(tmp_path / "ref")
  with pytest.raises(Interrupted, match="SIGINT in epoch 2 of 3, step 3 of 4: checkpoint saved"):
    _count(tmp_path / "w", stop_at=(1, 3))
  ckpt = Checkpointer(tmp_path / "w")
  assert ckpt.all_steps() == [4, 7]  # epoch 1 ended at 4 steps; the stop saved step 3 of epoch 2
  meta = ckpt.restore_meta()
  assert meta["partial"] == {"at": 3, "carry": {"seen": [5.0, 6.0, 7.0]}} and meta["epoch"] == 1
  ckpt.close()
  state, history = _count(tmp_path / "w")
  assert float(state["x"]) == float(ref_state["x"]) == 12 and history == ref_history
  assert "partial" not in Checkpointer(tmp_path / "w").restore_meta()


def test_a_stop_before_the_first_step_of_an_epoch_saves_nothing_new(tmp_path):
  with pytest.raises(Interrupted, match="epoch 3 of 3, step 0 of 4: the last checkpoint holds it"):
    _count(tmp_path, stop_at=(2, 0))
  assert Checkpointer(tmp_path).all_steps() == [4, 8]


def test_a_signal_after_the_last_step_stops_the_run_after_its_checkpoint(tmp_path):
  run = loop.SearchRun(_config(), tmp_path, total=1, steps_per_unit=2)
  before = signal.getsignal(signal.SIGTERM)
  with pytest.raises(Interrupted, match="SIGTERM after epoch 1 of 1: checkpoint saved"):
    with run:
      run.end(1, {"x": jnp.ones(())}, {"epoch": 1}, {})
      os.kill(os.getpid(), signal.SIGTERM)
  assert Checkpointer(tmp_path).all_steps() == [2]
  assert signal.getsignal(signal.SIGTERM) == before  # the handlers are put back


def test_the_chosen_strategy_reads_its_own_section_and_ignores_the_others():
  config = load_config("deconas", "tiny")
  options = loop.strategy_options(config)
  assert options["op_tanh_reduce"] == 2.5 and options["hidden"] == 64
  assert set(options) <= set(strategies.options("reinforce"))
  with config.unlocked():
    config.strategy.name = "random"  # as --config.strategy.name=random sets it
  with mock.patch.object(loop.logging, "info") as info:
    assert loop.strategy_options(config) == {}  # reinforce's section is not used
  assert "config.strategy.reinforce" in info.call_args.args[0] % info.call_args.args[1:]
  # A strategy without a section runs with its defaults.
  hnas = load_config("hnas", "tiny")
  with hnas.unlocked():
    hnas.strategy.name = "reinforce"
  assert loop.strategy_options(hnas) == {}


def test_strategy_options_that_fit_no_option_are_named():
  config = load_config("deconas", "tiny", lock=False)
  config.strategy.reinforce.hiden = 8  # misspelt
  with pytest.raises(ConfigError, match=r"^config\.strategy\.reinforce\.hiden is not an option of"):
    loop.strategy_options(config)
  config = load_config("deconas", "tiny", lock=False)
  config.strategy.hidden = 8  # the layout before sections
  with pytest.raises(ConfigError, match=r"config\.strategy\.hidden: .*config\.strategy\.reinforce"):
    loop.strategy_options(config)
  config.strategy = ml_collections.ConfigDict({"name": "reinforcement"})
  with pytest.raises(ConfigError, match="unknown strategy 'reinforcement'"):
    loop.strategy_options(config)
