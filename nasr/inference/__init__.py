"""Multi-level ensemble inference: patch ensemble (tiling), self-ensemble x8, model ensemble."""

from nasr.inference.ensemble import model_ensemble, self_ensemble
from nasr.inference.tiling import check_tiling, tile_starts, tile_weights, upscale_tiled
from nasr.inference.upscalers import bicubic_upscaler, network_upscaler

__all__ = [
  "bicubic_upscaler",
  "network_upscaler",
  "check_tiling",
  "model_ensemble",
  "self_ensemble",
  "tile_starts",
  "tile_weights",
  "upscale_tiled",
]
