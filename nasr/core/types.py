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

  Attributes:
    choices: number of options per position.
    names: a human-readable name per position (used in error messages and plots).
    groups: optional group id per position; positions with the same group share a
      controller softmax head (e.g. every "op bit" of DeCoNAS).
  """

  choices: tuple[int, ...]
  names: tuple[str, ...] = ()
  groups: tuple[int, ...] = ()

  def __post_init__(self):
    if any(c < 1 for c in self.choices):
      raise ValueError(f"every position needs at least one choice, got {self.choices}")
    if self.names and len(self.names) != len(self.choices):
      raise ValueError("names must have one entry per position")
    if self.groups and len(self.groups) != len(self.choices):
      raise ValueError("groups must have one entry per position")

  def __len__(self) -> int:
    return len(self.choices)

  @property
  def size(self) -> int:
    """Return the number of distinct token sequences."""
    return int(np.prod([int(c) for c in self.choices], dtype=object))

  def name(self, i: int) -> str:
    """Return the name of position i."""
    return self.names[i] if self.names else f"position {i}"

  def validate(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
    """Return `tokens` as an int32 array, or raise TokenError naming the bad position."""
    arr = np.asarray(tokens)
    if arr.ndim != 1 or arr.shape[0] != len(self.choices):
      raise TokenError(f"expected {len(self.choices)} tokens, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
      if not np.all(np.equal(np.mod(arr, 1), 0)):
        raise TokenError(f"tokens must be integers, got {list(arr)}")
    arr = arr.astype(np.int32)
    for i, (t, c) in enumerate(zip(arr, self.choices, strict=True)):
      if not 0 <= t < c:
        raise TokenError(f"token {int(t)} at {self.name(i)} is outside 0..{c - 1}")
    return arr
