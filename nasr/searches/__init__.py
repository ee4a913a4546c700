"""Search methods: each wires a space, a strategy and the estimation room into one resumable run.

Importing this package registers every method in `nasr.experiment.SEARCH_METHODS`, which is what
`launch.search` dispatches on (`config.method`).
"""

from nasr import experiment
from nasr.searches import enas

experiment.SEARCH_METHODS.register("deconas", enas.run)

__all__ = ["enas"]
