"""The tabular SR benchmark: nasr bench build|evaluate --config=bench[:tiny] --workdir=W [flags].

build     train every member of the bench space stand-alone (resumable) and write W/table.json
evaluate  score search strategies against a table (the shipped one by default)
"""

import sys

from nasr import experiment

from . import common

ACTIONS = ("build", "evaluate")


def build(config, workdir):
  """Build (or finish) the table and print its summary."""
  for key, value in experiment.bench_build(config, workdir).items():
    print(f"{key}: {value}")


def evaluate(config, workdir):
  """Score the strategies against the table and print the report."""
  print(experiment.bench_evaluate(config, workdir))


def cli() -> None:
  """Run `nasr bench <action>` (or python -m launch.bench <action>) on sys.argv."""
  action = sys.argv[1] if len(sys.argv) > 1 else ""
  if action not in ACTIONS:
    print(__doc__.strip(), file=sys.stderr)
    sys.exit(0 if action in ("-h", "--help") else 2)
  sys.argv = [f"{sys.argv[0]} {action}", *sys.argv[2:]]
  common.run(
    build if action == "build" else evaluate,
    example="bench:tiny" if action == "build" else "bench_eval:tiny",
  )


if __name__ == "__main__":
  cli()
