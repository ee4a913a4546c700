"""Multi-process runs (jax.distributed): two processes on this machine, one CPU device each, train
and search exactly as one process with two devices, and a SIGKILL of one resumes on a rerun."""

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import nasr
from nasr import experiment, parallel, writers
from nasr.core.errors import ConfigError
from nasr.searches import loop, one_shot
from tests.launch_utils import REPO, launch_cmd, launch_env, run_launcher

# Tiny training, long enough for a kill to land mid-run: 30 steps, a checkpoint every 5.
TRAIN = {"steps": 30, "checkpoint_every": 5, "eval_every": 30, "log_every": 10}
# The DeCoNAS tiny search at its smallest (compiling dominates: one epoch is as good as three).
SEARCH = {
  "space.blocks": 1,
  "space.nodes": 1,
  "epochs": 1,
  "train_steps_per_epoch": 2,
  "controller_steps_per_epoch": 1,
  "derive.candidates": 2,
}
# A killed process's partner ends this soon after at the latest (jax's default: 100 s); usually at
# once, when gloo sees the closed socket. It also bounds how long a live process may go unheard:
# 30 s, not 5, so that a loaded machine does not end a healthy run.
HEARTBEAT_S = 30
TIMEOUT_S = 400  # per launcher run; far above what a loaded 2-core machine needs
# Cluster variables of the machine running the tests must not make these runs multi-process.
_CLUSTER_VARS = (*parallel.COUNT_ENV, *parallel.ID_ENV, "JAX_COORDINATOR_ADDRESS")


def _args(config: str, overrides: dict) -> list[str]:
  return [f"--config={config}", *(f"--config.{k}={v}" for k, v in overrides.items())]


def _env(devices: int) -> dict:
  env = launch_env()
  env["JAX_NUM_CPU_DEVICES"] = str(devices)
  for var in _CLUSTER_VARS:
    env.pop(var, None)
  return env


def _reserve_port() -> socket.socket:
  """Return a socket bound to a free port, which holds it until closed.

  A port found free and let go could be taken before the coordinator binds it (check then use;
  a taken port crashes the coordinator). While this socket is bound, no other bind takes the
  port and no outgoing connection picks it; SO_REUSEPORT lets the coordinator (gRPC, which sets
  it too, same user) bind beside it, and a socket that never listens takes no connections.
  """
  s = socket.socket()
  s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
  s.bind(("127.0.0.1", 0))
  return s


def _start(tool: str, args: list[str], workdir: Path, processes: int) -> list[subprocess.Popen]:
  """Start `processes` launchers (1: one process with 2 devices; 2: one device each)."""
  workdir.mkdir(parents=True, exist_ok=True)
  reserved, procs = _reserve_port(), []
  port = reserved.getsockname()[1]
  for i in range(processes):
    dist = []
    if processes > 1:
      dist = [
        f"--config.distributed.coordinator=127.0.0.1:{port}",
        f"--config.distributed.num_processes={processes}",
        f"--config.distributed.process_id={i}",
        f"--config.distributed.heartbeat_timeout_s={HEARTBEAT_S}",
      ]
    err = (workdir.parent / f"{workdir.name}.{time.monotonic_ns()}.{i}.err").open("w+")
    procs.append(
      subprocess.Popen(
        launch_cmd(tool, *args, *dist, f"--workdir={workdir}"),
        cwd=REPO,
        env=_env(2 if processes == 1 else 1),
        stdout=subprocess.DEVNULL,
        stderr=err,
      )
    )
    procs[-1].err = err
    procs[-1].port = reserved  # held until _finish
  return procs


def _finish(procs: list[subprocess.Popen], timeout: float = TIMEOUT_S) -> list[tuple[int, str]]:
  """Return each process's (exit code, stderr); kill them all when one is late."""
  deadline = time.time() + timeout
  try:
    for p in procs:
      p.wait(timeout=max(deadline - time.time(), 1))
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
      p.wait()
  out = []
  for p in procs:
    p.err.seek(0)
    out.append((p.returncode, p.err.read()))
    p.err.close()
    p.port.close()
  return out


