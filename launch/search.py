"""Run an architecture search: python -m launch.search --config=configs/<method>.py:<preset> --workdir=W."""

from launch import common
from nasr import experiment


def main(config, workdir):
  """Search and print the summary the method returns."""
  result = experiment.run_search(config, workdir)
  for key, value in result.items():
    print(f"{key}: {value}")


if __name__ == "__main__":
  common.run(main)
