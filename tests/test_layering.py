"""DESIGN: rooms import one way. Parse every import and fail when an arrow points back."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# room -> rooms it may import (besides itself and core).
ALLOWED = {
  "core": set(),
  "ops": set(),
  "data": set(),
  "strategies": set(),
  "spaces": {"ops"},
  "estimation": {"ops", "spaces"},
  "inference": {"ops", "spaces", "estimation"},
  "parallel": set(),
  "writers": set(),
  "checkpoint": set(),
  "experiment": {
    "ops",
    "spaces",
    "estimation",
    "data",
    "strategies",
    "inference",
    "parallel",
    "writers",
    "checkpoint",
    "searches",
  },
  # Search methods wire rooms as experiment does and use its helpers; experiment imports them only
  # inside run_search, to register them.
  "searches": {
    "ops",
    "spaces",
    "estimation",
    "data",
    "strategies",
    "inference",
    "parallel",
    "writers",
    "checkpoint",
    "experiment",
  },
}
# Modules that may only import the numpy world, never JAX (the data pipeline runs on the host).
NO_JAX = {"data"}


def _room(module_path: Path) -> str:
  rel = module_path.relative_to(ROOT / "nasr")
  return rel.parts[0].removesuffix(".py")


def _nasr_imports(path: Path):
  tree = ast.parse(path.read_text(), filename=str(path))
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    else:
      continue
    for name in names:
      yield node.lineno, name


def _files():
  return sorted(
    p for p in (ROOT / "nasr").rglob("*.py") if p.name != "__init__.py" or p.parent != ROOT / "nasr"
  )


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path):
  room = _room(path)
  allowed = ALLOWED[room] | {room, "core"}
  for lineno, name in _nasr_imports(path):
    parts = name.split(".")
    if parts[0] == "nasr" and len(parts) > 1:
      target = parts[1]
      if target in ALLOWED:
        assert target in allowed, f"{path.name}:{lineno} imports nasr.{target} from room {room}"
    if room in NO_JAX:
      assert parts[0] not in ("jax", "flax", "optax"), f"{path.name}:{lineno} imports {name}"
    if parts[0] == "launch" or parts[0] == "configs":
      raise AssertionError(f"{path.name}:{lineno}: the library must not import {parts[0]}")


def test_launchers_only_call_experiment():
  for path in sorted((ROOT / "launch").glob("*.py")):
    for lineno, name in _nasr_imports(path):
      parts = name.split(".")
      if parts[0] == "nasr" and len(parts) > 1:
        assert parts[1] in ("experiment", "core", "writers"), f"{path.name}:{lineno} imports {name}"
