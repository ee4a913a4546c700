r"""How strong DARTS-SR's architecture gradient is against its batch noise and alpha's weight decay.

  python -m benchmarks.darts_alpha_signal                      # the darts_sr `default` preset
  python -m benchmarks.darts_alpha_signal --preset=tiny --warmup=4 --batches=4

Runs the preset's bilevel steps for --warmup steps (its own alpha mode), then computes the
first-order gradient of the validation loss with respect to alpha on --batches distinct batches of
the alpha half and prints: the mean gradient's size, its batch-to-batch spread (signal-to-noise of
one batch), and the L2 decay term `weight_decay * |alpha|` Adam adds to it. Where the decay term
is as large as the gradient, alpha stops at |alpha| ~ |grad| / weight_decay whatever the step size.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from nasr.estimation import darts as darts_lib
from nasr.experiment import load_config
from nasr.searches import darts

_PRESET = flags.DEFINE_string("preset", "default", "Preset of configs/darts_sr.py.")
_WARMUP = flags.DEFINE_integer("warmup", 60, "Bilevel steps before the gradients are measured.")
_BATCHES = flags.DEFINE_integer("batches", 32, "Alpha-half batches the gradient is measured on.")
_DECAY = flags.DEFINE_float(
  "weight_decay", -1.0, "Alpha's L2 decay to compare (< 0: the preset's)."
)


def main(argv):
  del argv
  config = load_config("darts_sr", _PRESET.value, lock=False)
  decay = config.alpha_optim.weight_decay if _DECAY.value < 0 else _DECAY.value
  parts = darts._prepare(config)
  supernet, state, step_fn = darts._init(config, parts)
  step = jax.jit(step_fn)
  search, rng = state["search"], state["rng"]

  def batch(sampler, i):
    return {k: jnp.asarray(v) for k, v in sampler.batch(i).items()}

  t0 = time.time()
  for i in range(_WARMUP.value):
    search, m = step(search, batch(parts["w_sampler"], i), batch(parts["a_sampler"], i), rng)
  print(
    f"{_WARMUP.value} bilevel steps in {time.time() - t0:.0f} s; val loss {float(m['val_loss']):.4f}"
  )
  loss = darts_lib.make_loss(lambda w, x, a: supernet.apply({"params": w}, x, a), parts["loss_fn"])
  grad = jax.jit(jax.grad(loss, argnums=1))
  first = 1_000_000  # batches the run never trained on
  g = np.stack(
    [
      np.asarray(grad(search.w, search.alpha, batch(parts["a_sampler"], first + j)))
      for j in range(_BATCHES.value)
    ]
  )
  mean, spread = np.abs(g.mean(0)), g.std(0)
  alpha = np.abs(np.asarray(search.alpha))
  print(f"alpha {alpha.shape}: median |alpha| {np.median(alpha):.3g}")
  print(
    f"mean gradient over {len(g)} batches: median |g| {np.median(mean):.3g}, max {mean.max():.3g}"
  )
  print(f"one batch's signal-to-noise |mean| / std: median {np.median(mean / spread):.2f}")
  print(
    f"L2 decay term {decay:g} * |alpha|: median {decay * np.median(alpha):.3g}; "
    f"the decay alone holds |alpha| near median |g| / decay = "
    f"{np.median(mean) / decay if decay > 0 else float('inf'):.3g}"
  )


if __name__ == "__main__":
  app.run(main)
