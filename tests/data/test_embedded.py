"""The embedded scikit-image photographs load offline, with disjoint train and val splits."""

import numpy as np
import pytest

from nasr.core.errors import ConfigError
from nasr.data import embedded_names, load_embedded


def test_splits_load_and_are_disjoint():
  train, val = load_embedded("train", 2), load_embedded("val", 2)
  # All of these ship inside the scikit-image wheel (no download), so none may go missing.
  assert train.names == (
    "astronaut",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "motorcycle_left",
    "retina",
    "camera",
    "brick",
    "grass",
    "gravel",
    "moon",
  )
  assert val.names == ("chelsea", "coffee")
  assert not set(train.names) & set(val.names)
  assert embedded_names() == {"train": list(train.names), "val": list(val.names)}
  for pairs in (train, val):
    for lr, hr in zip(pairs.lr, pairs.hr, strict=True):
      assert lr.dtype == hr.dtype == np.uint8 and lr.ndim == 3 and lr.shape[2] == 3
      assert hr.shape == (lr.shape[0] * 2, lr.shape[1] * 2, 3)
      assert max(hr.shape[:2]) <= 640
  assert load_embedded("train", 2) is train  # cached


def test_other_scale_and_bad_split():
  pairs = load_embedded("val", 4)
  assert pairs.scale == 4 and all(
    h.shape[0] == 4 * x.shape[0] for x, h in zip(pairs.lr, pairs.hr, strict=True)
  )
  with pytest.raises(ConfigError, match="train, val"):
    load_embedded("test", 2)
