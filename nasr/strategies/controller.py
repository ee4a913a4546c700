"""An autoregressive LSTM policy over any TokenSpec (the ENAS / DeCoNAS controller).

One LSTM step per spec step. At step s the top LSTM output h_s gives logits for every position p
with `spec.steps[p] == s` through that position's head; the next step's input is the sum of the
embeddings of the tokens chosen at step s; step 0 reads a learned start vector.

Steps run under `nn.scan`, with the positions of each step padded to the most positions any step
has, so compile time does not grow with the number of steps.

Initialisation: every weight is uniform(-0.1, 0.1), biases zero. ENAS does this, and DeCoNAS
says it follows ENAS; its "variance scaled initialization with 0.02 scaling value" leaves mode and
distribution unstated, so it cannot be reproduced exactly. Both give a near-uniform first policy.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nasr.core import ConfigError, TokenSpec

# Per LSTM layer, its (c, h) pair of float32 [hidden] (flax's OptimizedLSTMCell carry).
LSTMState = tuple[tuple[jax.Array, jax.Array], ...]

# Masked logits: finite, so p * log p is 0 * (finite) = 0 instead of NaN.
_MASKED = -1e9


def _uniform(scale: float):
  """Return an initializer drawing from uniform(-scale, scale)."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)

  return init


@dataclasses.dataclass(frozen=True)
class _Layout:
  """The spec's positions grouped per step, padded to `slots` positions per step (numpy, static)."""

  position: np.ndarray  # [steps, slots] int32: position index of each slot (0 for padding)
  valid: np.ndarray  # [steps, slots] bool: slot holds a real position
  head: np.ndarray  # [steps, slots] int32: head of each slot (0 for padding)
  choices: np.ndarray  # [steps, slots] int32: choices of each slot (1 for padding)
  flat: np.ndarray  # [len(spec)] int32: flat slot index of each position, in position order
  max_choices: int


def _layout(spec: TokenSpec) -> _Layout:
  """Return the per-step slot tables of `spec`."""
  steps = np.asarray(spec.steps)
  counts = np.bincount(steps, minlength=spec.num_steps)
  slots = int(counts.max())
  position = np.zeros((spec.num_steps, slots), np.int32)
  valid = np.zeros((spec.num_steps, slots), bool)
  head = np.zeros((spec.num_steps, slots), np.int32)
  choices = np.ones((spec.num_steps, slots), np.int32)
  flat = np.zeros(len(spec), np.int32)
  fill = np.zeros(spec.num_steps, np.int32)
  for p, s in enumerate(spec.steps):
    j = fill[s]
    fill[s] += 1
    position[s, j], valid[s, j] = p, True
    head[s, j], choices[s, j] = spec.heads[p], spec.choices[p]
    flat[p] = s * slots + j
  return _Layout(position, valid, head, choices, flat, max(spec.choices))


class _Step(nn.Module):
  """One controller step: advance the LSTM, choose (or score) this step's tokens, embed them."""

  hidden: int
  layers: int
  num_heads: int
  max_choices: int
  head_scale: tuple[float, ...] | None  # tanh constant per head; None: no tanh squashing
  temperature: float | None
  init_range: float
  forced: bool

  @nn.compact
  def __call__(self, carry, xs):
    lstm_state, x = carry
    key, head, choices, valid, forced = xs
    init = _uniform(self.init_range)
    new_state = []
    for i in range(self.layers):
      cell = nn.OptimizedLSTMCell(
        self.hidden, kernel_init=init, recurrent_kernel_init=init, name=f"lstm_{i}"
      )
      state_i, x = cell(lstm_state[i], x)
      new_state.append(state_i)

    # Heads are stacked tables indexed by the slot's head id: positions on one head share weights.
    kernel = self.param("head_kernel", init, (self.num_heads, self.hidden, self.max_choices))
    bias = self.param("head_bias", nn.initializers.zeros, (self.num_heads, self.max_choices))
    embedding = self.param("embedding", init, (self.num_heads, self.max_choices, self.hidden))

    logits = jnp.einsum("d,hdc->hc", x, kernel)[head] + bias[head]  # [slots, C]
    if self.temperature is not None:
      logits = logits / self.temperature
    if self.head_scale is not None:
      logits = jnp.asarray(self.head_scale, jnp.float32)[head][:, None] * jnp.tanh(logits)
    allowed = jnp.arange(self.max_choices)[None, :] < choices[:, None]
    logits = jnp.where(allowed, logits, _MASKED)
    log_p = jax.nn.log_softmax(logits, axis=-1)

    if self.forced:
      tokens = forced
    else:
      tokens = jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
    tokens = jnp.where(valid, tokens, 0)
    log_prob = jnp.take_along_axis(log_p, tokens[:, None], axis=-1)[:, 0]
    entropy = -jnp.sum(jnp.where(allowed, jnp.exp(log_p) * log_p, 0.0), axis=-1)
    log_prob = jnp.where(valid, log_prob, 0.0)
    entropy = jnp.where(valid, entropy, 0.0)

    x_next = jnp.sum(jnp.where(valid[:, None], embedding[head, tokens], 0.0), axis=0)
    return (tuple(new_state), x_next), (tokens, log_prob, entropy)


