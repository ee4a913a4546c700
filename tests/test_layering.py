"""DESIGN: rooms import one way. Parse every import and fail when an arrow points back."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

DOC = ROOT / "docs" / "architecture.md"


def _documented_arrows() -> dict[str, set[str]]:
  r"""Return room -> rooms it imports (besides core), read from docs/architecture.md's room table.

  The doc is the one statement of the arrows: a row is `| \`room\` | holds | \`a\`, \`b\` |` (or
  `nothing`), and the code must import exactly that, so an arrow added or dropped in the code fails
  here until the doc says it, and the doc cannot keep an arrow the code lost.
  """
  rows = {}
  for line in DOC.read_text().splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 3 and cells[0].startswith("`") and cells[0].endswith("`"):
      rows[cells[0].strip("`")] = set(re.findall(r"`(\w+)`", cells[2]))
  return rows


# room -> rooms it may import (besides itself and core). `experiment` (entry points) is imported by
# nothing in the library: only the launchers and the package's public API reach it.
ALLOWED = _documented_arrows()
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


def _actual_arrows() -> dict[str, set[str]]:
  arrows = {room: set() for room in ALLOWED}
  for path in _files():
    room = _room(path)
    for _, name in _nasr_imports(path):
      parts = name.split(".")
      if parts[0] == "nasr" and len(parts) > 1 and parts[1] in ALLOWED:
        arrows.setdefault(room, set()).add(parts[1])
  return {room: targets - {room, "core"} for room, targets in arrows.items()}


def test_every_room_is_in_the_doc():
  rooms = {_room(p) for p in _files()} - {"__init__", "configs", "launch"}
  assert rooms <= set(ALLOWED), f"rooms missing from {DOC.name}: {sorted(rooms - set(ALLOWED))}"


def test_the_doc_states_exactly_the_arrows_the_code_has():
  actual = _actual_arrows()
  differ = {
    room: {
      "in the code only": sorted(actual[room] - ALLOWED[room]),
      "in the doc only": sorted(ALLOWED[room] - actual[room]),
    }
    for room in ALLOWED
    if actual.get(room, set()) != ALLOWED[room]
  }
  assert not differ, f"update the room table of {DOC.name}: {differ}"


def test_launchers_only_call_experiment():
  for path in sorted((ROOT / "launch").glob("*.py")):
    for lineno, name in _nasr_imports(path):
      parts = name.split(".")
      if parts[0] == "nasr" and len(parts) > 1:
        assert parts[1] in ("experiment", "core", "writers"), f"{path.name}:{lineno} imports {name}"


def _module_name(path: Path) -> str:
  rel = path.relative_to(ROOT).with_suffix("")
  parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
  return ".".join(parts)


def _module_graph() -> dict[str, set[str]]:
  """Return module -> nasr modules it imports.

  `from nasr.x import y` is an edge to nasr.x.y when that is a module, else to nasr.x; a module's
  own parent packages are not edges (Python has them initialised before the module runs).
  """
  paths = sorted((ROOT / "nasr").rglob("*.py"))
  modules = {_module_name(p) for p in paths}

  def resolve(name: str) -> str:
    while name and name not in modules:
      name = name.rpartition(".")[0]
    return name

  graph = {}
  for path in paths:
    me, deps = _module_name(path), set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
      if isinstance(node, ast.Import):
        targets = [resolve(a.name) for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        subs = [f"{node.module}.{a.name}" for a in node.names]
        targets = [resolve(t) for t in subs]
      else:
        continue
      for t in targets:
        if t.startswith("nasr.") and t != me and not me.startswith(t + "."):
          deps.add(t)
    graph[me] = deps
  return graph


def test_no_import_cycle_among_modules():
  graph = _module_graph()
  state: dict[str, int] = {}  # 1 = on the current path, 2 = done

  def visit(node: str, path: list[str]) -> None:
    state[node] = 1
    for dep in sorted(graph.get(node, ())):
      if state.get(dep) == 1:
        cycle = path[path.index(dep) :] + [dep] if dep in path else [node, dep]
        raise AssertionError("import cycle: " + " -> ".join(cycle))
      if dep not in state:
        visit(dep, path + [dep])
    state[node] = 2

  for node in sorted(graph):
    if node not in state:
      visit(node, [node])


def test_nothing_in_the_library_imports_experiment():
  for path in _files():
    if path.name == "__init__.py" and path.parent == ROOT / "nasr":
      continue  # the public API re-exports the entry points
    for lineno, name in _nasr_imports(path):
      assert not name.startswith("nasr.experiment"), f"{path.name}:{lineno} imports {name}"


def _long_functions(path: Path, limit: int):
  tree = ast.parse(path.read_text(), filename=str(path))
  for node in ast.walk(tree):
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
      length = node.end_lineno - node.lineno + 1
      if length > limit:
        yield node.name, node.lineno, length


def test_search_functions_stay_short():
  """Search methods are wiring over shared pieces; a long function there is a loop being copied."""
  long = [
    f"{p.name}:{line} {name} ({n} lines)"
    for p in sorted((ROOT / "nasr" / "searches").glob("*.py"))
    for name, line, n in _long_functions(p, limit=80)
  ]
  assert not long, long
