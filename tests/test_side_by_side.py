"""The side-by-side runner reads the reference's lines and names what failed (no torch needed)."""

import json

import pytest

from benchmarks import side_by_side


def test_reads_the_reference_line_of_its_workload():
  lines = [
    "progress on stdout is ignored",
    json.dumps({"name": "edsr", "median_s_per_step": 1.5, "config": "x"}),
    json.dumps({"name": "hnas_super", "median_s_per_step": 2.25}),
  ]
  seconds, row = side_by_side.peer_seconds("\n".join(lines), "hnas_super")
  assert seconds == 2.25 and row["name"] == "hnas_super"


@pytest.mark.parametrize(
  "stdout, match",
  [
    (json.dumps({"name": "edsr", "error": "OOM: OutOfMemoryError"}), "edsr did not run.*OOM"),
    (json.dumps({"name": "edsr", "skipped": "budget"}), "edsr did not run.*budget"),
    ("", "no JSON line for reference workload edsr"),
  ],
)
def test_a_reference_that_did_not_run_is_an_error_naming_it(stdout, match):
  with pytest.raises(RuntimeError, match=match):
    side_by_side.peer_seconds(stdout, "edsr")


@pytest.mark.parametrize("pair", side_by_side.PAIRS)
def test_every_pair_runs_one_of_nasrs_benchmarks_with_the_steps_asked(pair):
  cmd = side_by_side.nasr_command(pair, 7)
  assert cmd[1:3] == ["-m", cmd[2]] and cmd[2] in ("benchmarks.suite", "benchmarks.hnas_speed")
  assert ("--steps=7" in cmd) or ("--repeats=7" in cmd)


def test_loads_beside_the_suite():
  # absl flags are one registry per process: a flag name both modules define could not load twice.
  from benchmarks import suite

  assert not {f.name for f in suite.flags.FLAGS.get_key_flags_for_module(suite)} & {
    f.name for f in side_by_side.flags.FLAGS.get_key_flags_for_module(side_by_side)
  }
