"""Explicit registries: plain dicts filled by import, with errors that list the choices."""

from collections.abc import Iterator
from typing import Generic, TypeVar

from nasr.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
  """A named mapping from string keys to factories; lookups of unknown keys list what exists."""

  def __init__(self, kind: str):
    self.kind = kind
    self._items: dict[str, T] = {}

  def register(self, name: str, item: T | None = None):
    """Register `item` under `name`; without `item`, return a decorator that does."""
    if item is None:

      def decorator(obj: T) -> T:
        self.register(name, obj)
        return obj

      return decorator
    if name in self._items:
      raise ValueError(f"{self.kind} {name!r} is registered twice")
    self._items[name] = item
    return item

  def unregister(self, name: str) -> T:
    """Remove `name` and return its item (a notebook redefining it, a test's throwaway item)."""
    if name not in self._items:
      raise KeyError(f"{self.kind} {name!r} is not registered")
    return self._items.pop(name)

  def get(self, name: str) -> T:
    """Return the item registered as `name`, or raise ConfigError naming the choices."""
    try:
      return self._items[name]
    except KeyError:
      choices = ", ".join(sorted(self._items)) or "(none yet)"
      raise ConfigError(f"unknown {self.kind} {name!r}; available: {choices}") from None

  def names(self) -> list[str]:
    """Return the registered names, sorted."""
    return sorted(self._items)

  def __contains__(self, name: object) -> bool:
    return name in self._items

  def __iter__(self) -> Iterator[str]:
    return iter(self.names())

  def __len__(self) -> int:
    return len(self._items)
