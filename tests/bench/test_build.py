"""`nasr bench build`: a tiny build trains its members, resumes piece by piece, and refuses to mix
protocols in one workdir."""

import json

import pytest

from nasr.bench import build, table
from nasr.configs import bench as bench_config
from nasr.core.errors import ConfigError


def test_members_are_parsed_from_ids_and_ranges():
  assert build.parse_members("", 216) == list(range(216))
  assert build.parse_members("3, 0-2,3", 216) == [0, 1, 2, 3]
  with pytest.raises(ConfigError, match="outside the space's"):
    build.parse_members("214-216", 216)
  with pytest.raises(ConfigError, match="'x' is not an id"):
    build.parse_members("1,x", 216)


def test_a_tiny_build_trains_resumes_and_writes_the_table(tmp_path):
  from tests.launch_utils import run_nasr

  c = bench_config.get_config("tiny")
  w = tmp_path / "b"
  # through the nasr command, in two worker processes (one member each)
  r = run_nasr(
    "bench", "build", "--config=bench:tiny", "--config.workers=2", f"--workdir={w}", cwd=tmp_path
  )
  assert r.returncode == 0, r.stderr[-2000:]
  assert "members: 2" in r.stdout and "complete: False" in r.stdout
  t = json.loads((w / "table.json").read_text())
  assert [m["id"] for m in t["members"]] == [0, 215]
  for m in t["members"]:
    (run,) = m["runs"]
    assert [p[0] for p in run["curve"]] == [1, 2]
    assert set(m["proxies"]) == {"grad_norm", "synflow", "jacob_cov"}
    assert m["params"] > 0 and m["macs"] > 0
  assert t["members"][1]["params"] > t["members"][0]["params"]  # three RCABs over none
  assert t["protocol"] == table.protocol(c)
  # a finished run is never trained again: remove one, and only it comes back
  first = build.run_file(w, 215, 0)
  before = first.stat().st_mtime_ns
  build.run_file(w, 0, 0).unlink()
  c.workers = 1
  build.run(c, w)
  assert build.run_file(w, 0, 0).exists() and first.stat().st_mtime_ns == before
  # another protocol in the same workdir is refused, naming what differs
  c.steps, c.curve = 3, (1, 3)
  with pytest.raises(ConfigError, match="steps: 2 -> 3"):
    build.run(c, w)


def test_workers_take_the_runs_nobody_claimed_and_a_killed_builds_claims_are_cleared(tmp_path):
  # Runs are shared by claims, not by member id: a worker trains any run left untaken, and a run
  # another worker holds is not trained twice.
  c = bench_config.get_config("tiny")
  c.workers = 1
  w = tmp_path / "b"
  build.run(c, w)  # writes the config; trains both members (0 and 215)
  for m in (0, 215):
    build.run_file(w, m, 0).unlink()
  build.claim_file(w, 0, 0).touch()  # another (live) worker holds member 0
  assert build.work(w, 0, 2) == 1  # worker 0 of 2 takes member 215: nothing is split by id
  assert build.run_file(w, 215, 0).exists() and not build.run_file(w, 0, 0).exists()
  assert not build.claim_file(w, 215, 0).exists()  # released once its run file is written
  # a new build starts with no worker alive: the claim is stale, and its run is trained
  build.run(c, w)
  assert build.run_file(w, 0, 0).exists() and not list((w / "runs").glob("*.claim"))


def test_a_bad_curve_fails_before_any_training(tmp_path):
  c = bench_config.get_config("tiny")
  c.curve = (2, 1)
  with pytest.raises(ConfigError, match="config.curve must be increasing"):
    build.run(c, tmp_path / "x")


def test_nasr_bench_names_its_actions(tmp_path):
  from tests.launch_utils import run_nasr

  r = run_nasr("bench", cwd=tmp_path)
  assert r.returncode == 2 and "build" in r.stderr and "evaluate" in r.stderr


def test_a_sigterm_ends_a_build_in_one_line_and_stops_its_workers(tmp_path):
  # Not training or a search, so no checkpoint handler: SIGTERM still ends it like Ctrl-C, and the
  # workers it started go with it (a rerun resumes from the finished run files).
  import signal
  import subprocess
  import time
  from pathlib import Path

  from tests.launch_utils import launch_cmd, launch_env

  w = tmp_path / "b"
  # Two workers (one runs in-process), the two largest members: each trains for a while.
  args = ["build", "--config=bench", "--config.members=214-215", "--config.seeds=1"]
  args.append("--config.workers=2")
  args.append(f"--workdir={w}")
  proc = subprocess.Popen(
    launch_cmd("bench", *args), env=launch_env(), stderr=subprocess.PIPE, text=True
  )
  log = w / "worker0.log"
  deadline = time.monotonic() + 120
  while not log.is_file() and time.monotonic() < deadline:
    time.sleep(0.2)  # until the build has started its worker (its log file says when)
  assert log.is_file(), "the build never started its worker"
  worker_pids = subprocess.run(
    ["pgrep", "-f", f"nasr.bench.worker {w}"], capture_output=True, text=True
  ).stdout.split()
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 130, stderr[-2000:]
  assert stderr.strip().splitlines()[-1].startswith("interrupted: "), stderr[-2000:]
  assert worker_pids
  gone = time.monotonic() + 60  # the build terminates them; their exit takes a moment
  while any(Path(f"/proc/{pid}").exists() for pid in worker_pids) and time.monotonic() < gone:
    time.sleep(0.2)
  assert not any(Path(f"/proc/{pid}").exists() for pid in worker_pids)
