"""Convolutions as pure functions of (input, kernel, bias), in the form each backend runs fast.

Every space and leaf layer computes its convs and depthwise convs here, so each form is chosen in
one place. The caller names the forms with flags, because only it knows what they depend on: the
`kernels` config (XLA's own convolutions on an accelerator, the forms of `nasr.ops.cpu_kernels` on
the CPU) and where the conv runs (`tap_grad`: inside a rolled loop). Every form computes the same
function with the same parameters; they differ in speed, and in the last bits of float results.

`dtype` is the compute dtype: the input, kernel and bias are cast to it (None: used as given).
"""

from typing import Any

import jax
import jax.numpy as jnp

from nasr.ops.cpu_kernels import (
  conv_tap_grad,
  stacked_depthwise_conv,
  strided_conv,
  transposed_conv,
)

Dtype = Any
Padding = str | tuple[tuple[int, int], tuple[int, int]]


def _cast(a: jax.Array, dtype: Dtype | None) -> jax.Array:
  return a if dtype is None else a.astype(dtype)


def _xla_conv(x, kernel, stride, dilation, groups, padding, lhs_dilation) -> jax.Array:
  return jax.lax.conv_general_dilated(
    x,
    kernel,
    window_strides=(stride, stride),
    padding=padding,
    lhs_dilation=(lhs_dilation, lhs_dilation),
    rhs_dilation=(dilation, dilation),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=groups,
  )


def _stride_one_form(kernel, stride, dilation, groups, padding, lhs_dilation) -> str | None:
  """Return "transposed" or "strided" when a cpu_kernels stride-1 form computes this conv."""
  if groups != 1 or dilation != 1 or isinstance(padding, str) or (stride > 1) == (lhs_dilation > 1):
    return None
  (lo, hi), pw = padding
  if tuple(pw) != (lo, hi):
    return None
  if lhs_dilation > 1:  # the padding of an output lhs_dilation * H (what transposed_conv makes)
    return "transposed" if hi == lhs_dilation + kernel.shape[0] - 2 - lo else None
  return "strided" if lo == hi else None


def conv(
  x: jax.Array,
  kernel: jax.Array,
  bias: jax.Array | None = None,
  *,
  dtype: Dtype | None = None,
  stride: int = 1,
  dilation: int = 1,
  groups: int = 1,
  padding: Padding = "SAME",
  lhs_dilation: int = 1,
  tap_grad: bool = False,
  matmul_1x1: bool = False,
  stride_one: bool = False,
) -> jax.Array:
  """Return the conv of NHWC x with an HWIO kernel, plus `bias` when given.

  The arguments are `lax.conv_general_dilated`'s, square. The forms, where they apply (elsewhere
  the conv is XLA's):
  - `stride_one`: a strided conv with ((p, p), (p, p)) padding, or an input-dilated one padded
    to lhs_dilation * H rows, as one stride-1 conv (`cpu_kernels.strided_conv` /
    `transposed_conv`): XLA:CPU runs those two and their gradients on a slow generic path;
  - `matmul_1x1`: a stride-1 1x1 conv as a matmul: XLA:CPU computes the conv form's kernel
    gradient through a transposed copy of its input (re-running a fused producer such as a
    depthwise conv in a cache-hostile order: 70% of an HNAS sep_conv_5x5 step at C=64);
  - `tap_grad`: the gradients of a stride-1 'SAME' conv with an odd kernel, and of the
    `stride_one` forms, as tap matmuls (`cpu_kernels.conv_tap_grad`): inside a rolled loop
    XLA:CPU computes a conv's kernel gradient ~40x slower.
  """
  form = _stride_one_form(kernel, stride, dilation, groups, padding, lhs_dilation)
  plain = stride == 1 and groups == 1 and padding == "SAME" and lhs_dilation == 1
  if stride_one and form == "transposed":
    k = _cast(kernel, dtype)
    y = transposed_conv(_cast(x, dtype), k, lhs_dilation, padding[0][0], tap_grad)
  elif stride_one and form == "strided":
    k = _cast(kernel, dtype)
    y = strided_conv(_cast(x, dtype), k, stride, padding[0][0], tap_grad)
  elif matmul_1x1 and plain and kernel.shape[:2] == (1, 1) and dilation == 1:
    y = jnp.dot(_cast(x, dtype), _cast(kernel[0, 0], dtype))
  elif tap_grad and plain and kernel.shape[0] % 2:
    y = conv_tap_grad(_cast(x, dtype), _cast(kernel, dtype), dilation)
  else:
    x = _cast(x, dtype)
    y = _xla_conv(x, _cast(kernel, dtype), stride, dilation, groups, padding, lhs_dilation)
  return y if bias is None else y + _cast(bias, dtype)


def depthwise(
  x: jax.Array,
  kernel: jax.Array,
  dilation: int = 1,
  bias: jax.Array | None = None,
  *,
  dtype: Dtype | None = None,
  shifted: bool = False,
) -> jax.Array:
  """Return the 'SAME' stride-1 depthwise conv of NHWC x with kernel [k, k, 1, C], plus `bias`.

  `shifted`: as k*k shifted multiply-adds (`cpu_kernels.stacked_depthwise_conv`): XLA:CPU's
  grouped-conv gradient is ~400x slower per multiply-add than a dense conv's (BENCHMARKS.md).
  Those multiply-adds are elementwise, invisible to `nasr.estimation.cost.count_macs`.
  """
  if shifted:
    k = _cast(kernel, dtype)[None, :, :, 0]
    y = stacked_depthwise_conv(_cast(x, dtype)[None], k, dilation)[0]
  else:
    y = conv(x, kernel, dtype=dtype, dilation=dilation, groups=x.shape[-1])
  return y if bias is None else y + _cast(bias, dtype)


def stacked_depthwise(
  h: jax.Array, kernel: jax.Array, dilation: int = 1, *, shifted: bool = False
) -> jax.Array:
  """Return n depthwise convs side by side: h [1 or n, N, H, W, C], kernel [n, k, k, C].

  Output [n, N, H, W, C]: slice e is the 'SAME' stride-1 depthwise conv of h[e] (or of h[0]) with
  kernel[e]. `shifted` as in `depthwise`; else one grouped conv over the n * C channels.
  """
  if shifted:
    return stacked_depthwise_conv(h, kernel, dilation)
  n, c = kernel.shape[0], kernel.shape[-1]
  _, b, hh, ww, _ = h.shape
  x = jnp.broadcast_to(h, (n, b, hh, ww, c)).transpose(1, 2, 3, 0, 4).reshape(b, hh, ww, n * c)
  k = kernel.transpose(1, 2, 0, 3).reshape(*kernel.shape[1:3], 1, n * c)
  y = conv(x, k, dilation=dilation, groups=n * c)
  return y.reshape(b, hh, ww, n, c).transpose(3, 0, 1, 2, 4)
