"""Time a network on this host (XLA, onnxruntime): a checkpoint, an arch JSON or a baseline.

  python -m launch.latency --config=configs/latency.py --config.arch=configs/archs/hnas_a.json \
      --workdir=/tmp/nasr/latency
"""

from nasr import experiment

from . import common


def main(config, workdir):
  """Time the network and print the table."""
  print(experiment.latency_report(experiment.latency(config, workdir)))


def cli() -> None:
  """Run the launcher on sys.argv (python -m launch.latency, or `nasr latency`)."""
  common.run(main, example="latency")


if __name__ == "__main__":
  cli()
