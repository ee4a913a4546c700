"""Convolution variants: plain, depthwise-separable and residual.

Every conv uses 'SAME' padding, float32 parameters and a separate compute `dtype`; parameters are
created directly (not through a nested `nn.Conv`) so the parameter tree stays flat:
`{"kernel": [k, k, Cin / groups, Cout], "bias": [Cout]}`. The math is `nasr.ops.functional`'s.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nasr.ops.functional import conv, depthwise

Dtype = Any
Initializer = Callable[..., jax.Array]


class Conv(nn.Module):
  """A k x k convolution with dilation, groups and optional bias ('SAME' padding, stride 1)."""

  channels: int  # output channels
  kernel: int = 3  # spatial kernel size (k x k)
  dilation: int = 1  # kernel dilation; the receptive field is dilation * (kernel - 1) + 1
  groups: int = 1  # feature groups; input and output channels must be divisible by it
  use_bias: bool = True  # add a learned per-channel bias
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)
  kernel_init: Initializer = nn.initializers.lecun_normal()  # kernel initialiser
  bias_init: Initializer = nn.initializers.zeros_init()  # bias initialiser
  # A depthwise conv (groups = input = output channels) as shifted multiply-adds: the same
  # function, fast on XLA:CPU (nasr.ops.functional.depthwise).
  shifted: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return the convolved NHWC batch with `channels` channels."""
    cin = x.shape[-1]
    if cin % self.groups or self.channels % self.groups:
      raise ValueError(
        f"{self.name}: channels {cin} -> {self.channels} are not divisible by groups={self.groups}"
      )
    kernel = self.param(
      "kernel",
      self.kernel_init,
      (self.kernel, self.kernel, cin // self.groups, self.channels),
      jnp.float32,
    )
    if self.shifted and not cin == self.channels == self.groups:
      raise ValueError(f"{self.name}: shifted needs a depthwise conv, got groups={self.groups}")
    bias = None
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.channels,), jnp.float32)
    if self.shifted:
      return depthwise(x, kernel, self.dilation, bias, dtype=self.dtype, shifted=True)
    return conv(x, kernel, bias, dtype=self.dtype, dilation=self.dilation, groups=self.groups)


class SepConv(nn.Module):
  """A depthwise k x k convolution followed by a pointwise 1 x 1 convolution."""

  channels: int  # output channels (of the pointwise conv)
  kernel: int = 3  # depthwise kernel size
  dilation: int = 1  # depthwise kernel dilation
  use_bias: bool = True  # biases on the convs
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)
  shifted: bool = False  # the depthwise conv as shifted multiply-adds (fast on CPU, same function)
  # With use_bias, the depthwise conv's bias too; without it one bias follows the pointwise conv,
  # the same function (a linear pointwise conv absorbs a depthwise bias) with fewer parameters.
  depthwise_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return the separable convolution of an NHWC batch."""
    cin = x.shape[-1]
    x = Conv(
      cin,
      self.kernel,
      self.dilation,
      groups=cin,
      use_bias=self.use_bias and self.depthwise_bias,
      dtype=self.dtype,
      shifted=self.shifted,
      name="depthwise",
    )(x)
    return Conv(self.channels, 1, use_bias=self.use_bias, dtype=self.dtype, name="pointwise")(x)


class ResidualOp(nn.Module):
  """Wrap an op that keeps the shape: return op(x) + x."""

  op: nn.Module  # a shape-preserving op (its output channels must equal its input channels)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return op(x) + x."""
    y = self.op(x)
    if y.shape != x.shape:
      raise ValueError(f"ResidualOp needs a shape-preserving op, got {x.shape} -> {y.shape}")
    return y + x.astype(y.dtype)