def _run(tool: str, args: list[str], workdir: Path, processes: int) -> list[str]:
  """Run the launchers to the end; return their stderr after checking each exited 0."""
  results = _finish(_start(tool, args, workdir, processes))
  for i, (code, err) in enumerate(results):
    assert code == 0, f"process {i} of {processes} exited {code}:\n{err[-3000:]}"
  return [err for _, err in results]


def _trained(workdir: Path):
  return jax.device_get(experiment.load_trained(workdir)[1])


def _identical(a, b) -> bool:
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(
    np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True)
  )


@pytest.fixture(scope="module")
def train_runs(tmp_path_factory) -> dict:
  """Train tiny as one process with two devices and as two processes (one device each)."""
  root = tmp_path_factory.mktemp("distributed_train")
  args = _args("configs/train.py:tiny", TRAIN)
  one = _run("train", args, root / "one", 1)
  two = _run("train", args, root / "two", 2)
  return {"root": root, "args": args, "one": one, "two": two}


def test_two_processes_train_exactly_as_one_with_two_devices(train_runs):
  root = train_runs["root"]
  # Data parallelism over the same 2-device mesh: the same per-device batches, the same
  # all-reduce of two partial gradients (a + b in either order), so the bits agree.
  assert _identical(_trained(root / "one"), _trained(root / "two"))
  one = json.loads((root / "one" / "train_result.json").read_text())
  two = json.loads((root / "two" / "train_result.json").read_text())
  assert {k: v for k, v in one.items() if k != "wall_s"} == {
    k: v for k, v in two.items() if k != "wall_s"
  }
  metrics = [
    [{k: v for k, v in r.items() if k != "steps_per_sec"} for r in writers.read_metrics(w)]
    for w in (root / "one", root / "two")
  ]
  assert metrics[0] == metrics[1] and metrics[1][-1]["step"] == TRAIN["steps"]
  # Process 0 wrote the files; both processes trained (each logs its progress).
  assert all("train 30/30" in err for err in train_runs["two"])
  assert sorted(p.name for p in (root / "two").iterdir() if not p.name.startswith(".")) == sorted(
    p.name for p in (root / "one").iterdir() if not p.name.startswith(".")
  )


def _wait_for_checkpoint(workdir: Path, procs, timeout: float = TIMEOUT_S) -> int | None:
  """Return the first complete checkpoint's step once one exists (None: the run ended first)."""
  deadline, ck = time.time() + timeout, workdir / "checkpoints"
  while time.time() < deadline and all(p.poll() is None for p in procs):
    # Orbax renames a step's folder into place when it is complete; the metadata comes last.
    steps = [
      int(p.name)
      for p in ck.glob("[0-9]*")
      if p.name.isdigit() and (p / "_CHECKPOINT_METADATA").is_file()
    ]
    if steps:
      return min(steps)
    time.sleep(0.01)
  return None


def test_sigkill_of_one_process_then_rerun_of_both_resumes(train_runs):
  root, args = train_runs["root"], train_runs["args"]
  w = root / "killed"
  procs = _start("train", args, w, 2)
  first = _wait_for_checkpoint(w, procs)
  running = [p.poll() is None for p in procs]
  procs[1].send_signal(signal.SIGKILL)
  # Its partner blocks in the next collective until gloo sees the closed socket or the
  # heartbeat timeout names the lost process; it must end by itself, saying what to do.
  (killed_code, _), (partner_code, partner_err) = _finish(procs[::-1], timeout=HEARTBEAT_S + 120)
  assert first is not None and all(running), "the run ended before a kill: make it longer"
  assert killed_code == -signal.SIGKILL
  assert partner_code != 0
  lost = "another process of this multi-process run stopped answering"
  assert lost in partner_err, partner_err[-2000:]
  # Both run the same commands again: they resume from the last complete checkpoint (a save
  # cut short by the kill is ignored) and end with the uninterrupted run's very parameters.
  errs = _run("train", args, w, 2)
  resumed = [int(line.rsplit(" ", 1)[1]) for line in errs[0].splitlines() if "resumed from" in line]
  assert resumed and first <= resumed[0] < TRAIN["steps"], errs[0][-2000:]
  assert f"resumed from the checkpoint at step {resumed[0]}" in errs[1]
  assert _identical(_trained(root / "one"), _trained(w))
  metrics = writers.read_metrics(w)
  assert [r["step"] for r in metrics if "loss" in r] == [10, 20, 30]


