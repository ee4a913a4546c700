"""A NaN/Inf loss stops training with the step number and keeps the last good checkpoint."""

import pytest

import nasr
from nasr.checkpoint import Checkpointer


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
  config = nasr.load_config("configs/train.py", "tiny", lock=False)
  config.steps, config.checkpoint_every, config.log_every, config.eval_every = 4, 2, 2, 100
  nasr.train(config, tmp_path)
  assert Checkpointer(tmp_path).all_steps() == [2, 4]

  config.steps = 12
  config.optim.lr = 1e30  # Adam moves every weight by ~lr: the activations overflow at once
  with pytest.raises(nasr.DivergedError, match=r"at step (5|6).*last good checkpoint \(step 4\)"):
    nasr.train(config, tmp_path)
  assert Checkpointer(tmp_path).latest_step() == 4
