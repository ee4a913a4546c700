r"""Upscale images with a trained checkpoint (or bicubic).

  python -m launch.upscale --config=configs/upscale.py --config.checkpoint=W \
      --config.input=photo.png --workdir=/tmp/nasr/sr
"""

import ml_collections

from nasr.configs import common


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Return the upscaling config for `preset` (tiny, default or paper)."""
  preset = common.check_preset(preset)
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.model = ""  # "bicubic" or empty (use `checkpoint`)
  # A training workdir, or several comma-separated ones (W1,W2,...): a model ensemble that averages
  # the SR outputs of networks of any families trained for the same scale.
  c.checkpoint = ""
  # Which checkpoint of a training workdir: "latest", or "best" (the best validation PSNR).
  c.which = "latest"
  c.scale = 2  # for bicubic; a checkpoint brings its own
  c.input = ""  # an image file or a folder of images
  c.output = ""  # output folder; empty = <workdir>/sr
  # Patch ensemble: LR tiles of side `tile` (bounds memory on large photos; 0 = whole image) every
  # `stride` pixels (0 = tile // 2), blended with weights that fall with distance from the centre.
  # The default overlaps tiles by 1/6 only, to keep large photos cheap.
  c.tile, c.stride = (192, 160) if preset != "tiny" else (32, 24)
  c.self_ensemble = False  # average over the 8 flips/transposes of each tile
  if preset == "paper":  # the multi-level ensemble of Yu et al. (AIM 2020 real-SR winners)
    c.tile, c.stride, c.self_ensemble = 120, 60, True
  return c
