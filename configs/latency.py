r"""Time a network on this host: XLA and onnxruntime, median and spread, ms per G multiply-adds.

python -m launch.latency --config=configs/latency.py --config.checkpoint=W --workdir=OUT
nasr latency --config=latency --config.arch=configs/archs/hnas_a.json --workdir=OUT
nasr latency --config=latency --config.model=edsr --workdir=OUT   # the EDSR baseline
"""

import ml_collections

from nasr.configs import common


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Return the latency config for `preset` (tiny: a small output and few calls, for tests)."""
  preset = common.check_preset(preset)
  c = ml_collections.ConfigDict()
  c.preset = preset
  # Exactly one: a training workdir (its latest or best checkpoint), an arch JSON (a search
  # result; random weights), or a baseline model name (edsr, ...) built with model_kwargs.
  c.checkpoint = ""
  c.which = "latest"  # a workdir's "latest" or "best" checkpoint
  c.arch = ""
  c.arch_channels = 0  # an arch's width: 0 = the file's (a search width), e.g. 64 for HNAS-A's
  c.model = ""
  c.model_kwargs = ml_collections.ConfigDict({"blocks": 16, "channels": 64})  # EDSR baseline
  c.scale = 2  # for an arch or a model (a checkpoint knows its own)
  c.output = "720,1280"  # the SR output's height,width (a multiple of the scale)
  # "auto" = XLA, and onnxruntime when the export extra is installed; or "xla", "onnx", "xla,onnx".
  c.runtimes = "auto"
  c.warmup = 2  # untimed calls first (compilation, caches)
  c.repeats = 10  # timed calls: their median and 10th-90th percentile are reported
  if preset == "tiny":
    c.output, c.repeats, c.warmup = "32,48", 3, 1
  return c
