"""Search methods, one per *kind* of search; each wires a space, a strategy and the estimation room.

  one_shot   weight-sharing supernet x any strategy, reward from weighted terms (DeCoNAS, HNAS)
  darts      differentiable bilevel search over a DifferentiableSpace (Improved DARTS for SR)
  gp         propose -> train candidates from scratch -> update (GP-NAS)

`SEARCH_METHODS` maps `config.method` to a function (config, workdir) -> results; `launch.search`
and `nasr.experiment.run_search` dispatch on it. A new paper is a space file and a config (plus a
strategy if its policy is new), not a new module here: see docs/architecture.md.
"""

from collections.abc import Callable

import ml_collections

from nasr.core.registry import Registry
from nasr.searches import darts, diagnose, gp, loop, one_shot, reward

SEARCH_METHODS: Registry[Callable[[ml_collections.ConfigDict, str], dict]] = Registry(
  "search method"
)
SEARCH_METHODS.register("one_shot", one_shot.run)
SEARCH_METHODS.register("darts", darts.run)
SEARCH_METHODS.register("gp", gp.run)

__all__ = ["SEARCH_METHODS", "darts", "diagnose", "gp", "loop", "one_shot", "reward"]
