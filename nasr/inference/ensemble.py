"""Self-ensemble (x8 flips and transposes) and model ensembles of NHWC upscaling functions."""

import itertools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

ApplyFn = Callable[[np.ndarray], np.ndarray]


def _xp(a):
  """Return the array namespace of `a`: jax.numpy for JAX arrays and tracers, else numpy."""
  return jnp if isinstance(a, jax.Array) else np


def _forward(x, transpose: bool, flip_h: bool, flip_w: bool):
  """Return the NHWC batch transposed (H <-> W) then flipped."""
  xp = _xp(x)
  if transpose:
    x = xp.swapaxes(x, 1, 2)
  if flip_h:
    x = xp.flip(x, axis=1)
  if flip_w:
    x = xp.flip(x, axis=2)
  return x


def _inverse(y, transpose: bool, flip_h: bool, flip_w: bool):
  """Return the NHWC batch with the transforms of `_forward` undone in reverse order."""
  xp = _xp(y)
  if flip_w:
    y = xp.flip(y, axis=2)
  if flip_h:
    y = xp.flip(y, axis=1)
  if transpose:
    y = xp.swapaxes(y, 1, 2)
  return y


# The dihedral group of the square: every transpose x flip_h x flip_w combination.
TRANSFORMS = tuple(itertools.product((False, True), repeat=3))


def self_ensemble(apply_fn: ApplyFn) -> ApplyFn:
  """Return an apply_fn that averages `apply_fn` over the 8 flips/transposes of its input.

  Works with numpy and JAX arrays (and inside jit); composes with `upscale_tiled`. Non-square
  inputs are also run transposed, i.e. at a second shape.
  """

  def ensembled(x):
    total = None
    for t in TRANSFORMS:
      y = _inverse(apply_fn(_forward(x, *t)), *t)
      total = y if total is None else total + y
    return total / len(TRANSFORMS)

  return ensembled


def model_ensemble(apply_fns: Sequence[ApplyFn]) -> ApplyFn:
  """Return an apply_fn that averages the outputs of `apply_fns` (the model ensemble).

  The functions may wrap networks of any families (or whole tiled, self-ensembled upscalers, as
  `experiment.make_upscaler` does); they only need to map one input to outputs of one shape.
  """
  apply_fns = tuple(apply_fns)
  if not apply_fns:
    raise ValueError("model_ensemble needs at least one apply_fn")

  def ensembled(x):
    total = None
    for fn in apply_fns:
      y = fn(x)
      total = y if total is None else total + y
    return total / len(apply_fns)

  return ensembled
