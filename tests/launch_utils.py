"""Run a launcher in a subprocess the way a user would."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def launch_env() -> dict:
  """Return the environment for launcher subprocesses (2 CPU devices, quiet TF/JAX logs)."""
  env = dict(os.environ)
  env.setdefault("JAX_NUM_CPU_DEVICES", "2")
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  return env


def launch_cmd(tool: str, *args: str) -> list[str]:
  """Return the argv of `python -m launch.<tool> args...`."""
  return [sys.executable, "-m", f"launch.{tool}", *args]


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
