"""The benchmark table shipped inside nasr: complete, built with the `bench` config's protocol, and
usable from a fresh install (`nasr bench evaluate` with no --config.table reads it)."""

import json
from importlib import resources

import numpy as np

from nasr.bench import table
from nasr.configs import bench
from nasr.spaces import bench as bench_space
from tests.launch_utils import run_nasr

SHIPPED = resources.files("nasr.bench") / "data" / table.SHIPPED


def test_the_shipped_table_holds_every_member_with_three_seeds_and_its_protocol():
  raw = table.load()
  assert raw is not None, f"{table.SHIPPED} is missing from nasr/bench/data"
  assert len(SHIPPED.read_bytes()) < 1_000_000  # compact: a package file, not a dataset
  t = table.Table(raw)
  assert t.complete() and t.per_seed("val").shape == (bench_space.Bench().size, 3)
  assert set(t.tests) == {"Set5", "Set14"} and not np.isnan(t.per_seed("Set14")).any()
  # `nasr bench build --config=bench` trains exactly this protocol (so it can rebuild any member)
  assert raw["protocol"] == table.protocol(bench.get_config())
  for row in raw["members"]:  # each row's ops are its id's tokens
    assert row["ops"] == [bench_space.OPS[k] for k in bench_space.from_id(row["id"])]
  assert raw["nasr_version"] and raw["provenance"]["train"].startswith("embedded")
  # members differ by more than seeds do (the build's aim: >= 5x; reported in RESULTS.md)
  s = table.spreads(t.per_seed("val"))
  assert s["member_std"] > 3 * s["seed_std"], s


def test_bench_evaluate_scores_strategies_on_the_shipped_table(tmp_path):
  w = tmp_path / "w"
  r = run_nasr(
    "bench", "evaluate", "--config=bench_eval:tiny", "--config.weight_sharing.seeds=0",
    f"--workdir={w}", cwd=tmp_path, timeout=300,
  )  # fmt: skip
  assert r.returncode == 0, r.stderr[-3000:]
  result = json.loads((w / "evaluate.json").read_text())
  truth = table.Table(table.load()).psnr(result["metric"])
  assert result["metric"] == "Set14" and result["members"] == truth.size
  for s in result["strategies"]:
    assert s["strategy"] in r.stdout
    for pick in s["picks"]:  # a pick is a member; its regret is read off the shipped table
      assert np.nanmax(truth) - truth[pick] <= s["regret_curve"][0][0] + 1e-9
