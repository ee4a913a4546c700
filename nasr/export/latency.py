"""`nasr latency`: the measured latency of a network on this host, through XLA and onnxruntime.

  nasr latency --config=latency --config.checkpoint=W --workdir=OUT        # a trained network
  nasr latency --config=latency --config.arch=configs/archs/hnas_a.json --workdir=OUT
  nasr latency --config=latency --config.model=edsr --workdir=OUT          # the EDSR baseline

One forward pass at a fixed output size (config.output, 720 x 1280 by default), timed after
warm-up calls; the median and the 10th-90th percentile spread of config.repeats calls. Beside it
the network's parameters and multiply-adds, and milliseconds per G multiply-adds: where that
number moves between networks, multiply-adds mislead about speed. Writes OUT/latency.json.
"""

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from nasr import spaces, training, writers
from nasr.core.errors import ConfigError
from nasr.estimation import cost
from nasr.estimation import latency as latency_lib
from nasr.export import formats
from nasr.export.run import family

RUNTIMES = ("xla", "onnx")


def _runtimes(config) -> list[str]:
  text = str(config.runtimes).strip()
  if text == "auto":
    return ["xla"] + (["onnx"] if formats.onnx_status() is None else [])
  chosen = [r.strip() for r in text.split(",") if r.strip()]
  bad = [r for r in chosen if r not in RUNTIMES]
  if bad or not chosen:
    raise ConfigError(
      f"config.runtimes: {bad or text!r}; use auto or some of {', '.join(RUNTIMES)}"
    )
  if "onnx" in chosen and formats.onnx_status() is not None:
    raise ConfigError(f"config.runtimes=onnx: {formats.onnx_status()}")
  return chosen


def _output(config, scale: int) -> tuple[int, int]:
  """Return the LR (height, width) of config.output ("H,W" of the SR output) at `scale`."""
  try:
    h, w = (int(v) for v in str(config.output).split(","))
  except ValueError:
    raise ConfigError(
      f"config.output must be 'H,W' (the SR output size), got {config.output!r}"
    ) from None
  if h <= 0 or w <= 0 or h % scale or w % scale:
    raise ConfigError(f"config.output {h},{w} must be positive multiples of the scale {scale}")
  return h // scale, w // scale


def _network(config, shifted: bool = False):
  """Return (name, network, params or None, scale): what config.checkpoint / arch / model names
  (an arch's depthwise convs as shifted multiply-adds with `shifted`: XLA:CPU's fast form)."""
  given = [k for k in ("checkpoint", "arch", "model") if config.get(k)]
  if len(given) != 1:
    raise ConfigError(
      "give exactly one of config.checkpoint (a train workdir), config.arch (an arch JSON) or "
      f"config.model (a baseline such as edsr); got {given or 'none'}"
    )
  if config.checkpoint:
    t = training.load_checkpoint(config.checkpoint, config.which)
    return family(t.network), t.network, {"params": t.params}, int(t.config.scale)
  scale = int(config.scale)
  if config.arch:
    if not Path(config.arch).is_file():
      raise ConfigError(f"config.arch: {config.arch} is not a file")
    width = int(config.arch_channels)
    if width < 0:
      raise ConfigError(f"config.arch_channels must be >= 0 (0: the file's width), got {width}")
    overrides = {"channels": width} if width else {}
    net = spaces.build_from_file(config.arch, scale, shifted=shifted, **overrides)
    return Path(config.arch).stem, net, None, scale
  kwargs = dict(config.model_kwargs)
  return config.model, spaces.build_model(config.model, scale=scale, **kwargs), None, scale


def _on_cpu() -> bool:
  return jax.default_backend() == "cpu"


def _onnx_ms(fn, lr: np.ndarray, what: str, warmup: int, repeats: int) -> dict:
  """Return time_call of an onnxruntime session (CPU) running `fn` exported to ONNX."""
  import onnxruntime  # the export extra

  # Any input size, as `nasr export` writes by default (a fixed size with a free batch does not
  # convert for HNAS networks: jax2onnx's pad lowering needs the batch then).
  model = formats.to_onnx(fn, formats.input_spec(), what, what)
  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3
  session = onnxruntime.InferenceSession(
    model, sess_options=options, providers=["CPUExecutionProvider"]
  )
  feed = {formats.INPUT_NAME: lr}
  return latency_lib.time_call(lambda: session.run(None, feed), warmup=warmup, repeats=repeats)


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Time the network of `config` on this host per runtime; write and return W/latency.json."""
  warmup, repeats = int(config.warmup), int(config.repeats)
  if warmup < 0 or repeats < 1:
    raise ConfigError(
      f"config.warmup must be >= 0 and config.repeats >= 1, got {warmup}, {repeats}"
    )
  runtimes = _runtimes(config)
  name, network, variables, scale = _network(config)
  h, w = _output(config, scale)
  lr = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (1, h, w, 3)), np.float32)
  if variables is None:  # latency does not depend on the weights' values
    variables = jax.jit(network.init)(jax.random.PRNGKey(0), jnp.asarray(lr[:, :8, :8]))
  params = cost.count_params(variables)
  gmacs = cost.count_macs(network, variables, lr.shape) / 1e9
  result = {
    "network": name,
    "scale": scale,
    "output": [h * scale, w * scale],
    "params": params,
    "gmacs": float(f"{gmacs:.6g}"),
    "host": latency_lib.host(),
    "runtimes": {},
  }

  # onnxruntime gets the plain forms (one grouped conv per depthwise conv); XLA on a CPU the forms
  # nasr runs there (depthwise convs as shifted multiply-adds), the same function.
  xla_net = _network(config, shifted=True)[1] if config.arch and _on_cpu() else network

  def fn(x, net=network):
    return net.apply(variables, x).astype(jnp.float32)

  for runtime in runtimes:
    logging.info("latency: %s x%d at %dx%d through %s", name, scale, h * scale, w * scale, runtime)
    if runtime == "xla":
      xla = jax.jit(lambda x: fn(x, xla_net))
      t = latency_lib.time_call(xla, jnp.asarray(lr), warmup=warmup, repeats=repeats)
    else:
      t = _onnx_ms(fn, lr, name, warmup, repeats)
    t["ms_per_gmac"] = round(t["median_ms"] / gmacs, 4) if gmacs else None
    result["runtimes"][runtime] = t
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  writers.write_json(workdir / "latency.json", result)
  return result


def report(result: dict) -> str:
  """Return the result of `run` as a table."""
  head = (
    f"{result['network']} x{result['scale']}, output {result['output'][0]}x{result['output'][1]}: "
    f"{result['params']:,} parameters, {result['gmacs']:.2f} G multiply-adds "
    f"({result['host']['backend']}: {result['host']['cpu']})"
  )
  lines = [head, f"{'runtime':<8} {'median ms':>10} {'p10-p90 ms':>18} {'runs':>5} {'ms/GMAC':>8}"]
  for runtime, t in result["runtimes"].items():
    spread = f"{t['p10_ms']:.1f}-{t['p90_ms']:.1f}"
    per = "-" if t["ms_per_gmac"] is None else f"{t['ms_per_gmac']:.2f}"
    lines.append(f"{runtime:<8} {t['median_ms']:>10.1f} {spread:>18} {t['runs']:>5} {per:>8}")
  return "\n".join(lines)
