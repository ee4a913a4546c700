"""GP-NAS: Gaussian-process regression over an enumerable grid of architectures (Li et al., CVPR
2020; used by "Heterogeneous model ensemble for real image SR", AIM 2020).

Encoding. Position i of the tokens takes t_i in range(c_i); it is read as an ordinal value and
normalised to x_i = t_i / (c_i - 1) in [0, 1] (x_i = 0 where c_i = 1). A space whose choices are
ordered (feature widths, depths) gets a smooth model; an unordered choice (a family) still works,
it is just the corner of a [0, 1] axis.

Model. Rewards are standardised with the observed mean and standard deviation, then

  y = f(x) + eps,  eps ~ N(0, s_n^2),  f ~ GP(m(x), k(x, x'))
  m(x) = b0 + b . h(x),  h(x) = 2 x - 1 in [-1, 1]^P,  (b0, b) ~ N(0, s_b^2 I)
  k(x, x') = s_f^2 r(|(x - x') / l|)  with r = RBF, Matern 3/2, Matern 5/2 or exponential

The linear mean's coefficients are integrated out (Rasmussen and Williams, sec. 2.7), which adds
s_b^2 (1 + h(x) . h(x')) to the kernel; its posterior mean is the generalised-least-squares fit
shrunk by the prior. theta = (l [P] (one per position with `ard`, else shared), s_f^2, s_n^2,
s_b^2) maximises the log marginal likelihood plus a weak Gaussian prior on log theta (`prior_std`;
0 = pure maximum likelihood), by Adam on log theta from the current value and `fit_restarts` fixed
starts, and is refitted on every update.

Sampling ("mi", the default). The next batch is chosen greedily for the information it gives
about the performance over the whole space: each pick is the unobserved grid point whose measurement
would most reduce the total posterior variance of f over the grid (or over a random reference subset
of `reference_size` points when the grid is larger),
  gain(x) = sum_v cov(f_v, f_x | D)^2 / (var(f_x | D) + s_n^2),
then the posterior is conditioned on a pending measurement there (a rank-one downdate; the variance
does not depend on the unseen value) and the next point is chosen. The joint information
I(y_A; f) = 1/2 log det(I + K_A|D / s_n^2) is maximised greedily by the largest posterior variance
alone, which is `acquisition="variance"`; it favours the grid's faces and corners (they have the
fewest neighbours), whereas the variance reduction over the whole grid favours points that inform
many others. On a synthetic grid (tests/strategies/test_gp.py) the variance-reduction design makes
the GP more accurate over the grid than a random design of the same size, and the GP's best
prediction reaches the true top 5 in fewer evaluations than random search. With no observations
either is a space-filling design under the prior. `"ucb"` (mean + ucb_beta * std) and
`"ei"` (expected improvement over the best observation) choose batches the same way, conditioning
the variance on the pending picks and keeping the mean (kriging believer).

State. Arrays only: observed tokens and rewards in a fixed-capacity buffer, the fitted log theta,
and the spec's choices and kernel id, so `predict(state, tokens)` works without the strategy.
Observations past `capacity` are dropped (the `dropped` metric counts them); a non-finite reward
(a diverged candidate) is kept as observed, so it is not proposed again, but ignored by the fit.

Example:
  gp = strategies.get("gp", spec, kernel="matern52")
  state = gp.init(jax.random.key(0))
  tokens, aux = gp.propose(state, jax.random.key(1), 4)   # aux["mean"], aux["std"]: predictions
  state, metrics = gp.update(state, tokens, rewards)
  mean, var = gp_lib.predict(state, gp_lib.grid_tokens(spec))
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasr.core import ConfigError, TokenSpec
from nasr.strategies.base import STRATEGIES, Strategy

KERNELS = ("rbf", "matern32", "matern52", "exponential")
ACQUISITIONS = ("mi", "variance", "ucb", "ei")

_JITTER = 1e-6
# Bounds of log theta (standardised rewards, features in [0, 1]): keep the Cholesky well posed.
_LOG_L = (math.log(0.02), math.log(20.0))
_LOG_SF2 = (math.log(1e-2), math.log(1e2))
_LOG_SB2 = (math.log(1e-4), math.log(1e1))
_LOG_SN2_MAX = 0.0


class GPState(NamedTuple):
  """Observations, fitted hyper-parameters and the grid's description (arrays only)."""

  tokens: jax.Array  # int32 [capacity, P]: observed tokens; rows >= count are unused
  rewards: jax.Array  # float32 [capacity]: their rewards (NaN: diverged, ignored by the fit)
  count: jax.Array  # int32 scalar: rows in use
  log_lengthscale: jax.Array  # float32 [P]: log l per position (all equal without ARD)
  log_signal_var: jax.Array  # float32 scalar: log s_f^2 (standardised units)
  log_noise_var: jax.Array  # float32 scalar: log s_n^2
  log_mean_var: jax.Array  # float32 scalar: log s_b^2, prior variance of the linear mean
  choices: jax.Array  # int32 [P]: the spec's choices (to encode tokens)
  kernel: jax.Array  # int32 scalar: index into KERNELS
  nll: jax.Array  # float32 scalar: fitted negative log marginal likelihood per observation


