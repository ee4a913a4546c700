"""The one-shot search's reward: a weighted sum of terms named in the config.

  reward = sum_k w_k * term_k,   config.reward.terms = {"psnr": 1.0, "params": -2.0}

Terms:
  psnr     the child's validation Y-PSNR with the shared weights (dB)
  params   the child's parameters / those of the space's most complex child (space.max_arch())
  macs     the child's multiply-adds per LR pixel / those of the most complex child
  latency  the child's latency on this host / the most complex child's, predicted as the sum of
           its cost pieces' measured latencies on a `latency_side` x `latency_side` LR image
           (`nasr.searches.op_latency`: each piece timed once per host and cached); whatever
           `norm` says, this term is always divided by the most complex child's (it has no paper
           unit). Spaces without cost pieces time each new child whole.
  entropy  the policy's entropy of the sampled tokens (an exploration bonus, as HNAS)

Cost terms are exact (the built child's parameters and `estimation.cost` multiply-adds) and
computed once per architecture: from one trace of the child, or, for a space with `cost_pieces`
(HNAS, DeCoNAS), as a sum of per-op pieces each traced once per run. `norm` says how a cost term enters the sum:

  max        (default) divided by the most complex child's (space.max_arch()): in [0, 1]
  paper      G multiply-adds of one forward pass on a 3 x 480 x 480 LR image (every conv of the
             network, deconvolutions included); parameters in M. HNAS's Table II is not in these
             units: its figures are a tenth of this without the deconvolutions
             (`table_ii_mult_adds`)
  reference  the units of HNAS's released code (controller_trainer.py): multiply-adds of one
             forward pass on a 3 x 48 x 48 LR image times 0.5e-8, about 1/20 of "paper";
             parameters in M

DeCoNAS CB1 is {"psnr": 1, "params": -alpha}; HNAS is {"psnr": lam, "macs": lam - 1} plus an
entropy weight.
"""

import functools
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from nasr.core.errors import ConfigError
from nasr.estimation import cost
from nasr.searches import op_latency
from nasr.spaces.base import CostPieces, CostTable
from nasr.spaces.hnas import HNAS, TABLE_II_SIDE

COST_TERMS = ("params", "macs", "latency")
TERMS = ("psnr", *COST_TERMS, "entropy")
# LR probe side for multiply-adds: a count per pixel depends on it only through global pooling.
_PROBE_SIDE = 32
NORMS = ("max", "paper", "reference")
# HNAS's released code: used_flops = MACs(1 x 3 x 48 x 48) * 1e-8 * 0.5.
_REFERENCE_SIDE, _REFERENCE_UNIT = 48, 0.5e-8


def _module_cost(module, input_shape) -> tuple[int, int]:
  """Return (parameters, multiply-adds) of `module` on `input_shape`, from one trace.

  Flax's init runs the forward pass, so the jaxpr of `init_with_output` holds both the parameter
  shapes and every contraction (initialisers contract nothing); tracing it once costs a third of
  `count_params` plus `count_macs`.
  """
  x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
  closed, (_, variables) = jax.make_jaxpr(
    lambda v: module.init_with_output(jax.random.PRNGKey(0), v), return_shape=True
  )(x)
  params = int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(variables)))
  return params, int(cost.jaxpr_macs(closed.jaxpr))


def child_cost(space, arch, scale: int, side: int = _PROBE_SIDE, cache=None) -> tuple[int, float]:
  """Return (parameters, multiply-adds per LR pixel) of build(arch, scale) on a side x side image.

  A space with `cost_pieces` (HNAS, DeCoNAS) gives additive pieces: each distinct piece is traced
  once and kept in `cache` (a dict), so a new child costs lookups, not a trace of the whole
  network (about 1.2 s for HNAS at L=12, 1.4 s for DeCoNAS at N=16, M=8, C=64). Other spaces
  trace the child once.
  """
  if not isinstance(space, CostPieces):
    params, macs = _module_cost(space.build(arch, scale), (1, side, side, 3))
    return params, macs / (side * side)
  cache = {} if cache is None else cache
  params = macs = 0
  for key, module, shape in space.cost_pieces(arch, scale, side):
    piece = _piece_cost(cache, side, scale, key, module, shape)
    params, macs = params + piece[0], macs + piece[1]
  return params, macs / (side * side)


