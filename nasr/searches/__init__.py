"""Search methods, one per *kind* of search; each wires a space, a strategy and the estimation room.

  one_shot   weight-sharing supernet x any strategy, reward from weighted terms (DeCoNAS, HNAS)
  darts      differentiable bilevel search over a DifferentiableSpace (Improved DARTS for SR)
  gp         from_scratch: any strategy proposes -> train candidates from scratch -> update; GP-NAS
             is its `gp` strategy (nasr.searches.gp: the GP's hooks and report)

`SEARCH_METHODS` maps `config.method` to its one record (`methods.SearchMethod`: run, shared-weight
scorer, multi-process support, architecture file); `launch.search`, `nasr.experiment.run_search`
and `diagnose` read it. A new paper is a space file and a config (plus a strategy if its policy is
new), not a new module here: see docs/architecture.md.
"""

# Importing gp registers the GP strategy's hooks of the from-scratch search (from_scratch.HOOKS).
from nasr.searches import darts, diagnose, from_scratch, gp, loop, methods, one_shot, reward
from nasr.searches.methods import SEARCH_METHODS, SearchMethod

__all__ = [
  "SEARCH_METHODS",
  "SearchMethod",
  "darts",
  "diagnose",
  "from_scratch",
  "gp",
  "loop",
  "methods",
  "one_shot",
  "reward",
]
