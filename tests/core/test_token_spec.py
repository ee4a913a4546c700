"""TokenSpec: defaults, validation, and the policy groups a hierarchical controller reads."""

import numpy as np
import pytest

from nasr.core import TokenError, TokenSpec


def test_defaults_one_step_and_head_per_position_and_one_group():
  spec = TokenSpec((2, 3, 4))
  assert spec.steps == (0, 1, 2) and spec.heads == (0, 1, 2)
  assert spec.groups == (0, 0, 0) and spec.num_groups == 1 and spec.size == 24


def test_groups_say_which_policy_emits_each_position():
  spec = TokenSpec((4, 4, 5, 5, 12), groups=(0, 0, 1, 1, 2))
  assert spec.num_groups == 3 and spec.groups == (0, 0, 1, 1, 2)
  with pytest.raises(ValueError, match="groups"):
    TokenSpec((2, 2), groups=(0,))
  with pytest.raises(ValueError, match="non-negative"):
    TokenSpec((2, 2), groups=(0, -1))


def test_validate_names_the_bad_position():
  spec = TokenSpec((2, 3), names=("op", "input"))
  np.testing.assert_array_equal(spec.validate([1, 2]), [1, 2])
  with pytest.raises(TokenError, match="token 3 at input is outside 0..2"):
    spec.validate([1, 3])
  # Past int32 (a hand-edited file): never wrapped into range.
  with pytest.raises(TokenError, match=f"token {2**32 + 1} at op is outside 0..1"):
    spec.validate([2**32 + 1, 0])
  with pytest.raises(TokenError, match=f"token {2**70} at input"):
    spec.validate([1, 2**70])


def test_choices_are_named_where_the_spec_names_them_and_numbered_otherwise():
  spec = TokenSpec((2, 3), names=("op", "input"), choice_names=(("conv", "skip"), ("a", "b", "c")))
  assert spec.choice_labels(0) == ("conv", "skip") and spec.choice_labels(1) == ("a", "b", "c")
  assert TokenSpec((2, 3)).choice_labels(1) == ("0", "1", "2")
  with pytest.raises(ValueError, match=r"choice_names of position 1 \(input\) has 2 names for 3"):
    TokenSpec((2, 3), names=("op", "input"), choice_names=(("conv", "skip"), ("a", "b")))
  with pytest.raises(ValueError, match="choice_names must have one entry per position"):
    TokenSpec((2, 3), choice_names=(("conv", "skip"),))
