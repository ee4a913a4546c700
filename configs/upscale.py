r"""Upscale images with a trained checkpoint (or bicubic).

  python -m launch.upscale --config=configs/upscale.py --config.checkpoint=W \
      --config.input=photo.png --workdir=/tmp/nasr/sr
"""

import ml_collections

from configs import common


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Return the upscaling config for `preset` (tiny, default or paper)."""
  preset = common.check_preset(preset)
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.model = ""  # "bicubic" or empty (use `checkpoint`)
  c.checkpoint = ""  # training workdir(s); several comma-separated ones are averaged
  c.scale = 2  # for bicubic; a checkpoint brings its own
  c.input = ""  # an image file or a folder of images
  c.output = ""  # output folder; empty = <workdir>/sr
  c.tile = 192 if preset != "tiny" else 32  # LR tile side: bounds memory on large photos
  c.overlap = 16
  c.self_ensemble = False
  return c