class Controller(nn.Module):
  """An LSTM policy that samples or scores one token sequence of `spec`.

  Batch it with `jax.vmap` over rngs (sampling) or token sequences (scoring).

  Example:
    model = Controller(spec)
    params = model.init(jax.random.key(0), jax.random.key(1))
    tokens, log_prob, entropy = model.apply(params, jax.random.key(2))
    same_log_prob = model.apply(params, None, forced_tokens=tokens)[1]

  `run` does the same from a given LSTM state and also returns the last one, so controllers can be
  chained (the hierarchical controller starts its network-level LSTM from the cell-level ones).
  """

  spec: TokenSpec  # the decisions; hashable, so fine as a static field
  hidden: int = 64  # LSTM width (DeCoNAS: 64)
  layers: int = 2  # stacked LSTM layers (DeCoNAS: 2)
  tanh_constant: float | None = 1.1  # logits = c * tanh(logits / T); None: raw logits
  head_tanh_reduce: tuple[float, ...] = ()  # per-head divisor of tanh_constant; () = 1.0 each
  temperature: float | None = None  # T above; None: 1
  init_range: float = 0.1  # weights start uniform(-init_range, init_range), as in ENAS

  def _head_scale(self) -> tuple[float, ...] | None:
    """Return the tanh constant of each head, or None when logits are not squashed."""
    if self.tanh_constant is None:
      return None
    reduce = self.head_tanh_reduce or (1.0,) * self.spec.num_heads
    if len(reduce) != self.spec.num_heads:
      raise ConfigError(
        f"head_tanh_reduce has {len(reduce)} entries but the spec has {self.spec.num_heads} heads"
      )
    return tuple(float(self.tanh_constant) / float(r) for r in reduce)

  def __call__(
    self, rng: jax.Array | None, forced_tokens: jax.Array | None = None
  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Return (tokens int32 [L], log_prob, entropy): sampled, or `forced_tokens` scored.

    Args:
      rng: PRNG key for sampling; ignored (may be None) when `forced_tokens` is given.
      forced_tokens: int32 [L] tokens to score by teacher forcing, or None to sample.

    Returns:
      The tokens, the sum of their log-probabilities, and the summed entropy of the per-position
      distributions along that path.
    """
    return self.run(rng, forced_tokens)[:3]

  @nn.compact
  def run(
    self,
    rng: jax.Array | None,
    forced_tokens: jax.Array | None = None,
    initial_state: LSTMState | None = None,
  ) -> tuple[jax.Array, jax.Array, jax.Array, LSTMState]:
    """Return `__call__`'s (tokens, log_prob, entropy) and the LSTM state after the last step.

    Args:
      rng: as in `__call__`.
      forced_tokens: as in `__call__`.
      initial_state: one (c, h) pair of float32 [hidden] per layer to start from (a hierarchical
        controller passes another controller's final state); None: zeros.
    """
    spec, lay = self.spec, _layout(self.spec)
    num_steps = spec.num_steps
    forced = forced_tokens is not None
    if forced:
      slot_forced = jnp.asarray(forced_tokens, jnp.int32)[lay.position]
      keys = jnp.zeros((num_steps,), jnp.uint32)  # unused placeholder with a leading step axis
    else:
      if rng is None:
        raise ValueError("Controller needs an rng to sample (or forced_tokens to score)")
      slot_forced = jnp.zeros(lay.position.shape, jnp.int32)
      keys = jax.random.split(rng, num_steps)

    start = self.param("start", _uniform(self.init_range), (self.hidden,))
    if initial_state is None:
      zeros = jnp.zeros((self.hidden,), jnp.float32)
      initial_state = tuple((zeros, zeros) for _ in range(self.layers))
    elif len(initial_state) != self.layers:
      raise ValueError(f"initial_state has {len(initial_state)} layers, expected {self.layers}")
    # The scan's carry must keep one pytree structure: tuples of float32 pairs, as the cells return.
    initial_state = tuple(
      (jnp.asarray(c, jnp.float32), jnp.asarray(h, jnp.float32)) for c, h in initial_state
    )

    scan = nn.scan(
      _Step,
      variable_broadcast="params",
      split_rngs={"params": False},
      in_axes=0,
      out_axes=0,
      length=num_steps,
    )
    step = scan(
      hidden=self.hidden,
      layers=self.layers,
      num_heads=spec.num_heads,
      max_choices=lay.max_choices,
      head_scale=self._head_scale(),
      temperature=self.temperature,
      init_range=self.init_range,
      forced=forced,
      name="step",
    )
    xs: Any = (keys, jnp.asarray(lay.head), jnp.asarray(lay.choices), jnp.asarray(lay.valid))
    (final_state, _), (tokens, log_prob, entropy) = step((initial_state, start), (*xs, slot_forced))
    tokens = tokens.reshape(-1)[lay.flat]
    return tokens, jnp.sum(log_prob), jnp.sum(entropy), final_state
