"""Every registered search space keeps the written contract of nasr/spaces/base.py.

One parametrised test per promise, over `SPACES.names()` at x2, x3 and x4, with each space's tiny
settings (configs/common.py TINY_SPACES, what the tiny presets search): a space registered without
an entry there fails here until it gets one.
"""

import dataclasses
import functools
import inspect
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasr import spaces
from nasr.configs.common import TINY_SPACES
from nasr.core.errors import TokenError
from nasr.estimation import cost
from nasr.searches import reward
from nasr.spaces.base import (
  CostPieces,
  CostTable,
  DifferentiableSpace,
  Families,
  SearchSpace,
  SupernetSpace,
)
from nasr.spaces.registry import SPACES

# The contract covers DeCoNAS's fusion-search positions too (the tiny preset searches without).
TINY = {**TINY_SPACES, "deconas": {**TINY_SPACES["deconas"], "fusion_search": True}}
NAMES = SPACES.names()
SCALES = (2, 3, 4)
LR = (2, 5, 6)  # batch, height, width of the test input


def _space(name, scale=2):
  if name not in TINY:
    pytest.fail(f"space {name!r} is registered but has no tiny settings in TINY_SPACES")
  if name == "hnas" and scale == 3:  # the released deconvolution cannot upsample x3 (see HNAS)
    return spaces.get(name, **TINY[name], deconv_kernel="2s")
  return spaces.get(name, **TINY[name])


def _lr(seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=(*LR, 3)), jnp.float32)


