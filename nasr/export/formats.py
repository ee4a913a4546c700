"""The two file formats a trained network leaves nasr in: StableHLO and ONNX.

StableHLO comes from `jax.export` (no extra dependency): the serialised bytes of the jitted
function, lowered for the platforms named, reloaded by `load_stablehlo` in any JAX. ONNX comes
from jax2onnx (the `export` extra, see README, Deploy) and is checked with onnxruntime. Both take
an LR batch NHWC float32 RGB in [0, 1] of any batch size and, where the exporter allows, any
height and width, and return what the Flax apply returns (not clipped).
"""

import contextlib
import importlib.metadata
import logging
import re
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nasr.core.errors import ConfigError, DataError, ExportError

FORMATS = ("stablehlo", "onnx")
SUFFIXES = {"stablehlo": ".stablehlo", "onnx": ".onnx"}
INPUT_NAME, OUTPUT_NAME = "lr", "sr"  # the ONNX graph's input and output
# jax2onnx 0.13.0 (the newest release that lets orbax-checkpoint be >= 0.12) writes an HNAS graph
# onnxruntime cannot run; 0.17.1 is the release nasr's parity tests pass with.
MIN_JAX2ONNX = (0, 17, 1)
ONNX_INSTALL = (
  "pip install 'nasr[export]' && pip install --no-deps 'jax2onnx>=0.17.1' (its metadata caps "
  "orbax-checkpoint below 0.11.37, which it never imports; README, Deploy)"
)


def input_spec(height: int = 0, width: int = 0) -> jax.ShapeDtypeStruct:
  """Return the LR batch an exported network takes: NHWC float32 with a symbolic batch, and a
  symbolic height / width where `height` / `width` is 0."""
  h, w = height or "height", width or "width"
  return jax.ShapeDtypeStruct((*jax.export.symbolic_shape(f"batch, {h}, {w}"), 3), jnp.float32)


def _first_line(error: BaseException) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return f"{type(error).__name__}: {lines[0] if lines else ''}"


def to_stablehlo(fn: Callable, spec: jax.ShapeDtypeStruct, platforms: tuple[str, ...], what: str):
  """Return the serialised `jax.export` of `fn` at `spec` for `platforms` (bytes); `what` names
  the network in errors."""
  try:
    exported = jax.export.export(jax.jit(fn), platforms=platforms)(spec)
  except Exception as e:  # noqa: BLE001 - any lowering failure is the network's, said in one line
    raise ExportError(f"cannot export {what} to StableHLO: {_first_line(e)}") from e
  try:
    return bytes(exported.serialize())
  except ImportError as e:  # jax serialises with flatbuffers without depending on it
    raise ExportError(f"cannot write {what} as StableHLO: {_first_line(e)}") from e


def load_stablehlo(path: str | Path) -> Callable[[np.ndarray], jax.Array]:
  """Return a jitted function LR batch -> SR batch read from a `nasr export` StableHLO file.

  It takes NHWC float32 RGB in [0, 1] (its card says which sizes) and runs on this host's JAX
  backend, which must be one of the file's platforms.

    upscale = nasr.export.load_stablehlo("OUT/edsr_x2.stablehlo")
    sr = np.clip(np.asarray(upscale(lr[None].astype(np.float32) / 255)), 0, 1)[0]
  """
  path = Path(path)
  try:
    exported = jax.export.deserialize(bytearray(path.read_bytes()))
  except OSError as e:
    raise DataError(f"cannot read {path}: {e.strerror or e}") from None
  except Exception as e:  # noqa: BLE001 - not a serialised jax.export: say which file
    raise DataError(f"{path} is not a StableHLO file of nasr export ({_first_line(e)})") from None
  backend = jax.default_backend()
  if backend not in exported.platforms:
    raise ConfigError(
      f"{path} was exported for {', '.join(exported.platforms)}, not for this host's {backend}: "
      f"export it again with --config.platforms={','.join((*exported.platforms, backend))}"
    )
  return jax.jit(exported.call)


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def onnx_status() -> str | None:
  """Return None when ONNX export can run here, else the one line that says what to install."""
  missing = [p for p in ("jax2onnx", "onnx", "onnxruntime") if _version(p) is None]
  if missing:
    return f"ONNX export needs {', '.join(missing)}: {ONNX_INSTALL}"
  found = _version("jax2onnx")
  numbers = tuple(int(n) for n in re.findall(r"\d+", found)[:3])
  if numbers < MIN_JAX2ONNX:
    return f"ONNX export needs jax2onnx >= 0.17.1, found {found}: {ONNX_INSTALL}"
  return None


