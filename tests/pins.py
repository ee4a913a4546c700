"""Behaviour pins: digests of the tiny searches' final states and outputs, recorded before a refactor.

A refactor keeps behaviour: the `tiny` preset of each search method, run with its seed through the
launcher (2 simulated CPU devices, as the tests run it), must end in bit-identical arrays (controller
or GP state, supernet weights, alphas) and write the same result files. `digest(method, workdir)`
hashes exactly those; `tests/search_pins.json` holds the digests recorded on the commit before the
search-engine refactor, with the JAX version and device count they were measured with (float
results are only reproducible on the same XLA build).

Record again (only when behaviour is meant to change, and say so in the commit):
  JAX_NUM_CPU_DEVICES=2 python -m tests.pins record
"""

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

from nasr.checkpoint import Checkpointer

PINS = Path(__file__).with_name("search_pins.json")
METHODS = {
  "deconas": "configs/deconas.py:tiny",
  "darts_sr": "configs/darts_sr.py:tiny",
  "gpnas": "configs/gpnas.py:tiny",
}
# Result files per method; timings are dropped and the workdir becomes "<W>".
RESULT_FILES = {
  "deconas": ("best.json", "candidates.json"),
  "darts_sr": ("genotype.json", "alphas.json"),
  "gpnas": ("gp.json", "topk.json"),
}
_UNSTABLE_KEYS = {"train_s"}


def _arrays_digest(tree) -> str:
  """Return a digest of the multiset of leaves (shape, dtype, bytes): renaming a key keeps it."""
  leaves = []
  for leaf in jax.tree_util.tree_leaves(tree):
    a = np.ascontiguousarray(np.asarray(leaf))
    h = hashlib.sha256(f"{a.shape}{a.dtype}".encode() + a.tobytes()).hexdigest()
    leaves.append(h)
  return hashlib.sha256("".join(sorted(leaves)).encode()).hexdigest()


def _normalise(obj, workdir: str):
  if isinstance(obj, dict):
    return {k: _normalise(v, workdir) for k, v in obj.items() if k not in _UNSTABLE_KEYS}
  if isinstance(obj, list):
    return [_normalise(v, workdir) for v in obj]
  if isinstance(obj, str):
    return obj.replace(workdir, "<W>")
  return obj


def _final_state(method: str, workdir: Path) -> dict:
  """Return the arrays that define where a search ended, by meaning (not by checkpoint layout)."""
  state = Checkpointer(workdir).restore_arrays()
  if method == "deconas":
    return {"strategy": state["strategy"], "supernet": state["w"]["params"]}
  if method == "darts_sr":
    return {"alpha": state["search"]["alpha"], "w": state["search"]["w"]}
  return {"strategy": state["strategy"]}


def digest(method: str, workdir: str | Path) -> dict:
  """Return {part: sha256} for the final state and each result file of a finished search."""
  workdir = Path(workdir).absolute()
  out = {k: _arrays_digest(v) for k, v in _final_state(method, workdir).items()}
  for name in RESULT_FILES[method]:
    doc = _normalise(json.loads((workdir / name).read_text()), str(workdir))
    out[name] = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
  return out


def _cpu() -> str:
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  import platform

  return platform.processor() or platform.machine()


def environment() -> dict:
  """Return what float reproducibility depends on: the JAX build, the device count and the CPU
  (XLA compiles for the host's instruction set: the GP's float32 Cholesky differs between CPUs)."""
  return {"jax": jax.__version__, "devices": jax.device_count(), "cpu": _cpu()}


def recorded(method: str) -> dict | None:
  """Return the pinned digests of `method` for this environment, or None if none were recorded."""
  pins = json.loads(PINS.read_text())
  if pins["environment"] != environment():
    return None
  return pins["digests"][method]


def record() -> None:
  """Run every tiny search through the launcher and write tests/search_pins.json."""
  from tests.launch_utils import check_ok, run_launcher

  digests = {}
  with tempfile.TemporaryDirectory() as tmp:
    for method, config in METHODS.items():
      w = Path(tmp) / method
      check_ok(run_launcher("search", f"--config={config}", f"--workdir={w}"))
      digests[method] = digest(method, w)
      print(method, digests[method], flush=True)
  doc = {"environment": environment(), "digests": digests}
  PINS.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
  if sys.argv[1:] != ["record"]:
    raise SystemExit("usage: JAX_NUM_CPU_DEVICES=2 python -m tests.pins record")
  record()


def check(method: str, workdir: str | Path) -> None:
  """Assert a finished tiny search of `method` matches its pinned digests (skip if not pinned here)."""
  import pytest

  want = recorded(method)
  if want is None:
    pytest.skip(f"digests were pinned on {json.loads(PINS.read_text())['environment']}, not here")
  got = digest(method, workdir)
  differ = sorted(k for k in want if got.get(k) != want[k])
  assert not differ, f"{method}: behaviour changed in {differ} (see tests/pins.py)"
