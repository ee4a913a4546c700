"""Search methods, one per *kind* of search; each wires a space, a strategy and the estimation room.

  one_shot   weight-sharing supernet x any strategy, reward from weighted terms (DeCoNAS, HNAS)
  darts      differentiable bilevel search over a DifferentiableSpace (Improved DARTS for SR)
  gp         propose -> train candidates from scratch -> update (GP-NAS)

`SEARCH_METHODS` maps `config.method` to its one record (`methods.SearchMethod`: run, shared-weight
scorer, multi-process support, architecture file, retrain overrides); `launch.search`,
`nasr.experiment.run_search` and `diagnose` read it. A new paper is a space file and a config (plus a
strategy if its policy is new), not a new module here: see docs/architecture.md.
"""

from nasr.searches import darts, diagnose, gp, loop, methods, one_shot, reward
from nasr.searches.methods import SEARCH_METHODS, SearchMethod

__all__ = [
  "SEARCH_METHODS",
  "SearchMethod",
  "darts",
  "diagnose",
  "gp",
  "loop",
  "methods",
  "one_shot",
  "reward",
]
