"""HNAS's hierarchical controller: cell-level LSTMs and a network-level LSTM, trained by REINFORCE.

The spec's `groups` say which LSTM emits each position. Groups 0..G-2 are cell-level (HNAS: 0 the
normal cell, 1 the upsampling cell); each has its own one-layer LSTM `Controller` that samples
its positions autoregressively from a zero state. The last group, G-1, is network-level (HNAS:
where the upsampling cell goes); its LSTM starts from the concatenation of the cell-level LSTMs'
final (c, h) states, so its width is (G-1) * hidden and the position it picks depends on the
cells just sampled (HNAS Section II-B: "we concatenate these embeddings as the initial state of
the network level controller"). With one group it is a plain `Controller` over the whole spec,
so the strategy runs on any space.

Inside a group, steps and heads work as in `Controller` (positions sharing a step come from one
LSTM step; positions sharing a head share an output layer), renumbered within the group.

Training is `reinforce.policy_gradient` (moving-average baseline as ENAS) with Adam on a cosine
schedule: HNAS trains its three LSTMs from 3e-4 to 1.5e-4 and adds the sample entropy to the
reward with weight 1, which a one-shot search does with an `entropy` reward term (the entropy
is in `propose`'s aux), so the loss's own entropy bonus defaults to 0 here.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasr.core import ConfigError, TokenSpec
from nasr.strategies.base import STRATEGIES, Strategy
from nasr.strategies.controller import Controller
from nasr.strategies.reinforce import policy_gradient


def _dense(values: tuple[int, ...]) -> tuple[int, ...]:
  """Return `values` renumbered 0, 1, ... in order of first appearance."""
  seen: dict[int, int] = {}
  return tuple(seen.setdefault(v, len(seen)) for v in values)


def group_specs(spec: TokenSpec) -> tuple[tuple[np.ndarray, TokenSpec], ...]:
  """Return, per group, its positions in `spec` (int32, ascending) and the spec of those positions.

  Raises:
    ConfigError: a group between 0 and the last one has no position.
  """
  if spec.num_groups == 1:
    return ((np.arange(len(spec), dtype=np.int32), spec),)
  groups = np.asarray(spec.groups)
  out = []
  for g in range(spec.num_groups):
    positions = np.flatnonzero(groups == g).astype(np.int32)
    if positions.size == 0:
      raise ConfigError(f"hierarchical: TokenSpec.groups has no position in group {g}")
    sub = TokenSpec(
      choices=tuple(spec.choices[p] for p in positions),
      names=tuple(spec.name(p) for p in positions),
      # Steps never decrease over the spec, so they do not within a group: renumbering from 0 keeps
      # positions that share a step together.
      steps=_dense(tuple(spec.steps[p] for p in positions)),
      heads=_dense(tuple(spec.heads[p] for p in positions)),
    )
    out.append((positions, sub))
  return tuple(out)


class HierarchicalController(nn.Module):
  """Cell-level LSTM policies and a network-level one started from their final states.

  Applied like `Controller`: `apply(params, rng)` samples, `apply(params, None,
  forced_tokens=tokens)` scores; both return (tokens int32 [L], log_prob, entropy), summed over
  every group. Parameters: `cell_0` .. `cell_{G-2}` and `network` (only `network` when G == 1).
  """

  spec: TokenSpec
  hidden: int = 100  # width of each cell-level LSTM (HNAS: 100)
  layers: int = 1  # HNAS: one layer
  tanh_constant: float | None = 1.1
  temperature: float | None = None
  init_range: float = 0.1

  def _controller(self, spec: TokenSpec, hidden: int, name: str) -> Controller:
    """Return a `Controller` over `spec` with this module's options."""
    return Controller(
      spec,
      hidden=hidden,
      layers=self.layers,
      tanh_constant=self.tanh_constant,
      temperature=self.temperature,
      init_range=self.init_range,
      name=name,
    )

  @nn.compact
  def __call__(
    self, rng: jax.Array | None, forced_tokens: jax.Array | None = None
  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Return (tokens int32 [L], log_prob, entropy): sampled, or `forced_tokens` scored."""
    parts = group_specs(self.spec)
    num_cells = len(parts) - 1
    if forced_tokens is None:
      if rng is None:
        raise ValueError(
          "HierarchicalController needs an rng to sample (or forced_tokens to score)"
        )
      # One group uses the rng as it is, so it samples exactly what a `Controller` would.
      keys = [rng] if len(parts) == 1 else list(jax.random.split(rng, len(parts)))
    else:
      forced_tokens = jnp.asarray(forced_tokens, jnp.int32)
      keys = [None] * len(parts)

    def run(g: int, controller: Controller, initial_state=None):
      """Return the controller's (tokens, log_prob, entropy, final state) on group g."""
      forced = None if forced_tokens is None else forced_tokens[parts[g][0]]
      return controller.run(keys[g], forced, initial_state)

    outs = [
      run(g, self._controller(parts[g][1], self.hidden, f"cell_{g}")) for g in range(num_cells)
    ]
    # Layer by layer, the network-level LSTM's c and h are the cell-level ones side by side.
    initial_state = None
    if num_cells:
      initial_state = tuple(
        tuple(jnp.concatenate([out[3][i][k] for out in outs]) for k in range(2))
        for i in range(self.layers)
      )
    network = self._controller(parts[-1][1], max(num_cells, 1) * self.hidden, "network")
    outs.append(run(num_cells, network, initial_state))

    tokens = jnp.zeros((len(self.spec),), jnp.int32)
    for (positions, _), out in zip(parts, outs, strict=True):
      tokens = tokens.at[positions].set(out[0])
    log_prob = sum(out[1] for out in outs)
    entropy = sum(out[2] for out in outs)
    return tokens, log_prob, entropy


@STRATEGIES.register("hierarchical")
def make_hierarchical(
  spec: TokenSpec,
  hidden: int = 100,
  layers: int = 1,
  tanh_constant: float | None = 1.1,
  temperature: float | None = None,
  learning_rate: float = 3e-4,
  lr_end: float = 1.5e-4,
  decay_steps: int = 0,
  baseline_decay: float = 0.99,
  baseline_reset_every: int = 0,
  entropy_weight: float = 0.0,
  grad_clip: float = 0.0,
) -> Strategy:
  """Return a REINFORCE strategy training HNAS's `HierarchicalController` over `spec` with Adam.

  Args:
    spec: the decisions; `spec.groups` picks the LSTM of each position (see the module doc).
    hidden: width of each cell-level LSTM; the network-level one has (groups - 1) * hidden (HNAS:
      100).
    layers: stacked layers per LSTM (HNAS: 1).
    tanh_constant: logits are squashed to c * tanh(logits / temperature); None or 0: no
      squashing (HNAS's released code). 1.1 is ENAS's cell controller's.
    temperature: divides the logits before the tanh; None or 0: 1.
    learning_rate: Adam's first step size (HNAS: 3e-4).
    lr_end: the step size reached after `decay_steps` updates by cosine decay (HNAS: 1.5e-4).
    decay_steps: updates over which the step size decays; 0: constant `learning_rate`.
    baseline_decay: moving-average decay of the reward baseline (ENAS: 0.99; HNAS's released
      code: 0.95).
    baseline_reset_every: restart the baseline from the batch reward every this many updates
      (HNAS's released code: every epoch); 0: never.
    entropy_weight: weight of the loss's entropy bonus (HNAS puts entropy in the reward instead).
    grad_clip: clip gradients to this global norm; 0 turns clipping off.
  """
  if hidden < 1 or layers < 1:
    raise ConfigError(f"hierarchical: hidden and layers must be positive, got {hidden}, {layers}")
  if learning_rate <= 0 or lr_end < 0:
    raise ConfigError(
      f"hierarchical: learning_rate must be positive and lr_end >= 0, got {learning_rate}, {lr_end}"
    )
  if decay_steps < 0:
    raise ConfigError(f"hierarchical: decay_steps must be >= 0 (0 = constant), got {decay_steps}")
  if not 0.0 <= baseline_decay < 1.0:
    raise ConfigError(f"hierarchical: baseline_decay must be in [0, 1), got {baseline_decay}")
  if grad_clip < 0:
    raise ConfigError(f"hierarchical: grad_clip must be >= 0 (0 = off), got {grad_clip}")
  if baseline_reset_every < 0:
    raise ConfigError(
      f"hierarchical: baseline_reset_every must be >= 0 (0 = never), got {baseline_reset_every}"
    )
  if temperature is not None and temperature < 0:
    raise ConfigError(f"hierarchical: temperature must be positive (0 = none), got {temperature}")
  group_specs(spec)  # Raises ConfigError now, not at the first jit, for an empty group.
  model = HierarchicalController(
    spec,
    hidden=hidden,
    layers=layers,
    tanh_constant=tanh_constant or None,
    temperature=temperature or None,
  )
  schedule = learning_rate
  if decay_steps > 0:
    schedule = optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=lr_end / learning_rate)
  clip = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
  tx = optax.chain(*clip, optax.adam(schedule))
  return policy_gradient(model, tx, baseline_decay, entropy_weight, baseline_reset_every)
