"""Behaviour pins: what the tiny searches end with, recorded so a refactor provably keeps behaviour.

A refactor keeps behaviour: the `tiny` preset of each search method, run with its seed through the
launcher (2 simulated CPU devices, as the tests run it), must end where it ended when the pins were
recorded. Two pins per method, each judged by a test of its own, so a host that cannot judge one
skips that pin and nothing else:

- `check_stable`: what holds on any CPU with the same JAX release and device count. Every integer
  and string of the result files (chosen architectures, their order, genotypes, parameter counts)
  and every integer array of the final state exactly; every float (PSNRs, rewards, the GP's
  hyper-parameters, each float array's mean, mean |x| and RMS) within a relative 1e-4.
  Why a tolerance and not a digest: JAX's CPU linear algebra (the GP's Cholesky and triangular
  solves) calls the LAPACK/BLAS that scipy ships, OpenBLAS, which picks its kernels for the CPU at
  run time (DYNAMIC_ARCH). On an AVX-512 host (core "SkylakeX") the GP's float32 numbers differ from
  an AVX2 host's ("Haswell", "Zen") by about 1e-7 relative; a digest after rounding would still
  flip where a value sits on a rounding boundary. XLA's own code gave the same bits on both, but
  nothing promises that either. The architectures the searches choose did not move.
- `check_exact`: bit-identical digests of the same arrays and files, judged only on an environment
  it was recorded on (JAX version, device count, machine and OpenBLAS core: what the bits were
  seen to depend on). `search_pins.json` keeps one entry per recorded environment.

Record again (only when behaviour is meant to change, and say so in the commit); each run adds or
replaces this environment's exact digests, and rewrites the stable pins:
  JAX_NUM_CPU_DEVICES=2 python -m tests.pins record [METHOD ...]
  OPENBLAS_CORETYPE=Haswell JAX_NUM_CPU_DEVICES=2 python -m tests.pins record --exact-only
(the second records the exact digests an AVX2 host gives, on an AVX-512 host).

NASR_PINS_PRETEND_HOST=1 makes this process look like an unrecorded host with another JAX release:
both pins skip, saying why, and every other assertion of the launcher tests still runs.
"""

import ctypes
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from nasr.checkpoint import Checkpointer

PINS = Path(__file__).with_name("search_pins.json")
# The launcher arguments of each pinned search: exactly those of its launcher test's fixture.
METHODS = {
  "deconas": ("--config=configs/deconas.py:tiny",),
  "darts_sr": ("--config=configs/darts_sr.py:tiny",),
  "gpnas": ("--config=configs/gpnas.py:tiny",),
  "hnas": ("--config=configs/hnas.py:tiny", "--config.epochs=6", "--config.derive.candidates=4"),
}
# Result files per method; timings are dropped and the workdir becomes "<W>".
RESULT_FILES = {
  "deconas": ("best.json", "candidates.json"),
  "darts_sr": ("genotype.json", "alphas.json"),
  "gpnas": ("gp.json", "topk.json"),
  "hnas": ("best.json", "candidates.json"),
}
_UNSTABLE_KEYS = {"train_s"}
RTOL = 1e-4  # relative tolerance of the stable pin's floats
_ATOL = 1e-7  # absolute floor (floats that are 0 on one host, 1e-12 on another)


def _normalise(obj, workdir: str):
  if isinstance(obj, dict):
    return {k: _normalise(v, workdir) for k, v in obj.items() if k not in _UNSTABLE_KEYS}
  if isinstance(obj, list):
    return [_normalise(v, workdir) for v in obj]
  if isinstance(obj, str):
    return obj.replace(workdir, "<W>")
  return obj


def restore_arrays(workdir: Path, step: int | None = None):
  """Return the state of a run's checkpoint `step` (default: latest) as nested dicts of arrays.

  Restored without a target, so optax state types are lost: for comparing checkpoints, not resuming.
  """
  ckpt = Checkpointer(workdir)
  step = ckpt.latest_step() if step is None else step
  ckpt.close()
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {ckpt.directory}")
  with ocp.StandardCheckpointer() as reader:
    return reader.restore(ckpt.directory / str(step) / "state")


def _final_state(method: str, workdir: Path) -> dict:
  """Return the arrays that define where a search ended, by meaning (not by checkpoint layout)."""
  state = restore_arrays(workdir)
  if method in ("deconas", "hnas"):
    return {"strategy": state["strategy"], "supernet": state["w"]["params"]}
  if method == "darts_sr":
    return {"alpha": state["search"]["alpha"], "w": state["search"]["w"]}
  return {"strategy": state["strategy"]}


