"""Run an architecture search: python -m launch.search --config=configs/<method>.py:<preset> --workdir=W."""

import json
from pathlib import Path

from nasr import experiment

from . import common

# The architecture file each kind of search leaves for retraining, in the order looked for.
ARCH_FILES = ("best.json", "genotype.json", "topk/0.json")
# Flags the papers retrain with that the architecture file does not carry.
RETRAIN_FLAGS = {"hnas": " --config.arch_channels=64"}  # HNAS searches at 8 channels


def next_commands(workdir: str) -> list[str]:
  """Return the commands that retrain and evaluate what a finished search found (none: a sweep)."""
  w = Path(workdir)
  arch = next((w / f for f in ARCH_FILES if (w / f).is_file()), None)
  if arch is None:
    return []
  try:
    space = json.loads(arch.read_text()).get("space", "")
  except ValueError:
    space = ""
  return [
    f"nasr train --config=train --config.arch={arch}{RETRAIN_FLAGS.get(space, '')} "
    f"--workdir={w / 'retrain'}",
    f"nasr evaluate --config=evaluate --config.checkpoint={w / 'retrain'} "
    f"--workdir={w / 'retrain' / 'eval'}",
  ]


def main(config, workdir):
  """Search, print the summary the method returns and the commands that come next."""
  result = experiment.run_search(config, workdir)
  for key, value in result.items():
    print(f"{key}: {value}")
  commands = next_commands(workdir)
  if commands:
    print("next: retrain the architecture found, then score it against bicubic:")
    print("\n".join(f"  {c}" for c in commands))


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
  common.run(main, without_config=methods)


if __name__ == "__main__":
  cli()
