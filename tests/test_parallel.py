"""Data parallelism: 1 and 2 devices give the same loss and parameters for the same global batch."""

import chex
import jax
import numpy as np
import pytest

from nasr import parallel, training
from nasr.estimation import losses
from nasr.estimation import train as train_lib
from nasr.spaces import baselines


def _run(devices, steps=3):
  mesh = parallel.make_mesh(devices)
  network = baselines.EDSR(blocks=1, channels=8, scale=2)
  params = network.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3), np.float32))["params"]
  tx = train_lib.make_adam(train_lib.make_schedule(1e-3, "constant"))
  state = jax.device_put(train_lib.create_train_state(params, tx), parallel.replicated(mesh))
  step = training.compile_train_step(network, tx, losses.LOSSES.get("l1"), mesh)
  rng = np.random.default_rng(0)
  out = []
  for _ in range(steps):
    batch = {
      "lr": rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8),
      "hr": rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8),
    }
    state, metrics = step(state, parallel.shard_batch(batch, mesh), jax.random.PRNGKey(1))
    out.append(float(metrics["loss"]))
  return out, jax.device_get(state.params)


def test_one_and_two_devices_agree():
  if len(jax.devices()) < 2:
    pytest.skip("needs 2 devices: run with JAX_NUM_CPU_DEVICES=2 (tests/conftest.py sets it)")
  loss1, params1 = _run(jax.devices()[:1])
  loss2, params2 = _run(jax.devices()[:2])
  np.testing.assert_allclose(loss1, loss2, rtol=1e-5)
  chex.assert_trees_all_close(params1, params2, atol=1e-5, rtol=1e-5)
  assert loss1[-1] != loss1[0]  # the steps did train


def test_batch_must_split_evenly():
  mesh = parallel.make_mesh(jax.devices()[:2])
  if mesh.devices.size < 2:
    pytest.skip("needs 2 devices")
  with pytest.raises(ValueError, match="not divisible by the 2 devices"):
    parallel.check_batch_size(3, mesh)


def test_prefetch_hands_out_the_batches_in_order_and_the_errors_at_their_step():
  made = []

  def make(step):
    made.append(step)
    if step == 5:
      raise OSError("image 5 is unreadable")
    return {"x": np.full((2,), step)}

  with parallel.Prefetch(make, 2, 8, ahead=2) as batches:
    for step in (2, 3, 4):
      np.testing.assert_array_equal(batches.get(step)["x"], [step, step])
    with pytest.raises(OSError, match="image 5"):
      batches.get(5)
  assert made == [2, 3, 4, 5]  # nothing is made after a failure
  with parallel.Prefetch(make, 0, 100, ahead=2) as batches:
    batches.get(0)
    with pytest.raises(ValueError, match="asked for step 3, the next one is 1"):
      batches.get(3)
  # Closing stops the thread although 98 batches were never asked for.
