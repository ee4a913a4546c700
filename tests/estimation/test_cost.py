"""Tests of parameter and multiply-add counting (traced, never run)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from nasr.core.errors import ConfigError
from nasr.estimation import cost


class _VDSR(nn.Module):
  """Test-only VDSR: 20 3x3 convs, 64 channels, 1 channel in and out, ReLU between."""

  depth: int = 20
  features: int = 64

  @nn.compact
  def __call__(self, x):
    for i in range(self.depth - 1):
      x = nn.relu(nn.Conv(self.features, (3, 3), padding="SAME", name=f"conv{i}")(x))
    return nn.Conv(1, (3, 3), padding="SAME", name=f"conv{self.depth - 1}")(x)


def _init(module, shape):
  """Return the abstract variables of `module` (shapes only: nothing runs, the tests stay fast)."""
  return jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


def test_vdsr_720p_macs_without_running_it(monkeypatch):
  module = _VDSR()
  variables = _init(module, (1, 8, 8, 1))  # parameters do not depend on the image size
  # count_macs must only trace: a conv called on concrete arrays would run the 720p forward pass.
  real_conv = jax.lax.conv_general_dilated

  def no_concrete_conv(lhs, *args, **kwargs):
    assert isinstance(lhs, jax.core.Tracer), "count_macs ran the forward pass"
    return real_conv(lhs, *args, **kwargs)

  monkeypatch.setattr(jax.lax, "conv_general_dilated", no_concrete_conv)
  macs = cost.count_macs(module, variables, (1, 720, 1280, 1))
  assert macs == 921600 * (9 * 64 + 18 * 9 * 64 * 64 + 9 * 64) == 612_591_206_400
  assert abs(macs - 612.6e9) < 0.1e9
  # The bare params work as well as the variables dict.
  assert cost.count_macs(module, variables["params"], (1, 720, 1280, 1)) == macs
  assert cost.macs_per_pixel(module, variables, (2, 720, 1280, 1)) == macs / 921600


def test_count_params_known_module():
  variables = _init(_VDSR(), (1, 8, 8, 1))
  expected = (9 * 64 + 64) + 18 * (9 * 64 * 64 + 64) + (9 * 64 + 1)
  assert cost.count_params(variables) == expected == 665_921
  assert cost.count_params(variables["params"]) == expected
  small = _VDSR(depth=3, features=4)
  concrete = small.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))  # real arrays work too
  assert cost.count_params(concrete) == (9 * 4 + 4) + (9 * 4 * 4 + 4) + (9 * 4 + 1)
  assert cost.count_macs(small, concrete, (1, 4, 4, 1)) == 16 * (9 * 4 + 9 * 4 * 4 + 9 * 4)
  # Only the "params" collection counts: batch statistics are state.
  bn = nn.BatchNorm(use_running_average=True)
  bn_vars = _init(bn, (1, 4, 4, 5))
  assert set(bn_vars) == {"params", "batch_stats"}
  assert cost.count_params(bn_vars) == 10


def test_dense():
  module = nn.Dense(7)
  variables = _init(module, (3, 5, 11))
  assert cost.count_macs(module, variables, (3, 5, 11)) == 3 * 5 * 11 * 7


def test_depthwise_conv():
  c = 8
  module = nn.Conv(c, (3, 3), feature_group_count=c)
  variables = _init(module, (1, 10, 12, c))
  assert cost.count_macs(module, variables, (1, 10, 12, c)) == 10 * 12 * 9 * c


def test_grouped_strided_conv():
  module = nn.Conv(12, (5, 5), strides=2, feature_group_count=3)
  variables = _init(module, (2, 16, 16, 6))
  # Output 8x8x12 per image; each output sums over 5*5*(6/3) inputs.
  assert cost.count_macs(module, variables, (2, 16, 16, 6)) == 2 * 8 * 8 * 12 * 25 * 2


def test_dilated_conv():
  module = nn.Conv(4, (3, 3), kernel_dilation=2, padding="SAME")
  variables = _init(module, (1, 9, 9, 3))
  assert cost.count_macs(module, variables, (1, 9, 9, 3)) == 81 * 9 * 3 * 4


@pytest.mark.parametrize("kernel", [3, 4])
def test_conv_transpose_counts_per_input_pixel(kernel):
  module = nn.ConvTranspose(5, (kernel, kernel), strides=(2, 2), padding="SAME")
  variables = _init(module, (1, 6, 7, 3))
  out = jax.eval_shape(module.apply, variables, jax.ShapeDtypeStruct((1, 6, 7, 3), jnp.float32))
  assert out.shape == (1, 12, 14, 5)
  assert cost.count_macs(module, variables, (1, 6, 7, 3)) == 6 * 7 * kernel * kernel * 3 * 5


class _ScannedStack(nn.Module):
  """Test-only: `length` 3x3 convs whose parameters are stacked by nn.scan."""

  length: int = 4

  @nn.compact
  def __call__(self, x):
    class Block(nn.Module):
      @nn.compact
      def __call__(self, x, _):
        return nn.relu(nn.Conv(x.shape[-1], (3, 3))(x)), None

    stack = nn.scan(
      Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=self.length
    )
    return stack()(x, None)[0]


def test_nn_scan_multiplies_by_length():
  module = _ScannedStack(length=4)
  variables = _init(module, (1, 5, 6, 3))
  assert cost.count_params(variables) == 4 * (9 * 3 * 3 + 3)
  assert cost.count_macs(module, variables, (1, 5, 6, 3)) == 4 * 30 * 9 * 3 * 3


class _LaxLoops(nn.Module):
  """Test-only: a lax.scan over matmuls, a cond with unequal branches, a jitted sub-function."""

  @nn.compact
  def __call__(self, x):  # x: [N, 6]
    w = self.param("w", nn.initializers.ones, (6, 6))
    x, _ = jax.lax.scan(lambda c, _: (c @ w, None), x, length=5)
    x = jax.lax.cond(x.sum() > 0, lambda a: a @ w @ w, lambda a: a * 2.0, x)
    return jax.jit(lambda a: jnp.einsum("ni,ij->nj", a, w))(x)


def test_lax_scan_cond_and_jit():
  module = _LaxLoops()
  variables = _init(module, (3, 6))
  per_matmul = 3 * 6 * 6
  # scan: 5 matmuls; cond: max(2 matmuls, 0); nested jit: 1 matmul.
  assert cost.count_macs(module, variables, (3, 6)) == (5 + 2 + 1) * per_matmul


def test_while_loop_counts_body_once():
  class Loop(nn.Module):
    @nn.compact
    def __call__(self, x):
      w = self.param("w", nn.initializers.ones, (4, 4))
      return jax.lax.fori_loop(
        0, jnp.int32(x.shape[0]) + x[0, 0].astype(jnp.int32), lambda i, a: a @ w, x
      )

  module = Loop()
  variables = _init(module, (2, 4))
  assert cost.count_macs(module, variables, (2, 4)) == 2 * 4 * 4


def test_batched_dot_general():
  class Attention(nn.Module):
    @nn.compact
    def __call__(self, x):  # [B, T, D]
      return jnp.einsum("btd,bsd->bts", x, x)

  assert cost.count_macs(Attention(), {}, (2, 7, 5)) == 2 * 7 * 7 * 5


def test_remat_and_custom_jvp_are_walked():
  class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
      return jax.nn.gelu(nn.Dense(4)(x))  # gelu may be a custom_jvp: counts nothing itself

  module = nn.remat(Block)()
  variables = _init(module, (2, 3))
  assert cost.count_macs(module, variables, (2, 3)) == 2 * 3 * 4

  @jax.custom_jvp
  def matmul(a, b):
    return a @ b

  matmul.defjvp(lambda primals, tangents: (matmul(*primals), tangents[0] @ primals[1]))

  class Custom(nn.Module):
    @nn.compact
    def __call__(self, x):
      return matmul(x, self.param("w", nn.initializers.ones, (3, 4)))

  variables = _init(Custom(), (2, 3))
  assert cost.count_macs(Custom(), variables, (2, 3)) == 2 * 3 * 4

  @jax.custom_vjp
  def matmul_vjp(a, b):
    return a @ b

  matmul_vjp.defvjp(lambda a, b: (a @ b, (a, b)), lambda res, g: (g @ res[1].T, res[0].T @ g))

  class CustomVjp(nn.Module):
    @nn.compact
    def __call__(self, x):
      return matmul_vjp(x, self.param("w", nn.initializers.ones, (3, 4)))

  # Only the forward (call_jaxpr) counts, not the backward rule.
  assert cost.count_macs(CustomVjp(), variables, (2, 3)) == 2 * 3 * 4


def test_bad_shapes_raise():
  module = nn.Dense(2)
  variables = _init(module, (1, 3))
  with pytest.raises(ConfigError, match="positive"):
    cost.count_macs(module, variables, (0, 3))
  with pytest.raises(ConfigError, match="NHWC"):
    cost.macs_per_pixel(module, variables, (1, 3))
