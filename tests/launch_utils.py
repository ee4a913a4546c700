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
  # No retrain-time probe after each search (tens of seconds each); the HNAS launcher test keeps it.
  env.setdefault("NASR_RETRAIN_TIMING", "0")
  return env


def launch_cmd(tool: str, *args: str) -> list[str]:
  """Return the argv of `python -m launch.<tool> args...`."""
  return [sys.executable, "-m", f"launch.{tool}", *args]


def run_nasr(
  *args: str, cwd: Path, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
  """Run the installed `nasr` command in `cwd` (outside the checkout, extra `env` variables) and
  return the result."""
  command = Path(sys.executable).parent / "nasr"
  if not command.exists():
    raise AssertionError(f"{command} is missing: install the package first (pip install -e .)")
  env = {**launch_env(), **(env or {})}
  env["PYTHONPATH"] = env["PYTHONPATH"].replace(str(REPO) + os.pathsep, "", 1)
  return subprocess.run(
    [str(command), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
  )


def run_launcher(
  tool: str, *args: str, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
  """Run `python -m launch.<tool> args...` (extra `env` variables) from the repository root and
  return the result."""
  return subprocess.run(
    launch_cmd(tool, *args),
    cwd=REPO,
    env={**launch_env(), **(env or {})},
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


# Runs launch.<tool> with its arguments after patching Checkpointer.save: once the run's own
# checkpoint of step >= min_step is written (checkpoints/<step> renamed into place), it writes the
# step to the `ready` pipe and pauses until a byte comes on the `go` pipe and, where the run
# handles `sig` in Python (SIGINT, SIGTERM), until that handler has run. The parent sends `sig`
# in that pause: it lands right after that checkpoint, however slowly either side runs.
_PAUSE_AFTER_CHECKPOINT = """
import os, runpy, signal, sys, time
from pathlib import Path
from nasr.checkpoint import Checkpointer

min_step, sig, ready, go = (int(a) for a in sys.argv[1:5])
ours, module = Path(sys.argv[5]).resolve() / "checkpoints", sys.argv[6]
for fd in (ready, go):
  os.set_inheritable(fd, False)  # a process this run starts must not hold the pipes open
save, paused = Checkpointer.save, []

def save_then_pause(self, step, *args, **kwargs):
  saved = save(self, step, *args, **kwargs)
  if saved and not paused and int(step) >= min_step and self.directory.resolve() == ours:
    paused.append(step)
    self.wait()  # written: the folder has its step's name
    handler, handled = signal.getsignal(sig), []
    if callable(handler):  # the run's own (Interrupts): note when it has run
      signal.signal(sig, lambda *a: (handled.append(1), handler(*a)))
    os.write(ready, b"%d\\n" % int(step))
    os.read(go, 1)
    # Any thread may take a process's signal; Python runs the handler in this one, soon after.
    while callable(handler) and not handled:
      time.sleep(0.01)
    if callable(handler):
      signal.signal(sig, handler)
  return saved

Checkpointer.save = save_then_pause
sys.argv = [module, *sys.argv[7:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def kill_after_checkpoint(
  tool: str,
  args: list[str],
  workdir: Path,
  min_step: int,
  timeout: float = 300,
  sig: int = 9,
) -> tuple[int, str]:
  """Run a launcher and send it `sig` (SIGKILL) right after it has written its first checkpoint
  of step >= min_step (it pauses there until the signal is sent); return its (exit code, stderr).
  """
  import select
  import signal

  workdir.mkdir(parents=True, exist_ok=True)
  ready_r, ready_w = os.pipe()
  go_r, go_w = os.pipe()
  with tempfile.TemporaryFile("w+") as err:
    proc = subprocess.Popen(
      [
        sys.executable,
        "-c",
        _PAUSE_AFTER_CHECKPOINT,
        str(min_step),
        str(int(sig)),
        str(ready_w),
        str(go_r),
        str(workdir),
        f"launch.{tool}",
        *args,
        f"--workdir={workdir}",
      ],
      cwd=REPO,
      env=launch_env(),
      stdout=subprocess.DEVNULL,
      stderr=err,
      pass_fds=(ready_w, go_r),
    )
    os.close(ready_w)
    os.close(go_r)
    try:
      # The step, or end of file when the run ended (or failed) without such a checkpoint.
      if not select.select([ready_r], [], [], timeout)[0]:
        proc.kill()
        proc.wait()
        raise AssertionError(f"launch.{tool} wrote no checkpoint >= {min_step} in {timeout} s")
      paused_at = os.read(ready_r, 64).strip()
      if paused_at:
        proc.send_signal(signal.Signals(sig))
        try:
          os.write(go_w, b"g")
        except BrokenPipeError:
          pass  # SIGKILL: nobody is left to read it
    finally:
      os.close(ready_r)
      os.close(go_w)
    code = proc.wait(timeout=timeout)
    err.seek(0)
    stderr = err.read()
  assert paused_at, (
    f"launch.{tool} ended before a checkpoint >= {min_step}; make the run longer:\n"
    + stderr[-2000:]
  )
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
