"""The written contract of a search space: what searches may call, nothing they must probe for.

Three typing Protocols, one per kind of search:

  SearchSpace          every space: token_spec / decode / encode / arch_from_dict / build /
                       count_params. Any strategy can propose tokens for it; GP-NAS and random
                       search train its children from scratch.
  SupernetSpace        + supernet / child_params / max_arch: a weight-sharing network that takes the
                       sampled tokens as an int32 array (compiled once per run) and equals
                       build(arch) with child_params(...) of its weights. The one-shot loop needs it.
  DifferentiableSpace  + supernet(x, alpha) / init_alpha / alpha_shape / derive: DARTS.

Architectures are frozen dataclasses with the `ArchJSON` mixin, so every space writes and reads
search results the same way (`nasr.spaces.save_arch` / `load_arch`).

Callers check `isinstance(space, SupernetSpace)` (the Protocols are runtime-checkable: the check
looks at method names) and then call the methods; they never use `hasattr` on a space.

Optional capabilities are declared, not probed: a space that has one inherits its abstract base
class (`CostPieces`, `CostTable`, `Families`), and callers ask `isinstance(space, CostTable)`.
A base class is a statement, so a space that happens to have a method of the same name does not
claim the capability, and one that claims it without the method cannot be built.
"""

import abc
import dataclasses
import functools
import json
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol, runtime_checkable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nasr.core.errors import TokenError
from nasr.core.types import TokenSpec

Arch = Any  # a frozen dataclass with ArchJSON