def _piece_cost(cache: dict, side: int, scale: int, key: tuple, module, shape) -> tuple[int, int]:
  """Return (parameters, multiply-adds) of one cost piece, traced once per (side, scale, key)."""
  key = (side, scale, *key)
  if key not in cache:
    cache[key] = _module_cost(module, shape)
  return cache[key]


def table_ii_mult_adds(space: HNAS, arch, scale: int, cache: dict | None = None) -> float:
  """Return HNAS Table II's "Mult-Adds" of build(arch, scale), in its units.

  The authors' counter hooks nn.Conv2d only (their deconvolutions are not counted) on a 48 x 48
  LR input, times 1e-8 (see HNAS.table_ii_pieces): HNAS-A 30.63, HNAS-B 48.22 at x2, C=64
  (Table II: 30.6, 48.2). The true count of every conv at 480 x 480 is `cost.gmacs_480`.
  """
  cache = {} if cache is None else cache
  side = TABLE_II_SIDE
  pieces = space.table_ii_pieces(arch, scale)
  return sum(_piece_cost(cache, side, scale, *piece)[1] for piece in pieces) * 1e-8


def child_macs_per_pixel(space, arch, scale: int) -> float:
  """Return the multiply-adds per LR pixel of build(arch, scale) (shapes only, nothing computed)."""
  return child_cost(space, arch, scale)[1]


