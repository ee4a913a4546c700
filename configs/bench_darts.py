r"""DARTS on the benchmark space (the `bench` cells): the DARTS-SR search with the bench space.

nasr search --config=bench_darts --workdir=W

Everything but the space is configs/darts_sr.py's (second-order bilevel steps, the same
optimisers); `retrain` is the table's member size.
"""

import ml_collections

from nasr.configs import common
from nasr.configs import darts_sr as darts_config
from nasr.configs.bench_one_shot import SPACE

PRESETS = ("tiny", "default")


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Return the DARTS bench search config for `preset` (tiny or default)."""
  preset = common.check_preset(preset, PRESETS)
  c = darts_config.get_config(preset)
  c.space = ml_collections.ConfigDict(SPACE)
  c.retrain = ml_collections.ConfigDict({k: SPACE[k] for k in ("cells", "channels")})
  c.supernet = ml_collections.ConfigDict({"shifted": True})
  c.data.patch_size = 24
  if preset == "tiny":
    c.space.update(common.TINY_SPACES["bench"])
    c.retrain.update(common.TINY_SPACES["bench"])
    c.data.patch_size = 12
    c.supernet.shifted = False  # a few steps: XLA's depthwise convs compile faster (darts_sr)
  return c