@pytest.fixture(scope="module")
def search_runs(tmp_path_factory) -> dict:
  """Search DeCoNAS tiny as one process with two devices and as two processes."""
  root = tmp_path_factory.mktemp("distributed_search")
  args = _args("configs/deconas.py:tiny", SEARCH)
  _run("search", args, root / "one", 1)
  errs = _run("search", args, root / "two", 2)
  return {"root": root, "two": errs}


def _search_state(workdir: Path):
  """Return the search's final checkpointed state (shared weights, optimiser and controller)."""
  config = nasr.load_config("deconas", "tiny", lock=False)
  for key, value in SEARCH.items():
    node, _, leaf = key.rpartition(".")
    (config[node] if node else config)[leaf] = value
  p = one_shot._prepare(config)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
    lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
    jax.eval_shape(lambda: one_shot._init_state(p)),  # shapes only: nothing is compiled
  )
  return loop.restore_final(workdir, target)


def test_two_processes_search_exactly_as_one_with_two_devices(search_runs):
  root = search_runs["root"]
  assert _identical(_search_state(root / "one"), _search_state(root / "two"))
  for name in ("candidates.json", "best.json"):
    assert json.loads((root / "one" / name).read_text()) == json.loads(
      (root / "two" / name).read_text()
    ), name
  timing = ("wall", "per_sec", "best_json")  # times, and the path of each workdir's best.json
  one, two = (
    {
      k: v
      for k, v in json.loads((w / loop.RESULT_FILE).read_text()).items()
      if not any(t in k for t in timing)
    }
    for w in (root / "one", root / "two")
  )
  assert one == two and "best_tokens" in two
  # Plots and JSON results come from process 0 alone: the workdirs hold the same files.
  assert sorted(p.name for p in (root / "two").iterdir() if not p.name.startswith(".")) == sorted(
    p.name for p in (root / "one").iterdir() if not p.name.startswith(".")
  )