class Reward:
  """reward(psnr, tokens, entropy) from weighted terms; cost terms normalised and cached."""

  def __init__(
    self,
    terms: Mapping[str, float],
    space,
    scale: int,
    norm: str = "max",
    latency_side: int = 128,
    latency_table: op_latency.PieceLatency | None = None,
  ):
    unknown = sorted(set(terms) - set(TERMS))
    if unknown:
      raise ConfigError(
        f"config.reward.terms: unknown term(s) {unknown}; the terms are {', '.join(TERMS)}"
      )
    if not terms:
      raise ConfigError("config.reward.terms is empty: give at least one, e.g. {'psnr': 1.0}")
    if norm not in NORMS:
      raise ConfigError(f"config.reward.norm must be one of {', '.join(NORMS)}, got {norm!r}")
    self.norm = norm
    if "latency" in terms:
      if isinstance(latency_side, bool) or not isinstance(latency_side, int) or latency_side < 8:
        raise ConfigError(
          f"config.reward.latency_side must be an integer >= 8, got {latency_side!r}"
        )
    self.latency_side = latency_side
    self.latency_table = (
      (latency_table or op_latency.PieceLatency()) if "latency" in terms else latency_table
    )
    # psnr first, then the others in TERMS order: the sum's order is fixed whatever the config's.
    self.weights = {k: float(terms[k]) for k in TERMS if k in terms}
    self._space, self._scale = space, scale
    self._cache: dict[bytes, dict[str, float]] = {}
    self._pieces: dict[tuple, tuple[int, int]] = {}
    self.max_cost = self._raw(space.max_arch())

  def _raw(self, arch) -> dict[str, float]:
    # The reference units count a 48 x 48 input: probing at that size makes it the same trace.
    side = _REFERENCE_SIDE if self.norm == "reference" else _PROBE_SIDE
    params, macs = child_cost(self._space, arch, self._scale, side, self._pieces)
    out = {"params": params}
    if "macs" in self.weights:
      out["macs"] = macs
      if self.norm == "paper":
        side = cost.PAPER_INPUT[1]
        per_pixel = child_cost(self._space, arch, self._scale, side, self._pieces)[1]
        out["gmacs_480"] = per_pixel * side * side / 1e9
      elif self.norm == "reference":
        out["macs_reference"] = macs * side * side * _REFERENCE_UNIT
    if "latency" in self.weights:
      out["latency"] = self.predicted_ms(arch)
    return out

  def predicted_ms(self, arch) -> float:
    """Return the child's latency (ms) predicted from the per-piece table at latency_side."""
    return op_latency.predict_ms(
      self._space, arch, self._scale, self.latency_side, self.latency_table
    )

  def _ratio(self, raw: dict, k: str) -> float:
    if self.norm == "max" or k == "latency":
      return raw[k] / self.max_cost[k]
    if k == "params":
      return raw[k] / 1e6
    return raw["gmacs_480"] if self.norm == "paper" else raw["macs_reference"]

  def costs(self, tokens) -> dict[str, float]:
    """Return the child's raw cost and its normalised cost terms ("params", "params_ratio", ...).

    The "_ratio" values are what the reward sums: cost / max cost, or the units of `norm`.
    """
    key = np.asarray(tokens, np.int32).tobytes()
    if key not in self._cache:
      raw = self._raw(self._space.decode(tokens))
      ratios = {f"{k}_ratio": self._ratio(raw, k) for k in ("params", *self._extra())}
      self._cache[key] = {**raw, **ratios}
    return self._cache[key]

  def __call__(self, psnr, costs: Mapping[str, object], entropy=None):
    """Return sum_k w_k * term_k; `costs` maps a cost term to its normalised value(s).

    Works on scalars and on arrays alike (a batch of children), in the dtype numpy gives.
    """
    total = self.weights.get("psnr", 0.0) * psnr
    for k in COST_TERMS:
      if k in self.weights:
        total = total + self.weights[k] * costs[k]
    if "entropy" in self.weights:
      if entropy is None:
        raise ConfigError("the reward has an entropy term but the strategy reports no entropy")
      total = total + self.weights["entropy"] * entropy
    return total

  def device_costs(self) -> Callable | None:
    """Return costs(tokens [B, L]) -> {term: float32 [B]} in jnp, or None without a cost table.

    The normalised cost terms of `batch_costs`, computed on the device from the space's
    `cost_table` (pieces traced once, then table lookups: no host round trip), so a search step
    can score, cost and reward its children in one jitted call. Equal to `batch_costs` to float32
    rounding (tests).
    """
    if not isinstance(self._space, CostTable) or "latency" in self.weights:
      return None  # measured latencies live on the host: `batch_costs` looks them up

    def table(side: int):
      piece_cost = functools.partial(_piece_cost, self._pieces, side, self._scale)
      return self._space.cost_table(piece_cost, self._scale, side)

    side = _REFERENCE_SIDE if self.norm == "reference" else _PROBE_SIDE
    probe = table(side)
    macs = "macs" in self.weights
    paper_side = cost.PAPER_INPUT[1]
    paper = table(paper_side) if macs and self.norm == "paper" else None
    max_cost = {k: float(v) for k, v in self.max_cost.items()}

    def one(tokens: jax.Array) -> dict[str, jax.Array]:
      params, per_pixel = probe(tokens)
      if self.norm == "max":
        out = {"params": params / max_cost["params"], "macs": per_pixel / max_cost.get("macs", 1)}
      elif self.norm == "paper":
        out = {"params": params / 1e6}
        out["macs"] = paper(tokens)[1] * (paper_side * paper_side / 1e9) if macs else per_pixel
      else:
        out = {"params": params / 1e6, "macs": per_pixel * (side * side * _REFERENCE_UNIT)}
      return {k: out[k] for k in ("params", *self._extra())}

    return jax.vmap(one)

  def batch_costs(self, tokens) -> dict[str, np.ndarray]:
    """Return each cost term's normalised values (float64 [B]) for a batch of token rows."""
    rows = [self.costs(t) for t in np.asarray(tokens)]
    return {k: np.array([r[f"{k}_ratio"] for r in rows]) for k in ("params", *self._extra())}

  def _extra(self) -> tuple[str, ...]:
    return tuple(k for k in ("macs", "latency") if k in self.weights)
