"""Run a launcher in a subprocess the way a user would."""

import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_CACHE: list[str] = []


def _xla_cache() -> str:
  """Return this test process's persistent XLA cache folder (made once, removed at exit)."""
  if not _CACHE:
    _CACHE.append(tempfile.mkdtemp(prefix="nasr-test-xla-"))
    atexit.register(shutil.rmtree, _CACHE[0], ignore_errors=True)
  return _CACHE[0]


def launch_env() -> dict:
  """Return the environment for launcher subprocesses (2 CPU devices, a shared XLA cache).

  The launchers of one test process share a persistent compilation cache: a resumed search, the
  search it is compared with and the retrain of the same tiny config compile their steps once,
  not once per process (the same executables, so the same numbers). A pytest-xdist worker is one
  process, so workers never write one cache at the same time.
  """
  env = dict(os.environ)
  env.setdefault("JAX_NUM_CPU_DEVICES", "2")
  env.setdefault("JAX_COMPILATION_CACHE_DIR", _xla_cache())
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  return env


def launch_cmd(tool: str, *args: str) -> list[str]:
  """Return the argv of `python -m launch.<tool> args...`."""
  return [sys.executable, "-m", f"launch.{tool}", *args]


def run_nasr(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
  """Run the installed `nasr` command in `cwd` (outside the checkout) and return the result."""
  command = Path(sys.executable).parent / "nasr"
  if not command.exists():
    raise AssertionError(f"{command} is missing: install the package first (pip install -e .)")
  env = launch_env()
  env["PYTHONPATH"] = env["PYTHONPATH"].replace(str(REPO) + os.pathsep, "", 1)
  return subprocess.run(
    [str(command), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
  )


def run_launcher(tool: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
  """Run `python -m launch.<tool> args...` from the repository root and return the result."""
  return subprocess.run(
    launch_cmd(tool, *args),
    cwd=REPO,
    env=launch_env(),
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def check_ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
  """Return `result` after asserting the launcher exited 0 (showing its stderr otherwise)."""
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def retrain_and_evaluate(arch: Path, workdir: Path) -> dict:
  """Retrain `arch` (an arch JSON) with train.py:tiny in workdir, evaluate it; return eval.json."""
  check_ok(
    run_launcher(
      "train", "--config=configs/train.py:tiny", f"--config.arch={arch}", f"--workdir={workdir}"
    )
  )
  check_ok(
    run_launcher(
      "evaluate",
      "--config=configs/evaluate.py:tiny",
      f"--config.checkpoint={workdir}",
      f"--workdir={workdir / 'eval'}",
    )
  )
  return json.loads((workdir / "eval" / "eval.json").read_text())


def kill_after_checkpoint(
  tool: str,
  args: list[str],
  workdir: Path,
  min_step: int,
  timeout: float = 300,
  sig: int = 9,
) -> tuple[int, str]:
  """Start a launcher, send it `sig` (SIGKILL) once `workdir` holds a checkpoint >= min_step;
  return its (exit code, stderr) after it ends."""
  import signal
  import time

  workdir.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryFile("w+") as err:
    proc = subprocess.Popen(
      launch_cmd(tool, *args, f"--workdir={workdir}"),
      cwd=REPO,
      env=launch_env(),
      stdout=subprocess.DEVNULL,
      stderr=err,
    )
    deadline = time.time() + timeout
    ck = workdir / "checkpoints"
    while time.time() < deadline and proc.poll() is None:
      if ck.is_dir() and any(p.name.isdigit() and int(p.name) >= min_step for p in ck.iterdir()):
        break
      time.sleep(0.02)
    finished = proc.poll() is not None
    proc.send_signal(signal.Signals(sig))
    code = proc.wait(timeout=timeout)
    err.seek(0)
    stderr = err.read()
  assert not finished, f"launch.{tool} finished before it could be stopped; make the run longer"
  return code, stderr


@contextlib.contextmanager
def signal_at_batch(step: int, sig: int):
  """Within the block, send this process `sig` when a search's loop takes training batch `step`.

  A deterministic Ctrl-C (or SIGTERM) inside an epoch: the search notices it before its next step.
  (Batches are made ahead by a thread; the signal goes when the loop asks for `step`.) The
  persistent XLA cache of the launchers is used, so the in-process run compiles the same
  executables as the launcher run it is compared with.
  """
  import jax

  from nasr import parallel

  original, sent = parallel.Prefetch.get, []

  def get(self, at: int):
    if at == step and not sent:
      sent.append(at)
      os.kill(os.getpid(), sig)
    return original(self, at)

  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  before = [getattr(jax.config, n) for n in names]
  jax.config.update(names[0], _xla_cache())
  jax.config.update(names[1], 0.0)
  parallel.Prefetch.get = get
  try:
    yield sent
  finally:
    parallel.Prefetch.get = original
    for n, v in zip(names, before, strict=True):
      jax.config.update(n, v)


def random_search(config: str, cwd: Path) -> tuple[Path, str]:
  """Run `nasr search --config=<config> --config.strategy.name=random` for one epoch in `cwd`;
  return its workdir and stderr after checking that it finished."""
  r = check_ok(
    run_nasr(
      "search",
      f"--config={config}",
      "--config.strategy.name=random",  # the config's own strategy section stays as it is
      "--config.epochs=1",
      "--workdir=random",
      cwd=cwd,
    )
  )
  w = cwd / "random"
  assert json.loads((w / "run.json").read_text())["config"]["strategy"]["name"] == "random"
  assert json.loads((w / "search_result.json").read_text())["epochs"] == 1
  assert not (w / "controller.png").exists()  # random search has no policy to draw
  return w, r.stderr
