"""The `nasr` command: nasr train|evaluate|upscale|export|latency|search|diagnose|bench|config [flags].

  nasr search --config=deconas:tiny --workdir=W     # a shipped config by name[:preset]
  nasr train --config=my_config.py:tiny --workdir=W # or any config file
  nasr config --list                                # the shipped configs and their presets
  nasr config deconas:tiny                          # every key of a config, with its help

Each command is the launcher `python -m launch.<command>` with the same flags.
"""

import ast
import importlib
import io
import sys
import tokenize
from pathlib import Path

from nasr import experiment
from nasr.core.errors import NasrError

COMMANDS = {
  "train": "train an SR network from scratch (or retrain a searched architecture)",
  "evaluate": "Y-PSNR/SSIM of a checkpoint (or bicubic) on benchmark folders, with bicubic beside",
  "upscale": "upscale an image file or folder with a checkpoint (or an ensemble)",
  "export": "export a checkpoint to StableHLO / ONNX files with a card, checked on a photograph",
  "latency": "the median latency of a network on this host through XLA and onnxruntime",
  "search": "architecture search (DeCoNAS, HNAS, DARTS-SR, GP-NAS); no --config lists the methods",
  "diagnose": "does a finished search work? shared-weight vs stand-alone ranking, random baseline",
  "bench": "the tabular SR benchmark: build the table (bench build), score strategies (bench evaluate)",
  "config": "list the shipped configs (--list) or print one with each key's help",
}


def _usage() -> str:
  """Return the command's usage text."""
  lines = ["usage: nasr <command> [--config=<name or file>[:preset]] [--workdir=W] [flags]", ""]
  lines += [f"  {name:<10}{what}" for name, what in COMMANDS.items()]
  lines += ["", "nasr <command> --help shows a command's flags; nasr config --list its configs."]
  return "\n".join(lines)


def _comments(source: str) -> tuple[dict[int, str], dict[int, str]]:
  """Return (trailing comment by line, whole-line comment by line) of Python source."""
  trailing, whole = {}, {}
  code_lines = set()
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type == tokenize.COMMENT:
      target = trailing if tok.start[0] in code_lines else whole
      target[tok.start[0]] = tok.string.lstrip("#").strip()
    elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
      code_lines.update(range(tok.start[0], tok.end[0] + 1))
  return trailing, whole


def _attribute_path(node: ast.expr, aliases: dict[str, str] | None = None) -> str | None:
  """Return "a.b" for the target `c.a.b`, the root variable dropped, or replaced by the section it
  names (`r.b` is "strategy.reinforce.b" after `r = c.strategy.reinforce`); None for others."""
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  if not isinstance(node, ast.Name):
    return None
  root = (aliases or {}).get(node.id)
  return ".".join(([root] if root else []) + parts[::-1]) or None


def _aliases(tree: ast.AST) -> dict[str, str]:
  """Return {variable: dotted key} of the variables bound to a config section in `tree`."""
  out = {}
  for node in ast.walk(tree):
    if not isinstance(node, ast.Assign):
      continue
    names = [t.id for t in node.targets if isinstance(t, ast.Name)]
    sections = [
      _attribute_path(e) for e in [*node.targets, node.value] if isinstance(e, ast.Attribute)
    ]
    if names and sections and sections[0]:
      out.update(dict.fromkeys(names, sections[0]))
  return out


def _presets_of(test: ast.expr) -> set[str] | None:
  """Return the presets an `if` test selects (`preset == "x"`, `preset in ("x", "y")`), or None."""
  if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
    return None
  if not (isinstance(test.left, ast.Name) and test.left.id == "preset"):
    return None
  right = test.comparators[0]
  if isinstance(test.ops[0], ast.Eq) and isinstance(right, ast.Constant):
    return {right.value}
  if isinstance(test.ops[0], ast.In) and isinstance(right, ast.Tuple | ast.List | ast.Set):
    return {e.value for e in right.elts if isinstance(e, ast.Constant)}
  return None


def _assignments(tree: ast.AST):
  """Yield (assignment, presets it runs for: None when always) of every assignment in `tree`.

  A function called only inside a preset's block (`if preset == "final": return _final()`)
  runs for that preset.
  """

  def visit(node: ast.AST, presets, kinds):
    if isinstance(node, kinds):
      yield node, presets
    if isinstance(node, ast.FunctionDef) and node.name in called_under:
      presets = called_under[node.name]
    if isinstance(node, ast.If):
      selected = _presets_of(node.test)
      inner = selected if selected is not None else presets
      for child in node.body:
        yield from visit(child, inner if presets is None else presets & inner, kinds)
      for child in node.orelse:  # an elif names its own presets; an else runs for the rest
        yield from visit(child, presets, kinds)
      return
    for child in ast.iter_child_nodes(node):
      yield from visit(child, presets, kinds)

  called_under: dict[str, set[str]] = {}
  for call, presets in visit(tree, None, ast.Call):
    if presets is not None and isinstance(call.func, ast.Name):
      called_under[call.func.id] = called_under.get(call.func.id, set()) | presets
  yield from visit(tree, None, ast.Assign)


