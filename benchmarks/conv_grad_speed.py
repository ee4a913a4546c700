r"""Forward and gradient time of one 3x3 depthwise, dense and dilated conv on the current device.

  python -m benchmarks.conv_grad_speed                 # [16, 64, 64, 512] input, as node 8 of a
                                                       # paper-size DeCoNAS DNB feeds its sepconv

Explains the DeCoNAS paper-size step time on XLA:CPU, whose depthwise-conv gradient is far slower
per multiply-add than a dense conv's (BENCHMARKS.md), and the shifted forms that replace it
(nasr.ops.cpu_kernels). Then times the gradient of a chain of `--chain` 3x3 convs (`--cout` wide,
`cout` channels in) written out, as a rolled `lax.scan` (how the rematerialised supernet runs its
DNBs), and as the rolled scan of `conv_tap_grad`.
"""

import time

import jax
import jax.numpy as jnp
from absl import app, flags

from nasr.ops.cpu_kernels import conv_tap_grad, stacked_depthwise_conv

_BATCH = flags.DEFINE_integer("batch", 16, "Batch size.")
_SIZE = flags.DEFINE_integer("size", 64, "Spatial side.")
_CIN = flags.DEFINE_integer("cin", 512, "Input channels.")
_COUT = flags.DEFINE_integer("cout", 64, "Output channels of the dense convs.")
_CHAIN = flags.DEFINE_integer("chain", 4, "Convs in the chain timed unrolled vs scanned.")


def _conv(x, k, groups=1, dilation=1):
  return jax.lax.conv_general_dilated(
    x,
    k,
    (1, 1),
    "SAME",
    rhs_dilation=(dilation, dilation),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=groups,
  )


def _seconds(fn, *args) -> float:
  """Return the wall time of the second call of jitted `fn` (the first compiles)."""
  jax.block_until_ready(fn(*args))
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - t0


def main(argv):
  del argv
  b, s, cin, cout = _BATCH.value, _SIZE.value, _CIN.value, _COUT.value
  x = jnp.ones((b, s, s, cin), jnp.float32)
  cases = [
    ("3x3 depthwise", lambda x, k: _conv(x, k, groups=cin), (3, 3, 1, cin), 9 * cin),
    (f"3x3 dense -> {cout}", lambda x, k: _conv(x, k), (3, 3, cin, cout), 9 * cin * cout),
    (
      "3x3 depthwise, shifted",
      lambda x, k: stacked_depthwise_conv(x[None], k[None, :, :, 0], 1)[0],
      (3, 3, 1, cin),
      9 * cin,
    ),
    (
      f"3x3 dilated 3 -> {cout}",
      lambda x, k: _conv(x, k, dilation=3),
      (3, 3, cin, cout),
      9 * cin * cout,
    ),
  ]
  print(
    f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), input {b}x{s}x{s}x{cin}"
  )
  for name, f, kshape, macs in cases:
    k = jnp.ones(kshape, jnp.float32)
    grad = jax.jit(jax.grad(lambda x, k, f=f: jnp.sum(f(x, k) ** 2), argnums=(0, 1)))
    fwd, bwd = _seconds(jax.jit(f), x, k), _seconds(grad, x, k)
    print(
      f"{name:<24} {macs * b * s * s / 1e9:8.2f} GMAC   fwd {fwd:7.3f} s   fwd+grad {bwd:7.3f} s",
      flush=True,
    )
  _chain(b, s, cout)


def _chain(b: int, s: int, c: int) -> None:
  """Print the fwd+grad time of a chain of 3x3 c->c convs: unrolled, scanned, scanned tap-grad."""
  n = _CHAIN.value
  x = jnp.ones((b, s, s, c), jnp.float32)
  ks = jnp.full((n, 3, 3, c, c), 0.01, jnp.float32)

  def unrolled(x, ks):
    for i in range(n):
      x = jnp.tanh(_conv(x, ks[i]))
    return jnp.sum(x)

  def scanned(conv):
    def loss(x, ks):
      y, _ = jax.lax.scan(lambda h, k: (jnp.tanh(conv(h, k)), None), x, ks)
      return jnp.sum(y)

    return loss

  macs = 9 * c * c * b * s * s * n
  print(f"chain of {n} 3x3 convs {c}->{c} on {b}x{s}x{s}, {macs / 1e9:.2f} GMAC forward")
  for name, loss in [
    ("unrolled", unrolled),
    ("lax.scan", scanned(_conv)),
    ("lax.scan, conv_tap_grad", scanned(lambda h, k: conv_tap_grad(h, k, 1))),
  ]:
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    print(f"  {name:<24} fwd+grad {_seconds(grad, x, ks):7.3f} s", flush=True)


if __name__ == "__main__":
  app.run(main)
