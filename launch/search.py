"""Run an architecture search: python -m launch.search --config=configs/<method>.py:<preset> --workdir=W."""

from nasr import experiment

from . import common


def main(config, workdir):
  """Search, print the summary the method returns and the commands that come next."""
  result = experiment.run_search(config, workdir)
  for key, value in result.items():
    print(f"{key}: {value}")
  for line in experiment.next_commands(config, workdir):
    print(line)


def methods() -> str:
  """Return the registered search methods and the shipped configs that use each."""
  configs = experiment.describe_configs()
  lines = ["search methods (config.method) and the configs that use them:"]
  for method in experiment.SEARCH_METHODS.names():
    users = [
      f"{name} (presets {', '.join(d['presets'])})"
      for name, d in configs.items()
      if d["method"] == method
    ]
    lines.append(f"  {method:<10}{'; '.join(users) or '-'}")
  lines.append("e.g. nasr search --config=deconas:tiny --workdir=W (or python -m launch.search)")
  return "\n".join(lines)


def cli() -> None:
  """Run the launcher on sys.argv (python -m launch.search, or `nasr search`)."""
  common.run(main, without_config=methods, example="deconas:tiny")


if __name__ == "__main__":
  cli()
