"""What every launcher shares: the --config/--workdir flags and one-line errors instead of tracebacks.

Any exception ends the run with `error: ...` on one line and exit code 2; its full traceback goes
to `<workdir>/error.log` (and to stderr with --verbose or NASR_TRACEBACK=1).

Several processes (config.distributed, or srun / mpirun / a Kubernetes Indexed Job): every
process runs the same command; the entry points of nasr.experiment start jax.distributed before
any JAX call (nasr.parallel), and a process whose partner died ends with one line saying so.
"""

import datetime
import logging as pylogging
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from nasr import experiment, writers
from nasr.core.errors import DivergedError, Interrupted, NasrError

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "A shipped config's name or a config file, optionally with a preset: deconas:tiny, "
  "train:quick, configs/train.py:tiny, my_config.py. `nasr config --list` lists the shipped "
  "configs and their presets; `nasr config <name>` shows every key with its help.",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and outputs.")
_VERBOSE = flags.DEFINE_bool(
  "verbose", False, "Show the Python traceback of an error (it also goes to <workdir>/error.log)."
)
ERROR_LOG = "error.log"
RUN_LOG = "log.txt"  # every log line of the runs in a workdir, with absl's full prefix


class _ConsoleFormatter(pylogging.Formatter):
  """Return "HH:MM:SS message" (warnings and errors say so): the console's short form."""

  def format(self, record: pylogging.LogRecord) -> str:
    when = self.formatTime(record, "%H:%M:%S")
    level = "" if record.levelno < pylogging.WARNING else f"{record.levelname.lower()}: "
    return f"{when} {level}{record.getMessage()}"


class _WorkdirLog(pylogging.Handler):
  """Append every record to <workdir>/log.txt in absl's full format, once the workdir exists (a
  run refused before any work creates nothing)."""

  def __init__(self, workdir: str):
    super().__init__()
    self._path = Path(workdir) / RUN_LOG
    self.setFormatter(logging.PythonFormatter())

  def emit(self, record: pylogging.LogRecord) -> None:
    if not self._path.parent.is_dir():
      return
    try:
      with self._path.open("a") as f:
        f.write(self.format(record) + "\n")
    except OSError:
      pass  # a full or read-only disk: the console still has the line


def _logs(workdir: str) -> None:
  """Log to the console as "HH:MM:SS message" and to <workdir>/log.txt with absl's prefix."""
  logging.get_absl_handler().setFormatter(_ConsoleFormatter())
  logging.get_absl_logger().addHandler(_WorkdirLog(workdir))


def _log_traceback(workdir: str | None) -> Path | None:
  """Append the current exception's traceback to <workdir>/error.log; return it (None: no log)."""
  if not workdir or not Path(workdir).is_dir():
    return None
  path = Path(workdir) / ERROR_LOG
  try:
    with path.open("a") as f:
      f.write(f"--- {datetime.datetime.now().isoformat(timespec='seconds')} {' '.join(sys.argv)}\n")
      f.write(traceback.format_exc())
  except OSError:
    return None  # a full or read-only disk: the one-line error still says what went wrong
  return path


def _log_unraisable(workdir: str) -> None:
  """Send exceptions Python cannot raise (background-thread callbacks) to <workdir>/error.log.

  A checkpoint save that fails on a full disk makes tensorstore's writer threads call into an
  asyncio loop that is already closed, dozens of times; each would print a traceback to the
  terminal, interleaved with (and even inside) the one-line error that says what happened.
  """

  def hook(unraisable) -> None:
    try:
      with (Path(workdir) / ERROR_LOG).open("a") as f:
        f.write(f"--- ignored in a background thread: {unraisable.err_msg or ''}\n")
        f.writelines(
          traceback.format_exception(
            unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback
          )
        )
    except OSError:
      pass  # a full disk: nothing to keep it on, and the terminal is for the run's own error

  sys.unraisablehook = hook


def _verbose() -> bool:
  return _VERBOSE.value or os.environ.get("NASR_TRACEBACK", "") not in ("", "0")


