"""Score a checkpoint or bicubic on benchmark folders; writes <workdir>/eval.json.

  python -m launch.evaluate --config=configs/evaluate.py --config.model=bicubic --config.scale=2 \
      --config.benchmarks=../shared/data/benchmarks/Set5 --workdir=W
"""

from launch import common
from nasr import experiment


def main(config, workdir):
  """Evaluate and print the results table."""
  print(experiment.format_table(experiment.evaluate(config, workdir)))


if __name__ == "__main__":
  common.run(main)
