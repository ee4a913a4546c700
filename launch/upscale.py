"""Upscale an image or a folder to SR PNGs (tiled, so memory stays bounded).

  python -m launch.upscale --config=configs/upscale.py --config.checkpoint=W \
      --config.input=photo.png --workdir=OUT
"""

from launch import common
from nasr import experiment


def main(config, workdir):
  """Upscale and print the written paths."""
  for path in experiment.upscale(config, workdir):
    print(path)


if __name__ == "__main__":
  common.run(main)
