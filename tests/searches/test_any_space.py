"""A new space or strategy needs no edit under nasr/: throwaway ones, written here, are searched.

`ToyChain` is a differentiable space of a few residual edges (zero, skip or a 3x3 conv each),
searched end to end by the DARTS search; `ToyShared` is the same chain driven by tokens, searched
by the one-shot search with a hill-climbing strategy defined here too. Each is registered for one
test and removed after it.
"""

import dataclasses
import json
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasr import experiment, spaces
from nasr.core.errors import TokenError
from nasr.core.types import TokenSpec
from nasr.ops.upsample import pixel_shuffle
from nasr.spaces.base import ArchJSON, DifferentiableSpace, count_module_params
from nasr.spaces.registry import SPACES
from nasr.strategies.base import STRATEGIES, Strategy

OPS = ("none", "skip", "conv")  # "none" is alpha's zero op; a derived edge holds skip or conv
EDGE_OPS = OPS[1:]


@dataclasses.dataclass(frozen=True)
class ToyArch(ArchJSON):
  """One op per edge."""

  ops: tuple[str, ...]


class _Edge(nn.Module):
  """One residual edge: op weights [3] mix none, skip and a 3x3 conv."""

  channels: int

  @nn.compact
  def __call__(self, h, weights):
    conv = nn.Conv(self.channels, (3, 3), name="conv")(h)
    return weights[1] * h + weights[2] * conv  # "none" adds nothing


class ToyNet(nn.Module):
  """head -> edges -> sub-pixel tail; `weights` [edges, 3] mixes each edge's ops."""

  channels: int
  edges: int
  scale: int

  @nn.compact
  def __call__(self, x, weights):
    h = nn.Conv(self.channels, (3, 3), name="head")(x)
    for e in range(self.edges):
      h = h + _Edge(self.channels, name=f"edge{e}")(h, weights[e])
    y = nn.Conv(3 * self.scale**2, (3, 3), name="tail")(h)
    return pixel_shuffle(y, self.scale)


class ToySupernet(nn.Module):
  """The mixed-op network: softmax(alpha) weighs each edge's ops."""

  channels: int
  edges: int
  scale: int

  @nn.compact
  def __call__(self, x, alpha):
    return ToyNet(self.channels, self.edges, self.scale, name="net")(x, jax.nn.softmax(alpha, -1))


class ToyChild(nn.Module):
  """The derived network: each edge's op fixed (one-hot weights; its conv kept only if chosen)."""

  arch: ToyArch
  channels: int
  scale: int

  @nn.compact
  def __call__(self, x):
    weights = jnp.asarray([[float(op == o) for o in OPS] for op in self.arch.ops], jnp.float32)
    return ToyNet(self.channels, len(self.arch.ops), self.scale, name="net")(x, weights)


