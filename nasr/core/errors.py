"""Errors that speak the user's language (DESIGN rule 8)."""


class NasrError(ValueError):
  """Bad user input: a config, an image, a token sequence or a genotype."""


class ConfigError(NasrError):
  """A config key, value or preset is wrong."""


class DataError(NasrError):
  """An image, folder or dataset cannot be used."""


class TokenError(NasrError):
  """A token sequence or genotype does not fit its search space."""


class DivergedError(FloatingPointError):
  """Training produced NaN or Inf; the message names the step and the last good checkpoint."""
