"""Entry points: train / evaluate / upscale / export_trained / run_search (config, workdir).

Launchers only parse flags and call these; a Colab user calls the same functions:

  import nasr
  config = nasr.load_config("configs/train.py", "tiny")
  results = nasr.train(config, "/tmp/nasr/tiny")

This module wires rooms together and nothing imports it but the launchers and the package's
public API: the trainer lives in `nasr.training`, data sources in `nasr.data`, search methods in
`nasr.searches`.
"""

import hashlib
import importlib.util
import json
import os
import socket
import traceback
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import flags, logging

from nasr import bench, compute, inference, parallel, searches, training, workdirs, writers
from nasr import data as data_lib
from nasr import export as export_lib
from nasr.core.checks import check_numbers, check_scale
from nasr.core.errors import ConfigError, DataError, NasrError
from nasr.estimation import cost
from nasr.estimation import evaluate as scoring
from nasr.export import latency as export_latency
from nasr.searches import diagnose as diagnostics
from nasr.searches import loop, sweep


def _show_progress() -> None:
  """Let nasr's INFO lines (progress, results) through outside an absl app (Colab, scripts).

  absl shows only warnings until its flags are parsed; the launchers parse them and set INFO.
  """
  if not flags.FLAGS.is_parsed() and logging.get_verbosity() < logging.INFO:
    logging.set_verbosity(logging.INFO)
    writers.quiet_library_logs()


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Train the configured network in `workdir` (resuming); return its final metrics."""
  _show_progress()
  return training.train(config, workdir)  # checks the numbers, then starts jax.distributed


# Entry points and helpers that Colab users reach through `nasr.experiment`.
load_trained = training.load_trained
network_upscaler = inference.network_upscaler
bicubic_upscaler = inference.bicubic_upscaler
SEARCH_METHODS = searches.SEARCH_METHODS


# ---------------------------------------------------------------------------------------------------
# Configs.
# ---------------------------------------------------------------------------------------------------
# The config files ship inside the package (nasr/configs is the repository's configs/), so a
# name such as "deconas" works from any folder after `pip install`.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def config_names() -> list[str]:
  """Return the names of the config files that ship with nasr ("train", "deconas", ...)."""
  return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem not in ("__init__", "common"))


def config_path(spec: str | os.PathLike) -> str:
  """Return "path[:preset]" for a config given as a file path or a shipped name ("deconas:tiny")."""
  spec = str(spec)
  path, _, preset = spec.rpartition(":") if ":" in Path(spec).name else (spec, "", "")
  if Path(path).is_file() or "/" in path or os.sep in path or path.endswith(".py"):
    return spec
  if path not in config_names():
    raise ConfigError(
      f"no config file or config named {path!r}; the configs are: {', '.join(config_names())}"
      " (or give a path to a .py file)"
    )
  return str(CONFIG_DIR / f"{path}.py") + (f":{preset}" if preset else "")


def describe_configs() -> dict[str, dict]:
  """Return {name: {"presets", "doc", "method"}} for every shipped config (method: searches only)."""
  out = {}
  for name in config_names():
    module = _config_module(CONFIG_DIR / f"{name}.py")
    doc = (module.__doc__ or "").strip().split("\n\n")[0]  # the first paragraph
    method = module.get_config().get("method", "")
    out[name] = {
      "presets": list(getattr(module, "PRESETS", ("tiny", "default", "paper"))),
      "doc": " ".join(doc.split()),
      "method": method,
    }
  return out


def config_code_error(error: BaseException, file: str | os.PathLike) -> str | None:
  """Return "config file F, line N: Type: message" when `error` was raised by the code of config
  file `file` (a syntax error, an undefined name), else None."""
  file = Path(file).resolve()
  if isinstance(error, SyntaxError) and error.filename:
    if Path(error.filename).resolve() != file:
      return None
    return f"config file {file}, line {error.lineno}: SyntaxError: {error.msg}"
  tb = traceback.extract_tb(error.__traceback__)
  frames = [f for f in tb if Path(f.filename).resolve() == file]
  if not frames:
    return None
  return f"config file {file}, line {frames[-1].lineno}: {type(error).__name__}: {error}"


def _config_module(file: Path):
  """Return the executed module of a config file."""
  spec = importlib.util.spec_from_file_location(f"nasr_config_{file.stem}", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(
  path: str | os.PathLike, preset: str | None = None, lock: bool = True
) -> ml_collections.ConfigDict:
  """Return `get_config(preset)` of a config file or shipped name ("deconas", "file.py:preset")."""
  path = config_path(path)
  if preset is None and ":" in Path(path).name:
    path, preset = path.rsplit(":", 1)
  file = Path(path)
  if not file.is_file():
    raise ConfigError(f"config file {path} does not exist")
  try:
    module = _config_module(file)
    if not hasattr(module, "get_config"):
      raise ConfigError(f"config file {path} has no get_config(preset) function")
    config = module.get_config(preset) if preset is not None else module.get_config()
  except NasrError:
    raise
  except Exception as e:  # the file's own code failed: say where, in one line
    line = config_code_error(e, file)
    if line is None:
      raise
    raise ConfigError(line) from None
  if lock:
    config.lock()
  return config


# ---------------------------------------------------------------------------------------------------
# Evaluation and upscaling.
# ---------------------------------------------------------------------------------------------------
def _checkpoints(config) -> list[str]:
  return [c.strip() for c in str(config.get("checkpoint", "") or "").split(",") if c.strip()]


def make_upscaler(config: ml_collections.ConfigDict) -> tuple[Callable, int, dict]:
  """Return (upscale_fn, scale, cost) for config.model=bicubic or config.checkpoint=W[,W2,...].

  The multi-level ensemble of Yu et al. (2020): `config.checkpoint=W1,W2,...` averages the SR
  outputs of several trained networks of any families (model ensemble); `config.tile` and
  `config.stride` run each network in overlapping tiles blended by distance-to-centre weights
  (patch ensemble); `config.self_ensemble` averages each tile over its 8 flips/transposes.
  """
  check_numbers(config)
  ckpts = _checkpoints(config)
  tile, stride = inference.check_tiling(config.get("tile", 0), config.get("stride", 0))
  ensemble = config.get("self_ensemble", False)
  if config.get("model") == "bicubic":
    if ckpts:
      raise ConfigError("set either config.model=bicubic or config.checkpoint, not both")
    scale = check_scale(config.scale, "config.scale")
    return bicubic_upscaler(scale), scale, {"params": 0, "macs_per_lr_pixel": 0.0, "gmacs_480": 0.0}
  if not ckpts:
    raise ConfigError(
      "nothing to run: set config.checkpoint=<train workdir> "
      "(comma-separated for a model ensemble) or config.model=bicubic"
    )
  fns, scales, n_params, macs, gmacs = [], set(), 0, 0.0, 0.0
  for ck in ckpts:
    network, params, tcfg = load_trained(ck, config.get("which", "latest"))
    scales.add(int(tcfg.scale))
    fns.append(
      network_upscaler(
        network, params, tile=tile, stride=stride, self_ensemble=ensemble, clip=len(ckpts) == 1
      )
    )
    n_params += cost.count_params(params)
    macs += cost.macs_per_pixel(network, params, (1, 32, 32, 3))
    gmacs += cost.gmacs_480(network, params)
  if len(scales) != 1:
    raise ConfigError(f"checkpoints {ckpts} were trained for different scales {sorted(scales)}")
  scale = scales.pop()
  if config.get("scale") and config.scale != scale:
    raise ConfigError(f"config.scale={config.scale} but the checkpoint was trained for x{scale}")
  if ensemble:
    macs, gmacs = macs * 8, gmacs * 8
  # Model ensemble: the networks may be of any families; their SR outputs are averaged.
  upscale = fns[0] if len(fns) == 1 else inference.model_ensemble(fns)
  return upscale, scale, {"params": n_params, "macs_per_lr_pixel": macs, "gmacs_480": gmacs}


def _score_pairs(upscale_fn: Callable, pairs, scale: int) -> dict:
  """Return score_images' mean PSNR/SSIM/images of `upscale_fn` over one benchmark's pairs."""
  return scoring.score_images(upscale_fn, zip(pairs.names, pairs.lr, pairs.hr, strict=True), scale)


def evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Score a checkpoint (or bicubic) on each benchmark; write `<workdir>/eval.json` and return it.

  Each benchmark's result also holds the MATLAB-bicubic baseline on the same pairs
  (`bicubic: {psnr, ssim}`) and `gain_db`, the PSNR over that baseline.
  """
  _show_progress()
  is_bicubic = config.get("model") == "bicubic"
  if is_bicubic:
    check_scale(config.scale, "config.scale")
  benchmarks = [b.strip() for b in str(config.benchmarks).split(",") if b.strip()]
  if not benchmarks:
    raise ConfigError(
      "config.benchmarks is empty: give one or more folders of HR images (comma-separated, e.g. "
      "--config.benchmarks=path/to/Set5,path/to/Set14) or 'embedded'"
    )
  workdir = workdirs.prepare(workdir)
  upscale, scale, model_cost = make_upscaler(config)
  datasets = {}
  for spec in benchmarks:  # load (and so validate) every benchmark before scoring any
    name = "embedded_val" if spec == "embedded" else Path(spec).name
    datasets[name] = data_lib.load_dataset(spec, scale, "val")
  baseline = bicubic_upscaler(scale)
  results = {}
  for name, pairs in datasets.items():
    r = _score_pairs(upscale, pairs, scale)
    # The evaluated model is the baseline itself: its gain is 0 by definition, not a second run.
    base = r if is_bicubic else _score_pairs(baseline, pairs, scale)
    r["bicubic"] = {"psnr": base["psnr"], "ssim": base["ssim"]}
    r["gain_db"] = r["psnr"] - base["psnr"]
    results[name] = r
    logging.info(
      "%s x%d: PSNR %.4f dB (bicubic %.4f, gain %+.4f), SSIM %.4f over %d images",
      name,
      scale,
      r["psnr"],
      base["psnr"],
      r["gain_db"],
      r["ssim"],
      r["images"],
    )
  out = {
    "params": int(model_cost["params"]),
    "macs_per_lr_pixel": float(model_cost["macs_per_lr_pixel"]),
    # One forward pass on a 480x480 LR image, in G, every conv counted (HNAS's Table II figures
    # are a tenth of this without deconvolutions: nasr.searches.reward.table_ii_mult_adds).
    "gmacs_480": float(model_cost["gmacs_480"]),
    "scale": scale,
    "results": results,
  }
  writers.write_json(workdir / "eval.json", out)
  return out


