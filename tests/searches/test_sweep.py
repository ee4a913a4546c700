"""`config.lambdas` sweeps the accuracy/cost trade-off: one search per lambda, then pareto.json/png."""

import json
import shutil

import jax
import jax.numpy as jnp
import pytest

from nasr import plots, spaces
from nasr.core.errors import ConfigError
from nasr.estimation import cost
from nasr.experiment import load_config, run_search
from nasr.searches import sweep
from tests.launch_utils import REPO

LAMBDAS = (0.2, 0.9)


def _config(lambdas: str = "0.2,0.9", terms: dict | None = None):
  c = load_config(REPO / "configs" / "deconas.py", "tiny", lock=False)
  c.reward.terms = terms or {"psnr": 1.0, "macs": -1.0}
  c.lambdas = lambdas
  c.epochs, c.train_steps_per_epoch, c.controller_steps_per_epoch = 2, 2, 1
  c.derive.candidates = 4
  # The smallest sizes that run (as tests/searches/test_one_shot.py): compiling dominates.
  c.space.channels = 4
  c.data.patch_size, c.data.batch_size, c.val_patch = 8, 2, 8
  c.lock()  # as the launcher hands it over
  return c


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  """Return (workdir, summary) of a real two-lambda DeCoNAS sweep through run_search."""
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  before = [getattr(jax.config, n) for n in names]
  # Both lambdas compile the same steps: the second one reads them from the cache.
  jax.config.update(names[0], str(tmp_path_factory.mktemp("sweep_xla_cache")))
  jax.config.update(names[1], 0.0)
  try:
    workdir = tmp_path_factory.mktemp("sweep")
    summary = run_search(_config(), workdir)
  finally:
    for n, v in zip(names, before, strict=True):
      jax.config.update(n, v)
  return workdir, summary


def _gmacs_480(best_json) -> float:
  space, arch = spaces.load_arch(best_json)
  model = space.build(arch, 2)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(3), jnp.zeros((1, 40, 40, 3)))
  return cost.count_macs(model, shapes, (1, 480, 480, 3)) / 1e9


