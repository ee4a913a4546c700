r"""Evaluate a trained checkpoint (or bicubic) on benchmark folders.

  python -m launch.evaluate --config=configs/evaluate.py --config.model=bicubic --config.scale=2 \
      --config.benchmarks=path/to/Set5,path/to/Set14 --workdir=/tmp/nasr/eval
  python -m launch.evaluate --config=configs/evaluate.py --config.checkpoint=W --workdir=W/eval
"""

import ml_collections

from nasr.configs import common


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Return the evaluation config for `preset` (tiny, default or paper)."""
  preset = common.check_preset(preset)
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.model = ""  # "bicubic" for the MATLAB-bicubic baseline; empty = use `checkpoint`
  # A training workdir, or several comma-separated ones (W1,W2,...): a model ensemble that averages
  # the SR outputs of networks of any families trained for the same scale.
  c.checkpoint = ""
  # Which checkpoint of a training workdir: "latest", or "best" (the best validation PSNR).
  c.which = "latest"
  c.scale = 2  # used by bicubic; a checkpoint brings its own and must agree
  # Comma-separated benchmark folders of HR images (LR made with MATLAB bicubic), or "embedded".
  c.benchmarks = "embedded"
  # Patch ensemble: LR tiles of side `tile` every `stride` pixels (0 = tile // 2), blended with
  # weights that fall with the distance from the tile centre (the paper: tile=120, stride=60).
  c.tile = 0  # 0 = the whole image at once
  c.stride = 0
  c.self_ensemble = False  # average over the 8 flips/transposes of each tile
  if preset == "paper":
    # The published tables' sets: folders of their HR images, which you download (e.g. Set5 and
    # Set14 from the EDSR or BasicSR benchmark archives): --config.benchmarks=DIR1,DIR2.
    c.benchmarks = ""
  return c
