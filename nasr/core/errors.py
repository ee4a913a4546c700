"""Errors that speak the user's language (DESIGN rule 8)."""


class NasrError(ValueError):
  """Bad user input: a config, an image, a token sequence or a genotype."""


class ConfigError(NasrError):
  """A config key, value or preset is wrong."""


class DataError(NasrError):
  """An image, folder or dataset cannot be used."""


class TokenError(NasrError):
  """A token sequence or genotype does not fit its search space."""


class CheckpointError(NasrError):
  """A checkpoint is damaged, missing, or does not fit the network being restored."""


class CheckpointMismatchError(CheckpointError):
  """A checkpoint's arrays do not have the shapes of the state being restored (another run)."""


class ExportError(NasrError):
  """A trained network cannot be exported to the format asked (an op the exporter does not take,
  or a file that does not compute what the network computes)."""


class WorkdirError(NasrError):
  """A workdir holds another kind of run, or a live process holds it."""


class DivergedError(FloatingPointError):
  """Training produced NaN or Inf; the message names the step and the last good checkpoint."""


class Interrupted(Exception):
  """A run stopped on SIGINT / SIGTERM after saving a checkpoint; the message says where."""
