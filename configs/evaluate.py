r"""Evaluate a trained checkpoint (or bicubic) on benchmark folders.

  python -m launch.evaluate --config=configs/evaluate.py --config.model=bicubic --config.scale=2 \
      --config.benchmarks=../shared/data/benchmarks/Set5 --workdir=/tmp/nasr/eval
  python -m launch.evaluate --config=configs/evaluate.py --config.checkpoint=W --workdir=W/eval
"""

import ml_collections

from configs import common


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Return the evaluation config for `preset` (tiny, default or paper)."""
  preset = common.check_preset(preset)
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.model = ""  # "bicubic" for the MATLAB-bicubic baseline; empty = use `checkpoint`
  c.checkpoint = ""  # training workdir(s); several comma-separated ones form a model ensemble
  c.scale = 2  # used by bicubic; a checkpoint brings its own and must agree
  # Comma-separated benchmark folders of HR images (LR made with MATLAB bicubic), or "embedded".
  c.benchmarks = "embedded"
  c.tile = 0  # LR tile side for tiled inference (0 = whole image)
  c.overlap = 16  # LR pixels shared by neighbouring tiles
  c.self_ensemble = False  # x8 flips/transposes
  if preset == "paper":
    c.benchmarks = ",".join(f"../shared/data/benchmarks/{b}" for b in ("Set5", "Set14"))
  return c
