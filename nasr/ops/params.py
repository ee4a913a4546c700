"""Parameters without a layer: a conv's {kernel, bias} created at its largest shape.

A weight-sharing supernet owns every weight at the largest shape any child needs and takes slices
of it (input slots, channel prefixes, the first blocks of a stack); these modules only create the
parameters, with the names and initialisers of `nasr.ops.conv.Conv` / `SepConv`, so a child's
parameters are slices of them and `child_params` is a selection.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


class ConvParams(nn.Module):
  """Create a conv's {"kernel": shape, "bias": [shape[-1]]} as `Conv` does; callers slice them."""

  shape: tuple[int, ...]  # kernel shape [k, k, Cin / groups, Cout] (the largest any child needs)
  stack: tuple[int, ...] = ()  # leading axes of independently initialised copies (scanned blocks)
  use_bias: bool = True  # create the bias (else it is None), as `Conv.use_bias`

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array | None]:
    """Return (kernel [*stack, *shape], bias [*stack, Cout] or None), float32."""
    init = nn.initializers.lecun_normal()
    if self.stack:
      # Each copy's fan-in is that of one kernel, as if every block had created its own.
      init = nn.initializers.lecun_normal(batch_axis=tuple(range(len(self.stack))))
    kernel = self.param("kernel", init, (*self.stack, *self.shape), jnp.float32)
    if not self.use_bias:
      return kernel, None
    bias = self.param(
      "bias", nn.initializers.zeros_init(), (*self.stack, self.shape[-1]), jnp.float32
    )
    return kernel, bias


class SepConvParams(nn.Module):
  """Create a separable conv's parameters as `SepConv` names them: depthwise, then pointwise."""

  kernel: int  # depthwise kernel size
  in_channels: int  # depthwise channels (the largest input width, e.g. slots * C)
  channels: int  # pointwise output channels
  depthwise_bias: bool = True  # as `SepConv.depthwise_bias` (else the dw bias is None)

  @nn.compact
  def __call__(self) -> tuple[tuple[jax.Array, jax.Array | None], tuple[jax.Array, jax.Array]]:
    """Return ((dw kernel [k, k, 1, Cin], dw bias [Cin] or None), (pw kernel [1, 1, Cin, C], pw
    bias))."""
    k, cin = self.kernel, self.in_channels
    dw = ConvParams((k, k, 1, cin), use_bias=self.depthwise_bias, name="depthwise")()
    pw = ConvParams((1, 1, cin, self.channels), name="pointwise")()
    return dw, pw