@dataclasses.dataclass(frozen=True)
class ToyChain:
  """A chain of `edges` residual edges at `channels` features."""

  edges: int = 2
  channels: int = 4

  op_names = OPS

  @property
  def alpha_shape(self) -> tuple[int, int]:
    """Return (edges, ops)."""
    return self.edges, len(OPS)

  def token_spec(self) -> TokenSpec:
    """Return one decision per edge."""
    return TokenSpec((len(EDGE_OPS),) * self.edges, tuple(f"edge{e}" for e in range(self.edges)))

  def decode(self, tokens: Sequence[int] | np.ndarray) -> ToyArch:
    """Return the architecture of `tokens`."""
    arr = self.token_spec().validate(tokens)
    return ToyArch(tuple(EDGE_OPS[int(t)] for t in arr))

  def encode(self, arch: ToyArch) -> np.ndarray:
    """Return the tokens of `arch`."""
    return np.asarray([EDGE_OPS.index(op) for op in self._check(arch).ops], np.int32)

  def _check(self, arch):
    if not isinstance(arch, ToyArch) or len(arch.ops) != self.edges:
      raise TokenError(f"not a {self.edges}-edge ToyArch: {arch!r}")
    return arch

  def arch_from_dict(self, d: dict) -> ToyArch:
    """Return the stored architecture."""
    return self._check(ToyArch.from_dict(d))

  def build(self, arch: ToyArch, scale: int, dtype=jnp.float32, shifted: bool = False):
    """Return the stand-alone network."""
    del dtype, shifted
    return ToyChild(self._check(arch), self.channels, scale)

  def count_params(self, arch: ToyArch, scale: int) -> int:
    """Return build(arch)'s parameter count."""
    return count_module_params(self.build(arch, scale))

  def supernet(self, scale: int, dtype=jnp.float32) -> nn.Module:
    """Return the mixed-op supernet."""
    del dtype
    return ToySupernet(self.channels, self.edges, scale)

  def supernet_options(self) -> frozenset[str]:
    """Return {"dtype"}."""
    return frozenset({"dtype"})

  def init_alpha(self, rng, std: float = 1e-3):
    """Return std * N(0, 1) logits."""
    return std * jax.random.normal(rng, self.alpha_shape, jnp.float32)

  def derive(self, alpha) -> ToyArch:
    """Return the argmax non-zero op per edge."""
    a = np.asarray(alpha)
    return ToyArch(tuple(EDGE_OPS[int(np.argmax(row[1:]))] for row in a))

  def edge_names(self) -> list[str]:
    """Return edge0, edge1, ..."""
    return [f"edge{e}" for e in range(self.edges)]

  def one_hot_alpha(self, arch: ToyArch) -> np.ndarray:
    """Return logits whose softmax is one-hot on arch's ops."""
    alpha = np.full(self.alpha_shape, -1e9, np.float32)
    for e, op in enumerate(self._check(arch).ops):
      alpha[e, OPS.index(op)] = 0.0
    return alpha

  def num_skip(self, arch: ToyArch) -> int:
    """Return the skip edges."""
    return sum(op == "skip" for op in self._check(arch).ops)

  def max_skip(self) -> int:
    """Return every edge."""
    return self.edges


@pytest.fixture
def toy_chain():
  """Register ToyChain as "toy_chain" for one test."""
  SPACES.register("toy_chain", ToyChain)
  yield "toy_chain"
  SPACES.unregister("toy_chain")


def test_the_toy_space_keeps_the_differentiable_contract(toy_chain):
  space = spaces.get(toy_chain, edges=3)
  assert isinstance(space, DifferentiableSpace)
  arch = ToyArch(("conv", "skip", "conv"))
  x = jnp.ones((1, 5, 6, 3))
  net = space.supernet(2)
  variables = net.init(jax.random.key(0), x, space.init_alpha(jax.random.key(1)))
  # The supernet at one_hot_alpha(arch) is arch's network with the shared weights.
  child = space.build(arch, 2).apply(variables, x)
  np.testing.assert_allclose(net.apply(variables, x, space.one_hot_alpha(arch)), child, atol=1e-6)
  assert space.derive(space.one_hot_alpha(arch)) == arch


def test_the_darts_search_runs_a_space_written_outside_nasr(toy_chain, tmp_path):
  config = experiment.load_config("darts_sr", "tiny", lock=False)
  config.space = {"name": toy_chain, "edges": 3, "channels": 4}
  config.supernet = {}
  config.retrain = {"channels": 8}  # genotype.json asks for a wider retrain
  config.epochs, config.steps_per_epoch = 2, 2
  summary = experiment.run_search(config, tmp_path / "w")
  assert summary["step_compiles"] == 1  # the bilevel step, compiled once for the run
  record = json.loads((tmp_path / "w" / "genotype.json").read_text())
  assert record["space"] == toy_chain
  assert record["space_kwargs"] == {"edges": 3, "channels": 8}
  space, arch = spaces.load_arch(tmp_path / "w" / "genotype.json")
  assert space.channels == 8 and len(arch.ops) == 3
  alphas = json.loads((tmp_path / "w" / "alphas.json").read_text())
  assert alphas["ops"] == list(OPS) and alphas["edges"] == ["edge0", "edge1", "edge2"]
  assert space.derive(np.asarray(alphas["alpha"])) == arch  # derived from the final alpha
  assert summary["retrain_params"] == space.count_params(arch, 2)
  assert summary["num_skip"] == space.num_skip(arch) and np.isfinite(summary["val_psnr"])
  assert (tmp_path / "w" / "alpha.png").stat().st_size > 1000


