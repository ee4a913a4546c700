"""The tabular SR benchmark: every member of the `bench` space trained stand-alone, and searches
scored against it (`build`: make the table; `table`: read it; `evaluate`: score strategies)."""

from nasr.bench import build, evaluate, table
from nasr.bench.table import Table

__all__ = ["Table", "build", "evaluate", "table"]