def format_table(eval_result: dict) -> str:
  """Return the eval results as a fixed-width text table, with the bicubic PSNR and the gain."""
  lines = [
    f"{'dataset':<16}{'scale':>6}{'PSNR':>10}{'SSIM':>9}{'images':>8}{'bicubic':>10}{'gain':>8}"
  ]
  for name, r in eval_result["results"].items():
    # eval.json files written before the baseline was reported have no bicubic key: show "-".
    if "bicubic" in r:
      gain = r.get("gain_db", r["psnr"] - r["bicubic"]["psnr"])
      base = f"{r['bicubic']['psnr']:>10.4f}{gain:>+8.2f}"
    else:
      base = f"{'-':>10}{'-':>8}"
    lines.append(
      f"{name:<16}{'x' + str(eval_result['scale']):>6}{r['psnr']:>10.4f}"
      f"{r['ssim']:>9.4f}{r['images']:>8d}{base}"
    )
  line = (
    f"params {eval_result['params']:,}  multiply-adds per LR pixel "
    f"{eval_result['macs_per_lr_pixel']:,.0f}"
  )
  if "gmacs_480" in eval_result:  # absent from eval.json files written before it was reported
    line += f"  per 480x480 LR image {eval_result['gmacs_480']:,.3f} G"
  lines.append(line)
  return "\n".join(lines)


