"""Search strategies: see only a TokenSpec and rewards, never pixels or networks.

Each strategy is a `Strategy(init, propose, update)` of pure functions over explicit state;
`get(name, spec, **kwargs)` builds a registered one and `options(name)` names its keywords.
"""

from nasr.strategies.base import STRATEGIES, State, Strategy, get, options
from nasr.strategies.controller import Controller
from nasr.strategies.diagnostics import decision_frequencies, max_entropy
from nasr.strategies.evolution import EvolutionState, make_evolution
from nasr.strategies.gp import GPState, make_gp
from nasr.strategies.hierarchical import HierarchicalController, make_hierarchical
from nasr.strategies.local_search import LocalSearchState, make_local_search
from nasr.strategies.random_search import RandomState, make_random
from nasr.strategies.reinforce import ReinforceState, make_reinforce

__all__ = [
  "STRATEGIES",
  "Controller",
  "EvolutionState",
  "GPState",
  "HierarchicalController",
  "LocalSearchState",
  "RandomState",
  "ReinforceState",
  "State",
  "Strategy",
  "decision_frequencies",
  "get",
  "make_evolution",
  "make_gp",
  "make_hierarchical",
  "make_local_search",
  "make_random",
  "make_reinforce",
  "max_entropy",
  "options",
]