def _one_line(error: Exception) -> str:
  """Return the first and last lines of a message that embeds a traceback (ml_collections does)."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  if len(lines) <= 1:
    return lines[0] if lines else type(error).__name__
  return f"{lines[0].rstrip(':')}: {lines[-1]}"


def _sigterm_as_ctrl_c(signum, frame) -> None:
  """Raise KeyboardInterrupt: a SIGTERM outside training and searches ends the run like Ctrl-C."""
  del signum, frame
  raise KeyboardInterrupt


def _last_word(line: str, code: int, workdir: str | None = None) -> None:
  """Print `line` as stderr's last line and exit with `code` at once (never returns).

  Background writers that failed (a checkpoint save on a full disk) may still print from their
  threads, and an interpreter teardown makes them print more; so stderr is pointed at
  <workdir>/error.log (or /dev/null) first and the line goes to the saved terminal descriptor.
  """
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  logging.flush()
  terminal = os.dup(2)
  log = Path(workdir) / ERROR_LOG if workdir and Path(workdir).is_dir() else None
  try:
    sink = os.open(log if log else os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  except OSError:
    sink = os.open(os.devnull, os.O_WRONLY)
  os.dup2(sink, 2)
  try:
    os.write(terminal, (line + "\n").encode(errors="replace"))
  except OSError:
    pass
  os._exit(code)


def _unknown_key(error: Exception, argv: list[str]) -> str:
  """Return 'unknown config key ...' for ml_collections' error, with its suggestion if it has one."""
  while error.args and isinstance(error.args[0], Exception):  # AttributeError(KeyError(...))
    error = error.args[0]
  raw = str(error.args[0]) if error.args else str(error)
  lines = raw.splitlines() or [""]
  key = lines[0].strip().strip("'\"")
  hint = re.search(r'Did you mean "([^"]+)"', raw)
  arg = next((a for a in argv if a.startswith("--config.") and key in a), "")
  path = arg.removeprefix("--config.").split("=", 1)[0] if arg else key
  parent = path.rpartition(".")[0] if path.endswith(key) else ""
  line = f"unknown config key {path!r}"
  if hint:
    line += f" (did you mean {'.'.join(filter(None, (parent, hint.group(1))))!r}?)"
  return line


# What jax.distributed's errors say when another process of the run died or stopped answering:
# the coordination service (after heartbeat_timeout_s), or gloo's collectives on a CPU backend
# when the peer's socket closes first.
_LOST_PEER = (
  "heartbeat timeout",
  "tasks have crashed",
  "detected fatal errors",
  "Connection reset by peer",
  "Connection closed by peer",
)


def _lost_peer(error: Exception) -> bool:
  """Return whether `error` says another process of a multi-process run was lost."""
  return any(s in str(error) for s in _LOST_PEER)


def _exit_with(error: Exception, argv: list[str], workdir: str | None = None) -> None:
  """Print one line naming the culprit and exit with status 2."""
  if isinstance(error, (AttributeError, KeyError)):  # ml_collections: no such config key
    line = f"error: {_unknown_key(error, argv)}"
  else:
    line = f"error: {_one_line(error)}"
  if workdir is None:  # flag parsing: nothing runs in the background yet
    print(line, file=sys.stderr)
    sys.exit(2)
  _last_word(line, 2, workdir)


# What bad flags raise while parsing: flags.Error, or the config file's own errors (ml_collections
# loads the file lazily, on first access of the flag's value).
_FLAG_ERRORS = (flags.Error, NasrError, OSError, AttributeError, KeyError, TypeError, ValueError)


def _config_file(argv: list[str]) -> Path | None:
  """Return the resolved config file named by --config in `argv` (its preset dropped), if any."""
  for i, arg in enumerate(argv):
    value = arg.removeprefix("--config=") if arg.startswith("--config=") else None
    if arg == "--config" and i + 1 < len(argv):
      value = argv[i + 1]
    if value:
      path = Path(value)
      if not path.is_file() and ":" in path.name:
        path = path.with_name(path.name.rsplit(":", 1)[0])
      return path.resolve()
  return None


def _config_code_error(error: BaseException, argv: list[str]) -> str | None:
  """Return "config file F, line N: Type: message" when `error` was raised by the config file's
  own code (a syntax error, an undefined name): the user's file, not nasr, is at fault."""
  config = _config_file(argv)
  return None if config is None else experiment.config_code_error(error, config)


def _named_configs(argv: list[str]) -> list[str]:
  """Return argv with a shipped config name (`--config=deconas:tiny`) replaced by its file."""
  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith("--config="):
      out[i] = "--config=" + experiment.config_path(arg.removeprefix("--config="))
    elif arg == "--config" and i + 1 < len(out):
      out[i + 1] = experiment.config_path(out[i + 1])
  return out