def grid_tokens(spec: TokenSpec) -> np.ndarray:
  """Return every token sequence of `spec` (int32 [spec.size, len(spec)]), last position fastest."""
  grid = np.indices(spec.choices, dtype=np.int32).reshape(len(spec), -1).T
  return np.ascontiguousarray(grid)


def grid_index(tokens, choices) -> jax.Array:
  """Return the row of `tokens` [..., P] in `grid_tokens` (mixed radix, last position fastest)."""
  choices = jnp.asarray(choices, jnp.int32)
  strides = jnp.concatenate([jnp.cumprod(choices[::-1])[::-1][1:], jnp.ones((1,), jnp.int32)])
  return jnp.sum(jnp.asarray(tokens, jnp.int32) * strides, axis=-1)


def encode(tokens, choices) -> jax.Array:
  """Return the features of `tokens` [..., P]: t_i / (c_i - 1) in [0, 1] (0 where c_i = 1)."""
  denom = jnp.maximum(jnp.asarray(choices, jnp.float32) - 1.0, 1.0)
  return jnp.asarray(tokens, jnp.float32) / denom


# ----------------------------------------------------------------------------------------------
# Kernel and posterior (pure functions of log theta and the observations).


class _Theta(NamedTuple):
  log_l: jax.Array  # [P]
  log_sf2: jax.Array
  log_sn2: jax.Array
  log_sb2: jax.Array


def _theta(state: GPState) -> _Theta:
  return _Theta(
    state.log_lengthscale, state.log_signal_var, state.log_noise_var, state.log_mean_var
  )


def _correlation(kernel: jax.Array, r2: jax.Array) -> jax.Array:
  """Return the stationary correlation at squared scaled distance r2, for kernel id `kernel`."""
  # sqrt'(0) is infinite; the offset keeps gradients finite where x == x' (dr2 is 0 there).
  r = jnp.sqrt(r2 + 1e-12)
  s3, s5 = math.sqrt(3.0), math.sqrt(5.0)
  branches = (
    lambda: jnp.exp(-0.5 * r2),
    lambda: (1.0 + s3 * r) * jnp.exp(-s3 * r),
    lambda: (1.0 + s5 * r + (5.0 / 3.0) * r2) * jnp.exp(-s5 * r),
    lambda: jnp.exp(-r),
  )
  return jax.lax.switch(kernel, branches)


def _kernel(kernel, theta: _Theta, x1: jax.Array, x2: jax.Array) -> jax.Array:
  """Return k(x1, x2) [N, M] including the integrated-out linear mean."""
  inv_l = jnp.exp(-theta.log_l)
  d = (x1[:, None, :] - x2[None, :, :]) * inv_l
  stationary = jnp.exp(theta.log_sf2) * _correlation(kernel, jnp.sum(d * d, axis=-1))
  h1, h2 = 2.0 * x1 - 1.0, 2.0 * x2 - 1.0
  return stationary + jnp.exp(theta.log_sb2) * (1.0 + h1 @ h2.T)


def _kernel_diag(theta: _Theta, x: jax.Array) -> jax.Array:
  """Return k(x, x) [N] (every correlation is 1 at distance 0)."""
  h = 2.0 * x - 1.0
  return jnp.exp(theta.log_sf2) + jnp.exp(theta.log_sb2) * (1.0 + jnp.sum(h * h, axis=-1))


def _valid(state: GPState) -> jax.Array:
  rows = jnp.arange(state.rewards.shape[0]) < state.count
  return rows & jnp.isfinite(state.rewards)