def upscale(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> list[Path]:
  """Upscale an image file or every image of a folder; return the written PNG paths."""
  src = Path(str(config.input))
  if not str(config.input):
    raise ConfigError("config.input is empty: give an image file or a folder")
  if src.is_dir():
    files = data_lib.list_images(src)
  elif src.is_file():
    files = [src]
  else:
    raise DataError(f"input {src} does not exist")
  workdir = workdirs.prepare(workdir)
  out_dir = Path(config.output) if config.get("output") else workdir / "sr"
  out_dir = workdirs.prepare(out_dir, "config.output")  # before any work, not after it
  upscale_fn, scale, _ = make_upscaler(config)
  written, unreadable = [], []
  for f in files:  # one image in memory at a time
    try:
      img = data_lib.read_image(f)
    except DataError as e:  # the others are still worth upscaling: say so at the end
      logging.warning("%s", e)
      unreadable.append(str(e).removeprefix("cannot read image "))
      continue
    sr = upscale_fn(img)
    path = out_dir / f"{f.stem}_x{scale}.png"
    data_lib.write_png(path, np.clip(np.round(sr * 255.0), 0, 255).astype(np.uint8))
    logging.info(
      "wrote %s (%dx%d -> %dx%d)", path, img.shape[1], img.shape[0], sr.shape[1], sr.shape[0]
    )
    written.append(path)
  if unreadable:
    raise DataError(
      f"{len(unreadable)} of {len(files)} images could not be read and were skipped "
      f"({'; '.join(unreadable)}); the {len(written)} others were written to {out_dir}"
    )
  return written


def export_trained(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Export config.checkpoint (or a model ensemble) to StableHLO / ONNX files in `workdir`, each
  checked against the Flax network and carded; return {format: {"file", "card"}}."""
  _show_progress()
  return export_lib.run(config, workdir)


def latency(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Time the network of `config` (a checkpoint, an arch JSON or a baseline) on this host through
  XLA and onnxruntime; return W/latency.json's record."""
  _show_progress()
  check_numbers(config)
  return export_latency.run(config, workdir)


def latency_report(result: dict) -> str:
  """Return a `latency` result as the table `nasr latency` prints."""
  return export_latency.report(result)


# ---------------------------------------------------------------------------------------------------
# Search.
# ---------------------------------------------------------------------------------------------------
def run_search(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Run the search `config.method` (once per lambda of config.lambdas); return its results."""
  _show_progress()
  method = config.get("method") if config is not None else None
  if not method:
    raise ConfigError(
      f"config.method is not set; available search methods: "
      f"{', '.join(SEARCH_METHODS.names()) or '(none yet)'}"
    )
  record = SEARCH_METHODS.get(method)
  check_numbers(config)
  if config.get("retrain_overrides"):  # the retrain command's keys fail now, not after the search
    check_numbers(config.retrain_overrides, prefix="retrain_overrides.")
  if not record.multi_process and parallel.several_processes(config):
    raise ConfigError(
      f"config.method={method} runs on one process (its sub-runs write files from every "
      "process): set config.distributed.num_processes=1"
    )
  # Before anything touches JAX (log_compute asks for the backend): several processes
  # (config.distributed or a cluster's environment) must start jax.distributed first.
  parallel.initialize_from_config(config)
  if config.get("kernels") is not None:
    compute.log_compute(config)
  if config.get("lambdas"):  # a trade-off sweep: one search of `method` per lambda
    return sweep.run_sweep(config, workdir, record.run)
  workdir = workdirs.prepare(workdir)
  done = loop.finished(config, workdir)
  if done is not None:
    logging.info(
      "%s: this search has finished; its summary (%s) is shown", workdir, loop.RESULT_FILE
    )
    return done
  return record.run(config, workdir)


# A retrain estimated to take longer than LONG_RETRAIN_S gets a short variant of SHORT_RETRAIN_S.
LONG_RETRAIN_S = 30 * 60
SHORT_RETRAIN_S = 10 * 60
RETRAIN_TIMING = "retrain_timing.json"  # W/retrain_timing.json: the timed step, reused later
# A retrain step that a small probe (batch 1, half the patch side) puts above this is not timed at
# full size (on the 2-core CPU one HNAS child's took minutes): the probe, scaled, stands for it.
FULL_TIMING_MAX_S = 10.0


def short_retrain_steps(steps: int, step_s: float) -> int | None:
  """Return the steps of a retrain of about SHORT_RETRAIN_S seconds at `step_s` a step, or None
  when the full `steps` take at most LONG_RETRAIN_S (or a step is too slow for a short run)."""
  if steps * step_s <= LONG_RETRAIN_S:
    return None
  n = int(SHORT_RETRAIN_S / step_s)
  if n < 10:  # a step a minute: ten minutes of it trains nothing worth evaluating
    return None
  unit = 10 ** max(len(str(n)) - 2, 0)  # two significant digits: 243 -> 240, 1937 -> 1900
  return n // unit * unit


def retrain_lines(
  arch: Path,
  workdir: Path,
  flags: tuple[str, ...],
  retrain: ml_collections.ConfigDict,
  timing: dict | None,
) -> list[str]:
  """Return the lines that print the retrain and evaluate commands of `arch`, with the retrain's
  time from `timing` (`_time_retrain_step`'s; no estimate when None) and a short retrain when it
  is long."""

  def commands(dest: Path, train_flags: tuple[str, ...] = flags) -> list[str]:
    shown = "".join(f" {f}" for f in train_flags)
    return [
      f"  nasr train --config=train --config.arch={arch}{shown} --workdir={dest}",
      f"  nasr evaluate --config=evaluate --config.checkpoint={dest} --workdir={dest / 'eval'}",
    ]

  if timing is None:
    return [
      "next: retrain the architecture found, then score it against bicubic:",
      *commands(workdir / "retrain"),
    ]
  step_s, scaled = float(timing["step_s"]), bool(timing["scaled"])
  # Measured on the 2-core CPU, a larger batch cost more per pixel (4x at batch 16 of 32x32 for
  # one HNAS child than at batch 1 of 16x16): there a scaled probe is a lower bound.
  bound = scaled and timing["platform"] == "cpu"

  def duration(steps: int) -> str:
    said = writers.rough_duration(steps * step_s)
    return said.replace("about", "at least", 1) if bound else said

  steps = int(retrain.steps)
  lines = [
    f"next: retrain the architecture found ({steps} steps, {duration(steps)} on this host), "
    "then score it against bicubic:",
    *commands(workdir / "retrain"),
  ]
  short = short_retrain_steps(steps, step_s)
  if short is not None:
    # The short run's step count replaces any the search's overrides set.
    rest = tuple(f for f in flags if not f.startswith("--config.steps="))
    lines += [
      f"or first a short retrain ({short} steps, {duration(short)}; a rougher network, for a "
      "first look):",
      *commands(workdir / "retrain_short", (*rest, f"--config.steps={short}")),
    ]
  b, p = retrain.data.batch_size, retrain.data.patch_size
  if scaled:
    pb, pp = timing["batch"], timing["patch"]
    how = (
      f"scaled from one timed on this host at batch {pb} of {pp}x{pp} LR patches to batch {b} of "
      f"{p}x{p}" + ("; larger batches cost more per pixel on a CPU: a lower bound" if bound else "")
    )
  else:
    how = f"timed on this host at batch {b} of {p}x{p} LR patches"
  lines.append(
    f"(estimates from {step_s:.3g} s a training step of this network, {how}; validation not "
    "counted)"
  )
  return lines


# NASR_RETRAIN_TIMING=0 skips that probe (tens of seconds of compiling after a search on a CPU): the
# test suite's launcher runs set it; the next commands then come without an estimate.
RETRAIN_TIMING_ENV = "NASR_RETRAIN_TIMING"


def _time_retrain_step(retrain: ml_collections.ConfigDict) -> dict:
  """Return {"step_s", "scaled", "batch", "patch", "platform"}: the seconds a retrain step takes
  here, timed at the retrain's batch and patch or, when a small probe says that step is slow,
  the probe's time scaled by pixels (`scaled`; then batch and patch are the probe's)."""
  b, p = int(retrain.data.batch_size), int(retrain.data.patch_size)
  pb, pp = 1, max(p // 2, 1)
  probe = training.time_step(retrain, pb, pp) * (b * p * p) / (pb * pp * pp)
  timing = {"scaled": probe > FULL_TIMING_MAX_S, "platform": jax.default_backend()}
  if timing["scaled"]:
    return {"step_s": probe, "batch": pb, "patch": pp, **timing}
  return {"step_s": training.time_step(retrain, b, p), "batch": b, "patch": p, **timing}


def _retrain_timing(retrain: ml_collections.ConfigDict, workdir: Path, flags) -> dict | None:
  """Return `_time_retrain_step`'s timing of the found network (once per workdir, host and
  command: kept in W/retrain_timing.json), or None when it cannot be timed."""
  key = {
    "arch_sha256": hashlib.sha256(Path(retrain.arch).read_bytes()).hexdigest(),
    "flags": list(flags),
    "host": socket.gethostname(),
  }
  cache = workdir / RETRAIN_TIMING
  try:
    saved = json.loads(cache.read_text())
    if saved.get("key") == key:
      return saved["timing"]
  except (OSError, ValueError, KeyError, TypeError, AttributeError):
    pass  # none yet, or unreadable: timed again below
  if os.environ.get(RETRAIN_TIMING_ENV, "1") == "0":
    return None
  logging.info("timing a retrain step of the architecture found (for the next commands)")
  try:
    timing = _time_retrain_step(retrain)
  except Exception as e:  # noqa: BLE001 - the search is done: a missing estimate must not fail it
    logging.warning("could not time a retrain step (%s): the next commands come without one", e)
    return None
  if parallel.is_chief():
    writers.write_json(cache, {"key": key, "timing": timing})
  return timing


def next_commands(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> list[str]:
  """Return the lines printed after a finished search (none after a sweep): the commands that
  retrain and evaluate what it found, with the retrain's estimated time on this host, and a short
  retrain beside them when that time is long."""
  record = SEARCH_METHODS.get(config.method)
  w = Path(workdir)
  arch = record.arch_path(w)
  if config.get("lambdas") or not arch.is_file():
    return []
  flags = searches.methods.retrain_flags(config)
  # The config those commands train with: the shipped `train` with the search's overrides.
  retrain = load_config("train", lock=False)
  retrain.arch = str(arch)
  retrain.update_from_flattened_dict(dict((config.get("retrain_overrides") or {}).items()))
  return retrain_lines(arch, w, flags, retrain, _retrain_timing(retrain, w, flags))


def diagnose(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Rank-correlate a finished search's shared weights with stand-alone training; return a summary.

  See nasr.searches.diagnose: Kendall tau and Spearman rho over a stratified sample, and the
  searched architecture against random ones at the same retrain budget (W/ranking.json, .png).
  """
  _show_progress()
  check_numbers(config)
  if parallel.several_processes(config):
    raise ConfigError(
      "the diagnostics run on one process (their stand-alone runs write files from every "
      "process): set config.distributed.num_processes=1"
    )
  # A benchmark table of the searched space replaces the stand-alone training by lookups.
  return diagnostics.run(config, workdir, bench.table.standalone_lookup(config.get("table")))


# ---------------------------------------------------------------------------------------------------
# The tabular benchmark.
# ---------------------------------------------------------------------------------------------------
def bench_build(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Train the benchmark space's members stand-alone (resumable); return the table's summary."""
  _show_progress()
  check_numbers(config)
  return bench.build.run(config, workdir)


def bench_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> str:
  """Score search strategies against a benchmark table; return the printed report."""
  _show_progress()
  check_numbers(config)
  return bench.evaluate.run(
    config, workdir, lambda name, preset: load_config(config_path(name), preset)
  )
