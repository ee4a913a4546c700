"""Kernels in the forms XLA:CPU runs fast: shifted depthwise convs, tap-loop conv gradients, pools.

Depthwise convolution and stride-1 pooling are written as sums / maxima of shifted slices (chosen
by `nasr.ops.functional` with `shifted=True`, as the DeCoNAS, DARTS-SR and HNAS networks and
supernets ask on the CPU).

XLA's CPU backend runs grouped (depthwise) convolutions and the gradient of `reduce_window` max
pooling slowly: on a 2-core x86 CPU, a 5x5 depthwise conv of an 8x24x24x16 batch takes 15 ms
forward and 32 ms with its gradient through `conv_general_dilated`, 0.2 ms and 2.3 ms as 25
shifted multiply-adds, which XLA fuses into one loop. A DARTS supernet holds hundreds of these
ops, so its search step uses the shifted forms. They compute the same function with the same
parameters as `conv_general_dilated` (`nasr.ops.conv.SepConv(shifted=True)` has the parameter
tree of `SepConv`), but the multiply-adds of the shifted depthwise conv are elementwise and
invisible to `nasr.estimation.cost.count_macs`: a network whose multiply-adds are reported keeps
the `conv_general_dilated` form.

`conv_tap_grad` is a dense convolution whose gradients are written out the same way: inside a
rolled loop (a `lax.scan` body, as in a rematerialised supernet) XLA:CPU computes a conv's kernel
gradient ~40x slower than in straight-line code, and k*k matmuls of shifted slices avoid it.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _taps(x: jax.Array, kernel: int, dilation: int, pad_value: float):
  """Yield (i, j, slice): the k*k shifted views of `x` [N, H, W, ...] a 'SAME' window sees."""
  if kernel % 2 == 0:
    raise ValueError(f"shifted windows need an odd kernel size, got {kernel}")
  r = dilation * (kernel - 1) // 2
  h, w = x.shape[1:3]
  pad = ((0, 0), (r, r), (r, r)) + ((0, 0),) * (x.ndim - 3)
  xp = jnp.pad(x, pad, constant_values=pad_value)
  for i in range(kernel):
    for j in range(kernel):
      yield i, j, xp[:, i * dilation : i * dilation + h, j * dilation : j * dilation + w, :]


def _stacked_forward(h: jax.Array, kernel: jax.Array, dilation: int) -> jax.Array:
  k = kernel.shape[1]
  r = dilation * (k - 1) // 2
  hh, ww = h.shape[2:4]
  hp = jnp.pad(h, ((0, 0), (0, 0), (r, r), (r, r), (0, 0)))
  out = None
  for i in range(k):
    for j in range(k):
      tap = hp[:, :, i * dilation : i * dilation + hh, j * dilation : j * dilation + ww]
      term = tap * kernel[:, None, i, None, j, None, :]  # [n, 1, 1, 1, C]
      out = term if out is None else out + term
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def stacked_depthwise_conv(h: jax.Array, kernel: jax.Array, dilation: int = 1) -> jax.Array:
  """Return n depthwise convs side by side: h [1 or n, N, H, W, C], kernel [n, k, k, C].

  Output [n, N, H, W, C]: slice e is the 'SAME' stride-1 depthwise conv of h[e] (or of h[0]) with
  kernel[e]. The gradient is written out (custom VJP): differentiated automatically, XLA's CPU
  backend recomputes the input of each of the k*k kernel-gradient reductions, twice as slow. It
  is itself differentiable (second-order DARTS differentiates through it).
  """
  return _stacked_forward(h, kernel, dilation)


def _stacked_fwd(h, kernel, dilation):
  return _stacked_forward(h, kernel, dilation), (h, kernel)


def _stacked_bwd(dilation, residuals, g):
  h, kernel = residuals
  k = kernel.shape[1]
  # d/dh: the correlation with the flipped kernel; summed over the edges when h was shared.
  gh = _stacked_forward(g, kernel[:, ::-1, ::-1], dilation)
  if h.shape[0] == 1 and gh.shape[0] != 1:
    gh = jnp.sum(gh, axis=0, keepdims=True)
  # d/dkernel[e, i, j, c] = sum over batch and pixels of tap_ij(h)[e] * g[e]: every tap re-reads
  # h and g, so the loop runs over blocks of rows small enough to stay in cache (all k*k taps of
  # a block unrolled), not over the taps (each a pass over memory): 2-3x faster at C=64, 48-96
  # pixels (BENCHMARKS.md). Rows, not images: the batch axis may be split over devices, and its
  # sum after the loop keeps an all-reduce out of every iteration.
  r = dilation * (k - 1) // 2
  n, b, hh, ww, c = g.shape
  rows = _block_rows(hh, n * b * (ww + 2 * r) * c * g.dtype.itemsize)
  hp = jnp.pad(h, ((0, 0), (0, 0), (r, r), (r, r), (0, 0)))

  def tap(hb, gb, t):
    i, j = t // k, t % k
    view = jax.lax.dynamic_slice(
      hb, (0, 0, i * dilation, j * dilation, 0), (hb.shape[0], *gb.shape[1:])
    )
    return jnp.sum(view * gb, axis=(2, 3))

  if rows == hh:  # one block (small tensors): a loop over the taps compiles faster
    _, gk = jax.lax.scan(lambda _, t: (None, tap(hp, g, t)), None, jnp.arange(k * k))
  else:

    def block(acc, start):
      hb = jax.lax.dynamic_slice_in_dim(hp, start, rows + 2 * r, axis=2)
      gb = jax.lax.dynamic_slice_in_dim(g, start, rows, axis=2)
      return acc + jnp.stack([tap(hb, gb, t) for t in range(k * k)]), None

    acc = jnp.zeros((k * k, n, b, c), jnp.promote_types(h.dtype, g.dtype))
    gk, _ = jax.lax.scan(block, acc, jnp.arange(0, hh, rows))  # [k * k, n, N, C]
  gk = gk.sum(axis=2).reshape(k, k, -1, c).transpose(2, 0, 1, 3)
  return gh, gk.astype(kernel.dtype)


# Bytes of one row block of the depthwise kernel gradient: it and its halo stay in L2. (Blocks
# also pay below the L2 size: the HNAS supernet step at C=8, 1.3 MB tensors, 1.3 s -> 1.0 s.)
_BLOCK_BYTES = 512 * 1024


def _block_rows(height: int, row_bytes: int) -> int:
  """Return the largest divisor of `height` whose rows take at most _BLOCK_BYTES (at least 1)."""
  most = max(1, _BLOCK_BYTES // max(1, row_bytes))
  return max(d for d in range(1, height + 1) if height % d == 0 and d <= most)


stacked_depthwise_conv.defvjp(_stacked_fwd, _stacked_bwd)


def _dense_conv(x: jax.Array, kernel: jax.Array, dilation: int, padding="SAME") -> jax.Array:
  return jax.lax.conv_general_dilated(
    x,
    kernel,
    window_strides=(1, 1),
    padding=padding,
    rhs_dilation=(dilation, dilation),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_tap_grad(x: jax.Array, kernel: jax.Array, dilation: int = 1, padding=None) -> jax.Array:
  """Return the stride-1 conv of NHWC x with an HWIO kernel: 'SAME' (odd sides) or `padding`.

  `padding` is ((lo, hi), (lo, hi)) (negative crops). The same function as
  `conv_general_dilated`; its VJP computes the input gradient as a conv with the flipped,
  transposed kernel and the kernel gradient as one matmul per tap, the forms XLA:CPU runs fast
  inside a `lax.scan` body (the gradient of a scanned chain of 4 3x3 64->64 convs on 16x64x64:
  15.0 s -> 0.54 s, BENCHMARKS.md).
  """
  return _dense_conv(x, kernel, dilation, _explicit(kernel, dilation, padding))


def _explicit(kernel, dilation: int, padding):
  """Return `padding`, or 'SAME' as explicit ((lo, hi), (lo, hi)) for odd kernel sides."""
  if padding is not None:
    return tuple(tuple(int(v) for v in pair) for pair in padding)
  kh, kw = kernel.shape[:2]
  if kh % 2 == 0 or kw % 2 == 0:
    raise ValueError(f"conv_tap_grad needs odd kernel sides for 'SAME', got {kernel.shape[:2]}")
  rh, rw = dilation * (kh - 1) // 2, dilation * (kw - 1) // 2
  return ((rh, rh), (rw, rw))


def _tap_fwd(x, kernel, dilation, padding):
  return _dense_conv(x, kernel, dilation, _explicit(kernel, dilation, padding)), (x, kernel)


def _tap_bwd(dilation, padding, residuals, g):
  x, kernel = residuals
  kh, kw = kernel.shape[:2]
  (lh, hh), (lw, hw) = _explicit(kernel, dilation, padding)
  # Output o reads padded input o + t: the input gradient is the full correlation of g with the
  # flipped kernel, cropped to the unpadded rows.
  eh, ew = dilation * (kh - 1), dilation * (kw - 1)
  flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)
  gx = _dense_conv(g, flipped, dilation, ((eh - lh, eh - hh), (ew - lw, ew - hw)))
  if kh == kw == 1 and (lh, hh, lw, hw) == (0, 0, 0, 0):
    return gx.astype(x.dtype), jnp.einsum("bhwi,bhwo->io", x, g)[None, None].astype(kernel.dtype)
  xp = jax.lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (lh, hh, 0), (lw, hw, 0), (0, 0, 0)))
  b, oh, ow, _ = g.shape

  def tap(_, t):
    # One shifted slice at a time: unrolled, XLA keeps all k*k copies of the input alive.
    i, j = t // kw, t % kw
    view = jax.lax.dynamic_slice(xp, (0, i * dilation, j * dilation, 0), (b, oh, ow, x.shape[3]))
    # Per example: the batch sum after the loop keeps a data-parallel all-reduce out of it.
    return None, jnp.einsum("bhwi,bhwo->bio", view, g)

  _, gk = jax.lax.scan(tap, None, jnp.arange(kh * kw))  # [kh * kw, N, Cin, Cout]
  return gx.astype(x.dtype), gk.sum(axis=1).reshape(kernel.shape).astype(kernel.dtype)


conv_tap_grad.defvjp(_tap_fwd, _tap_bwd)


def max_pool(x: jax.Array, kernel: int = 3) -> jax.Array:
  """Return the 'SAME' stride-1 max pooling of NHWC `x` (padding never wins)."""
  out = None
  for _, _, tap in _taps(x, kernel, 1, -jnp.inf):
    out = tap if out is None else jnp.maximum(out, tap)
  return out


def avg_pool(x: jax.Array, kernel: int = 3) -> jax.Array:
  """Return the 'SAME' stride-1 average pooling of NHWC `x`, padding excluded from the mean."""
  total = sum(tap for _, _, tap in _taps(x, kernel, 1, 0.0))
  ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
  count = sum(tap for _, _, tap in _taps(ones, kernel, 1, 0.0))
  return total / count


def _dense(x: jax.Array, kernel: jax.Array, padding, tap_grad: bool) -> jax.Array:
  if tap_grad:  # inside a rolled loop (a supernet's scan over edges): see conv_tap_grad
    return conv_tap_grad(x, kernel, 1, padding)
  return _dense_conv(x, kernel, 1, padding)


def transposed_conv(
  x: jax.Array, kernel: jax.Array, stride: int, pad_lo: int, tap_grad: bool = False
) -> jax.Array:
  """Return conv_general_dilated(x, kernel, lhs_dilation=stride) padded to stride * H x stride * W.

  The padding is pad_lo before and stride + k - 2 - pad_lo after (what gives stride * H rows).
  The same function (no kernel flip) as one stride-1
  conv at the input's resolution with stride**2 * Cout outputs, then a pixel shuffle: XLA:CPU runs
  input-dilated convolutions and their gradients on a slow generic path (BENCHMARKS.md).
  `tap_grad`: that conv's gradient by `conv_tap_grad` (inside a rolled loop).
  """
  k, s = kernel.shape[0], stride
  cin, cout = kernel.shape[2], kernel.shape[3]
  # Output row s * m + r reads input row m + (r + t - pad_lo) / s through tap t, when whole.
  taps = [
    [(t, (r + t - pad_lo) // s) for t in range(k) if (r + t - pad_lo) % s == 0] for r in range(s)
  ]
  lo = min(off for phase in taps for _, off in phase)
  hi = max(off for phase in taps for _, off in phase)
  size = hi - lo + 1
  index = np.full((size, s), k, np.int32)  # k = a zero tap
  for r, phase in enumerate(taps):
    for t, off in phase:
      index[off - lo, r] = t
  padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
  # [size_h, s_h, size_w, s_w, cin, cout] -> [size_h, size_w, cin, cout, s_h, s_w]
  w = padded[index[:, :, None, None], index[None, None, :, :]]
  w = w.transpose(0, 2, 4, 5, 1, 3).reshape(size, size, cin, cout * s * s)
  y = _dense(x, w, ((-lo, hi), (-lo, hi)), tap_grad)
  n, h, wd, _ = y.shape
  y = y.reshape(n, h, wd, cout, s, s).transpose(0, 1, 4, 2, 5, 3)
  return y.reshape(n, h * s, wd * s, cout)


def strided_conv(
  x: jax.Array, kernel: jax.Array, stride: int, pad: int, tap_grad: bool = False
) -> jax.Array:
  """Return the stride-`stride` conv of x with `pad` zeros on each side, as a stride-1 conv.

  The input is rearranged space-to-depth (stride**2 * Cin channels) and convolved with the
  kernel rearranged to match: the same function, on XLA:CPU's fast stride-1 path. `tap_grad`:
  that conv's gradient by `conv_tap_grad` (inside a rolled loop).
  """
  k, s = kernel.shape[0], stride
  cin, cout = kernel.shape[2], kernel.shape[3]
  n, h, w, _ = x.shape
  out_h, out_w = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
  a = -(-k // s)  # taps per phase
  need_h, need_w = s * (out_h + a - 1), s * (out_w + a - 1)
  xp = jnp.pad(
    x, ((0, 0), (pad, max(0, need_h - h - pad)), (pad, max(0, need_w - w - pad)), (0, 0))
  )
  xp = xp[:, :need_h, :need_w]
  xs = xp.reshape(n, need_h // s, s, need_w // s, s, cin).transpose(0, 1, 3, 2, 4, 5)
  xs = xs.reshape(n, need_h // s, need_w // s, s * s * cin)
  kp = jnp.pad(kernel, ((0, a * s - k), (0, a * s - k), (0, 0), (0, 0)))
  kp = (
    kp.reshape(a, s, a, s, cin, cout).transpose(0, 2, 1, 3, 4, 5).reshape(a, a, s * s * cin, cout)
  )
  return _dense(xs, kp, ((0, 0), (0, 0)), tap_grad)