def _standardise(state: GPState) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Return (valid mask, standardised rewards (0 where invalid), mean, std) of the observations."""
  valid = _valid(state)
  n = jnp.sum(valid)
  r = jnp.where(valid, state.rewards, 0.0)
  mu = jnp.sum(r) / jnp.maximum(n, 1)
  var = jnp.sum(jnp.where(valid, (r - mu) ** 2, 0.0)) / jnp.maximum(n, 1)
  sd = jnp.where((n > 1) & (var > 1e-12), jnp.sqrt(var), 1.0)
  return valid, jnp.where(valid, (r - mu) / sd, 0.0), mu, sd


def _cholesky(kernel, theta: _Theta, x: jax.Array, valid: jax.Array) -> jax.Array:
  """Return the Cholesky factor of K + s_n^2 I over the valid rows (identity on the others)."""
  m = valid.astype(jnp.float32)
  k = _kernel(kernel, theta, x, x) * (m[:, None] * m[None, :])
  noise = jnp.where(valid, jnp.exp(theta.log_sn2) + _JITTER, 1.0)
  return jnp.linalg.cholesky(k + jnp.diag(noise))


def _nll(kernel, theta: _Theta, x, y, valid) -> jax.Array:
  """Return the negative log marginal likelihood of the valid standardised rewards y."""
  chol = _cholesky(kernel, theta, x, valid)
  alpha = jax.scipy.linalg.cho_solve((chol, True), y)
  n = jnp.sum(valid)
  return 0.5 * y @ alpha + jnp.sum(jnp.log(jnp.diag(chol))) + 0.5 * n * math.log(2 * math.pi)


class _Posterior(NamedTuple):
  chol: jax.Array  # [cap, cap]
  alpha: jax.Array  # [cap]: (K + s_n^2 I)^-1 y
  x: jax.Array  # [cap, P]
  valid: jax.Array  # [cap]
  mu: jax.Array  # reward mean
  sd: jax.Array  # reward std


def _posterior(state: GPState) -> _Posterior:
  valid, y, mu, sd = _standardise(state)
  x = encode(state.tokens, state.choices)
  chol = _cholesky(state.kernel, _theta(state), x, valid)
  alpha = jax.scipy.linalg.cho_solve((chol, True), y)
  return _Posterior(chol, alpha, x, valid, mu, sd)


def _predict_std_units(state: GPState, post: _Posterior, xq: jax.Array):
  """Return (mean, var, v) at features xq in standardised units; v = L^-1 k(X, xq) [cap, N]."""
  theta = _theta(state)
  ks = _kernel(state.kernel, theta, post.x, xq) * post.valid[:, None].astype(jnp.float32)
  mean = ks.T @ post.alpha
  v = jax.scipy.linalg.solve_triangular(post.chol, ks, lower=True)
  var = jnp.maximum(_kernel_diag(theta, xq) - jnp.sum(v * v, axis=0), 0.0)
  return mean, var, v


def predict(state: GPState, tokens) -> tuple[jax.Array, jax.Array]:
  """Return the posterior mean and variance of f at `tokens` [N, P], in reward units.

  The variance is that of the noise-free performance f; add `noise_var(state)` for a new
  measurement's.
  """
  post = _posterior(state)
  mean, var, _ = _predict_std_units(state, post, encode(tokens, state.choices))
  return mean * post.sd + post.mu, var * post.sd**2


def loo_predict(state: GPState) -> tuple[jax.Array, jax.Array]:
  """Return the leave-one-out predictive mean and variance (of y) of every buffer row.

  Row i is predicted from all other valid observations (Rasmussen and Williams eq. 5.12); rows
  that are unused or non-finite get NaN.
  """
  post = _posterior(state)
  cap = post.valid.shape[0]
  k_inv = jax.scipy.linalg.cho_solve((post.chol, True), jnp.eye(cap))
  d = jnp.diag(k_inv)
  _, y, _, _ = _standardise(state)
  mean = y - post.alpha / d
  var = 1.0 / d
  mean = jnp.where(post.valid, mean * post.sd + post.mu, jnp.nan)
  return mean, jnp.where(post.valid, var * post.sd**2, jnp.nan)


def noise_var(state: GPState) -> jax.Array:
  """Return the fitted observation-noise variance in reward units."""
  _, _, _, sd = _standardise(state)
  return jnp.exp(state.log_noise_var) * sd**2


def hyperparameters(state: GPState) -> dict:
  """Return the fitted hyper-parameters as plain Python values (for JSON reports)."""
  _, _, mu, sd = _standardise(state)
  return {
    "kernel": KERNELS[int(state.kernel)],
    "lengthscale": [float(v) for v in np.exp(np.asarray(state.log_lengthscale))],
    "signal_var": float(np.exp(state.log_signal_var) * sd**2),
    "noise_var": float(np.exp(state.log_noise_var) * sd**2),
    "mean_prior_var": float(np.exp(state.log_mean_var) * sd**2),
    "reward_mean": float(mu),
    "reward_std": float(sd),
    "nll_per_observation": float(state.nll),
    "observations": int(state.count),
  }


# ----------------------------------------------------------------------------------------------
# The strategy.


@STRATEGIES.register("gp")
def make_gp(
  spec: TokenSpec,
  kernel: str = "matern52",
  acquisition: str = "mi",
  ard: bool = True,
  capacity: int = 256,
  max_grid: int = 200_000,
  fit_steps: int = 150,
  fit_restarts: int = 3,
  learning_rate: float = 0.05,
  prior_std: float = 2.0,
  init_lengthscale: float = 0.5,
  init_noise_var: float = 0.05,
  min_noise_var: float = 1e-4,
  ucb_beta: float = 2.0,
  reference_size: int = 2048,
) -> Strategy:
  """Return a GP-NAS strategy over the whole grid of `spec`.

  Args:
    spec: the decisions; every token combination is a candidate, so spec.size <= max_grid.
    kernel: one of KERNELS.
    acquisition: "mi" (greedy variance reduction over the grid), "variance" (largest posterior
      variance, the greedy maximiser of I(y_A; f)), "ucb" or "ei".
    ard: one length-scale per position (else one shared).
    capacity: most observations kept (the state's buffer size).
    max_grid: largest grid accepted (propose holds [grid, capacity] arrays).
    fit_steps: Adam steps per hyper-parameter refit (0: never refit).
    fit_restarts: extra fixed starting points of the refit (isotropic length-scales).
    learning_rate: Adam step size on log theta.
    prior_std: std of the Gaussian prior on log theta around its initial value (0: pure ML).
    init_lengthscale: initial length-scale (features are in [0, 1]).
    init_noise_var: initial noise variance (standardised rewards).
    min_noise_var: lower bound of the noise variance (standardised), for a stable Cholesky.
    ucb_beta: exploration weight of "ucb".
    reference_size: grid points over which "mi" sums the variance reduction (a random subset
      when the grid is larger; capped so the [reference, grid] covariance stays under 128 MiB).
  """
  if kernel not in KERNELS:
    raise ConfigError(f"gp: kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
  if acquisition not in ACQUISITIONS:
    raise ConfigError(
      f"gp: acquisition must be one of {', '.join(ACQUISITIONS)}, got {acquisition!r}"
    )
  if spec.size > max_grid:
    raise ConfigError(
      f"gp: the grid has {spec.size:,} architectures, more than max_grid={max_grid:,}; "
      "GP-NAS enumerates the whole grid: shrink the space or raise max_grid"
    )
  for key, value in (("capacity", capacity), ("reference_size", reference_size)):
    if int(value) < 1:
      raise ConfigError(f"gp: {key} must be positive, got {value}")
  if fit_steps < 0 or fit_restarts < 0 or learning_rate <= 0 or prior_std < 0:
    raise ConfigError(
      "gp: fit_steps, fit_restarts and prior_std must be >= 0 and learning_rate > 0, got "
      f"{fit_steps}, {fit_restarts}, {prior_std}, {learning_rate}"
    )
  for key, value in (
    ("init_lengthscale", init_lengthscale),
    ("init_noise_var", init_noise_var),
    ("min_noise_var", min_noise_var),
  ):
    if value <= 0:
      raise ConfigError(f"gp: {key} must be positive, got {value}")
  num_pos, kernel_id = len(spec), KERNELS.index(kernel)
  grid = jnp.asarray(grid_tokens(spec))
  num_grid = int(grid.shape[0])
  # "mi" holds a [reference, grid] covariance: at most 2^25 entries (128 MiB).
  num_ref = max(1, min(num_grid, int(reference_size), 2**25 // num_grid))
  choices = jnp.asarray(spec.choices, jnp.int32)
  log_sn2_bounds = (math.log(min_noise_var), _LOG_SN2_MAX)
  theta0 = _Theta(
    jnp.full((num_pos,), math.log(init_lengthscale), jnp.float32),
    jnp.zeros((), jnp.float32),
    jnp.asarray(math.log(max(init_noise_var, min_noise_var)), jnp.float32),
    jnp.asarray(math.log(0.1), jnp.float32),
  )
  starts = np.geomspace(0.15, 1.5, fit_restarts) if fit_restarts else np.zeros((0,))
  tx = optax.adam(learning_rate)

  def clip(theta: _Theta) -> _Theta:
    log_l = theta.log_l if ard else jnp.full_like(theta.log_l, theta.log_l[0])
    return _Theta(
      jnp.clip(log_l, *_LOG_L),
      jnp.clip(theta.log_sf2, *_LOG_SF2),
      jnp.clip(theta.log_sn2, *log_sn2_bounds),
      jnp.clip(theta.log_sb2, *_LOG_SB2),
    )

  def objective(theta: _Theta, x, y, valid) -> jax.Array:
    theta = clip(theta)
    n = jnp.maximum(jnp.sum(valid), 1)
    loss = _nll(kernel_id, theta, x, y, valid)
    if prior_std > 0:
      # The tied length-scale is counted once, so ARD and shared fits see the same prior.
      dl = theta.log_l - theta0.log_l
      dl2 = jnp.sum(dl * dl) if ard else dl[0] ** 2
      rest = [theta.log_sf2 - theta0.log_sf2, theta.log_sn2 - theta0.log_sn2]
      rest.append(theta.log_sb2 - theta0.log_sb2)
      loss = loss + 0.5 * (dl2 + sum(v * v for v in rest)) / prior_std**2
    return loss / n

  def fit(theta: _Theta, x, y, valid) -> tuple[_Theta, jax.Array]:
    """Return the best of Adam runs from `theta` and the fixed starts, and its objective."""
    inits = [theta] + [
      theta0._replace(log_l=jnp.full_like(theta0.log_l, math.log(s))) for s in starts
    ]
    batch = jax.tree.map(lambda *a: jnp.stack(a), *inits)
    grad_fn = jax.value_and_grad(objective)

    def run(t0):
      def step(carry, _):
        t, opt = carry
        _, g = grad_fn(t, x, y, valid)
        g = jax.tree.map(lambda v: jnp.where(jnp.isfinite(v), v, 0.0), g)
        upd, opt = tx.update(g, opt)
        return (clip(optax.apply_updates(t, upd)), opt), None

      (t, _), _ = jax.lax.scan(step, (t0, tx.init(t0)), None, length=fit_steps)
      loss = objective(t, x, y, valid)
      return t, jnp.where(jnp.isfinite(loss), loss, jnp.inf)

    thetas, losses = jax.vmap(run)(batch)
    best = jnp.argmin(losses)
    return jax.tree.map(lambda a: a[best], thetas), losses[best]

  def init(rng: jax.Array) -> GPState:
    """Return an empty GP with the initial hyper-parameters; `rng` is unused."""
    del rng
    return GPState(
      tokens=jnp.zeros((capacity, num_pos), jnp.int32),
      rewards=jnp.full((capacity,), jnp.nan, jnp.float32),
      count=jnp.zeros((), jnp.int32),
      log_lengthscale=theta0.log_l,
      log_signal_var=theta0.log_sf2,
      log_noise_var=theta0.log_sn2,
      log_mean_var=theta0.log_sb2,
      choices=choices,
      kernel=jnp.asarray(kernel_id, jnp.int32),
      nll=jnp.full((), jnp.nan, jnp.float32),
    )

  def propose(state: GPState, rng: jax.Array, num: int):
    """Return `num` unobserved grid points chosen greedily by the acquisition, with predictions."""
    post = _posterior(state)
    xg = encode(grid, choices)
    mean, var, v = _predict_std_units(state, post, xg)
    theta = _theta(state)
    s_n2 = jnp.exp(theta.log_sn2)
    seen = jnp.arange(capacity) < state.count
    taken = jnp.zeros((num_grid,), bool).at[grid_index(state.tokens, choices)].max(seen)
    best_y = jnp.max(jnp.where(post.valid, (state.rewards - post.mu) / post.sd, -jnp.inf))
    ref_rng, tie_rng = jax.random.split(rng)
    # Ties (e.g. the corners under the prior) are broken at random, far below any real difference.
    tie = 1e-6 * jax.random.uniform(tie_rng, (num_grid,))
    if acquisition == "mi":
      # The posterior covariance between a reference set (the whole grid when it fits) and the grid.
      if num_ref == num_grid:
        ref = jnp.arange(num_grid)
      else:
        ref = jax.random.choice(ref_rng, num_grid, (num_ref,), replace=False)
      cov = _kernel(state.kernel, theta, xg[ref], xg) - v[:, ref].T @ v
    else:
      cov = jnp.zeros((0, num_grid))

    def score(var_now, cov):
      std = jnp.sqrt(var_now)
      if acquisition == "mi":
        # Total reduction of the posterior variance over the reference set if x is measured.
        return jnp.sum(cov * cov, axis=0) / (var_now + s_n2)
      if acquisition == "variance":
        return var_now
      if acquisition == "ucb":
        return mean + ucb_beta * std
      z = (mean - best_y) / jnp.maximum(std, 1e-9)
      ei = std * (z * jax.scipy.stats.norm.cdf(z) + jax.scipy.stats.norm.pdf(z))
      return jnp.where(jnp.isfinite(best_y), ei, var_now)  # no observation yet: explore

    def body(j, carry):
      var_now, cov, taken, us, picks = carry
      s = score(var_now, cov)
      s = s / jnp.maximum(jnp.max(jnp.abs(s)), 1e-30) + tie
      free = jnp.where(taken, -jnp.inf, s)
      p = jnp.where(jnp.all(taken), jnp.argmax(s), jnp.argmax(free))
      # Condition on a pending measurement at p: rank-1 downdates of the posterior covariance.
      kp = _kernel(state.kernel, theta, xg, xg[p][None])[:, 0]
      c = kp - v.T @ v[:, p] - us.T @ us[:, p]
      denom = jnp.sqrt(var_now[p] + s_n2)
      u = c / denom
      cov = cov - jnp.outer(cov[:, p] / denom, u)
      var_now = jnp.maximum(var_now - u * u, 0.0)
      return var_now, cov, taken.at[p].set(True), us.at[j].set(u), picks.at[j].set(p)

    carry = (var, cov, taken, jnp.zeros((num, num_grid)), jnp.zeros((num,), jnp.int32))
    picks = jax.lax.fori_loop(0, num, body, carry)[-1]
    aux = {"mean": mean[picks] * post.sd + post.mu, "std": jnp.sqrt(var[picks]) * post.sd}
    return grid[picks], aux

  def update(state: GPState, tokens: jax.Array, rewards: jax.Array):
    """Return the state with (tokens, rewards) appended and theta refitted, and its metrics."""
    tokens = jnp.asarray(tokens, jnp.int32)
    rewards = jnp.asarray(rewards, jnp.float32)
    b = rewards.shape[0]
    rows = state.count + jnp.arange(b)
    state = state._replace(
      tokens=state.tokens.at[rows].set(tokens, mode="drop"),
      rewards=state.rewards.at[rows].set(rewards, mode="drop"),
      count=jnp.minimum(state.count + b, capacity),
    )
    valid, y, _, _ = _standardise(state)
    x = encode(state.tokens, choices)
    theta = _theta(state)
    if fit_steps:
      fitted, _ = fit(theta, x, y, valid)
      # Two points say nothing about a length-scale: keep the prior's until there are three.
      enough = jnp.sum(valid) >= 3
      theta = jax.tree.map(lambda a, b: jnp.where(enough, a, b), fitted, theta)
    nll = _nll(kernel_id, theta, x, y, valid) / jnp.maximum(jnp.sum(valid), 1)
    state = state._replace(
      log_lengthscale=theta.log_l,
      log_signal_var=theta.log_sf2,
      log_noise_var=theta.log_sn2,
      log_mean_var=theta.log_sb2,
      nll=nll,
    )
    finite = jnp.where(valid, state.rewards, -jnp.inf)
    metrics = {
      "reward_mean": jnp.mean(rewards),
      "best_reward": jnp.max(finite),
      "count": state.count,
      "dropped": jnp.maximum(rows[-1] + 1 - capacity, 0) if b else jnp.zeros((), jnp.int32),
      "nll": nll,
      "lengthscale_mean": jnp.mean(jnp.exp(theta.log_l)),
      "noise_var": jnp.exp(theta.log_sn2),
    }
    return state, metrics

  return Strategy(init=init, propose=propose, update=update, policy=False)
