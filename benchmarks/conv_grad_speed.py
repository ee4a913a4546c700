r"""Forward and gradient time of one 3x3 depthwise, dense and dilated conv on the current device.

  python -m benchmarks.conv_grad_speed                 # [16, 64, 64, 512] input, as node 8 of a
                                                       # paper-size DeCoNAS DNB feeds its sepconv

Explains the DeCoNAS paper-size step time on XLA:CPU, whose depthwise-conv gradient is far slower
per multiply-add than a dense conv's (BENCHMARKS.md).
"""

import time

import jax
import jax.numpy as jnp
from absl import app, flags

_BATCH = flags.DEFINE_integer("batch", 16, "Batch size.")
_SIZE = flags.DEFINE_integer("size", 64, "Spatial side.")
_CIN = flags.DEFINE_integer("cin", 512, "Input channels.")
_COUT = flags.DEFINE_integer("cout", 64, "Output channels of the dense convs.")


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


if __name__ == "__main__":
  app.run(main)
