"""Score a checkpoint or bicubic on benchmark folders; writes <workdir>/eval.json.

  python -m launch.evaluate --config=configs/evaluate.py --config.model=bicubic --config.scale=2 \
      --config.benchmarks=../shared/data/benchmarks/Set5 --workdir=W
"""

from nasr import experiment

from . import common


def main(config, workdir):
  """Evaluate; print the results table (with the bicubic PSNR and gain per row); return None."""
  # The table is the last thing on stdout, so scripts and readers find it at the end.
  print(experiment.format_table(experiment.evaluate(config, workdir)))


def cli() -> None:
  """Run the launcher on sys.argv (python -m launch.evaluate, or `nasr evaluate`)."""
  common.run(main, example="evaluate:tiny")


if __name__ == "__main__":
  cli()
