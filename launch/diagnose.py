"""Diagnose a finished search: python -m launch.diagnose --config=diagnose --config.search=W --workdir=D."""

from nasr import experiment

from . import common


def main(config, workdir):
  """Diagnose and print the ranking correlation and the random baseline."""
  result = experiment.diagnose(config, workdir)
  for key, value in result.items():
    print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")


def cli() -> None:
  """Run the launcher on sys.argv (python -m launch.diagnose, or `nasr diagnose`)."""
  common.run(main, example="diagnose:tiny")


if __name__ == "__main__":
  cli()
