"""Zero-cost proxies: scores of an untrained network that are meant to predict its trained quality.

Each takes `apply(params, x)` (NHWC in [0, 1] -> NHWC) and the network's initial parameters, and
costs one or two forward/backward passes (Abdelfattah et al. 2021, "Zero-Cost Proxies for
Lightweight NAS"; Mellor et al. 2021, "Neural Architecture Search without Training"; Tanaka et al.
2020, "Pruning neural networks without any data by iteratively conserving synaptic flow"). Higher
is better for all three. Whether any of them ranks SR networks is what the benchmark measures.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

ApplyFn = Callable[[object, jax.Array], jax.Array]


def grad_norm(apply: ApplyFn, params, lr: jax.Array, hr: jax.Array) -> float:
  """Return the L2 norm of the L1 loss's gradient over every parameter, on one batch."""

  def loss(p):
    return jnp.mean(jnp.abs(apply(p, lr) - hr))

  grads = jax.grad(loss)(params)
  return float(jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads))))


def synflow(apply: ApplyFn, params, side: int = 16) -> float:
  """Return log SynFlow: log of sum |theta * dR/dtheta|, R the output sum at |theta| and input 1.

  The log keeps the score (a product over layers: it grows exponentially with depth) finite in
  float32; it does not change ranks.
  """
  abs_params = jax.tree.map(jnp.abs, params)
  x = jnp.ones((1, side, side, 3), jnp.float32)

  def r(p):
    return jnp.sum(apply(p, x))

  grads = jax.grad(r)(abs_params)
  total = sum(
    jnp.sum(p * g) for p, g in zip(jax.tree.leaves(abs_params), jax.tree.leaves(grads), strict=True)
  )
  return float(jnp.log(jnp.maximum(total, 1e-30)))


def jacob_cov(apply: ApplyFn, params, lr: jax.Array, eps: float = 1e-5) -> float:
  """Return the Jacobian-covariance score of NASWOT's first version over a batch of inputs.

  J[i] is the gradient of sample i's output sum with respect to its input; the score is
  -sum(log(v + eps) + 1 / (v + eps)) over the eigenvalues v of the correlation matrix of the J[i]:
  high when the network maps different inputs to distinguishable local linear maps.
  """

  def out_sum(x):
    return jnp.sum(apply(params, x))

  jac = np.asarray(jax.grad(out_sum)(lr), np.float64).reshape(lr.shape[0], -1)
  jac = jac - jac.mean(axis=1, keepdims=True)
  norms = np.linalg.norm(jac, axis=1, keepdims=True)
  corr = (jac / np.maximum(norms, 1e-12)) @ (jac / np.maximum(norms, 1e-12)).T
  v = np.linalg.eigvalsh(corr)
  v = np.clip(v, 0.0, None)
  return float(-np.sum(np.log(v + eps) + 1.0 / (v + eps)))


PROXIES = ("grad_norm", "synflow", "jacob_cov")


def all_proxies(apply: ApplyFn, params, lr: jax.Array, hr: jax.Array) -> dict[str, float]:
  """Return {proxy name: score} of every proxy in PROXIES on the batch (lr, hr)."""
  return {
    "grad_norm": grad_norm(apply, params, lr, hr),
    "synflow": synflow(apply, params),
    "jacob_cov": jacob_cov(apply, params, lr),
  }