def _usage(program: str, example: str) -> str:
  """Return the --help text of a launcher: its flags, and where the configs are listed."""
  flag = flags.FLAGS
  lines = [
    f"usage: {program} --config=<name or file>[:preset] --workdir=W [--config.<key>=<value> ...]"
  ]
  lines.append(f"  e.g. {program} --config={example} --workdir=/tmp/nasr/run")
  lines.append("")
  for name in ("config", "workdir", "verbose"):
    lines.append(f"  --{name}: {flag[name].help}")
  lines.append(
    "  --config.<key>=<value>: override one key of the config (nasr config <name> lists them)"
  )
  lines.append("")
  lines.append("shipped configs (nasr config --list says what each is for):")
  for name, d in experiment.describe_configs().items():
    lines.append(f"  {name}: {' | '.join(d['presets'])}")
  return "\n".join(lines)


def run(
  main: Callable[[object, str], object],
  needs_config: bool = True,
  without_config: Callable[[], str] | None = None,
  example: str = "train:tiny",
) -> None:
  """Run `main(config, workdir)` as an absl app; user errors end with one line and exit code 2.

  `without_config` returns what to show when --config is missing (e.g. the search methods);
  `example` is the config the missing-config message suggests.
  """

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
    except Exception as e:  # noqa: BLE001 - the config file's own code failed: one line
      line = _config_code_error(e, _named_configs(sys.argv))
      if line is None:
        raise
      print(f"error: {line}", file=sys.stderr)
      sys.exit(2)
    if needs_config and config is None:
      if without_config is not None:
        print(without_config(), file=sys.stderr)
      raise app.UsageError(
        f"--config is required, e.g. --config={example} (nasr config --list names them all)",
        exitcode=2,
      )
    if not _WORKDIR.value:
      raise app.UsageError("--workdir is required")
    logging.set_verbosity(logging.INFO)
    _logs(_WORKDIR.value)
    writers.quiet_library_logs()
    if not _verbose():
      _log_unraisable(_WORKDIR.value)
    if config is not None and config.get("preset") == "tiny":
      logging.warning(
        "the tiny preset only checks that the pipeline runs (tiny networks, sizes and step "
        "counts): its PSNRs, choices and timings mean nothing; drop ':tiny' for a real run"
      )
    # SIGTERM ends any run as Ctrl-C does (one line, exit 130, not a silent 143); training and
    # searches put their own handler over it while they run, which saves a checkpoint first.
    signal.signal(signal.SIGTERM, _sigterm_as_ctrl_c)
    try:
      main(config, _WORKDIR.value)
    except Interrupted as e:
      print(f"interrupted: {e}", file=sys.stderr)
      sys.exit(130)  # the shell's code for a run stopped by Ctrl-C
    except KeyboardInterrupt:
      # A search stops at once (its checkpoints are per epoch): the last one is what resumes.
      _last_word(
        "interrupted: stopped; the last checkpoint is kept: run the same command to resume",
        130,
        _WORKDIR.value,
      )
    except (NasrError, DivergedError, FileNotFoundError) as e:
      # Bad input or divergence: the message already names the culprit, a traceback would bury it.
      _log_traceback(_WORKDIR.value)
      if _verbose():
        raise
      _exit_with(e, sys.argv, _WORKDIR.value)
    except Exception as e:  # noqa: BLE001 - everything else: one line, the traceback in a file
      log = _log_traceback(_WORKDIR.value)
      if _verbose():
        raise
      if _lost_peer(e):
        _last_word(
          "error: another process of this multi-process run stopped answering (killed, or its "
          "host lost); run every process's command again to resume from the last checkpoint",
          2,
          _WORKDIR.value,
        )
      where = f" (traceback: {log})" if log else " (run with --verbose for the traceback)"
      # Checkpoint saves have finished or failed by now (the runs close their managers on the
      # way out); nothing a failed background writer prints may follow this line.
      _last_word(f"error: {type(e).__name__}: {_one_line(e)}{where}", 2, _WORKDIR.value)

  def _parse_flags(argv):
    if any(a in ("-h", "--help", "--helpshort") for a in argv[1:]):
      print(_usage(argv[0], example))
      sys.exit(0)
    argv = _named_configs(argv)
    try:
      return flags.FLAGS(argv)
    except _FLAG_ERRORS as e:
      _exit_with(e, argv)
    except Exception as e:  # noqa: BLE001 - the config file's own code failed: one line
      line = _config_code_error(e, argv)
      if line is None:
        raise
      print(f"error: {line}", file=sys.stderr)
      sys.exit(2)

  app.run(_main, flags_parser=_parse_flags)
