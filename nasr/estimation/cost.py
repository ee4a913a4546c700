"""Model cost: parameter counts and multiply-adds of one forward pass, read from the jaxpr.

`count_macs` traces `module.apply` with `jax.make_jaxpr` (shapes only, nothing is computed, so a
720p input costs no more than an 8x8 one) and adds up the multiply-adds of every contraction:

- `conv_general_dilated`: output elements x prod(kernel spatial dims) x kernel input features,
  i.e. k*k*Cin*Cout/groups per output pixel (DESIGN rule 7). For transposed convolutions
  (lhs_dilation > 1) only the multiplies that hit real (not inserted-zero) inputs count: the total
  is divided by prod(lhs_dilation), so a stride-s deconvolution costs k*k*Cin*Cout per INPUT pixel.
- `dot_general`: prod(batch dims) x prod(lhs free dims) x prod(rhs free dims) x prod(contracting).
- Elementwise ops, reductions and pooling count nothing (they are cheap next to the
  contractions, and the SR literature does not count them). Interpolation counts nothing when it
  is written as shifted multiply-adds (`nasr.ops.interpolate`, what the networks here use);
  `jax.image.resize` contracts with dense interpolation matrices, and those dot_generals count.

Control flow: sub-jaxprs (jit/pjit, closed_call, custom_jvp_call, custom_vjp_call, remat, ...) are
walked recursively; a `scan` body counts `length` times; a `while` loop counts its condition and
body ONCE (the trip count is not known from shapes); a `cond`/`switch` counts its most expensive
branch, so the total is an upper bound when branches differ.
"""

import math
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from nasr.core.errors import ConfigError

Params = Any

# One forward pass on a 3 x 480 x 480 LR image: the size HNAS's code names for its Table II
# (whose figures are a tenth of this count without deconvolutions: reward.table_ii_mult_adds).
PAPER_INPUT = (1, 480, 480, 3)


def _trainable(params: Params) -> Params:
  """Return the "params" collection of a Flax variables dict, or `params` itself."""
  if hasattr(params, "keys") and "params" in params:
    return params["params"]
  return params


def count_params(params: Params) -> int:
  """Return the number of scalars in a parameter pytree.

  Args:
    params: bare parameters, or a Flax variables dict; of the latter only the "params" collection
      counts (batch statistics and other state are not parameters). Leaves may be arrays or
      `jax.ShapeDtypeStruct`s (as from `jax.eval_shape`).
  """
  return int(sum(math.prod(np.shape(leaf)) for leaf in jax.tree.leaves(_trainable(params))))


def _conv_macs(eqn) -> int:
  """Return the multiply-adds of a conv_general_dilated equation."""
  params = eqn.params
  rhs_shape = eqn.invars[1].aval.shape
  out_size = math.prod(eqn.outvars[0].aval.shape)
  rhs_spec = params["dimension_numbers"].rhs_spec  # (out features, in features, *spatial)
  kernel_in = rhs_shape[rhs_spec[1]]  # already Cin / feature_group_count
  kernel_spatial = math.prod(rhs_shape[d] for d in rhs_spec[2:])
  macs = out_size * kernel_spatial * kernel_in
  lhs_dilation = params.get("lhs_dilation") or ()
  # Transposed conv: most taps hit inserted zeros; count only those on real inputs.
  return macs // max(1, math.prod(lhs_dilation))


def _dot_macs(eqn) -> int:
  """Return the multiply-adds of a dot_general equation."""
  (lhs_contract, _), _ = eqn.params["dimension_numbers"]
  lhs_shape = eqn.invars[0].aval.shape
  # Output = batch x lhs free x rhs free; each output element sums over the contracting dims.
  out_size = math.prod(eqn.outvars[0].aval.shape)
  return out_size * math.prod(lhs_shape[d] for d in lhs_contract)


def _sub_jaxprs(value):
  """Yield the jaxprs held in an equation parameter (a jaxpr, a closed jaxpr, or a sequence)."""
  if isinstance(value, jax.extend.core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jax.extend.core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for item in value:
      yield from _sub_jaxprs(item)


def jaxpr_macs(jaxpr) -> int:
  """Return the multiply-adds of a jaxpr (by the rules above), walking its sub-jaxprs."""
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      total += _conv_macs(eqn)
    elif name == "dot_general":
      total += _dot_macs(eqn)
    elif name == "scan":
      total += eqn.params["length"] * jaxpr_macs(eqn.params["jaxpr"].jaxpr)
    elif name == "cond":
      # Upper bound: the most expensive branch (the taken one is not known from shapes).
      total += max(jaxpr_macs(b.jaxpr) for b in eqn.params["branches"])
    else:
      # jit/pjit, closed_call, custom_jvp_call, custom_vjp_call, remat, while (body and condition
      # once: the trip count is not known from shapes), and any other primitive holding jaxprs.
      for value in eqn.params.values():
        for sub in _sub_jaxprs(value):
          total += jaxpr_macs(sub)
  return total


def count_macs(module, params: Params, input_shape, **apply_kwargs) -> int:
  """Return the multiply-adds of one forward pass of a Flax module on an input of `input_shape`.

  Nothing is computed: the forward pass is traced to a jaxpr and its contractions are counted (see
  the module docstring for the rules).

  Args:
    module: a Flax linen module.
    params: the variables dict ({"params": ...}, other collections allowed) or the bare params;
      leaves may be `jax.ShapeDtypeStruct`s.
    input_shape: the shape of the (float32) input, e.g. (1, 720, 1280, 3); includes the batch.
    **apply_kwargs: passed to `module.apply` (e.g. `train=False`).
  """
  try:
    input_shape = tuple(int(d) for d in input_shape)
  except TypeError:
    raise ConfigError(f"input_shape must be a sequence of ints, got {input_shape!r}") from None
  if any(d < 1 for d in input_shape):
    raise ConfigError(f"input_shape must have positive dimensions, got {input_shape}")
  variables = params if hasattr(params, "keys") and "params" in params else {"params": params}

  def forward(variables, x):
    return module.apply(variables, x, **apply_kwargs)

  closed = jax.make_jaxpr(forward)(variables, jax.ShapeDtypeStruct(input_shape, jnp.float32))
  return int(jaxpr_macs(closed.jaxpr))


def gmacs_480(module, params: Params | None = None, **apply_kwargs) -> float:
  """Return the G multiply-adds of one forward pass on a 480x480 LR image (every conv counted).

  Counted at that size, not scaled from a smaller probe: a global pooling (channel attention) costs
  the same at any size, so multiply-adds are not always proportional to the pixels. Without
  `params`, their shapes come from `module.init` on a 16x16 probe (nothing is computed).
  """
  if params is None:
    params = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
  return count_macs(module, params, PAPER_INPUT, **apply_kwargs) / 1e9


def macs_per_pixel(module, params: Params, lr_shape, **apply_kwargs) -> float:
  """Return the multiply-adds of one forward pass per LR input pixel (per image of the batch).

  Args:
    module: a Flax linen module taking NHWC input.
    params: as for `count_macs`.
    lr_shape: the NHWC shape of the LR input; the count is divided by N * H * W.
    **apply_kwargs: passed to `module.apply`.
  """
  lr_shape = tuple(lr_shape)
  if len(lr_shape) != 4:
    raise ConfigError(f"lr_shape must be NHWC, got {lr_shape}")
  n, h, w, _ = lr_shape
  return count_macs(module, params, lr_shape, **apply_kwargs) / (n * h * w)
