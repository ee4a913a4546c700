"""Shared types: token sequences, their specification, and batches."""

import dataclasses
from collections.abc import Sequence
from typing import TypedDict

import numpy as np

from nasr.core.errors import TokenError

# A sampled architecture: one int32 per decision, shape [len(spec)].
Tokens = np.ndarray


class Batch(TypedDict):
  """A training or validation batch: uint8 NHWC images, hr = lr upscaled by the scale."""

  lr: np.ndarray
  hr: np.ndarray


@dataclasses.dataclass(frozen=True)
class TokenSpec:
  """The decisions of a search space: position i takes a value in range(choices[i]).

  Strategies see only this. A sequential controller emits the positions that share a `step` from
  one recurrent step (DeCoNAS: the 3 op bits of one node pair), and positions that share a `head`
  share one output layer (DeCoNAS: "heads shared per op").

  Attributes:
    choices: number of options per position.
    names: a human-readable name per position (used in errors and plots).
    steps: the controller step that emits each position (non-decreasing from 0); default: one step
      per position.
    heads: the output head of each position; positions on one head must have the same number of
      choices; default: one head per position.
    groups: which policy emits each position, for hierarchical controllers (HNAS: normal cell,
      upsampling cell, network level); default: one group (0) for every position.
    op_heads: the heads that choose operations (ENAS and DeCoNAS squash their logits more: the
      `reinforce` strategy's `op_tanh_reduce`); default: none.
    choice_names: per position, a name for each of its choices (what a plot shows: "rcab",
      "node0"); default: none, the choices are numbered.
  """

  choices: tuple[int, ...]
  names: tuple[str, ...] = ()
  steps: tuple[int, ...] = ()
  heads: tuple[int, ...] = ()
  groups: tuple[int, ...] = ()
  op_heads: tuple[int, ...] = ()
  choice_names: tuple[tuple[str, ...], ...] = ()

  def __post_init__(self):
    n = len(self.choices)
    if n == 0 or any(int(c) < 1 for c in self.choices):
      raise ValueError(f"a TokenSpec needs positions with at least one choice, got {self.choices}")
    for field in ("names", "steps", "heads", "groups", "choice_names"):
      value = getattr(self, field)
      if value and len(value) != n:
        raise ValueError(f"TokenSpec.{field} must have one entry per position ({n})")
    object.__setattr__(self, "choices", tuple(int(c) for c in self.choices))
    names = tuple(tuple(str(c) for c in row) for row in self.choice_names)
    for i, row in enumerate(names):
      if len(row) != self.choices[i]:
        raise ValueError(
          f"TokenSpec.choice_names of position {i} ({self.name(i)}) has {len(row)} names for "
          f"{self.choices[i]} choices"
        )
    object.__setattr__(self, "choice_names", names)
    if not self.steps:
      object.__setattr__(self, "steps", tuple(range(n)))
    if not self.heads:
      object.__setattr__(self, "heads", tuple(range(n)))
    object.__setattr__(self, "groups", tuple(int(g) for g in self.groups) or (0,) * n)
    if min(self.groups) < 0:
      raise ValueError("TokenSpec.groups must be non-negative")
    if any(b < a for a, b in zip(self.steps, self.steps[1:], strict=False)) or self.steps[0] != 0:
      raise ValueError("TokenSpec.steps must start at 0 and never decrease")
    per_head: dict[int, int] = {}
    for h, c in zip(self.heads, self.choices, strict=True):
      if per_head.setdefault(h, c) != c:
        raise ValueError(f"positions on head {h} have different numbers of choices")
    object.__setattr__(self, "op_heads", tuple(int(h) for h in self.op_heads))
    if any(h not in per_head for h in self.op_heads):
      raise ValueError(f"TokenSpec.op_heads {self.op_heads} must be heads of the spec")

  def __len__(self) -> int:
    return len(self.choices)

  @property
  def num_steps(self) -> int:
    """Return the number of controller steps."""
    return self.steps[-1] + 1

  @property
  def num_heads(self) -> int:
    """Return the number of distinct output heads."""
    return max(self.heads) + 1

  @property
  def num_groups(self) -> int:
    """Return the number of policy groups."""
    return max(self.groups) + 1

  @property
  def size(self) -> int:
    """Return the number of distinct token sequences (a Python int, possibly huge)."""
    out = 1
    for c in self.choices:
      out *= c
    return out

  def name(self, i: int) -> str:
    """Return the name of position i."""
    return self.names[i] if self.names else f"position {i}"

  def choice_labels(self, i: int) -> tuple[str, ...]:
    """Return the names of position i's choices ("0", "1", ... where the spec names none)."""
    if self.choice_names:
      return self.choice_names[i]
    return tuple(str(k) for k in range(self.choices[i]))

  def validate(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
    """Return `tokens` as an int32 array, or raise TokenError naming the bad position."""
    arr = np.asarray(tokens)
    if arr.ndim != 1 or arr.shape[0] != len(self.choices):
      raise TokenError(f"expected {len(self.choices)} tokens, got shape {arr.shape}")
    if arr.dtype == object:  # integers too large for int64 (a JSON file can hold them)
      if not all(isinstance(t, int) and not isinstance(t, bool) for t in arr.tolist()):
        raise TokenError(f"tokens must be integers, got {arr.tolist()}")
    elif not np.issubdtype(arr.dtype, np.integer):
      if not np.issubdtype(arr.dtype, np.number) or not np.all(np.mod(arr, 1) == 0):
        raise TokenError(f"tokens must be integers, got {arr.tolist()}")
    # Range-checked as Python integers: a cast to int32 first would wrap 2**32 + t to t.
    values = [int(t) for t in arr.tolist()]
    for i, (t, c) in enumerate(zip(values, self.choices, strict=True)):
      if not 0 <= t < c:
        raise TokenError(f"token {t} at {self.name(i)} is outside 0..{c - 1}")
    return np.asarray(values, np.int32)

  def sample(self, rng: np.random.Generator, num: int | None = None) -> np.ndarray:
    """Return uniformly random tokens, shape [len] or [num, len] (int32)."""
    shape = (len(self),) if num is None else (num, len(self))
    return (rng.random(shape) * np.asarray(self.choices)).astype(np.int32)
