"""Upscale any image: tiling with distance-weighted overlap blending, self- and model ensembles."""

from nasr.inference.ensemble import model_ensemble, self_ensemble
from nasr.inference.tiling import tile_weights, upscale_tiled

__all__ = ["model_ensemble", "self_ensemble", "tile_weights", "upscale_tiled"]
