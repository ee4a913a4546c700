"""Search wiring: the DARTS search builds its loss with the shared factory (ms_ssim_weight reaches it)."""

import jax.numpy as jnp
import numpy as np
import pytest

from nasr.estimation import darts as darts_lib
from nasr.estimation import losses
from nasr.experiment import load_config
from nasr.searches import darts
from tests.launch_utils import REPO


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_darts_search_loss_uses_config_ms_ssim_weight(weight, monkeypatch):
  seen = {}
  original = darts_lib.make_loss

  def spy(apply, loss_fn):
    seen["loss_fn"] = loss_fn
    return original(apply, loss_fn)

  monkeypatch.setattr(darts_lib, "make_loss", spy)
  config = load_config(REPO / "configs" / "darts_sr.py", "tiny", lock=False)
  config.loss, config.ms_ssim_weight = "ms_ssim_l1", weight
  darts._init(config, darts._prepare(config))
  rng = np.random.default_rng(0)
  pred = jnp.asarray(rng.uniform(size=(2, 24, 24, 3)), jnp.float32)
  target = jnp.asarray(rng.uniform(size=(2, 24, 24, 3)), jnp.float32)
  want = losses.ms_ssim_l1(pred, target, alpha=weight)
  assert float(seen["loss_fn"](pred, target)) == pytest.approx(float(want), rel=1e-6)
  # Not the default mix (0.84): the weight made a difference.
  default = float(losses.ms_ssim_l1(pred, target))
  assert abs(float(want) - default) > 1e-4
