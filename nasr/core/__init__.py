"""Shared types for every room: tokens, token specs, batches, registries and errors."""

from nasr.core.checks import check_scale
from nasr.core.errors import ConfigError, DataError, DivergedError, NasrError, TokenError
from nasr.core.registry import Registry
from nasr.core.types import Batch, Tokens, TokenSpec

__all__ = [
  "Batch",
  "ConfigError",
  "DataError",
  "DivergedError",
  "NasrError",
  "Registry",
  "TokenError",
  "TokenSpec",
  "Tokens",
  "check_scale",
]
