"""The shared SR frame (nasr.ops.frame) and the supernet parameter helpers (nasr.ops.params)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasr import ops
from nasr.core.errors import ConfigError


class _Net(ops.SRFrame, nn.Module):
  """Test-only: the frame around a 3x3 conv body, with every frame option exposed."""

  features: int = 4
  scale: int = 2
  dtype: object = jnp.float32
  options: tuple = ()  # (key, value) pairs for sr_frame

  @nn.compact
  def __call__(self, x, mask=None):
    opts = dict(self.options)

    def body(h):
      h = ops.Conv(self.features, 3, name="conv")(h)
      if opts.get("upsample_at") == "body":
        h = ops.interpolate(h, self.scale, "nearest")
      return h

    return ops.sr_frame(x, body, self.features, self.scale, self.dtype, mask=mask, **opts)


def _x(shape=(2, 5, 6, 3)):
  return jnp.asarray(np.random.default_rng(0).uniform(size=shape), jnp.float32)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_frame_parameter_paths_and_shapes(scale):
  net = _Net(scale=scale)
  params = jax.eval_shape(net.init, jax.random.PRNGKey(0), _x())["params"]
  assert set(params) == {"head", "conv", "body", "upsample", "tail"}
  assert len(params["upsample"]) == (2 if scale == 4 else 1)
  assert net.apply(net.init(jax.random.PRNGKey(0), _x()), _x()).shape == (
    2,
    5 * scale,
    6 * scale,
    3,
  )


def test_body_that_upsamples_with_interpolated_skips():
  for skip in ("head", "image", "none"):
    net = _Net(scale=3, options=(("upsample_at", "body"), ("skip", skip)))
    variables = net.init(jax.random.PRNGKey(0), _x())
    assert "upsample" not in variables["params"]
    assert net.apply(variables, _x()).shape == (2, 15, 18, 3)
  # With the tail silenced, the image skip returns the interpolated input exactly.
  net = _Net(scale=2, options=(("upsample_at", "body"), ("skip", "image")))
  variables = net.init(jax.random.PRNGKey(0), _x())
  params = dict(variables["params"])
  params["tail"] = jax.tree.map(jnp.zeros_like, params["tail"])
  variables = {"params": params}
  want = jax.image.resize(_x(), (2, 10, 12, 3), "bilinear")
  np.testing.assert_allclose(net.apply(variables, _x()), want, atol=1e-6)


def test_channel_mask_keeps_missing_features_at_zero():
  net = _Net(features=4, scale=4)
  variables = net.init(jax.random.PRNGKey(0), _x())
  mask = jnp.asarray([1.0, 1.0, 0.0, 0.0])
  _, state = net.apply(variables, _x(), mask, capture_intermediates=True, mutable="intermediates")
  up = state["intermediates"]["upsample"]["__call__"][0]
  assert up.shape == (2, 20, 24, 4)
  assert np.all(np.asarray(up[..., 2:]) == 0) and np.any(np.asarray(up[..., :2]) != 0)


def test_bad_frame_options_and_scales_fail_early():
  with pytest.raises(ConfigError, match="scale must be one of"):
    _Net(scale=5)
  for key, value in (("upsample_at", "middle"), ("skip", "long"), ("skip_method", "lanczos")):
    with pytest.raises(ConfigError, match=key):
      _Net(options=((key, value),)).init(jax.random.PRNGKey(0), _x())


def test_conv_params_match_conv_init_and_stack_independent_copies():
  class Pair(nn.Module):
    use_params: bool

    @nn.compact
    def __call__(self, x):
      if self.use_params:
        return ops.ConvParams((3, 3, 3, 5), name="a")()
      return ops.Conv(5, 3, name="a")(x)

  x = _x()
  conv = Pair(False).init(jax.random.PRNGKey(1), x)["params"]["a"]
  bare = Pair(True).init(jax.random.PRNGKey(1), x)["params"]["a"]
  jax.tree.map(np.testing.assert_array_equal, conv, bare)

  stacked = ops.ConvParams((3, 3, 8, 4), (2, 5)).init(jax.random.PRNGKey(0))["params"]
  assert stacked["kernel"].shape == (2, 5, 3, 3, 8, 4) and stacked["bias"].shape == (2, 5, 4)
  k = np.asarray(stacked["kernel"])
  assert not np.allclose(k[0, 0], k[1, 3])
  # Each copy has a single kernel's fan-in (lecun: variance 1 / (3 * 3 * 8)).
  assert 0.5 < k.std() * np.sqrt(72) < 1.5
  sep = ops.SepConvParams(5, 6, 2).init(jax.random.PRNGKey(0))["params"]
  assert sep["depthwise"]["kernel"].shape == (5, 5, 1, 6)
  assert sep["pointwise"]["kernel"].shape == (1, 1, 6, 2)