# --- Settings: what the config and the cluster's environment say, and the errors. ---------------
def test_settings_single_process_by_default():
  assert parallel.distributed_settings(environ={}) is None
  assert parallel.distributed_settings(environ={"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None
  # num_processes=1 in the config keeps a run single-process whatever the environment says.
  env = {"JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "2", "JAX_COORDINATOR_ADDRESS": "h:1"}
  assert parallel.distributed_settings(num_processes=1, environ=env) is None


def test_settings_config_wins_over_environment():
  env = {"JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3", "JAX_COORDINATOR_ADDRESS": "h:1"}
  got = parallel.distributed_settings("10.0.0.1:1234", 2, 1, environ=env)
  assert got == {
    "coordinator_address": "10.0.0.1:1234",
    "num_processes": 2,
    "process_id": 1,
    "cluster_detection_method": "deactivate",  # all known: no probing of other clusters
  }
  got = parallel.distributed_settings(environ=env)
  assert (got["coordinator_address"], got["num_processes"], got["process_id"]) == ("h:1", 4, 3)


def test_settings_from_cluster_environments():
  # A Kubernetes Indexed Job: the index is the process id; count and address from the pod spec.
  k8s = {
    "JOB_COMPLETION_INDEX": "1",
    "JAX_NUM_PROCESSES": "2",
    "JAX_COORDINATOR_ADDRESS": "j-0.s:1",
  }
  got = parallel.distributed_settings(environ=k8s)
  assert (got["coordinator_address"], got["num_processes"], got["process_id"]) == ("j-0.s:1", 2, 1)
  # An srun step: jax derives the coordinator from the node list (None here) and gives each
  # process its local GPU (its detection stays on).
  slurm = {
    "SLURM_JOB_ID": "77",
    "SLURM_STEP_NODELIST": "node[01-04]",
    "SLURM_NTASKS": "4",
    "SLURM_PROCID": "2",
    "SLURM_LOCALID": "0",
  }
  assert parallel.distributed_settings(environ=slurm) == {
    "coordinator_address": None,
    "num_processes": 4,
    "process_id": 2,
  }


@pytest.mark.parametrize(
  ("kwargs", "environ", "message"),
  [
    ({"num_processes": 2}, {}, "need distributed.coordinator=HOST:PORT"),
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, {}, "process_id=2"),
    ({"coordinator_address": "h", "num_processes": 2}, {}, "must be HOST:PORT"),
    ({"process_id": 1}, {}, "needs distributed.num_processes"),
    ({}, {"JAX_NUM_PROCESSES": "2", "JAX_COORDINATOR_ADDRESS": "h:1"}, "no process id"),
    ({}, {"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two' is not an integer"),
  ],
)
def test_settings_errors_name_the_key(kwargs, environ, message):
  with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as e:
    parallel.distributed_settings(**kwargs, environ=environ)
  assert "\n" not in str(e.value)


def test_process_id_out_of_range_names_both_keys():
  with pytest.raises(ConfigError) as e:
    parallel.distributed_settings("h:1", 2, 5, environ={})
  assert str(e.value) == ("distributed.process_id=5 must be in [0, distributed.num_processes=2)")


def test_every_config_that_runs_steps_has_the_section():
  for name in ("train", "deconas", "hnas", "darts_sr", "gpnas", "diagnose"):
    config = nasr.load_config(name, "tiny")
    assert set(config.distributed.keys()) >= {"coordinator", "num_processes", "process_id"}


@pytest.fixture
def no_cluster(monkeypatch):
  """Clear the cluster variables of the machine running the tests."""
  for var in _CLUSTER_VARS:
    monkeypatch.delenv(var, raising=False)


def test_a_bad_section_fails_before_any_work(tmp_path, no_cluster):
  config = nasr.load_config("train", "tiny", lock=False)
  config.distributed.num_processes = 2
  with pytest.raises(ConfigError, match="distributed.coordinator=HOST:PORT"):
    nasr.train(config, tmp_path / "w")
  assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())


@pytest.mark.parametrize("name", ["gpnas", "diagnose"])
def test_one_process_tools_refuse_several(name, tmp_path, no_cluster):
  config = nasr.load_config(name, "tiny", lock=False)
  config.distributed.coordinator = "127.0.0.1:1"
  config.distributed.num_processes = 2
  run = nasr.run_search if name == "gpnas" else nasr.diagnose
  with pytest.raises(ConfigError, match="distributed.num_processes=1"):
    run(config, tmp_path / "w")
  assert not jax.distributed.is_initialized()


def test_no_distributed_run_leaves_jax_single_process(no_cluster):
  assert parallel.maybe_initialize_distributed() is False
  assert parallel.is_chief() and parallel.chief_decides(True) is True
  assert not jax.distributed.is_initialized()


def test_a_process_whose_peers_never_come_ends_in_one_line_after_its_timeout(tmp_path):
  with _reserve_port() as reserved:
    r = run_launcher(
      "train",
      "--config=configs/train.py:tiny",
      "--config.distributed.num_processes=2",
      "--config.distributed.process_id=0",
      f"--config.distributed.coordinator=127.0.0.1:{reserved.getsockname()[1]}",
      "--config.distributed.init_timeout_s=3",
      f"--workdir={tmp_path / 'w'}",
      timeout=120,  # JAX's own wait would be minutes, then an abort (exit 134)
    )
  assert r.returncode == 2, r.stderr[-2000:]
  last = r.stderr.strip().splitlines()[-1]
  assert "not all 2 arrived" in last and "config.distributed.init_timeout_s" in last
  assert "Fatal Python error" not in r.stderr and "Traceback" not in r.stderr
