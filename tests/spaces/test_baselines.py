"""Tests of the baseline networks and the model registry."""

import jax
import numpy as np
import pytest

from nasr import spaces
from nasr.core.errors import ConfigError
from nasr.estimation.cost import count_params
from nasr.spaces import baselines


def _init(network, shape=(1, 12, 12, 3)):
  x = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
  params = network.init(jax.random.PRNGKey(0), x)["params"]
  return params, network.apply({"params": params}, x)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_shapes(scale):
  network = baselines.EDSR(blocks=2, channels=8, scale=scale)
  _, y = _init(network)
  assert y.shape == (1, 12 * scale, 12 * scale, 3)
  assert y.dtype == np.float32
  assert network.scale == scale


def _edsr_params(blocks, c, scale):
  """Return EDSR's parameter count by hand: 3x3 convs with bias."""
  conv = lambda cin, cout: 9 * cin * cout + cout
  up = 2 * conv(c, 4 * c) if scale == 4 else conv(c, scale * scale * c)
  return conv(3, c) + blocks * 2 * conv(c, c) + conv(c, c) + up + conv(c, 3)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_param_count(scale):
  params, _ = _init(baselines.EDSR(blocks=2, channels=8, scale=scale))
  assert count_params(params) == _edsr_params(2, 8, scale)


def test_edsr_default_param_count():
  network = baselines.EDSR()
  shapes = jax.eval_shape(network.init, jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3), np.float32))
  assert count_params(shapes) == _edsr_params(8, 32, 2)


def test_edsr_rejects_bad_scale_at_construction():
  with pytest.raises(ConfigError, match="scale must be one of"):
    baselines.EDSR(scale=5)


def test_bicubic_is_parameter_free_and_upscales():
  network = baselines.Bicubic(scale=3)
  x = np.full((1, 5, 7, 3), 0.25, np.float32)
  variables = network.init(jax.random.PRNGKey(0), x)
  assert not jax.tree.leaves(variables)
  y = network.apply(variables, x)
  assert y.shape == (1, 15, 21, 3)
  np.testing.assert_allclose(y, 0.25, atol=1e-6)  # bicubic reproduces constants


def test_build_model_by_name():
  network = spaces.build_model("edsr", scale=3, blocks=1, channels=4, dtype="bfloat16")
  assert isinstance(network, spaces.EDSR)
  assert (network.scale, network.blocks, network.channels) == (3, 1, 4)
  assert network.dtype == np.dtype("bfloat16")
  assert isinstance(spaces.build_model("bicubic", scale=2), spaces.Bicubic)
  assert set(spaces.MODELS) == {"bicubic", "edsr"}


def test_build_model_unknown_name_lists_choices():
  with pytest.raises(ConfigError, match="unknown model 'rcan'; available: bicubic, edsr"):
    spaces.build_model("rcan", scale=2)


def test_build_model_unknown_kwarg_names_key_and_fields():
  with pytest.raises(ConfigError, match=r"no field 'block'; valid fields: blocks, channels"):
    spaces.build_model("edsr", scale=2, block=4)
