"""Latency: timed calls summarised by their median, a per-host cache of cost pieces measured once
each, a network's prediction as the sum of its pieces, and the one-shot reward's latency term."""

import itertools
import json

import jax.numpy as jnp
import numpy as np
import pytest

from nasr import spaces
from nasr.configs.common import TINY_SPACES
from nasr.core.errors import ConfigError
from nasr.estimation import latency
from nasr.searches import op_latency
from nasr.searches.reward import Reward


def _clock(durations):
  """Return a fake clock whose successive (start, stop) readings are `durations` apart."""
  ticks = itertools.count()
  times = []
  for d in durations:
    times += [0.0, d]
  return lambda: times[next(ticks)]


def test_time_call_reports_the_median_and_the_spread_of_the_timed_calls():
  calls = []
  durations = [0.004, 0.001, 0.003, 0.002, 0.100]  # one slow outlier
  out = latency.time_call(lambda x: calls.append(x) or jnp.zeros(()), 7, warmup=2, repeats=5,
                          clock=_clock(durations))  # fmt: skip
  assert calls == [7] * 7  # two warm-up calls, then five timed ones
  assert out["median_ms"] == pytest.approx(3.0) and out["runs"] == 5
  want = np.percentile([1e3 * d for d in durations], [10, 90])
  assert (out["p10_ms"], out["p90_ms"]) == pytest.approx(tuple(want))
  with pytest.raises(ConfigError, match="repeats >= 1"):
    latency.time_call(lambda: None, repeats=0)


def _fake_ms(module, shape) -> float:
  return float(np.prod(shape)) / 1e3 + len(repr(module))


def _space():
  return spaces.get("bench", **TINY_SPACES["bench"], skip="bilinear")


def test_each_piece_is_measured_once_per_host_and_kept_on_disk(tmp_path):
  measured = []

  def measure(module, shape):  # a stand-in timing, fixed per piece
    measured.append(tuple(shape))
    return _fake_ms(module, shape)

  path = tmp_path / "latency.json"
  space = _space()
  arch = space.max_arch()
  table = op_latency.PieceLatency(path, measure=measure, host="host A")
  first = op_latency.predict_ms(space, arch, 2, 16, table)
  pieces = space.cost_pieces(arch, 2, 16)
  # the prediction is the sum of the pieces' measurements; equal pieces are measured once
  assert first == pytest.approx(sum(_fake_ms(m, shape) for _, m, shape in pieces))
  assert table.measured == len(measured) == len({k for k, _, _ in pieces}) < len(pieces)
  # a new search on the same host reads the cache; another host measures its own
  again = op_latency.PieceLatency(path, measure=measure, host="host A")
  assert op_latency.predict_ms(space, arch, 2, 16, again) == first and again.measured == 0
  other = op_latency.PieceLatency(path, measure=measure, host="host B")
  op_latency.predict_ms(space, arch, 2, 16, other)
  assert other.measured == table.measured
  assert set(json.loads(path.read_text())) == {"host A", "host B"}
  path.write_text("{not json")
  with pytest.raises(ConfigError, match="latency.json: not a latency cache"):
    op_latency.PieceLatency(path, host="host A")


def test_the_latency_term_divides_by_the_most_complex_childs_prediction(tmp_path):
  space = _space()
  table = op_latency.PieceLatency(tmp_path / "l.json", measure=_fake_ms, host="h")
  reward = Reward({"psnr": 1.0, "latency": -0.5}, space, 2, latency_side=16, latency_table=table)
  top = reward.costs(space.encode(space.max_arch()))
  assert top["latency_ratio"] == pytest.approx(1.0)
  cheap = space.encode(space.decode(np.zeros(len(space.token_spec()), np.int32)))
  low = reward.costs(cheap)
  assert low["latency"] < top["latency"] and low["latency_ratio"] < 1.0
  assert reward(30.0, {"latency": low["latency_ratio"]}) == pytest.approx(
    30.0 - 0.5 * low["latency_ratio"]
  )
  # measured latencies are the host's: the reward looks them up there, not in a device table
  assert reward.device_costs() is None
  with pytest.raises(ConfigError, match="latency_side must be an integer >= 8"):
    Reward({"psnr": 1.0, "latency": -0.5}, space, 2, latency_side=4, latency_table=table)


def test_a_network_is_timed_on_its_jitted_forward_pass():
  space = _space()
  out = latency.network_ms(space.build(space.max_arch(), 2), (1, 32, 32, 3), warmup=1, repeats=5)
  assert out["runs"] == 5 and 0 < out["p10_ms"] <= out["median_ms"] <= out["p90_ms"]
