r"""Digests of the compiled CPU steps of BENCHMARKS.md's rows: equal digests, the same program.

  PYTHONPATH=. python -m benchmarks.hlo_digest
  git worktree add /tmp/base REV && PYTHONPATH=/tmp/base python benchmarks/hlo_digest.py

Compiles (does not run) the DeCoNAS supernet step (masks and lax.cond, shifted, N4 M4 C16, batch 8
of 32x32), the DARTS-SR bilevel step (first order and exact, 3 cells x 16), and, through the
configs as the launchers build them, EDSR's train:default step and the DeCoNAS default search's
supernet step; prints a digest of each optimised HLO module with its metadata (source lines, op
names) stripped. The second command runs the same file against another checkout's nasr (it uses
only APIs that predate config.kernels): where the digests agree, the commits run the same program
on this CPU and a timing difference between them is the machine's.
"""

import hashlib
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import nasr
from nasr import compute, parallel, spaces, training
from nasr.estimation import darts, losses
from nasr.estimation import train as train_lib
from nasr.experiment import load_config


def _zeros(shapes):
  return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)


def _supernet_step(net, tx, loss):
  apply = lambda w, x, r, a: net.apply({"params": w}, x, a)  # noqa: E731
  return train_lib.make_train_step(apply, tx, loss)


def digest(compiled) -> tuple[str, int]:
  """Return (sha256 prefix, length) of the compiled module's text without its metadata."""
  text = compiled.as_text()
  text = re.sub(r", metadata=\{[^}]*\}", "", text)
  text = re.sub(r"stack_frame_id=\d+", "", text)
  skip = ("HloModule", "FileNames", "FunctionNames", "FileLocations", "StackFrames")
  lines = text.splitlines()
  text = "\n".join(x for x in lines if not x.startswith(skip) and not re.match(r"^\s*\d+ ", x))
  return hashlib.sha256(text.encode()).hexdigest()[:16], len(text)


def main() -> None:
  """Print the digests of the steps, built from the nasr that is imported."""
  print("nasr from", nasr.__file__)
  configs = Path(nasr.__file__).resolve().parent.parent / "configs"  # that checkout's configs
  rng = np.random.default_rng(0)
  b, p, s = 8, 32, 2
  batch = {
    "lr": jnp.zeros((b, p, p, 3), jnp.uint8),
    "hr": jnp.zeros((b, p * s, p * s, 3), jnp.uint8),
  }
  space = spaces.get("deconas", blocks=4, nodes=4, channels=16)
  tok = jnp.asarray(space.token_spec().sample(rng))
  for skip in (False, True):
    net = space.supernet(s, skip_inactive=skip, shifted=True)
    shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1, p, p, 3)), tok)["params"]
    params = _zeros(shapes)
    tx = optax.adam(1e-4)
    step = _supernet_step(net, tx, losses.l1)
    c = (
      jax.jit(step, donate_argnums=(0,))
      .lower(train_lib.create_train_state(params, tx), batch, jax.random.PRNGKey(0), tok)
      .compile()
    )
    print("deconas", "cond" if skip else "masks", *digest(c))
  ds = spaces.get("darts_sr", ops="improved", cells=3, channels=16, nodes=4)
  net = ds.supernet(s, shifted=True)
  alpha = ds.init_alpha(jax.random.PRNGKey(0))
  shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1, p, p, 3)), alpha)["params"]
  w = _zeros(shapes)
  schedule = darts.make_w_schedule(1e-2, "cosine", 1000)
  w_tx, a_tx = darts.make_w_optimizer(schedule), darts.make_alpha_optimizer()
  loss = darts.make_loss(lambda w, x, a: net.apply({"params": w}, x, a), losses.l1)
  for mode, form in (("first_order", "reverse"), ("exact", "jvp")):
    step = darts.make_bilevel_step(loss, w_tx, a_tx, mode, schedule, exact_form=form)
    c = (
      jax.jit(step, donate_argnums=(0,))
      .lower(darts.create_state(w, alpha, w_tx, a_tx), batch, batch, jax.random.PRNGKey(0))
      .compile()
    )
    print("darts", mode, *digest(c))
  # Through the configs, as the launchers build them (config.kernels=auto where it exists).
  mesh = parallel.make_mesh()
  cfg = load_config(configs / "train.py", "default", lock=False)
  net = training.build_network(cfg, 2)
  params = compute.init_params(net, 24, 0)
  tx, _ = compute.make_tx(cfg, 1000)
  step = compute.compile_train_step(net, tx, compute.make_config_loss(cfg), mesh)
  st = train_lib.create_train_state(params, tx)
  bb = {"lr": jnp.zeros((16, 24, 24, 3), jnp.uint8), "hr": jnp.zeros((16, 48, 48, 3), jnp.uint8)}
  print("train:default step", *digest(step.lower(st, bb, jax.random.PRNGKey(0)).compile()))
  cfg = load_config(configs / "deconas.py", "default", lock=False)
  space = spaces.get("deconas", blocks=4, nodes=4, channels=16)
  opts = (
    compute.supernet_options(cfg, space)
    if hasattr(training, "supernet_options")
    else dict(cfg.supernet)
  )
  print("deconas:default supernet options", {k: v for k, v in opts.items() if k != "dtype"})
  net = space.supernet(2, **opts)
  shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1, p, p, 3)), tok)["params"]
  params = _zeros(shapes)
  tx, _ = compute.make_tx(cfg, 1000)
  step = compute.compile_train_step(net, tx, compute.make_config_loss(cfg), mesh, supernet=True)
  print(
    "deconas:default step",
    *digest(
      step.lower(
        train_lib.create_train_state(params, tx), batch, jax.random.PRNGKey(0), tok
      ).compile()
    ),
  )


if __name__ == "__main__":
  main()
