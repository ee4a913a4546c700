"""The validation split carved from the training images: data.num_val or data.val_fraction."""

import ml_collections
import pytest

from nasr import data
from nasr.configs import common
from nasr.core.errors import ConfigError
from nasr.data.sources import num_carved


@pytest.mark.parametrize(
  ("num_train", "fraction", "want"),
  [(11, 0.6, 7), (10, 0.6, 6), (5, 0.5, 3), (3, 0.1, 1), (2, 0.9, 1), (100, 0.25, 25)],
)
def test_val_fraction_rounds_and_leaves_each_side_an_image(num_train, fraction, want):
  assert num_carved(num_train, num_val=2, val_fraction=fraction) == want


def test_zero_fraction_carves_num_val():
  assert num_carved(11, num_val=3, val_fraction=0.0) == 3
  with pytest.raises(ConfigError, match="data.num_val=11 must be between 1 and 10"):
    num_carved(11, num_val=11)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_val_fraction_outside_unit_interval_is_a_config_error(fraction):
  with pytest.raises(ConfigError, match=r"data.val_fraction=.* must be in \[0, 1\)"):
    num_carved(11, num_val=2, val_fraction=fraction)


def test_val_fraction_needs_two_images():
  with pytest.raises(ConfigError, match="data.val_fraction"):
    num_carved(1, num_val=2, val_fraction=0.5)


def test_load_train_val_carves_the_fraction_of_the_embedded_images():
  d = common.data_config("default")
  d.val, d.val_fraction = "", 0.6  # HNAS: 60% for the controller, 40% for the shared weights
  train, val = data.load_train_val(d, 2, seed=0)
  assert (len(train), len(val)) == (4, 7)
  assert not set(train.names) & set(val.names)
  d.val_fraction = 0.0  # back to num_val
  train, val = data.load_train_val(d, 2, seed=0)
  assert (len(train), len(val)) == (9, 2)
  old = ml_collections.ConfigDict({k: v for k, v in d.items() if k != "val_fraction"})
  assert [len(p) for p in data.load_train_val(old, 2, seed=0)] == [9, 2]  # configs before it
