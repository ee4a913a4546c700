"""The strategy interface: an optax-like NamedTuple of pure functions over explicit state.

A strategy sees only a `TokenSpec` and rewards, never pixels or networks (DESIGN rule 5):

  strategy = strategies.get("reinforce", spec, learning_rate=3e-4)
  state = strategy.init(jax.random.key(0))
  propose = jax.jit(strategy.propose, static_argnums=2)
  update = jax.jit(strategy.update, donate_argnums=0)
  tokens, aux = propose(state, rng, 8)          # int32 [8, len(spec)]
  state, metrics = update(state, tokens, rewards)  # rewards float32 [8]

`propose` never changes the state: proposing twice with the same state and rng gives the same
tokens, so a run can be resumed from its checkpointed state alone.
"""

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from nasr.core import ConfigError, Registry, TokenSpec

# A strategy state: a NamedTuple or flax.struct dataclass of arrays only, so Orbax can save it.
State = Any


class Strategy(NamedTuple):
  """A search strategy as three pure, jit-able functions, and whether it learns a policy.

  Attributes:
    init: rng -> state.
    propose: (state, rng, num) -> (tokens int32 [num, len(spec)], aux dict of [num] arrays such as
      `log_prob` and `entropy`); `num` is static under jit; never returns a new state.
    update: (state, tokens int32 [B, len(spec)], rewards float32 [B]) -> (new state, metrics dict
      of scalars).
    policy: whether `propose` samples from a learned policy, so its entropy and per-decision
      frequencies say how far training moved it (REINFORCE); False where they cannot move
      (random search samples the uniform distribution for ever) or there is no distribution
      (GP-NAS picks by acquisition).
  """

  init: Callable[[jax.Array], State]
  propose: Callable[[State, jax.Array, int], tuple[jax.Array, dict[str, jax.Array]]]
  update: Callable[[State, jax.Array, jax.Array], tuple[State, dict[str, jax.Array]]]
  policy: bool = True


# name -> factory `make(spec: TokenSpec, **kwargs) -> Strategy`; filled when nasr.strategies loads.
STRATEGIES: Registry[Callable[..., Strategy]] = Registry("strategy")


def options(name: str) -> tuple[str, ...]:
  """Return the option names of the strategy registered as `name` (its factory's keywords).

  Raises:
    ConfigError: `name` is not registered.
  """
  # The factory's keyword parameters are where a strategy declares its options, with their
  # defaults and docs beside them; a second list given at registration would only drift from it.
  # Reading that signature is not probing for a capability: every strategy has options, and this
  # names them.
  return tuple(p for p in inspect.signature(STRATEGIES.get(name)).parameters if p != "spec")


def get(name: str, spec: TokenSpec, **kwargs) -> Strategy:
  """Return the strategy registered as `name`, built for `spec` with `kwargs`.

  Raises:
    ConfigError: `name` is not registered, or a keyword is not an option of that strategy.
  """
  factory = STRATEGIES.get(name)
  try:  # checked against the declaration before the call: a TypeError inside is not a bad option
    inspect.signature(factory).bind(spec, **kwargs)
  except TypeError as e:
    raise ConfigError(f"strategy {name!r}: {e}; its options are {list(options(name))}") from None
  return factory(spec, **kwargs)
