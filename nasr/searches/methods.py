"""One record per kind of search: what the launcher, experiment and diagnostics need to know of it.

A new kind of search registers one `SearchMethod` here; nothing else keeps a list of methods:
`experiment.run_search` runs it (refusing several processes unless it supports them), `diagnose`
scores architectures with its shared weights (if it has them), and `launch.search` prints the
commands that retrain the architecture it leaves behind (with `retrain_flags`, which read the
config alike for every method).
"""

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import ml_collections

from nasr.core.registry import Registry
from nasr.searches import darts, from_scratch, loop, one_shot

Config = ml_collections.ConfigDict


def retrain_flags(config: Config) -> tuple[str, ...]:
  """Return the `nasr train` flags a search's retrain needs beyond its architecture file (a retrain
  width): `--config.<key>=<value>` of config.retrain_overrides, the same for every method."""
  overrides = config.get("retrain_overrides") or {}
  return tuple(f"--config.{k}={v}" for k, v in sorted(overrides.items()))


@dataclasses.dataclass(frozen=True)
class SearchMethod:
  """A kind of search (config.method): how it runs and what it leaves behind."""

  run: Callable[[Config, os.PathLike], dict]  # (config, workdir) -> summary; writes the results
  arch_file: str  # the architecture file a finished search leaves, relative to its workdir
  # One process or several (jax.distributed); methods whose sub-runs write files from every
  # process run on one.
  multi_process: bool = False
  # (config, workdir, search_result) -> Scorer of a finished search's shared weights, for
  # `nasr diagnose`; None when there are none (every candidate was trained stand-alone).
  scorer: Callable[[Config, os.PathLike, dict], loop.Scorer] | None = None

  def arch_path(self, workdir: str | os.PathLike) -> Path:
    """Return where a finished search in `workdir` keeps its architecture file."""
    return Path(workdir) / self.arch_file


SEARCH_METHODS: Registry[SearchMethod] = Registry("search method")
SEARCH_METHODS.register(
  "one_shot",
  SearchMethod(
    run=one_shot.run,
    arch_file="best.json",
    multi_process=True,
    scorer=one_shot.shared_weight_scorer,
  ),
)
SEARCH_METHODS.register(
  "darts",
  SearchMethod(
    run=darts.run, arch_file="genotype.json", multi_process=True, scorer=darts.shared_weight_scorer
  ),
)
SEARCH_METHODS.register("gp", SearchMethod(run=from_scratch.run, arch_file="topk/0.json"))


def with_shared_weights() -> list[str]:
  """Return the registered methods whose finished searches can score any architecture."""
  return [name for name in SEARCH_METHODS.names() if SEARCH_METHODS.get(name).scorer is not None]