def _random_params(model, *args, seed=0, std=0.1):
  """Return random variables of `model` (no initialiser is compiled; biases are non-zero too)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)
  return jax.tree.map(lambda s: jnp.asarray(std * rng.standard_normal(s.shape), s.dtype), shapes)


def _sample(space, rng, num):
  """Return `num` distinct token arrays that decode (some spaces reject some in-range tokens)."""
  out, seen = [], set()
  for tokens in space.token_spec().sample(rng, 50 * num):
    if tuple(tokens) in seen:
      continue
    try:
      space.decode(tokens)
    except TokenError:
      continue
    seen.add(tuple(tokens))
    out.append(tokens)
    if len(out) == num:
      return out
  raise AssertionError(f"could not sample {num} valid architectures")


def _shapes(tree):
  return jax.tree.map(lambda a: a.shape, tree)


@pytest.mark.parametrize("name", NAMES)
def test_cost_pieces_and_cost_table_add_up_to_the_childs_cost(name):
  # The one-shot reward sums cached pieces (host) or table rows (device) instead of tracing each
  # child: the sums must be the child's exact parameters and multiply-adds, at several probe sides
  # (channel attention and other pooled convs do not scale with the pixels).
  space = _space(name)
  if not isinstance(space, CostPieces):
    pytest.skip(f"{name} has no cost pieces: the reward traces each child whole")
  cache, rng = {}, np.random.default_rng(5)
  for scale, side in ((2, 32), (3, 17), (4, 12)):
    space = _space(name, scale)
    samples = [space.encode(space.max_arch()), *_sample(space, rng, 3)]
    if isinstance(space, CostTable):
      piece_cost = functools.partial(reward._piece_cost, cache, side, scale)
      table = jax.jit(jax.vmap(space.cost_table(piece_cost, scale, side)))
      from_table = np.stack(table(jnp.asarray(np.stack(samples))), axis=1)
    for i, tokens in enumerate(samples):
      arch = space.decode(tokens)
      child = space.build(arch, scale)
      probe = (1, side, side, 3)
      shapes = jax.eval_shape(child.init, jax.random.PRNGKey(0), jnp.zeros(probe))
      params, per_pixel = reward.child_cost(space, arch, scale, side, cache)
      assert params == space.count_params(arch, scale)
      assert per_pixel == cost.count_macs(child, shapes, probe) / (side * side)
      if isinstance(space, CostTable):
        np.testing.assert_allclose(from_table[i], [params, per_pixel], rtol=1e-6)
  assert cache  # the pieces were used and cached


@pytest.mark.parametrize("name", NAMES)
def test_declared_capabilities_are_the_spaces_own(name):
  # Capabilities are declared by base classes; this holds each declaration to the class's methods,
  # so a space cannot have cost pieces it does not declare (the reward would trace it whole) or
  # supernet options the trainer would not pass (config.supernet keys checked against them).
  space, cls = _space(name), type(_space(name))
  assert isinstance(space, CostPieces) == callable(getattr(cls, "cost_pieces", None))
  assert isinstance(space, CostTable) == callable(getattr(cls, "cost_table", None))
  assert isinstance(space, Families) == ("families" in {f.name for f in _fields(space)})
  if isinstance(space, SupernetSpace | DifferentiableSpace):
    taken = set(inspect.signature(space.supernet).parameters) - {"scale"}
    assert space.supernet_options() == taken


@pytest.mark.parametrize("name", NAMES)
def test_every_space_names_the_choices_of_every_position(name):
  # What controller.png labels its heatmap with; a space without names would show numbers.
  spec = _space(name).token_spec()
  assert spec.choice_names, f"space {name!r} does not name its choices (TokenSpec.choice_names)"
  for i in range(len(spec)):
    labels = spec.choice_labels(i)
    assert len(labels) == spec.choices[i] and len(set(labels)) == len(labels), spec.name(i)


def _fields(space):
  return dataclasses.fields(space) if dataclasses.is_dataclass(space) else ()


def test_a_space_declares_its_settings_as_dataclass_fields():
  assert spaces.space_fields("drn") == [f.name for f in dataclasses.fields(SPACES.get("drn"))]

  class NotADataclass:
    def __init__(self, blocks: int = 4):
      self.blocks = blocks

  with pytest.raises(TypeError, match="register a dataclass"):
    spaces.register("not_a_dataclass")(NotADataclass)
  assert "not_a_dataclass" not in SPACES


def test_every_registered_space_has_tiny_settings():
  assert set(NAMES) <= set(TINY), sorted(set(NAMES) - set(TINY))


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", NAMES)
def test_space_keeps_the_contract(name, scale):
  space = _space(name, scale)
  assert isinstance(space, SearchSpace)
  rng = np.random.default_rng(scale)
  arch = space.decode(_sample(space, rng, 1)[0])
  # decode may accept several spellings of one architecture (DARTS: a node's two edges in either
  # order); encode writes the canonical one, which decodes back to it.
  tokens = space.encode(arch)
  assert tokens.dtype == np.int32 and space.decode(tokens) == arch
  np.testing.assert_array_equal(space.encode(space.decode(tokens)), tokens)
  # The JSON round trip writes and reads search results (best.json, genotype.json).
  stored = json.loads(json.dumps(arch.to_dict()))
  assert space.arch_from_dict(stored) == arch
  assert type(arch).from_json(arch.to_json()) == arch
  assert isinstance(arch.describe(), str) and isinstance(arch.group(), str)
  for shifted in (False, True):  # spaces without depthwise convs accept and ignore `shifted`
    model = space.build(arch, scale, dtype=jnp.float32, shifted=shifted)
    x = _lr()
    params = _random_params(model, x)
    y = model.apply(params, x)
    assert y.shape == (LR[0], LR[1] * scale, LR[2] * scale, 3) and y.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(y)))
    n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    assert space.count_params(arch, scale) == n
  if name == "darts_sr":
    assert isinstance(space, DifferentiableSpace)


SUPERNET_NAMES = [n for n in NAMES if n in TINY and isinstance(_space(n), SupernetSpace)]


# HNAS's supernet takes half a minute to compile per scale; x2 runs by default (tests/spaces/
# test_hnas.py checks every op at every scale), x3 and x4 with the slow checks.
SUPERNET_CASES = [
  pytest.param(n, s, marks=pytest.mark.slow) if n == "hnas" and s != 2 else (n, s)
  for n in SUPERNET_NAMES
  for s in SCALES
]


@pytest.mark.parametrize("name,scale", SUPERNET_CASES)
def test_supernet_compiles_once_and_equals_every_child(name, scale):
  space = _space(name, scale)
  model = space.supernet(scale)
  x = _lr(1)
  y = jnp.asarray(
    np.random.default_rng(2).uniform(size=(LR[0], LR[1] * scale, LR[2] * scale, 3)), jnp.float32
  )
  max_tokens = space.encode(space.max_arch())
  variables = _random_params(model, x, max_tokens, seed=scale)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def forward(variables, x, tokens):
    return model.apply(variables, x, tokens)

  @jax.jit
  @jax.value_and_grad
  @chex.assert_max_traces(n=1)
  def loss(variables, x, y, tokens):
    return jnp.mean(jnp.abs(model.apply(variables, x, tokens) - y))

  samples = [max_tokens, *_sample(space, np.random.default_rng(scale), 10)]
  assert len({tuple(t) for t in samples}) >= 10
  most = space.count_params(space.max_arch(), scale)
  for tokens in samples:
    arch = space.decode(tokens)
    assert space.count_params(arch, scale) <= most
    child = space.build(arch, scale)
    params = space.child_params(variables, arch)
    assert _shapes(params) == _shapes(jax.eval_shape(child.init, jax.random.PRNGKey(0), x))
    want = child.apply(params, x)
    got = forward(variables, x, jnp.asarray(tokens, jnp.int32))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    value, grads = loss(variables, x, y, jnp.asarray(tokens, jnp.int32))
    assert np.isfinite(float(value))
    assert _shapes(grads) == _shapes(variables)
  chex.clear_trace_counter()


# bfloat16 keeps 8 significant bits: a network of a few layers computed in it (parameters float32)
# stays within this of its float32 output, relative to the output's magnitude (measured: 0.2-0.9%).
BF16_TOL = 0.02
# ... and differs from it by at least this (bfloat16 rounds at 2^-8 ~ 0.4%; float32 at 6e-8).
BF16_MIN = 1e-4


def _compare_forms(apply32, apply_cpu, apply16):
  y32 = np.asarray(apply32())
  np.testing.assert_allclose(np.asarray(apply_cpu()), y32, atol=1e-5, rtol=1e-5)  # CPU forms
  y16 = apply16()
  assert y16.dtype == jnp.float32  # the output (and so the loss and metrics) stays float32
  err = float(np.abs(np.asarray(y16) - y32).max())
  scale = max(1.0, float(np.abs(y32).max()))
  assert err <= BF16_TOL * scale, err
  # and it did compute in bfloat16: a float32 network would agree to ~1e-7
  assert err >= BF16_MIN * scale, f"bfloat16 output within {err} of float32: not computed in it"


@pytest.mark.parametrize("name", NAMES)
def test_networks_cpu_forms_equal_the_accelerator_forms_and_bfloat16_is_close(name):
  # config.kernels picks the form (shifted depthwise convs on CPU), config.compute_dtype the dtype.
  space = _space(name)
  if isinstance(space, SupernetSpace):
    arch = space.max_arch()  # every op of the space
  else:
    arch = space.decode(_sample(space, np.random.default_rng(7), 1)[0])
  x = _lr()
  params = _random_params(space.build(arch, 2), x)

  def run(dtype=jnp.float32, shifted=False):
    return lambda: space.build(arch, 2, dtype=dtype, shifted=shifted).apply(params, x)

  _compare_forms(run(), run(shifted=True), run(jnp.bfloat16))


SUPERNET_FORM_CASES = [
  pytest.param(n, marks=pytest.mark.slow) if n == "hnas" else n for n in SUPERNET_NAMES
]


@pytest.mark.parametrize("name", SUPERNET_FORM_CASES)  # HNAS: slow; its CPU forms: test_hnas.py
def test_supernets_cpu_forms_equal_the_accelerator_forms_and_bfloat16_is_close(name):
  space = _space(name)
  x = _lr(3)
  tokens = jnp.asarray(space.encode(space.max_arch()), jnp.int32)
  cpu = {"shifted": True} if "shifted" in space.supernet_options() else {}
  variables = _random_params(space.supernet(2), x, tokens, seed=4)

  def run(dtype=jnp.float32, **options):
    model = space.supernet(2, dtype=dtype, **options)
    return lambda: jax.jit(model.apply)(variables, x, tokens)

  _compare_forms(run(), run(**cpu), run(jnp.bfloat16))
