"""Search spaces and baseline networks: every network maps NHWC [0, 1] RGB to `scale` times it."""

from nasr.core.errors import ConfigError
from nasr.spaces import baselines
from nasr.spaces.baselines import EDSR, MODELS, Bicubic, build_model, model_fields


def build_from_file(path: str, scale: int):
  """Return the network described by a search-result file (not supported yet)."""
  del scale
  raise ConfigError(f"{path}: search result files are not supported yet")


__all__ = [
  "EDSR",
  "MODELS",
  "Bicubic",
  "baselines",
  "build_from_file",
  "build_model",
  "model_fields",
]
