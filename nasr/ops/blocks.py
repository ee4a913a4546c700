"""Residual blocks shared by the baselines and the search spaces."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nasr.ops.conv import Conv

Dtype = Any


class ResBlock(nn.Module):
  """EDSR residual block without batch norm: x + res_scale * conv(relu(conv(x)))."""

  channels: int  # feature width (input = output)
  kernel: int = 3  # kernel size of both convs
  res_scale: float = 1.0  # residual branch scale (EDSR uses 0.1 for wide models)
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Return x plus the scaled residual branch."""
    y = nn.relu(Conv(self.channels, self.kernel, dtype=self.dtype, name="conv1")(x))
    y = Conv(self.channels, self.kernel, dtype=self.dtype, name="conv2")(y)
    return x.astype(y.dtype) + self.res_scale * y
