"""Data parallelism: 1 and 2 devices give the same loss and parameters for the same global batch."""

import threading
import time

import chex
import jax
import numpy as np
import pytest

from nasr import compute, parallel
from nasr.core.errors import ConfigError
from nasr.data import PatchSampler, SRPairs
from nasr.estimation import losses
from nasr.estimation import train as train_lib
from nasr.spaces import baselines


def _run(devices, steps=3):
  mesh = parallel.make_mesh(devices)
  network = baselines.EDSR(blocks=1, channels=8, scale=2)
  params = network.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3), np.float32))["params"]
  tx = train_lib.make_adam(train_lib.make_schedule(1e-3, "constant"))
  state = jax.device_put(train_lib.create_train_state(params, tx), parallel.replicated(mesh))
  step = compute.compile_train_step(network, tx, losses.LOSSES.get("l1"), mesh)
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
  # the steps did train: the loss falls every step (0.396, 0.390, 0.377 here; the batches' own
  # spread is about 0.005)
  assert loss1[0] > loss1[1] > loss1[2]


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


def _sampler():
  rng = np.random.default_rng(0)
  lrs = tuple(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8) for i in range(3))
  hrs = tuple(rng.integers(0, 256, (2 * x.shape[0], 48, 3), dtype=np.uint8) for x in lrs)
  pairs = SRPairs(("a", "b", "c"), lrs, hrs, 2)
  return PatchSampler(pairs, patch_size=8, batch_size=4, seed=3)


@pytest.mark.parametrize("workers", [0, 1, 2, 3, 5])
def test_pooled_prefetch_hands_out_the_serial_batches_in_order(workers):
  sampler = _sampler()

  def make(step):
    time.sleep((step * 7 % 5) * 1e-3)  # later steps often finish first
    return sampler.batch(step)

  with parallel.Prefetch(make, 3, 30, ahead=2, workers=workers) as batches:
    for step in range(3, 30):
      got, want = batches.get(step), sampler.batch(step)
      np.testing.assert_array_equal(got["lr"], want["lr"])
      np.testing.assert_array_equal(got["hr"], want["hr"])
    with pytest.raises(ValueError, match="past the last one 29"):
      batches.get(30)


def test_pooled_prefetch_raises_an_error_at_its_step_and_not_before():
  made = []

  def make(step):
    made.append(step)
    if step == 5:
      raise OSError("image 5 is unreadable")  # at once, while steps 3 and 4 are still made
    time.sleep(0.05)
    return step

  with parallel.Prefetch(make, 0, 1000, ahead=2, workers=3) as batches:
    assert [batches.get(step) for step in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(OSError, match="image 5"):
      batches.get(5)
    with pytest.raises(ValueError, match="after the failed step 5"):
      batches.get(6)
  # No step is started after the failure: only the ones already under way (window 2 + 3).
  assert max(made) < 5 + 2 + 3


def test_close_returns_promptly_while_the_workers_wait_for_room():
  prefetch = parallel.Prefetch(lambda step: step, 0, 10**9, ahead=1, workers=4)
  assert prefetch.get(0) == 0
  # Steps 1-5 fill the window (ahead 1 + 4 workers); then all 4 workers wait on the condition
  # for room. Waited for, not slept on: a close while a worker still makes a step checks less.
  deadline = time.monotonic() + 60
  while len(prefetch._cond._waiters) < 4:
    assert time.monotonic() < deadline, "the workers never all waited for room"
    time.sleep(0.001)
  assert sorted(prefetch._done) == [1, 2, 3, 4, 5]
  # Close from another thread: a close that never wakes the workers fails here, not hangs.
  closer = threading.Thread(target=prefetch.close, daemon=True)
  closer.start()
  closer.join(timeout=30)  # it takes milliseconds; 30 s leaves a loaded machine room
  assert not closer.is_alive(), "close() did not return while the workers waited for room"
  assert not any(t.is_alive() for t in prefetch._threads)
  with pytest.raises(ValueError, match="after close"):
    prefetch.get(1)


def test_pooled_prefetch_refuses_steps_out_of_order_and_bad_worker_counts():
  with parallel.Prefetch(lambda step: step, 10, 20, workers=3) as batches:
    with pytest.raises(ValueError, match="asked for step 11, the next one is 10"):
      batches.get(11)
    assert batches.get(10) == 10
    with pytest.raises(ValueError, match="asked for step 10, the next one is 11"):
      batches.get(10)
  with pytest.raises(ConfigError, match="data.workers must be >= 0, got -1"):
    parallel.Prefetch(lambda step: step, 0, 1, workers=-1)