def exporter_versions(fmt: str) -> dict[str, str | None]:
  """Return {package: version} of what wrote (and checks) a file of format `fmt`."""
  names = ["jax", "jaxlib", "flax"] + (["jax2onnx", "onnx", "onnxruntime"] if fmt == "onnx" else [])
  return {name: _version(name) for name in names}


@contextlib.contextmanager
def _quiet_converter():
  """Hide the converter's warnings about itself: jax2onnx imports every plugin it has, and those
  of libraries nasr does not use (equinox, dm_pix) each log a traceback when absent; onnx_ir warns
  of intermediate shape tensors whose type it leaves out of the file (the file runs: it is checked
  on a photograph right after)."""
  # jax2onnx also logs its parameters at INFO on the root logger ("Converting JAX function ...").
  logs = [logging.getLogger(name) for name in ("jax2onnx", "onnx_ir", None)]
  levels = [log.level for log in logs]
  for log in logs:
    log.setLevel(logging.WARNING if log.name == "root" else logging.ERROR)
  try:
    yield
  finally:
    for log, level in zip(logs, levels, strict=True):
      log.setLevel(level)


def to_onnx(fn: Callable, spec: jax.ShapeDtypeStruct, what: str, model_name: str) -> bytes:
  """Return the ONNX model (serialised bytes) of `fn` at `spec`; `what` names the network in
  errors.

  JAX traces `fn` first and jax2onnx converts that jaxpr: while it converts, jax2onnx replaces
  `jnp.shape` and other jax.numpy functions with primitives of its own, and flax's `nn.scan` (the
  DRN, RCAN and DARTS-SR cells) cannot build its carry from a shape that is a traced value.
  """
  status = onnx_status()
  if status is not None:
    raise ConfigError(f"config.format=onnx: {status}")
  from jax.extend.core import jaxpr_as_fun
  from jax2onnx import to_onnx as jax2onnx_to_onnx  # the optional extra

  try:
    closed = jax.make_jaxpr(fn)(spec)
  except Exception as e:  # noqa: BLE001
    raise ExportError(f"cannot export {what} to ONNX: {_first_line(e)}") from e
  traced = jaxpr_as_fun(closed)
  try:
    with _quiet_converter():
      model = jax2onnx_to_onnx(
        lambda x: traced(x)[0],
        inputs=[spec],
        model_name=model_name,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
      )
  except NotImplementedError as e:
    op = re.search(r"primitive '([^']+)'", str(e))
    if op is None:
      raise ExportError(f"cannot export {what} to ONNX: {_first_line(e)}") from e
    raise ExportError(
      f"cannot export {what} to ONNX: jax2onnx has no conversion for the op {op.group(1)!r} "
      "(config.format=stablehlo exports it)"
    ) from e
  except Exception as e:  # noqa: BLE001
    raise ExportError(f"cannot export {what} to ONNX: jax2onnx failed ({_first_line(e)})") from e
  return model.SerializeToString()


def run_onnx(model: bytes | str | Path, lr: np.ndarray) -> np.ndarray:
  """Return onnxruntime's output (CPU) of an ONNX model (bytes or a file) on the NHWC batch `lr`."""
  import onnxruntime  # the optional extra

  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3  # no line per unused initializer jax2onnx leaves in scan bodies
  source = str(model) if isinstance(model, str | Path) else model
  session = onnxruntime.InferenceSession(
    source, sess_options=options, providers=["CPUExecutionProvider"]
  )
  return session.run(None, {INPUT_NAME: np.asarray(lr, np.float32)})[0]
