"""Upscale an image or a folder to SR PNGs (tiled, so memory stays bounded).

  python -m launch.upscale --config=configs/upscale.py --config.checkpoint=W \
      --config.input=photo.png --workdir=OUT
"""

from nasr import experiment

from . import common


def main(config, workdir):
  """Upscale and print the written paths."""
  for path in experiment.upscale(config, workdir):
    print(path)


def cli() -> None:
  """Run the launcher on sys.argv (python -m launch.upscale, or `nasr upscale`)."""
  common.run(main, example="upscale:tiny")


if __name__ == "__main__":
  cli()
