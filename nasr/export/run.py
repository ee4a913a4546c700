"""`nasr export`: trained networks out of nasr, as StableHLO or ONNX files with a card beside each.

  nasr export --config=export --config.checkpoint=W --config.format=onnx,stablehlo --workdir=OUT

writes OUT/<family>_x<scale>.<format> (a fixed size adds _<height>x<width>) and
OUT/<file>.card.json, after running the written file (reloaded by JAX, or by onnxruntime) on a real
LR photograph and finding it equal to the Flax apply to PARITY_ATOL. Several checkpoints
(W1,W2,...) export their model ensemble: the average of their outputs.
"""

import copy
import hashlib
import importlib.metadata
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from nasr import compute, training, workdirs, writers
from nasr import data as data_lib
from nasr.core.checks import check_numbers
from nasr.core.errors import ConfigError, ExportError
from nasr.estimation import cost
from nasr.export import formats

PARITY_ATOL = 1e-4  # the largest difference from the Flax apply a written file may show
CARD_SUFFIX = ".card.json"
_NAMES = {"stablehlo": "StableHLO", "onnx": "ONNX"}
PROBE_IMAGE = "chelsea"  # an embedded validation photograph (scikit-image's)
PROBE_SIZE = (24, 32)  # the LR crop the files are checked on when they take any size


def _formats(config: ml_collections.ConfigDict) -> list[str]:
  """Return the formats config.format names (comma-separated), or raise ConfigError."""
  names = [f.strip() for f in str(config.format).split(",") if f.strip()]
  bad = [f for f in names if f not in formats.FORMATS]
  if not names or bad:
    raise ConfigError(
      f"config.format must be one or more of {', '.join(formats.FORMATS)} (comma-separated), "
      f"got {config.format!r}"
    )
  return list(dict.fromkeys(names))


