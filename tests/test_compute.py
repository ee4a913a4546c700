"""config.compute_dtype and config.kernels: what networks compute in, and which kernel forms."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import pytest

import nasr
from nasr import compute, spaces, training
from nasr.core.errors import ConfigError
from tests import pins


def _config(name="train", preset="tiny", **values):
  config = nasr.load_config(f"configs/{name}.py", preset)
  for key, value in values.items():
    config[key] = value
  return config


def test_kernels_auto_follows_the_backend_and_a_bad_value_is_named():
  config = _config()
  assert config.kernels == "auto" and config.compute_dtype == "float32"
  assert compute.kernels(config, backend="cpu") == "cpu"
  assert compute.kernels(config, backend="gpu") == "accelerator"
  assert compute.kernels(config, backend="tpu") == "accelerator"
  assert compute.kernels(_config(kernels="cpu"), backend="gpu") == "cpu"
  assert compute.kernels(_config(kernels="accelerator"), backend="cpu") == "accelerator"
  with pytest.raises(ConfigError, match="config.kernels must be one of auto, cpu, accelerator"):
    compute.kernels(_config(kernels="gpu"))
  with pytest.raises(ConfigError, match="config.compute_dtype must be one of float32, bfloat16"):
    compute.compute_dtype(_config(compute_dtype="float16"))


def test_supernet_options_drop_the_cpu_forms_on_an_accelerator():
  config = _config("deconas")
  space = spaces.get("deconas", blocks=2, nodes=2, channels=4)
  assert config.supernet.shifted  # the DeCoNAS search's CPU form
  cpu = compute.supernet_options(config, space)
  assert cpu["shifted"] is True and cpu["dtype"] == jnp.float32
  config.kernels, config.compute_dtype = "accelerator", "bfloat16"
  fast = compute.supernet_options(config, space)
  assert fast["shifted"] is False and fast["dtype"] == jnp.bfloat16
  assert fast["gathered"] is True and cpu["gathered"] is False  # one lax.switch per op
  assert fast["skip_inactive"] == cpu["skip_inactive"]  # other options are the config's
  config.supernet = ml_collections.ConfigDict()
  drn = spaces.get("drn")  # a supernet without depthwise convs is given no `shifted`
  assert compute.supernet_options(config, drn) == {"dtype": jnp.bfloat16}


def test_build_network_computes_in_the_configs_dtype_and_forms(tmp_path):
  assert training.build_network(_config(compute_dtype="bfloat16"), 2).dtype == jnp.bfloat16
  assert training.build_network(_config(), 2).dtype == jnp.float32
  space = spaces.get("darts_sr", cells=1, channels=4, nodes=2)
  arch = space.derive(jnp.zeros(space.alpha_shape).at[:, 0].set(1.0))
  spaces.save_arch(tmp_path / "g.json", "darts_sr", {"cells": 1, "channels": 4, "nodes": 2}, arch)
  config = _config(arch=str(tmp_path / "g.json"), depthwise="shifted", compute_dtype="bfloat16")
  net = training.build_network(config, 2)
  assert net.shifted == (jax.default_backend() == "cpu") and net.dtype == jnp.bfloat16
  config.kernels = "accelerator"
  assert not training.build_network(config, 2).shifted


def test_a_tiny_bfloat16_training_run_decreases_its_loss_with_float32_state(tmp_path, caplog):
  config = _config(compute_dtype="bfloat16", steps=30, log_every=10, eval_every=30)
  config.checkpoint_every = 30
  with caplog.at_level("INFO"):
    training.train(config, tmp_path)
  assert "compute: bfloat16, parameters float32; kernels: cpu (auto on the cpu backend)" in (
    caplog.text
  )
  losses = [
    json.loads(line)["loss"]
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
    if "loss" in json.loads(line)
  ]
  assert len(losses) == 3 and losses[-1] < losses[0], losses
  state = pins.restore_arrays(tmp_path)
  dtypes = {
    a.dtype for a in jax.tree.leaves(state["train"]) if jnp.issubdtype(a.dtype, jnp.inexact)
  }
  assert dtypes == {jnp.dtype("float32")}  # parameters and Adam's moments
