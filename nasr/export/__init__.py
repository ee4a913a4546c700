"""Trained networks out of nasr: StableHLO (`jax.export`, always) and ONNX (jax2onnx, the `export`
extra), each file checked against the Flax apply on a real photograph, with a card beside it."""

from nasr.export.formats import (
  FORMATS,
  exporter_versions,
  input_spec,
  load_stablehlo,
  onnx_status,
  run_onnx,
  to_onnx,
  to_stablehlo,
)
from nasr.export.run import CARD_SUFFIX, PARITY_ATOL, family, run

__all__ = [
  "CARD_SUFFIX",
  "FORMATS",
  "PARITY_ATOL",
  "exporter_versions",
  "family",
  "input_spec",
  "load_stablehlo",
  "onnx_status",
  "run",
  "run_onnx",
  "to_onnx",
  "to_stablehlo",
]
