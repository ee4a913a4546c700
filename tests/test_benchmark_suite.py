"""The benchmark suite's --tiny smoke run: every section gives rows, a time limit gives "timeout".

Only the shape of the output is checked (tests never judge timings). The tiny run of every section
costs about 60 CPU-seconds (--jobs=2 spreads it over both cores of the CI machine); the timeout
run about 10.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from absl import app

from benchmarks import suite

REPO = Path(__file__).resolve().parents[1]


def _run_suite(out: Path, *args: str) -> subprocess.CompletedProcess:
  """Return the finished `python -m benchmarks.suite --tiny --out=out args...` (repo root, CPU)."""
  env = dict(os.environ)
  env.update(JAX_NUM_CPU_DEVICES="1", JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  cmd = [sys.executable, "-m", "benchmarks.suite", "--tiny", f"--out={out}", *args]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _strict_rows(path: Path) -> list[dict]:
  """Return the rows of the suite's JSON file, failing on NaN / Infinity."""

  def reject(name):
    raise AssertionError(f"{path} is not strict JSON: {name}")

  rows = json.loads(path.read_text(), parse_constant=reject)
  assert isinstance(rows, list) and rows
  for row in rows:
    assert set(suite.ROW_FIELDS) <= set(row), sorted(set(suite.ROW_FIELDS) - set(row))
  return rows


def _check_table_last(stdout: str, rows: list[dict]) -> None:
  """Assert that stdout ends with the table: its header, then one line per row, in order."""
  lines = stdout.rstrip("\n").splitlines()
  assert len(lines) > len(rows)
  header, body = lines[-len(rows) - 1], lines[-len(rows) :]
  assert header.split()[:3] == ["section", "variant", "compile_s"], header
  for line, row in zip(body, rows, strict=True):
    assert line.startswith(row["section"]), (line, row["section"])
    assert row["variant"] in line and row["status"].split(":")[0] in line, (line, row)


# Slow (~100 s: 13 variants, each compiled in a section process). The default suite runs the
# suite's processes, rows, limits and table through two sections (the timeout test below); the
# steps it times are the library's, each tested where it lives.
@pytest.mark.slow
def test_tiny_run_times_every_section(tmp_path):
  out = tmp_path / "suite.json"
  result = _run_suite(out, "--jobs=2")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = _strict_rows(out)
  for section in suite.SECTIONS:
    got = [r for r in rows if r["section"] == section]
    assert [r["key"] for r in got] == list(suite.VARIANTS[section]), section
  for row in rows:
    where = f"{row['section']} {row['variant']}"
    assert row["status"] == "ok", (where, row["status"])
    assert row["compile_s"] > 0 and row["median_ms"] > 0, where
    assert len(row["step_ms"]) == 2, where  # --tiny's default
    assert row["peak_gib"] is not None and row["peak_source"], where
    assert row["device"] and row["jax_version"], where
    if row["flops"] is not None:  # cost_analysis gives them on this backend
      assert row["flops"] > 0 and row["tflops_per_s"] > 0, where
  assert any(r["flops"] is not None for r in rows)
  _check_table_last(result.stdout, rows)


def test_a_section_past_its_limit_is_a_timeout_row(tmp_path):
  out = tmp_path / "suite.json"
  result = _run_suite(out, "--sections=edsr,drn", "--section_timeout_s=edsr=0.01")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = _strict_rows(out)
  assert [(r["section"], r["status"]) for r in rows] == [
    ("edsr", "timeout"),
    ("edsr", "timeout"),
    ("drn", "ok"),  # the suite goes on after a section is killed
  ]
  assert rows[0]["compile_s"] is None and rows[0]["median_ms"] is None
  assert "not started" in rows[1]["note"]
  _check_table_last(result.stdout, rows)


def test_out_names_a_file_or_a_folder_and_defaults_to_the_current_folder(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert suite.output_path("", tiny=False) == tmp_path / "benchmark_suite.json"
  # A smoke run does not overwrite a full run's rows.
  assert suite.output_path("", tiny=True) == tmp_path / "benchmark_suite_tiny.json"
  assert suite.output_path(str(tmp_path), tiny=True) == tmp_path / "benchmark_suite_tiny.json"
  assert suite.output_path("runs/", tiny=False) == tmp_path / "runs" / "benchmark_suite.json"
  assert suite.output_path("a/b.json", tiny=True) == tmp_path / "a" / "b.json"


def test_an_out_that_cannot_be_written_fails_before_any_section_runs(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  result = _run_suite(blocker / "suite.json", "--sections=edsr")
  assert result.returncode != 0
  assert f"--out={blocker / 'suite.json'}: cannot write" in result.stderr, result.stderr[-2000:]
  assert "[suite]" not in result.stdout  # nothing was timed


@pytest.mark.parametrize(
  "cost, expected",
  [
    ({"flops": 10.0, "bytes accessed": 4.0}, (10.0, 4.0)),
    ([{"flops": 10.0, "bytes accessed": 4.0}, {"flops": 2.0}], (12.0, 4.0)),
    ({"utilization": 1.0}, (None, None)),
    ({"flops": float("nan"), "bytes accessed": -1.0}, (None, None)),
    ([], (None, None)),
    (None, (None, None)),
  ],
)
def test_cost_numbers_reads_a_dict_or_a_list_of_dicts(cost, expected):
  assert suite.cost_numbers(cost) == expected


def test_timeouts_take_one_number_and_per_section_entries():
  limits = suite.parse_timeouts(["30", "darts=300"], ["edsr", "darts"], tiny=False)
  assert limits == {"edsr": 30.0, "darts": 300.0}
  assert suite.parse_timeouts([], ["edsr"], tiny=False) == {"edsr": suite.DEFAULT_TIMEOUT_S["edsr"]}
  assert sum(suite.DEFAULT_TIMEOUT_S.values()) <= 350  # the whole suite within 6 minutes
  for bad in (["nope=3"], ["edsr=x"], ["0"]):
    with pytest.raises(app.UsageError, match="section_timeout_s"):
      suite.parse_timeouts(bad, ["edsr"], tiny=False)


def test_sections_name_whole_sections_or_single_variants():
  chosen = suite.parse_sections(["edsr:f32", "darts", "edsr:f32"])
  assert chosen == {"edsr": ["f32"], "darts": list(suite.VARIANTS["darts"])}
  # Variants keep the section's own order, whatever the order given.
  assert suite.parse_sections(["edsr:bf16", "edsr:f32"]) == {"edsr": ["f32", "bf16"]}
  for bad, names in ((["nope"], "nope"), (["edsr:f16"], "f16"), ([], "none")):
    with pytest.raises(app.UsageError, match=names):
      suite.parse_sections(bad)