# ----------------------------------------------------------------------------------------------
# A weight-sharing space and a strategy, both throwaway: the one-shot search runs them.


class ToyTokenSupernet(nn.Module):
  """The weight-sharing supernet: the sampled tokens pick each edge's op (one-hot weights)."""

  channels: int
  edges: int
  scale: int

  @nn.compact
  def __call__(self, x, tokens):
    weights = jax.nn.one_hot(jnp.asarray(tokens, jnp.int32) + 1, len(OPS))  # tokens skip "none"
    return ToyNet(self.channels, self.edges, self.scale, name="net")(x, weights)


@dataclasses.dataclass(frozen=True)
class ToyShared(ToyChain):
  """ToyChain searched by weight sharing: every child keeps every edge's conv."""

  def supernet(self, scale: int, dtype=jnp.float32) -> nn.Module:
    """Return the token-driven supernet."""
    del dtype
    return ToyTokenSupernet(self.channels, self.edges, scale)

  def child_params(self, supernet_params: dict, arch: ToyArch) -> dict:
    """Return the supernet's weights: a child has the same parameter tree."""
    self._check(arch)
    return supernet_params

  def max_arch(self) -> ToyArch:
    """Return the all-conv child."""
    return ToyArch(("conv",) * self.edges)


class HillState(NamedTuple):
  """The best candidate so far."""

  best_tokens: jax.Array
  best_reward: jax.Array


def make_hill_climb(spec: TokenSpec, flips: int = 1) -> Strategy:
  """Return a strategy that proposes the best candidate with `flips` random positions redrawn."""
  choices = jnp.asarray(spec.choices, jnp.int32)

  def init(rng):
    return HillState(jnp.zeros((len(spec),), jnp.int32), jnp.full((), -jnp.inf, jnp.float32))

  def propose(state, rng, num):
    keys = jax.random.split(rng, 2)
    where = jax.random.randint(keys[0], (num, flips), 0, len(spec))
    draws = jax.random.randint(keys[1], (num, flips), 0, choices[where])
    tokens = jnp.tile(state.best_tokens, (num, 1))
    tokens = jax.vmap(lambda t, w, d: t.at[w].set(d))(tokens, where, draws)
    return tokens, {"log_prob": jnp.zeros((num,)), "entropy": jnp.zeros((num,))}

  def update(state, tokens, rewards):
    finite = jnp.where(jnp.isnan(rewards), -jnp.inf, rewards)
    i = jnp.argmax(finite)
    better = finite[i] > state.best_reward
    state = HillState(
      jnp.where(better, tokens[i], state.best_tokens),
      jnp.where(better, finite[i], state.best_reward),
    )
    return state, {"best_reward": state.best_reward}

  return Strategy(init=init, propose=propose, update=update, policy=False)


@pytest.fixture
def toy_shared():
  """Register ToyShared as "toy_shared" and the hill climber as "toy_hill_climb" for one test."""
  SPACES.register("toy_shared", ToyShared)
  STRATEGIES.register("toy_hill_climb", make_hill_climb)
  yield "toy_shared", "toy_hill_climb"
  SPACES.unregister("toy_shared")
  STRATEGIES.unregister("toy_hill_climb")


def test_the_one_shot_search_runs_a_space_and_a_strategy_written_outside_nasr(toy_shared, tmp_path):
  space_name, strategy_name = toy_shared
  config = experiment.load_config("deconas", "tiny", lock=False)
  config.space = {"name": space_name, "edges": 3, "channels": 4}
  config.strategy = {"name": strategy_name}  # its options: the factory's defaults
  config.supernet = {}
  config.epochs = 2
  summary = experiment.run_search(config, tmp_path / "w")
  best = json.loads((tmp_path / "w" / "best.json").read_text())
  assert best["space"] == space_name and best["space_kwargs"] == {"edges": 3, "channels": 4}
  space, arch = spaces.load_arch(tmp_path / "w" / "best.json")
  assert isinstance(space, ToyShared) and best["tokens"] == space.encode(arch).tolist()
  rows = json.loads((tmp_path / "w" / "candidates.json").read_text())
  assert rows[0]["tokens"] == best["tokens"] and all(np.isfinite(r["psnr"]) for r in rows)
  assert summary["best_tokens"] == best["tokens"]