def _platforms(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Return the StableHLO platforms of config.platforms, or raise ConfigError."""
  names = tuple(p.strip() for p in str(config.platforms).split(",") if p.strip())
  allowed = ("cpu", "cuda", "rocm", "tpu")
  bad = [p for p in names if p not in allowed]
  if not names or bad:
    raise ConfigError(
      f"config.platforms must be one or more of {', '.join(allowed)} (comma-separated), "
      f"got {config.platforms!r}"
    )
  return names


def _checkpoints(config: ml_collections.ConfigDict) -> list[str]:
  """Return the training workdirs config.checkpoint names, or raise ConfigError."""
  ckpts = [c.strip() for c in str(config.checkpoint or "").split(",") if c.strip()]
  if not ckpts:
    raise ConfigError(
      "nothing to export: set config.checkpoint=<train workdir> (comma-separated for a model "
      "ensemble)"
    )
  return ckpts


def family(network) -> str:
  """Return the family of a network: its class name (EDSR, DeCoNASNet, HNASNet, RCANNet, ...)."""
  return type(network).__name__


def _arch(run_config: ml_collections.ConfigDict) -> dict:
  """Return what built a trained network: its architecture file's record, or its model."""
  if run_config.get("arch"):
    try:
      record = json.loads(Path(run_config.arch).read_text())
    except (OSError, ValueError):
      return {"file": str(run_config.arch)}  # moved since training: the path at least
    keep = ("space", "space_kwargs", "arch", "tokens")
    return {"file": str(run_config.arch), **{k: record[k] for k in keep if k in record}}
  kwargs = dict(run_config.get("model_kwargs", {}) or {})
  return {"model": run_config.model, "model_kwargs": kwargs}


def _scores(workdir: Path) -> dict:
  """Return the scores a training workdir holds: train_result.json's validation PSNR and every
  eval.json in it or one folder down (`nasr evaluate --workdir=W/eval`), by relative path."""
  out = {}
  result = workdir / training.RESULT_FILE
  for path in [result, workdir / "eval.json", *sorted(workdir.glob("*/eval.json"))]:
    try:
      record = json.loads(path.read_text())
    except (OSError, ValueError):
      continue
    if path == result:
      record = {k: record[k] for k in ("step", "val", "val_bicubic") if k in record}
    out[str(path.relative_to(workdir))] = record
  return out


def _probe(scale: int, height: int, width: int) -> np.ndarray:
  """Return a 1xHxWx3 float32 LR batch in [0, 1]: a crop of a real photograph's LR image."""
  pairs = data_lib.load_embedded("val", scale)
  lr = pairs.lr[pairs.names.index(PROBE_IMAGE)] if PROBE_IMAGE in pairs.names else pairs.lr[0]
  h, w = height or PROBE_SIZE[0], width or PROBE_SIZE[1]
  top, left = max(lr.shape[0] // 4 - h // 2, 0), max(lr.shape[1] // 3 - w // 2, 0)
  crop = lr[top : top + h, left : left + w]
  # A fixed size larger than the image: mirrored, still a photograph's statistics.
  crop = np.pad(crop, ((0, h - crop.shape[0]), (0, w - crop.shape[1]), (0, 0)), mode="symmetric")
  return (crop.astype(np.float32) / 255.0)[None]


def _ensemble_fn(trained: Sequence[training.Trained]) -> Callable:
  """Return LR batch -> SR batch: one network's apply, or the mean of several (a model ensemble)."""
  members = [(t.network, t.params) for t in trained]

  def fn(lr):
    outs = [net.apply({"params": params}, lr).astype(jnp.float32) for net, params in members]
    return outs[0] if len(outs) == 1 else sum(outs) / len(outs)

  return fn


def _file_stem(trained: Sequence[training.Trained], scale: int, height: int, width: int) -> str:
  """Return the exported files' stem: <family>_x<scale>[_<height>x<width>]."""
  name = family(trained[0].network).lower() if len(trained) == 1 else f"ensemble{len(trained)}"
  return f"{name}_x{scale}" + (f"_{height}x{width}" if height and width else "")


def _shapes(scale: int, height: int, width: int) -> tuple[list, list]:
  """Return the card's (input shape, output shape) with named symbolic dimensions."""
  h, w = height or "height", width or "width"
  up = lambda d: d * scale if isinstance(d, int) else f"{scale}*{d}"  # noqa: E731
  return ["batch", h, w, 3], ["batch", up(h), up(w), 3]


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def _member(ckpt: str, t: training.Trained, which: str) -> dict:
  """Return the card entry of one trained network."""
  return {
    "family": family(t.network),
    "arch": _arch(t.config),
    "checkpoint": {"workdir": str(Path(ckpt).absolute()), "which": which, "step": t.step},
    "params": cost.count_params(t.params),
    "scores": _scores(Path(ckpt)),
  }


def _write(fmt: str, fn: Callable, spec, config, path: Path, what: str, stem: str) -> None:
  """Write the file of format `fmt` (an ONNX graph named `stem`) at `path`."""
  try:
    if fmt == "stablehlo":
      blob = formats.to_stablehlo(fn, spec, _platforms(config), what)
    else:
      blob = formats.to_onnx(fn, spec, what, stem)
  except ExportError as e:
    if config.height and config.width:
      raise
    raise ExportError(
      f"{e} (an export for one LR size may still work: --config.height=H --config.width=W)"
    ) from e
  path.write_bytes(blob)


def _check(fmt: str, path: Path, probe: np.ndarray, want: np.ndarray, what: str, dtype) -> dict:
  """Return the card's parity entry of the written file run on `probe`; raise ExportError when
  it cannot run or differs from the Flax output `want` by more than PARITY_ATOL."""
  failed = f"cannot export {what} to {_NAMES[fmt]}:"
  if fmt == "stablehlo":
    got = np.asarray(formats.load_stablehlo(path)(probe))
    runtime = f"jax {jax.__version__} ({jax.default_backend()})"
  else:
    runtime = f"onnxruntime {_version('onnxruntime')} (CPU)"
    try:
      got = formats.run_onnx(path, probe)
    except Exception as e:  # noqa: BLE001 - the runtime's refusal, said in one line
      hint = (
        "; it computes in bfloat16, which onnxruntime's CPU kernels lack: export it with "
        "--config.compute_dtype=float32"
        if dtype == jnp.bfloat16
        else ""
      )
      raise ExportError(
        f"{failed} {runtime} cannot run the file ({' '.join(str(e).split())}){hint}"
      ) from e
  if got.shape != want.shape:
    raise ExportError(f"{failed} the file gives shape {got.shape}, the network {want.shape}")
  diff = float(np.max(np.abs(got - want)))
  if not diff <= PARITY_ATOL:
    raise ExportError(
      f"{failed} in {runtime} the file differs from the Flax output by {diff:.3g} "
      f"(> {PARITY_ATOL}) on a real photograph"
    )
  return {
    "max_abs_diff": diff,
    "tolerance": PARITY_ATOL,
    "probe": f"LR of scikit-image's {PROBE_IMAGE}, {probe.shape[1]}x{probe.shape[2]} crop",
    "runtime": runtime,
  }


def run(config: ml_collections.ConfigDict, workdir) -> dict:
  """Export the trained network(s) of config.checkpoint; return {format: {"file", "card"}}."""
  check_numbers(config)
  fmts, ckpts = _formats(config), _checkpoints(config)
  _platforms(config)
  if "onnx" in fmts and formats.onnx_status() is not None:  # before any loading
    raise ConfigError(f"config.format=onnx: {formats.onnx_status()}")
  height, width = int(config.height), int(config.width)
  if bool(height) != bool(width):
    raise ConfigError(
      f"config.height and config.width are both 0 (any size) or both set, got {height}x{width}"
    )
  out = workdirs.prepare(workdir)
  which = config.get("which", "latest")
  trained = [training.load_checkpoint(ck, which) for ck in ckpts]
  if config.compute_dtype:  # parameters stay float32: only what the file computes in changes
    dtype = compute.compute_dtype(config)
    trained = [t._replace(network=t.network.clone(dtype=dtype)) for t in trained]
  dtype = trained[0].network.dtype
  scales = sorted({int(t.config.scale) for t in trained})
  if len(scales) != 1:
    raise ConfigError(f"checkpoints {ckpts} were trained for different scales {scales}")
  scale = scales[0]
  names = [family(t.network) for t in trained]
  what = names[0] if len(names) == 1 else f"the ensemble of {', '.join(names)}"
  fn, spec = _ensemble_fn(trained), formats.input_spec(height, width)
  stem = _file_stem(trained, scale, height, width)
  probe = _probe(scale, height, width)
  want = np.asarray(jax.jit(fn)(probe))
  members = [_member(ck, t, which) for ck, t in zip(ckpts, trained, strict=True)]
  in_shape, out_shape = _shapes(scale, height, width)
  common = {
    "family": names[0] if len(names) == 1 else "ensemble",
    "scale": scale,
    "compute_dtype": jnp.dtype(dtype).name,
    "params": sum(m["params"] for m in members),
    "macs_per_lr_pixel": sum(
      cost.macs_per_pixel(t.network, t.params, (1, 32, 32, 3)) for t in trained
    ),
    "gmacs_480": sum(cost.gmacs_480(t.network, t.params) for t in trained),
    "input": {
      "layout": "NHWC",
      "dtype": "float32",
      "shape": in_shape,
      "values": "RGB in [0, 1] (8-bit pixels / 255)",
    },
    "output": {
      "layout": "NHWC",
      "dtype": "float32",
      "shape": out_shape,
      "values": "RGB, not clipped: clip to [0, 1] before writing 8-bit pixels",
    },
  }
  if len(members) == 1:
    common.update({k: members[0][k] for k in ("arch", "checkpoint", "scores")})
  else:
    common["members"] = members
    common["ensemble"] = "the mean of the members' outputs"
  done = {}
  for fmt in fmts:
    path = out / f"{stem}{formats.SUFFIXES[fmt]}"
    # Written aside, and kept under its name only once it has computed what the network computes.
    tmp = path.with_name(f".{path.name}.unchecked{formats.SUFFIXES[fmt]}")
    try:
      _write(fmt, fn, spec, config, tmp, what, stem)
      parity = _check(fmt, tmp, probe, want, what, dtype)
    except BaseException:
      tmp.unlink(missing_ok=True)
      raise
    tmp.replace(path)
    blob = path.read_bytes()
    card = {
      "format": fmt,
      "file": path.name,
      "bytes": len(blob),
      "sha256": hashlib.sha256(blob).hexdigest(),
      **copy.deepcopy(common),
      "parity": parity,
      "versions": {"nasr": _version("nasr"), **formats.exporter_versions(fmt)},
    }
    if fmt == "onnx":
      card["input"]["name"], card["output"]["name"] = formats.INPUT_NAME, formats.OUTPUT_NAME
    else:
      card["platforms"] = list(_platforms(config))
    writers.write_json(path.with_name(path.name + CARD_SUFFIX), card)
    logging.info(
      "wrote %s (%d bytes): %s matches the Flax output to %.2g on a %dx%d LR crop",
      path,
      len(blob),
      parity["runtime"],
      parity["max_abs_diff"],
      probe.shape[1],
      probe.shape[2],
    )
    done[fmt] = {"file": str(path), "card": card}
  return done
