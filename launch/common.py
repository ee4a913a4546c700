"""What every launcher shares: the --config/--workdir flags and one-line errors instead of tracebacks."""

import sys
from collections.abc import Callable
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from nasr import writers
from nasr.core.errors import DivergedError, NasrError

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Config file, optionally with a preset: configs/<file>.py:<preset>.",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and outputs.")


def _one_line(error: Exception) -> str:
  """Return the first and last lines of a message that embeds a traceback (ml_collections does)."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  if len(lines) <= 1:
    return lines[0] if lines else type(error).__name__
  return f"{lines[0].rstrip(':')}: {lines[-1]}"


def _exit_with(error: Exception, argv: list[str]) -> None:
  """Print one line naming the culprit and exit with status 2."""
  if isinstance(error, (AttributeError, KeyError)):  # ml_collections: no such config key
    key = str(error).strip("'\"")
    arg = next((a for a in argv if a.startswith("--config.") and key in a), "")
    print(f"error: unknown config key {key!r}" + (f" in {arg}" if arg else ""), file=sys.stderr)
  else:
    print(f"error: {_one_line(error)}", file=sys.stderr)
  sys.exit(2)


# What bad flags raise while parsing: flags.Error, or the config file's own errors (ml_collections
# loads the file lazily, on first access of the flag's value).
_FLAG_ERRORS = (flags.Error, NasrError, OSError, AttributeError, KeyError, TypeError, ValueError)


def run(main: Callable[[object, str], object], needs_config: bool = True) -> None:
  """Run `main(config, workdir)` as an absl app; user errors end with one line and exit code 2."""

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
      if _CONFIG.present:
        filename = config_flags.get_config_filename(flags.FLAGS["config"])
        if not Path(filename).is_file() and ":" in filename:
          filename = filename.rsplit(":", 1)[0]  # "file.py:preset"
        if not Path(filename).is_file():
          raise NasrError(f"config file {filename} does not exist")
      config = _CONFIG.value
      if config is not None:
        config.keys()  # a config that failed to load raises here, not deep inside the run
    except _FLAG_ERRORS as e:
      _exit_with(e, sys.argv)
    if needs_config and config is None:
      raise app.UsageError("--config is required, e.g. --config=configs/train.py:tiny")
    if not _WORKDIR.value:
      raise app.UsageError("--workdir is required")
    logging.set_verbosity(logging.INFO)
    writers.quiet_library_logs()
    try:
      main(config, _WORKDIR.value)
    except (NasrError, DivergedError, FileNotFoundError) as e:
      # Bad input or divergence: the message already names the culprit, a traceback would bury it.
      _exit_with(e, sys.argv)

  def _parse_flags(argv):
    try:
      return flags.FLAGS(argv)
    except _FLAG_ERRORS as e:
      _exit_with(e, argv)

  app.run(_main, flags_parser=_parse_flags)
