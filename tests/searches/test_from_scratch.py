"""The from-scratch search's strategy hooks and its default report (no training: observation rows)."""

import dataclasses
import json
from unittest import mock

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from nasr import spaces, strategies
from nasr.configs.common import TINY_SPACES
from nasr.core.errors import DivergedError
from nasr.searches import from_scratch, gp


def _observed(tmp_path, psnrs, tokens):
  skw = dict(TINY_SPACES["drn"])
  space = spaces.get("drn", **skw)
  rows = []
  for i, (p, t) in enumerate(zip(psnrs, tokens, strict=True)):
    arch = space.decode(t)
    rows.append(
      {
        "candidate": i,
        "tokens": list(t),
        "name": arch.describe(),
        "params": int(space.count_params(arch, 2)),
        "psnr": p,
        "workdir": str(tmp_path / "candidates" / f"{i:03d}"),
      }
    )
  config = ml_collections.ConfigDict({"space": {"name": "drn", **skw}, "topk": 2, "scale": 2})
  return from_scratch.Observed(config, space, skw, None, rows, tmp_path)


def test_a_strategy_without_hooks_gets_the_defaults_and_gp_its_own():
  assert from_scratch.hooks("random") == from_scratch.StrategyHooks()
  assert from_scratch.hooks("gp").report is gp.report


def test_the_default_report_ranks_distinct_measured_architectures(tmp_path):
  # Candidate 2 repeats candidate 0's architecture with a better PSNR; candidate 3 diverged.
  tokens = [(0, 0, 0, 0), (1, 1, 1, 1), (0, 0, 0, 0), (1, 0, 1, 0)]
  summary = from_scratch.report_measured(_observed(tmp_path, [20.0, 19.0, 21.0, None], tokens))
  topk = json.loads((tmp_path / "topk.json").read_text())
  assert [(r["candidate"], r["measured_psnr"]) for r in topk] == [(2, 21.0), (1, 19.0)]
  assert summary["best_tokens"] == [0, 0, 0, 0] and summary["observed"] == 4
  space, arch = spaces.load_arch(tmp_path / "topk" / "1.json")
  assert space.encode(arch).tolist() == [1, 1, 1, 1]
  assert len(json.loads((tmp_path / "candidates.json").read_text())) == 4


def test_the_default_report_names_a_search_whose_candidates_all_diverged(tmp_path):
  with pytest.raises(DivergedError, match="every candidate"):
    from_scratch.report_measured(_observed(tmp_path, [None, None], [(0, 0, 0, 0), (1, 1, 1, 1)]))


def test_the_gp_report_draws_the_grids_predictions_and_where_the_measured_ones_rank(tmp_path):
  tokens = [(0, 0, 0, 0), (1, 1, 1, 1), (1, 0, 1, 0), (0, 1, 0, 1)]
  done = _observed(tmp_path, [20.0, 19.0, 21.0, None], tokens)
  done.config.update({"report_top": 3, "measure_topk": False})
  spec = done.space.token_spec()
  gp_strategy = strategies.get("gp", spec, capacity=4, fit_steps=5)
  state = gp_strategy.init(jax.random.PRNGKey(0))
  state, _ = gp_strategy.update(state, jnp.asarray(tokens[:3]), jnp.asarray([20.0, 19.0, 21.0]))
  done = dataclasses.replace(done, state=state)
  with mock.patch.object(gp.plots, "plot_gp", wraps=gp.plots.plot_gp) as draw:
    gp.report(done)
  kwargs = draw.call_args.kwargs
  grid = gp.gp_lib.grid_tokens(spec)
  mean, var = gp.gp_lib.predict(state, jnp.asarray(grid))
  assert len(kwargs["grid_mean"]) == len(grid) == spec.size
  np.testing.assert_allclose(kwargs["grid_mean"], mean, rtol=1e-6)
  np.testing.assert_allclose(kwargs["grid_std"], np.sqrt(var), rtol=1e-5, atol=1e-6)
  assert [grid[g].tolist() for g in kwargs["observed_grid"]] == [list(t) for t in tokens]
  assert (tmp_path / "gp.png").stat().st_size > 1000
