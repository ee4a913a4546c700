"""Search spaces and baseline networks: every network maps NHWC [0, 1] RGB to `scale` times it."""

import jax.numpy as jnp

from nasr.spaces import base, baselines, bench, darts_sr, deconas, drn, hnas, registry
from nasr.spaces.base import (
  ArchJSON,
  CostPieces,
  CostTable,
  DifferentiableSpace,
  Families,
  SearchSpace,
  SupernetSpace,
)
from nasr.spaces.baselines import EDSR, MODELS, Bicubic, build_model, model_fields
from nasr.spaces.bench import Bench, BenchArch, BenchNet, BenchSupernet
from nasr.spaces.darts_sr import DartsGenotype, DartsSR, DartsSRNet, DartsSRSupernet
from nasr.spaces.deconas import DeCoNAS, DeCoNASArch, DeCoNASNet, DeCoNASSupernet
from nasr.spaces.drn import DRN, DRNArch, DRNNet, DRNSupernet, RCANNet
from nasr.spaces.hnas import HNAS, HNASArch, HNASNet, HNASSupernet
from nasr.spaces.registry import SPACES, get, load_arch, register, save_arch, space_fields


def build_from_file(path, scale: int, shifted: bool = False, dtype=None, **overrides):
  """Return the network of a search-result file written by `save_arch`, at `scale`.

  Args:
    path: the JSON file ({"space": ..., "space_kwargs": ..., "arch": ..., "tokens": ...}).
    scale: the upscaling factor.
    shifted: depthwise convs as shifted multiply-adds where the space's networks have them (the
      same function and parameters, faster on XLA:CPU); spaces without depthwise convs ignore it.
    dtype: the compute dtype (None: float32); parameters stay float32.
    **overrides: space settings that replace the stored ones (e.g. channels=96 to retrain wider).
  """
  space, arch = load_arch(path, **overrides)
  return space.build(arch, scale, dtype=jnp.float32 if dtype is None else dtype, shifted=shifted)


__all__ = [
  "Bench",
  "BenchArch",
  "BenchNet",
  "BenchSupernet",
  "DRN",
  "DRNArch",
  "DRNNet",
  "DRNSupernet",
  "EDSR",
  "HNAS",
  "HNASArch",
  "HNASNet",
  "HNASSupernet",
  "MODELS",
  "RCANNet",
  "SPACES",
  "ArchJSON",
  "Bicubic",
  "CostPieces",
  "CostTable",
  "DartsGenotype",
  "DartsSR",
  "DartsSRNet",
  "DartsSRSupernet",
  "DeCoNAS",
  "DeCoNASArch",
  "DeCoNASNet",
  "DeCoNASSupernet",
  "DifferentiableSpace",
  "Families",
  "SearchSpace",
  "SupernetSpace",
  "base",
  "baselines",
  "build_from_file",
  "build_model",
  "bench",
  "darts_sr",
  "deconas",
  "drn",
  "get",
  "hnas",
  "load_arch",
  "model_fields",
  "register",
  "registry",
  "save_arch",
  "space_fields",
]
