"""nasr: neural architecture search for single-image super-resolution in JAX/Flax.

The public API re-exports the functions the launchers call, so Colab and the command line share
one code path:

  import nasr
  config = nasr.load_config("train", "tiny")
  nasr.train(config, "/tmp/nasr/tiny")
"""

from nasr import (
  bench,
  compute,
  core,
  data,
  estimation,
  export,
  inference,
  ops,
  parallel,
  searches,
  spaces,
  strategies,
  training,
)
from nasr.checkpoint import Checkpointer
from nasr.core import ConfigError, DataError, DivergedError, NasrError, TokenError, TokenSpec
from nasr.estimation.cost import count_macs, count_params
from nasr.estimation.metrics import psnr, ssim
from nasr.experiment import (
  bench_build,
  bench_evaluate,
  diagnose,
  evaluate,
  export_trained,
  load_config,
  run_search,
  train,
  upscale,
)

__version__ = "0.1.0"

__all__ = [
  "Checkpointer",
  "ConfigError",
  "DataError",
  "DivergedError",
  "NasrError",
  "TokenError",
  "TokenSpec",
  "bench",
  "bench_build",
  "bench_evaluate",
  "compute",
  "core",
  "count_macs",
  "count_params",
  "data",
  "diagnose",
  "estimation",
  "evaluate",
  "export",
  "export_trained",
  "inference",
  "load_config",
  "ops",
  "parallel",
  "psnr",
  "run_search",
  "searches",
  "spaces",
  "ssim",
  "strategies",
  "train",
  "training",
  "upscale",
]
