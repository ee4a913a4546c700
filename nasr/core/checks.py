"""Checks of settings every room shares."""

import numbers

from nasr.core.errors import ConfigError

SCALES = (2, 3, 4)


def check_scale(scale, key: str = "scale") -> int:
  """Return `scale` as an int, or raise ConfigError naming `key` unless it is 2, 3 or 4."""
  ok = (
    not isinstance(scale, bool)
    and isinstance(scale, numbers.Real)
    and float(scale).is_integer()
    and int(scale) in SCALES
  )
  if not ok:
    raise ConfigError(f"{key} must be one of {', '.join(map(str, SCALES))}, got {scale!r}")
  return int(scale)
