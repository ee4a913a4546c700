"""Tests of DARTS' bilevel optimisation: alpha gradients in float64, optimizers, compile-once."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from nasr import parallel, spaces
from nasr.core.errors import ConfigError
from nasr.estimation import darts

# Small op sets keep the second-order graphs quick to compile. The gradient checks hold both conv
# kinds (dilation 1 and 2); the wiring tests one.
OPS = "none,skip_connect,res_sep_conv_3x3,res_dil_conv_3x3"
SMALL_OPS = "none,skip_connect,res_dil_conv_3x3"
XI = 0.1  # large enough that the second-order term is a sizeable part (~25%) of the gradient


def _mse(pred, target):
  return jnp.mean((pred - target) ** 2)


def _rel(a, b) -> float:
  return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def _batch(rng, n, size, dtype):
  return {
    "lr": jnp.asarray(rng.uniform(size=(n, size, size, 3)), dtype),
    "hr": jnp.asarray(rng.uniform(size=(n, 2 * size, 2 * size, 3)), dtype),
  }


def _problem(dtype, loss_fn=_mse, seed=0, ops=OPS):
  """Return (space, supernet, loss, w, alpha, extra, train batch, val batch): 1 cell, 2 nodes."""
  space = spaces.get("darts_sr", ops=ops, cells=1, channels=4, nodes=2)
  net = space.supernet(2, dtype=dtype)
  rng = np.random.default_rng(seed)
  alpha = jnp.asarray(rng.normal(size=space.alpha_shape), dtype)
  tb, vb = _batch(rng, 2, 6, dtype), _batch(rng, 2, 6, dtype)
  shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), tb["lr"], alpha)["params"]
  w = jax.tree.map(lambda s: jnp.asarray(0.1 * rng.standard_normal(s.shape), dtype), shapes)
  extra = jax.tree.map(lambda p: 0.03 * jnp.asarray(rng.standard_normal(p.shape), dtype), w)
  loss = darts.make_loss(lambda w, x, a: net.apply({"params": w}, x, a), loss_fn)
  return space, net, loss, w, alpha, extra, tb, vb


@functools.cache
def _float64_fns():
  """Return the float64 problem and its jitted gradients (built once, under enable_x64)."""
  space, _, loss, w, alpha, extra, tb, vb = _problem(jnp.float64)
  grad = jax.jit(
    lambda w, a, mode, xi, form="reverse": darts.alpha_gradient(
      loss, w, a, tb, vb, mode, xi, extra, exact_form=form
    )[0],
    static_argnums=(2, 4),
  )
  unrolled = jax.jit(lambda a: loss(darts.virtual_step(loss, w, a, tb, XI, extra), a, vb))
  return space, w, alpha, grad, unrolled


def test_exact_second_order_matches_central_difference_of_unrolled_objective():
  with jax.enable_x64(True):
    space, w, alpha, grad, unrolled = _float64_fns()
    exact = np.asarray(grad(w, alpha, "exact", XI))
    exact_jvp = np.asarray(grad(w, alpha, "exact", XI, "jvp"))
    assert exact.dtype == exact_jvp.dtype == np.float64
    eps = 1e-6
    fd = np.zeros(space.alpha_shape)
    for idx in np.ndindex(*space.alpha_shape):
      e = np.zeros(space.alpha_shape)
      e[idx] = eps
      fd[idx] = (float(unrolled(alpha + e)) - float(unrolled(alpha - e))) / (2 * eps)
  assert _rel(exact, fd) < 1e-4
  assert _rel(exact_jvp, fd) < 1e-4  # the forward-over-reverse form: the same gradient
  assert _rel(exact_jvp, exact) < 1e-10


def test_finite_difference_hvp_agrees_with_exact_and_xi_zero_is_first_order():
  with jax.enable_x64(True):
    _, w, alpha, grad, _ = _float64_fns()
    exact = np.asarray(grad(w, alpha, "exact", XI))
    fd_hvp = np.asarray(grad(w, alpha, "finite_difference", XI))
    first = np.asarray(grad(w, alpha, "first_order", XI))
    exact0 = np.asarray(grad(w, alpha, "exact", 0.0))
    jvp0 = np.asarray(grad(w, alpha, "exact", 0.0, "jvp"))
    fd0 = np.asarray(grad(w, alpha, "finite_difference", 0.0))
  assert _rel(first, exact) > 0.1  # the second-order term matters here, so agreement means much
  assert _rel(fd_hvp, exact) < 1e-2
  np.testing.assert_allclose(exact0, first, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(fd0, first, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(jvp0, first, rtol=1e-12, atol=1e-15)


def test_optimizers_follow_pytorch_sgd_and_adam_with_l2():
  lr, m, wd = 0.1, 0.9, 1e-2
  tx = darts.make_w_optimizer(lr, momentum=m, weight_decay=wd, grad_clip=0.0)
  p = {"a": jnp.array([1.0, -2.0])}
  state = tx.init(p)
  buf, ref = np.zeros(2), np.array([1.0, -2.0])
  for g in ([0.5, 1.0], [-1.0, 2.0], [0.25, 0.0]):
    buf = m * buf + np.asarray(g) + wd * ref  # torch.optim.SGD, weight_decay then momentum
    ref = ref - lr * buf
    updates, state = tx.update({"a": jnp.asarray(g)}, state, p)
    p = optax.apply_updates(p, updates)
    np.testing.assert_allclose(p["a"], ref, rtol=1e-6)
    np.testing.assert_allclose(darts.momentum_buffer(state, p)["a"], buf, rtol=1e-6)
  atx = darts.make_alpha_optimizer(lr=0.01, weight_decay=wd)
  plain = optax.adam(0.01, b1=0.9, b2=0.999)
  a = jnp.array([0.3, -0.1])
  s1, s2 = atx.init(a), plain.init(a)
  u1, _ = atx.update(jnp.array([1.0, 2.0]), s1, a)
  u2, _ = plain.update(jnp.array([1.0, 2.0]) + wd * a, s2, a)  # torch.optim.Adam: L2 in the grad
  np.testing.assert_allclose(u1, u2, rtol=1e-6)
  assert darts.momentum_buffer(plain.init(p), p)["a"].tolist() == [0.0, 0.0]


def test_bad_mode_and_schedule():
  with pytest.raises(ConfigError, match="unknown alpha mode 'second'; available: first_order"):
    darts.check_mode("second")
  with pytest.raises(ConfigError, match="unknown exact_form 'hvp'; available: reverse, jvp"):
    darts.make_bilevel_step(None, None, None, "exact", xi=0.1, exact_form="hvp")
  with pytest.raises(ConfigError, match="unknown w schedule 'step'"):
    darts.make_w_schedule(0.1, "step")
  with pytest.raises(ConfigError, match="needs a fixed xi or the w_schedule"):
    darts.make_bilevel_step(None, None, None, "exact")
  sched = darts.make_w_schedule(0.1, "cosine", 10, lr_min=0.01)
  assert float(sched(0)) == pytest.approx(0.1) and float(sched(10)) == pytest.approx(0.01)


def _step_setup(mode, seed=0):
  space, _, loss, w, alpha, _, _, _ = _problem(jnp.float32, seed=seed, ops=SMALL_OPS)
  schedule = darts.make_w_schedule(0.05, "cosine", 20)
  w_tx, a_tx = darts.make_w_optimizer(schedule), darts.make_alpha_optimizer(lr=0.01)
  step = darts.make_bilevel_step(loss, w_tx, a_tx, mode, schedule)
  return loss, darts.create_state(w, alpha, w_tx, a_tx), step, schedule, a_tx


def test_bilevel_step_is_traced_once_and_uses_the_virtual_step():
  loss, state, step, schedule, a_tx = _step_setup("finite_difference")
  traces = []

  def counted(*args):
    traces.append(1)
    return step(*args)

  jitted = jax.jit(counted, donate_argnums=(0,))
  rng = np.random.default_rng(1)
  key = jax.random.PRNGKey(0)
  alphas = [np.asarray(state.alpha)]
  for i in range(6):
    tb, vb = _batch(rng, 2, 6, jnp.float32), _batch(rng, 2, 6, jnp.float32)
    if i == 5:  # replay the last step by hand: virtual step with lr, momentum and decay
      prev = jax.tree.map(jnp.copy, state)
    state, metrics = jitted(state, tb, vb, key)
    alphas.append(np.asarray(state.alpha))
    assert np.isfinite(float(metrics["val_loss"])) and np.isfinite(float(metrics["train_loss"]))
  assert len(traces) == 1
  assert int(state.step) == 6
  assert all(not np.array_equal(a, b) for a, b in zip(alphas, alphas[1:], strict=False))
  buf = darts.momentum_buffer(prev.w_opt, prev.w)
  assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(buf)) > 0
  extra = jax.tree.map(lambda b, p: 0.9 * b + 1e-3 * p, buf, prev.w)
  replay = jax.jit(
    lambda s, tb, vb, extra: a_tx.update(
      darts.alpha_gradient(loss, s.w, s.alpha, tb, vb, "finite_difference", schedule(5), extra)[0],
      s.alpha_opt,
      s.alpha,
    )[0]
  )
  updates = replay(prev, tb, vb, extra)
  np.testing.assert_allclose(state.alpha, prev.alpha + updates, rtol=1e-4, atol=1e-6)
  assert float(metrics["xi"]) == pytest.approx(float(schedule(5)))


@pytest.mark.skipif(jax.device_count() < 2, reason="needs 2 devices (JAX_NUM_CPU_DEVICES=2)")
def test_two_devices_agree_with_one():
  _, state, step, _, _ = _step_setup("first_order")
  rng = np.random.default_rng(2)
  tb, vb = _batch(rng, 4, 6, jnp.float32), _batch(rng, 4, 6, jnp.float32)
  key = jax.random.PRNGKey(0)
  one, m1 = jax.jit(step)(state, tb, vb, key)
  mesh = parallel.make_mesh(jax.devices()[:2])
  repl, split = NamedSharding(mesh, PartitionSpec()), parallel.data_sharded(mesh)
  sharded = jax.jit(step, in_shardings=(repl, split, split, repl), out_shardings=(repl, repl))
  two, m2 = sharded(jax.device_put(state, repl), tb, vb, key)
  np.testing.assert_allclose(two.alpha, one.alpha, rtol=1e-5, atol=1e-7)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), two.w, one.w)
  assert float(m2["val_loss"]) == pytest.approx(float(m1["val_loss"]), rel=1e-5)
