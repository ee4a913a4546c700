"""`nasr latency`: a network timed on this host through XLA (and onnxruntime with the export
extra), with its parameters and multiply-adds counted independently of the timing."""

import json

import jax
import jax.numpy as jnp
import pytest

from nasr import experiment, spaces
from nasr.configs.common import TINY_SPACES
from nasr.core.errors import ConfigError
from nasr.estimation import cost
from nasr.export import formats
from tests.launch_utils import check_ok, run_launcher


def test_an_arch_is_timed_per_runtime_beside_its_parameters_and_multiply_adds(tmp_path):
  # A searched cell of separable, dilated and RCAB edges (a bench member: it compiles fast).
  kwargs = {**TINY_SPACES["bench"], "skip": "bilinear"}
  arch_file = tmp_path / "arch.json"
  spaces.save_arch(arch_file, "bench", kwargs, spaces.get("bench", **kwargs).decode([3, 4, 5]))
  out = tmp_path / "lat"
  printed = check_ok(
    run_launcher(
      "latency", "--config=configs/latency.py:tiny", f"--config.arch={arch_file}",
      "--config.output=32,48", f"--workdir={out}",
    )
  ).stdout  # fmt: skip
  result = json.loads((out / "latency.json").read_text())
  runtimes = ["xla", "onnx"] if formats.onnx_status() is None else ["xla"]
  assert sorted(result["runtimes"]) == sorted(runtimes)
  for r in runtimes:
    t = result["runtimes"][r]
    assert t["runs"] == 3 and 0 < t["p10_ms"] <= t["median_ms"] <= t["p90_ms"]
    assert t["ms_per_gmac"] == pytest.approx(t["median_ms"] / result["gmacs"], rel=1e-3)
    assert f"\n{r} " in printed
  net = spaces.build_from_file(arch_file, 2)
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  assert result["params"] == cost.count_params(params)
  assert result["gmacs"] == pytest.approx(cost.count_macs(net, params, (1, 16, 24, 3)) / 1e9, 1e-3)
  assert result["output"] == [32, 48] and result["host"]["backend"] == "cpu"


@pytest.mark.parametrize(
  "overrides,match",
  [
    ({"arch": "configs/archs/hnas_a.json", "model": "edsr"}, "exactly one of config.checkpoint"),
    ({}, "exactly one of config.checkpoint"),
    ({"model": "edsr", "output": "33,48"}, "multiples of the scale 2"),
    ({"model": "edsr", "output": "720x1280"}, "must be 'H,W'"),
    ({"model": "edsr", "runtimes": "tflite"}, "config.runtimes"),
    ({"arch": "missing.json"}, "missing.json is not a file"),
  ],
)
def test_bad_latency_settings_fail_in_one_line(overrides, match, tmp_path):
  c = experiment.load_config("latency", "tiny")
  with c.unlocked():
    c.update(overrides)
  with pytest.raises(ConfigError, match=match):
    experiment.latency(c, tmp_path)
