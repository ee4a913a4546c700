"""The search-space registry and the JSON files that hold a searched architecture.

`get("deconas", blocks=4)` builds a registered space by name; unknown names and unknown keyword
arguments raise ConfigError naming what exists. A search writes its result with `save_arch`:

  {"space": "deconas", "space_kwargs": {...}, "arch": {...}, "tokens": [...], "psnr": ...}

and `load_arch` reads it back as (space, arch); extra keys such as "psnr" are allowed.
"""

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from nasr.core.checks import finite_json
from nasr.core.errors import ConfigError, TokenError
from nasr.core.registry import Registry

SPACES: Registry[Any] = Registry("search space")


def register(name: str):
  """Return a class decorator that registers a space class as `name` and returns the class.

  A space is a dataclass: its init fields are the settings it declares (config.space.<field>),
  which `space_fields` and `get` read without inspecting a signature.
  """

  def decorator(cls):
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
      raise TypeError(
        f"space {name!r}: register a dataclass (its fields are the space's settings), got {cls!r}"
      )
    return SPACES.register(name, cls)

  return decorator


def space_fields(name: str) -> list[str]:
  """Return the settings the registered space `name` declares: its dataclass's init fields."""
  return [f.name for f in dataclasses.fields(SPACES.get(name)) if f.init]


def get(name: str, **kwargs):
  """Return the registered search space `name` built with `kwargs`, or raise ConfigError."""
  factory = SPACES.get(name)
  fields = space_fields(name)
  for key in kwargs:
    if key not in fields:
      raise ConfigError(
        f"search space {name!r} has no setting {key!r}; valid settings: {', '.join(fields)}"
      )
  return factory(**kwargs)


def save_arch(path: str | os.PathLike, space_name: str, space_kwargs: dict, arch, **extra) -> None:
  """Write `arch` of space `space_name` (built with `space_kwargs`) to a JSON file at `path`.

  Args:
    path: the file to write (its folder must exist).
    space_name: a registered space name.
    space_kwargs: the keyword arguments the space was built with.
    arch: an architecture of that space.
    **extra: more JSON-serialisable entries to store beside it (e.g. psnr=32.1).
  """
  space = get(space_name, **space_kwargs)
  record = {
    "space": space_name,
    "space_kwargs": dict(space_kwargs),
    "arch": arch.to_dict(),
    "tokens": [int(t) for t in space.encode(arch)],
    **extra,
  }
  Path(path).write_text(json.dumps(finite_json(record), indent=2, allow_nan=False) + "\n")


def load_arch(path: str | os.PathLike, **overrides):
  """Return (space, arch) read from a file written by `save_arch`.

  Args:
    path: the JSON file.
    **overrides: space keyword arguments that replace the stored ones (e.g. channels=96 to
      retrain wider); the architecture is re-decoded in the new space from its tokens.
  """
  path = Path(path)
  try:
    record = json.loads(path.read_text())
  except FileNotFoundError:
    raise ConfigError(f"{path}: architecture file not found") from None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConfigError(f"{path}: not a readable JSON architecture file ({e})") from None
  if not isinstance(record, dict) or "space" not in record:
    raise ConfigError(f"{path}: needs a JSON object with a 'space' key")
  kwargs = record.get("space_kwargs", {})
  if not isinstance(kwargs, dict):
    raise ConfigError(f"{path}: 'space_kwargs' must be an object, got {kwargs!r}")
  try:
    space = get(record["space"], **{**kwargs, **overrides})
  except ConfigError as e:
    raise ConfigError(f"{path}: {e}") from None
  try:
    if "tokens" in record:
      arch = space.decode(record["tokens"])
      if "arch" in record:  # both: they must say the same (an edited file may not)
        _check_same(arch.to_dict(), space.arch_from_dict(record["arch"]).to_dict())
    elif "arch" in record:
      arch = space.arch_from_dict(record["arch"])
    else:
      raise ConfigError(f"{path}: needs a 'tokens' list or an 'arch' object")
  except TokenError as e:
    raise TokenError(f"{path}: {e}") from None
  return space, arch


def _check_same(from_tokens, from_arch, where: str = "arch") -> None:
  """Raise TokenError naming the first entry where the two architecture dicts differ."""
  if isinstance(from_tokens, dict) and isinstance(from_arch, dict):
    for key in sorted(set(from_tokens) | set(from_arch)):
      _check_same(from_tokens.get(key), from_arch.get(key), f"{where}.{key}")
    return
  if isinstance(from_tokens, list | tuple) and isinstance(from_arch, list | tuple):
    if len(from_tokens) == len(from_arch):
      for i, (a, b) in enumerate(zip(from_tokens, from_arch, strict=True)):
        _check_same(a, b, f"{where}[{i}]")
      return
  if from_tokens != from_arch:
    raise TokenError(
      f"'tokens' and 'arch' disagree at {where}: the tokens say {from_tokens!r}, the arch says "
      f"{from_arch!r}; fix or remove one of them"
    )
