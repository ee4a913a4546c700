"""Learning-rate schedules of nasr.estimation.train."""

import numpy as np
import pytest

from nasr.core.errors import ConfigError
from nasr.estimation import train as train_lib


def test_cosine_schedule_ends_at_lr_end():
  sched = train_lib.make_schedule(1e-3, "cosine", total_steps=100, lr_end=1e-5)
  assert float(sched(0)) == pytest.approx(1e-3)
  assert float(sched(50)) == pytest.approx((1e-3 + 1e-5) / 2)
  assert float(sched(100)) == pytest.approx(1e-5)
  assert float(sched(1000)) == pytest.approx(1e-5)  # stays there after the last step


def test_cosine_schedule_without_lr_end_is_unchanged():
  steps = np.arange(0, 120, 7)
  want = 1e-3 * 0.5 * (1 + np.cos(np.pi * np.minimum(steps, 100) / 100))
  for sched in (
    train_lib.make_schedule(1e-3, "cosine", total_steps=100),
    train_lib.make_schedule(1e-3, "cosine", total_steps=100, lr_end=0.0),
  ):
    np.testing.assert_allclose([float(sched(s)) for s in steps], want, rtol=1e-5, atol=1e-12)


def test_cosine_lr_end_after_warmup():
  sched = train_lib.make_schedule(1e-3, "cosine", 110, warmup_steps=10, lr_end=2e-4)
  assert float(sched(5)) == pytest.approx(5e-4)
  assert float(sched(10)) == pytest.approx(1e-3)
  assert float(sched(110)) == pytest.approx(2e-4)


@pytest.mark.parametrize("lr_end", [-1e-6, 2e-3])
def test_cosine_lr_end_outside_zero_to_lr_is_a_config_error(lr_end):
  with pytest.raises(ConfigError, match="optim.lr_end"):
    train_lib.make_schedule(1e-3, "cosine", 100, lr_end=lr_end)


def test_other_schedules_ignore_lr_end():
  assert float(train_lib.make_schedule(1e-3, "constant", lr_end=5.0)(10)) == pytest.approx(1e-3)
  step = train_lib.make_schedule(1e-3, "step", decay_every=10, lr_end=5.0)
  assert float(step(10)) == pytest.approx(5e-4)