def test_sweep_writes_one_point_per_lambda_with_its_own_reward(swept):
  workdir, summary = swept
  pareto = json.loads((workdir / "pareto.json").read_text())
  assert summary["pareto_json"] == str(workdir / "pareto.json")
  assert pareto["scale"] == 2 and pareto["input"] == [1, 480, 480, 3]
  points = pareto["points"]
  assert [p["lambda"] for p in points] == list(LAMBDAS)
  assert [p["label"] for p in points] == ["HNAS-A", "HNAS-C"]
  for lam, p in zip(LAMBDAS, points, strict=True):
    best_json = workdir / f"lambda_{lam:g}" / "best.json"
    assert p["best_json"] == str(best_json)
    best = json.loads(best_json.read_text())
    # The sub-run ranked its candidates with R = lam * PSNR - (1 - lam) * MACs/MACs_max.
    assert best["reward"] == pytest.approx(lam * best["psnr"] - (1 - lam) * best["macs_ratio"])
    assert p["reward_terms"] == pytest.approx({"psnr": lam, "macs": -(1 - lam)})
    assert p["psnr"] == best["psnr"] and p["tokens"] == best["tokens"]
    assert p["gmacs_480"] == pytest.approx(_gmacs_480(best_json), rel=1e-12)
    # Close to the per-pixel count scaled up, not equal: a global pooling's dense layers cost the
    # same at any size, and the 32x32 probe's count spreads them over its few pixels.
    assert p["gmacs_480"] == pytest.approx(best["macs_per_lr_pixel"] * 480 * 480 / 1e9, rel=1e-3)
    # HNAS's Table II units are an HNAS point's only (tests/spaces/test_hnas.py checks them).
    assert "table_ii" not in p
  rows = [
    json.loads((workdir / f"lambda_{lam:g}" / "candidates.json").read_text()) for lam in LAMBDAS
  ]
  assert len(pareto["candidates"]) == sum(len(r) for r in rows)
  assert (workdir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _dominated(i: int, psnr, gmacs) -> bool:
  return any(
    psnr[j] >= psnr[i] and gmacs[j] <= gmacs[i] and (psnr[j] > psnr[i] or gmacs[j] < gmacs[i])
    for j in range(len(psnr))
  )


def test_the_swept_front_is_the_non_dominated_candidates(swept):
  pareto = json.loads((swept[0] / "pareto.json").read_text())
  psnr = [c["psnr"] for c in pareto["candidates"]]
  gmacs = [c["gmacs_480"] for c in pareto["candidates"]]
  front = pareto["front"]
  assert front and not any(_dominated(i, psnr, gmacs) for i in front)
  kept = {(psnr[i], gmacs[i]) for i in front}
  for i in set(range(len(psnr))) - set(front):  # dominated, or equal to a kept point
    assert _dominated(i, psnr, gmacs) or (psnr[i], gmacs[i]) in kept, i


def test_front_of_hand_made_points():
  #            0     1     2     3     4     5     6
  psnr = [30.0, 31.0, 29.0, 31.0, 32.0, 32.0, 28.0]
  gmacs = [1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 0.5]
  front = plots.pareto_front(gmacs, psnr)  # cost first, as the plot's x axis
  # 2 is beaten by 1 (same cost), 3 by 1 (same PSNR, dearer); 4 and 5 are equal: one is kept.
  assert front[:3] == [6, 0, 1] and len(front) == 4 and front[3] in (4, 5)
  assert not any(_dominated(i, psnr, gmacs) for i in front)
  assert plots.pareto_front([], []) == []
  assert plots.pareto_front([1.0, 0.5], [30.0, float("nan")]) == [0]  # a diverged child is not


def test_rerun_searches_only_the_unfinished_lambdas(swept, tmp_path):
  workdir = tmp_path / "sweep"
  shutil.copytree(swept[0], workdir)
  calls = []
  sweep.run_sweep(_config(), workdir, lambda cfg, w: calls.append((cfg, w)))
  assert calls == []  # both finished: read, not searched
  (workdir / "lambda_0.9" / "search_result.json").unlink()  # as if killed before the end
  before = json.loads((workdir / "pareto.json").read_text())
  summary = sweep.run_sweep(_config(), workdir, lambda cfg, w: calls.append((cfg, w)))
  assert [w.name for _, w in calls] == ["lambda_0.9"]
  cfg = calls[0][0]
  assert dict(cfg.reward.terms) == pytest.approx({"psnr": 0.9, "macs": -0.1})
  assert cfg.lambdas == "" and cfg.is_locked  # one search, locked like the launcher's config
  assert json.loads((workdir / "pareto.json").read_text()) == before
  assert [p["label"] for p in summary["points"]] == ["HNAS-A", "HNAS-C"]


@pytest.mark.parametrize("bad", ["0", "abc", "1.5", "-0.2", "nan", "0.2,abc", " , "])
def test_bad_lambdas_name_config_lambdas_and_the_value(bad, tmp_path):
  with pytest.raises(ConfigError, match="config.lambdas") as e:
    sweep.run_sweep(_config(bad), tmp_path, lambda cfg, w: pytest.fail("searched"))
  value = [p.strip() for p in bad.split(",") if p.strip() and p.strip() != "0.2"]
  assert all(v in str(e.value) for v in value)
  assert not any(tmp_path.iterdir())  # nothing written before the check


def test_lambda_config_keeps_other_terms_and_needs_a_cost_term():
  c = _config("0.6", {"psnr": 1.0, "macs": -1.0, "params": -2.0, "entropy": 0.01})
  cfg = sweep.lambda_config(c, 0.6)
  assert dict(cfg.reward.terms) == pytest.approx(
    {"psnr": 0.6, "macs": -0.4, "params": -0.4, "entropy": 0.01}
  )
  assert dict(c.reward.terms)["psnr"] == 1.0 and c.lambdas == "0.6"  # the original is untouched
  assert sweep.parse_lambdas("0.2, 0.6,0.9,") == [0.2, 0.6, 0.9]
  assert [sweep.label(x) for x in (0.2, 0.6, 0.9, 0.5)] == [
    "HNAS-A",
    "HNAS-B",
    "HNAS-C",
    "lambda=0.5",
  ]
  with pytest.raises(ConfigError, match="twice"):
    sweep.parse_lambdas("0.2,0.20")
  with pytest.raises(ConfigError, match="cost term"):
    sweep.run_sweep(_config("0.5", {"psnr": 1.0, "entropy": 0.1}), "/nonexistent", None)