def _leaves(tree) -> list[np.ndarray]:
  return [np.ascontiguousarray(np.asarray(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]


def _result_files(method: str, workdir: Path) -> dict:
  return {
    name: _normalise(json.loads((workdir / name).read_text()), str(workdir))
    for name in RESULT_FILES[method]
  }


# ----------------------------------------------------------------------------------------------
# Exact pins: digests, judged on a recorded environment only.


def _arrays_digest(tree) -> str:
  """Return a digest of the multiset of leaves (shape, dtype, bytes): renaming a key keeps it."""
  leaves = []
  for a in _leaves(tree):
    leaves.append(hashlib.sha256(f"{a.shape}{a.dtype}".encode() + a.tobytes()).hexdigest())
  return hashlib.sha256("".join(sorted(leaves)).encode()).hexdigest()


def digest(method: str, workdir: str | Path) -> dict:
  """Return {part: sha256} for the final state and each result file of a finished search."""
  workdir = Path(workdir).absolute()
  out = {k: _arrays_digest(v) for k, v in _final_state(method, workdir).items()}
  for name, doc in _result_files(method, workdir).items():
    out[name] = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
  return out


def openblas_core() -> str:
  """Return the kernel family scipy's OpenBLAS chose for this CPU (JAX's CPU LAPACK calls it)."""
  import scipy.linalg  # noqa: F401  (loads the library)

  try:
    paths = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()}
  except OSError:
    return "unknown"
  for path in sorted(p for p in paths if "scipy_openblas" in Path(p).name):
    lib = ctypes.CDLL(path)
    for name in ("scipy_openblas_get_corename", "scipy_openblas_get_corename64_"):
      fn = getattr(lib, name, None)
      if fn is not None:
        fn.restype = ctypes.c_char_p
        return fn().decode()
  return "unknown"


def _pretending() -> bool:
  return os.environ.get("NASR_PINS_PRETEND_HOST", "") not in ("", "0")


def environment() -> dict:
  """Return what the bits were seen to depend on: JAX, device count, machine, OpenBLAS core."""
  env = {
    "jax": jax.__version__,
    "devices": jax.device_count(),
    "machine": platform.machine(),
    "openblas": openblas_core(),
  }
  if _pretending():
    env.update(jax="0.0.0-pretend", openblas="pretend")
  return env


def stable_environment() -> dict:
  """Return what the stable pin needs to match: the JAX release and the device count."""
  env = environment()
  return {"jax": env["jax"], "devices": env["devices"]}


def _differing(want: dict, got: dict) -> str:
  return ", ".join(
    f"{k} {want.get(k)!r} there, {got.get(k)!r} here"
    for k in sorted(want)
    if want.get(k) != got.get(k)
  )


def _load() -> dict:
  return json.loads(PINS.read_text())


def check_exact(method: str, workdir: str | Path) -> None:
  """Assert a finished tiny search is bit-identical to its pin (skip where none was recorded)."""
  import pytest

  env = environment()
  entries = [e for e in _load()["exact"] if e["environment"] == env]
  if not entries:
    recorded = "; ".join(_differing(e["environment"], env) for e in _load()["exact"])
    pytest.skip(f"exact {method} digests were not recorded for this environment ({recorded})")
  want, got = entries[0]["digests"][method], digest(method, workdir)
  differ = sorted(k for k in want if got.get(k) != want[k])
  assert not differ, f"{method}: behaviour changed in {differ} (see tests/pins.py)"


# ----------------------------------------------------------------------------------------------
# Stable pins: discrete results exactly, floats to a tolerance, on any CPU.


def _leaf_summary(a: np.ndarray) -> dict:
  """Return a leaf's shape, dtype and either its digest (integers) or float statistics."""
  out = {"shape": list(a.shape), "dtype": str(a.dtype)}
  if np.issubdtype(a.dtype, np.floating):
    x = a.astype(np.float64).ravel()
    finite = x[np.isfinite(x)]
    if finite.size == 0:
      out["stats"] = [0.0, 0.0, 0.0]
    else:
      out["stats"] = [
        float(finite.mean()),
        float(np.abs(finite).mean()),
        float(np.sqrt(np.mean(finite**2))),
      ]
    out["nonfinite"] = int(x.size - finite.size)
  else:
    out["sha256"] = hashlib.sha256(a.tobytes()).hexdigest()
  return out


def stable_view(method: str, workdir: str | Path) -> dict:
  """Return what the stable pin compares: leaf summaries of the final state and the result files."""
  workdir = Path(workdir).absolute()
  view = {}
  for part, tree in _final_state(method, workdir).items():
    # A multiset (sorted by what is exact), so renaming a checkpoint key keeps the pin.
    summaries = [_leaf_summary(a) for a in _leaves(tree)]
    view[part] = sorted(summaries, key=lambda s: (s["shape"], s["dtype"], s.get("sha256", "")))
  view.update(_result_files(method, workdir))
  return view


def _close(a: float, b: float, scale: float = 0.0) -> bool:
  if math.isnan(a) or math.isnan(b):
    return math.isnan(a) and math.isnan(b)
  return abs(a - b) <= _ATOL + RTOL * max(abs(a), abs(b), scale)


def compare(want, got, where: str = "") -> list[str]:
  """Return where `got` departs from `want`: exact for all but floats, floats within RTOL."""
  if isinstance(want, dict) and "stats" in want and isinstance(got, dict) and "stats" in got:
    # A float leaf: its mean may be near 0, so every statistic is judged on the leaf's RMS scale.
    scale = max(abs(want["stats"][2]), abs(got["stats"][2]))
    same = want["shape"] == got["shape"] and want["nonfinite"] == got["nonfinite"]
    same &= all(_close(a, b, scale) for a, b in zip(want["stats"], got["stats"], strict=True))
    return [] if same else [f"{where}: {want} -> {got}"]
  if isinstance(want, dict) and isinstance(got, dict):
    if sorted(want) != sorted(got):
      return [f"{where}: keys {sorted(want)} -> {sorted(got)}"]
    return [d for k in want for d in compare(want[k], got[k], f"{where}/{k}")]
  if isinstance(want, list) and isinstance(got, list):
    if len(want) != len(got):
      return [f"{where}: {len(want)} items -> {len(got)}"]
    return [
      d
      for i, (a, b) in enumerate(zip(want, got, strict=True))
      for d in compare(a, b, f"{where}[{i}]")
    ]
  if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
    return [] if _close(want, float(got)) else [f"{where}: {want!r} -> {got!r}"]
  if type(want) is not type(got) or want != got:
    return [f"{where}: {want!r} -> {got!r}"]
  return []


def _match_leaves(want: list, got: list, where: str) -> list[str]:
  """Return the float leaves of `want` with no close partner in `got` (multisets, greedy)."""
  if len(want) != len(got):
    return [f"{where}: {len(want)} arrays -> {len(got)}"]
  free = list(got)
  differ = []
  for i, w in enumerate(want):
    match = next((j for j, g in enumerate(free) if not compare(w, g)), None)
    if match is None:
      differ.append(f"{where}[{i}]: no array like {w}")
    else:
      free.pop(match)
  return differ


def check_stable(method: str, workdir: str | Path) -> None:
  """Assert a finished tiny search ends where its stable pin says (skip on another JAX/devices)."""
  import pytest

  doc = _load()
  env = stable_environment()
  if doc["stable_environment"] != env:
    differ = _differing(doc["stable_environment"], env)
    pytest.skip(f"the stable {method} pin was recorded with another set-up ({differ})")
  want, got = doc["stable"][method], stable_view(method, workdir)
  differ = []
  for part in sorted(set(want) | set(got)):
    if part not in want or part not in got:
      differ.append(f"{part}: only in the {'pin' if part in want else 'run'}")
    elif isinstance(want[part], list) and want[part] and "shape" in want[part][0]:
      differ += _match_leaves(want[part], got[part], part)
    else:
      differ += compare(want[part], got[part], part)
  assert not differ, f"{method}: behaviour changed (see tests/pins.py):\n" + "\n".join(differ[:20])


# ----------------------------------------------------------------------------------------------
# Recording.


def record(methods: list[str], exact_only: bool = False) -> None:
  """Run the tiny searches through the launcher and write their pins to tests/search_pins.json."""
  from tests.launch_utils import check_ok, run_launcher

  doc = _load() if PINS.exists() else {"exact": [], "stable": {}}
  env = environment()
  entry = next((e for e in doc["exact"] if e["environment"] == env), None)
  if entry is None:
    entry = {"environment": env, "digests": {}}
    doc["exact"].append(entry)
  if not exact_only:
    if doc.get("stable_environment", stable_environment()) != stable_environment():
      doc["stable"] = {}  # pins of another set-up cannot be mixed with these
    doc["stable_environment"] = stable_environment()
  with tempfile.TemporaryDirectory() as tmp:
    for method in methods:
      w = Path(tmp) / method
      check_ok(run_launcher("search", *METHODS[method], f"--workdir={w}"))
      entry["digests"][method] = digest(method, w)
      if not exact_only:
        doc["stable"][method] = stable_view(method, w)
      print(method, entry["digests"][method], flush=True)
  PINS.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
  args = sys.argv[1:]
  if not args or args[0] != "record" or any(a not in METHODS for a in args[1:] if a[0] != "-"):
    raise SystemExit(
      "usage: JAX_NUM_CPU_DEVICES=2 python -m tests.pins record [--exact-only] "
      f"[{' '.join(METHODS)}]"
    )
  chosen = [a for a in args[1:] if a in METHODS] or list(METHODS)
  record(chosen, exact_only="--exact-only" in args)
