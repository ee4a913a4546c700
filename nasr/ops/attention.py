"""Channel attention (squeeze-and-excitation) and the residual channel-attention block of RCAN."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nasr.ops.conv import Conv

Dtype = Any


class ChannelAttention(nn.Module):
  """Rescale channels by sigmoid(1x1(relu(1x1(global average pool))))."""

  channels: int  # input and output channels
  reduction: int = 4  # the bottleneck has max(1, channels // reduction) channels
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return x scaled per channel by its attention weight."""
    s = jnp.mean(x.astype(self.dtype), axis=(1, 2), keepdims=True)
    s = nn.relu(
      Conv(max(1, self.channels // self.reduction), 1, dtype=self.dtype, name="squeeze")(s)
    )
    s = nn.sigmoid(Conv(self.channels, 1, dtype=self.dtype, name="excite")(s))
    return x.astype(self.dtype) * s


class RCAB(nn.Module):
  """Residual channel-attention block: x + CA(conv(relu(conv(x))))."""

  channels: int  # feature width (input = output)
  kernel: int = 3  # kernel size of both convs
  reduction: int = 4  # channel-attention reduction
  res_scale: float = 1.0  # residual branch scale
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return x plus the attended residual."""
    y = nn.relu(Conv(self.channels, self.kernel, dtype=self.dtype, name="conv1")(x))
    y = Conv(self.channels, self.kernel, dtype=self.dtype, name="conv2")(y)
    y = ChannelAttention(self.channels, self.reduction, dtype=self.dtype, name="attention")(y)
    return x.astype(y.dtype) + self.res_scale * y
