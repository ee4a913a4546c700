"""Export a trained checkpoint to StableHLO / ONNX files, each with a card, checked on a photo.

  python -m launch.export --config=configs/export.py --config.checkpoint=W \
      --config.format=onnx,stablehlo --workdir=OUT
"""

from nasr import experiment

from . import common


def main(config, workdir):
  """Export and print the written files."""
  for written in experiment.export_trained(config, workdir).values():
    print(written["file"])


def cli() -> None:
  """Run the launcher on sys.argv (python -m launch.export, or `nasr export`)."""
  common.run(main, example="export")


if __name__ == "__main__":
  cli()
