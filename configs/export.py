r"""Export a trained checkpoint to StableHLO and/or ONNX, checked against the Flax network.

  python -m launch.export --config=configs/export.py --config.checkpoint=W \
      --config.format=onnx,stablehlo --workdir=/tmp/nasr/export
"""

import ml_collections

from nasr.configs import common


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Return the export config for `preset` (tiny, default or paper: the same export)."""
  preset = common.check_preset(preset)
  c = ml_collections.ConfigDict()
  c.preset = preset
  # A training workdir, or several comma-separated ones (W1,W2,...): their model ensemble, the
  # average of the outputs of networks of any families trained for the same scale, in one file.
  c.checkpoint = ""
  # Which checkpoint of a training workdir: "latest", or "best" (the best validation PSNR).
  c.which = "latest"
  # "stablehlo" (jax.export, no extra dependency), "onnx" (jax2onnx: the export extra, README
  # Deploy), or both comma-separated.
  c.format = "stablehlo"
  # The LR height and width the files take: 0 and 0 = any size (symbolic), or both fixed (the
  # file name then says HxW). The batch size is always free.
  c.height = 0
  c.width = 0
  # The platforms a StableHLO file is lowered for (comma-separated: cpu, cuda, rocm, tpu); it
  # runs on any of them.
  c.platforms = "cpu,cuda"
  # What the files compute in: "" = what the network was trained with (config.compute_dtype of its
  # run), or "float32" / "bfloat16" (onnxruntime's CPU kernels take no bfloat16). Parameters stay
  # float32.
  c.compute_dtype = ""
  return c