class ArchJSON:
  """JSON round trip for a frozen-dataclass architecture: to_dict / to_json / from_dict / from_json.

  `from_dict` checks the keys and lets the dataclass's own `__post_init__` check the values, so a
  hand-edited architecture file fails with a TokenError naming what is wrong.
  """

  def to_dict(self) -> dict:
    """Return the architecture as a JSON-serialisable dict."""
    out = {}
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      out[f.name] = _jsonable(value)
    return out

  def to_json(self) -> str:
    """Return the architecture as a JSON string."""
    return json.dumps(self.to_dict())

  def describe(self) -> str:
    """Return a short human-readable name (spaces override it with their own notation)."""
    fields = ", ".join(f"{k}={v}" for k, v in self.to_dict().items())
    return f"{type(self).__name__}({fields})"

  def group(self) -> str:
    """Return the network family, for ensembles that prefer different families (default: type)."""
    return type(self).__name__

  @classmethod
  def from_dict(cls, d: dict):
    """Return the architecture stored by `to_dict`, or raise TokenError naming the bad key."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    if not isinstance(d, dict) or sorted(d) != sorted(names):
      got = sorted(d) if isinstance(d, dict) else type(d).__name__
      raise TokenError(f"a {cls.__name__} needs the keys {names}, got {got}")
    return cls(**{k: _from_jsonable(v) for k, v in d.items()})

  @classmethod
  def from_json(cls, s: "str | dict"):
    """Return the architecture stored by `to_json` (a JSON string or an already parsed dict)."""
    if isinstance(s, str):
      try:
        s = json.loads(s)
      except json.JSONDecodeError as e:
        raise TokenError(f"not a JSON {cls.__name__}: {e}") from None
    return cls.from_dict(s)


def _jsonable(value):
  if isinstance(value, tuple | list):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.floating):
    return float(value)
  return value


def _from_jsonable(value):
  if isinstance(value, list):
    return tuple(_from_jsonable(v) for v in value)
  return value


@runtime_checkable
class SearchSpace(Protocol):
  """A space of architectures encoded as token sequences."""

  def token_spec(self) -> TokenSpec:
    """Return the decisions (choices per position) strategies see."""

  def decode(self, tokens: Sequence[int] | np.ndarray) -> Arch:
    """Return the architecture of `tokens`, or raise TokenError naming the bad position."""

  def encode(self, arch: Arch) -> np.ndarray:
    """Return the canonical int32 tokens of `arch`.

    decode(encode(a)) == a, and encode(decode(t)) == t for every t that encode returns; decode
    may accept other spellings of one architecture (a DARTS node's two edges in either order).
    """

  def arch_from_dict(self, d: dict) -> Arch:
    """Return the architecture stored by `arch.to_dict()`, checked against this space."""

  def build(self, arch: Arch, scale: int, dtype: Any = jnp.float32, shifted: bool = False):
    """Return the stand-alone Flax network of `arch` at `scale` (shifted: CPU depthwise form)."""

  def count_params(self, arch: Arch, scale: int) -> int:
    """Return the exact parameter count of build(arch, scale)."""


@runtime_checkable
class SupernetSpace(SearchSpace, Protocol):
  """A space with a weight-sharing supernet that takes the sampled tokens as an array."""

  def supernet(self, scale: int, **options) -> nn.Module:
    """Return the supernet; apply it as model.apply(variables, x, tokens int32 [len(spec)])."""

  def supernet_options(self) -> frozenset[str]:
    """Return the names of `supernet`'s keyword options (dtype, shifted, ...) besides scale."""

  def child_params(self, supernet_params: dict, arch: Arch) -> dict:
    """Return build(arch)'s parameters taken from the supernet's shared weights."""

  def max_arch(self) -> Arch:
    """Return the most complex child (most parameters and multiply-adds): the cost normaliser."""


@runtime_checkable
class DifferentiableSpace(SearchSpace, Protocol):
  """A space searched by gradient descent on continuous architecture weights (DARTS)."""

  @property
  def alpha_shape(self) -> tuple[int, ...]:
    """Return the shape of the architecture weights alpha."""

  def init_alpha(self, rng: jax.Array, std: float = 1e-3) -> jax.Array:
    """Return initial architecture weights of shape `alpha_shape`."""

  def supernet(self, scale: int, **options) -> nn.Module:
    """Return the mixed-op network; apply it as model.apply(variables, x, alpha)."""

  def supernet_options(self) -> frozenset[str]:
    """Return the names of `supernet`'s keyword options (dtype, shifted, ...) besides scale."""

  def derive(self, alpha) -> Arch:
    """Return the discrete architecture that `alpha` selects."""

  @property
  def op_names(self) -> tuple[str, ...]:
    """Return the candidate ops, in the column order of alpha (the last axis)."""

  def edge_names(self) -> list[str]:
    """Return a name per row of alpha (its leading axis)."""

  def one_hot_alpha(self, arch: Arch) -> np.ndarray:
    """Return logits whose softmax selects exactly `arch`: the supernet there is arch's network."""

  def num_skip(self, arch: Arch) -> int:
    """Return how many parameter-free skip-connects `arch` holds (DARTS' collapse shows here)."""

  def max_skip(self) -> int:
    """Return the most skip-connects a derived architecture can hold."""


class CostPieces(abc.ABC):
  """Declared by a space whose child's cost is a sum of pieces (searches.reward caches each)."""

  @abc.abstractmethod
  def cost_pieces(self, arch: Arch, scale: int, side: int) -> list[tuple[Hashable, nn.Module, Any]]:
    """Return [(key, module, input shape)]: additive pieces of build(arch)'s cost on a side x side
    LR image; equal keys are equal pieces, so a new child costs lookups instead of a trace."""


class CostTable(CostPieces):
  """Declared by a space that also computes a child's cost from its tokens in jnp (on device)."""

  @abc.abstractmethod
  def cost_table(self, piece_cost: Callable, scale: int, side: int) -> Callable:
    """Return cost(tokens) -> (parameters, multiply-adds per LR pixel) in jnp: the sum of the
    pieces' `piece_cost(key, module, shape)`, so the one-shot search rewards on the devices."""


class Families(abc.ABC):
  """Declared by a space whose architectures come in named families (`arch.group()`)."""

  families: Sequence[str]  # the families searched, in token order (a field of the space)


def require(space, protocol: type, method: str):
  """Return `space` if it implements `protocol`, else raise a ConfigError naming the method."""
  from nasr.core.errors import ConfigError

  if not isinstance(space, protocol):
    raise ConfigError(
      f"the {method} search needs a {protocol.__name__}; {type(space).__name__} is not one "
      f"(see nasr/spaces/base.py for the methods it must have)"
    )
  return space


@functools.lru_cache(maxsize=1024)
def count_module_params(model: nn.Module, probe: int = 8) -> int:
  """Return the number of parameters of `model` (shapes only: nothing is computed)."""
  x = jax.ShapeDtypeStruct((1, probe, probe, 3), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes)))
