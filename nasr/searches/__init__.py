"""Search methods: each wires a space, a strategy and the estimation room into one resumable run.

Importing this package registers every method in `nasr.experiment.SEARCH_METHODS`, which is what
`launch.search` dispatches on (`config.method`).
"""

from nasr import experiment
from nasr.searches import darts, enas, gpnas

experiment.SEARCH_METHODS.register("darts_sr", darts.run)
experiment.SEARCH_METHODS.register("deconas", enas.run)
experiment.SEARCH_METHODS.register("gpnas", gpnas.run)

__all__ = ["darts", "enas", "gpnas"]