def key_help(files: list[Path], preset: str | None = None) -> dict[str, str]:
  """Return {dotted key as assigned in the files: its comment}; see `ranked_key_help`."""
  return {path: text for path, (_, text) in ranked_key_help(files, preset).items()}


def ranked_key_help(files: list[Path], preset: str | None = None) -> dict[str, tuple[int, str]]:
  """Return {dotted key as assigned in the files: (rank, its comment)} (trailing, or the block
  above); rank 0 for the assignment `preset` runs, 1 unconditional, 2 another preset's.

  A key assigned in several places takes the comment of the assignment `preset` runs (an
  `if preset == ...` block naming it), else of an unconditional one, else of any: so a preset
  never shows the comment of another preset's value.
  """
  found: dict[str, tuple[int, str]] = {}  # path -> (rank: 0 best, text)
  for file in files:
    source = file.read_text()
    trailing, whole = _comments(source)
    tree = ast.parse(source, filename=str(file))
    aliases = _aliases(tree)
    for node, presets in _assignments(tree):
      text = trailing.get(node.lineno, "")
      if not text:
        above, line = [], node.lineno - 1
        while line in whole:
          above.insert(0, whole[line])
          line -= 1
        text = " ".join(above)
      rank = 1 if presets is None else (0 if preset is not None and preset in presets else 2)
      for target in node.targets:
        path = _attribute_path(target, aliases)
        if path and text and (path not in found or rank < found[path][0]):
          found[path] = (rank, text)
  return found


def _with_imports(file: Path) -> list[Path]:
  """Return `file` and the shipped config files it imports, directly or not, in that order."""
  files, queue = [], [file]
  while queue:
    current = queue.pop(0)
    if current in files or not current.is_file():
      continue
    files.append(current)
    for node in ast.walk(ast.parse(current.read_text(), filename=str(current))):
      if isinstance(node, ast.ImportFrom) and node.module == "nasr.configs":
        queue += [experiment.CONFIG_DIR / f"{a.name}.py" for a in node.names]
  return files


def _help_for(key: str, helps: dict) -> str:
  """Return the help of `key` among its assigned suffixes ("data.patch_size", "patch_size"): the
  best ranked (with `ranked_key_help`'s ranks), the longest of equal rank."""
  parts = key.split(".")
  best = None
  for i in range(len(parts)):
    found = helps.get(".".join(parts[i:]))
    if not found:
      continue
    rank, text = found if isinstance(found, tuple) else (1, found)
    if best is None or rank < best[0]:
      best = (rank, text)
  return best[1] if best else ""


def _flatten(config, prefix: str = "") -> list[tuple[str, object]]:
  """Return [(dotted key, value)] of a ConfigDict, depth first in key order."""
  out = []
  for key in config.keys():
    value = config[key]
    if hasattr(value, "keys") and not isinstance(value, dict):
      out += _flatten(value, f"{prefix}{key}.")
    else:
      out.append((f"{prefix}{key}", value))
  return out


def show_config(spec: str) -> str:
  """Return every key of a config (name or file [:preset]) with its value and help."""
  path = experiment.config_path(spec)
  config = experiment.load_config(path)
  file = Path(path.rsplit(":", 1)[0] if ":" in Path(path).name else path)
  helps = ranked_key_help(_with_imports(file), config.get("preset"))
  rows = [(k, repr(v), _help_for(k, helps)) for k, v in _flatten(config)]
  width = max(len(k) + len(v) for k, v, _ in rows) + 3
  lines = [f"# {spec}: override any key with --config.<key>=<value>"]
  for key, value, text in rows:
    line = f"{key} = {value}"
    lines.append(f"{line:<{width}}  # {text}" if text else line)
  return "\n".join(lines)


def list_configs() -> str:
  """Return the shipped configs, their presets and what each is for."""
  lines = ["configs (use as --config=<name>[:preset], or give a path to your own .py file):"]
  configs = experiment.describe_configs()
  width = max(len(name) for name in configs) + 2
  for name, d in configs.items():
    method = f" [search method {d['method']}]" if d["method"] else ""
    lines.append(f"  {name:<{width}}{' | '.join(d['presets']):<32}{d['doc']}{method}")
  return "\n".join(lines)


def _config_command(args: list[str]) -> int:
  """Run `nasr config ...`; return the exit code."""
  if not args or args[0] in ("--list", "-l", "list"):
    print(list_configs())
    return 0
  if args[0] in ("-h", "--help"):
    print("usage: nasr config --list | nasr config <name or file>[:preset]")
    return 0
  try:
    print(show_config(args[0]))
  except (NasrError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


def main(argv: list[str] | None = None) -> int:
  """Run `nasr <command> ...`; return the exit code (the launchers exit themselves)."""
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(_usage())
    return 0 if argv else 2
  command, rest = argv[0], argv[1:]
  if command == "config":
    return _config_command(rest)
  if command not in COMMANDS:
    print(
      f"error: unknown command {command!r}; the commands are: {', '.join(COMMANDS)}",
      file=sys.stderr,
    )
    return 2
  launcher = importlib.import_module(f"{__package__}.{command}")
  sys.argv = [f"nasr {command}", *rest]
  launcher.cli()
  return 0


if __name__ == "__main__":
  sys.exit(main())
