"""Flax linen leaf layers with no search knowledge, shared by the baselines and every space."""

from nasr.ops.attention import RCAB, ChannelAttention
from nasr.ops.blocks import ResBlock
from nasr.ops.conv import Conv, ResidualOp, SepConv
from nasr.ops.frame import SKIPS, UPSAMPLE_AT, SRFrame, sr_frame
from nasr.ops.params import ConvParams, SepConvParams
from nasr.ops.upsample import (
  DIV2K_RGB_MEAN,
  RESIZE_METHODS,
  SUBPIXEL_SCALES,
  Deconv,
  MeanShift,
  SubPixelUpsampler,
  check_subpixel_scale,
  interpolate,
  pixel_shuffle,
)

__all__ = [
  "DIV2K_RGB_MEAN",
  "RCAB",
  "RESIZE_METHODS",
  "SKIPS",
  "SUBPIXEL_SCALES",
  "ChannelAttention",
  "Conv",
  "ConvParams",
  "Deconv",
  "MeanShift",
  "ResBlock",
  "ResidualOp",
  "SRFrame",
  "SepConv",
  "SepConvParams",
  "SubPixelUpsampler",
  "UPSAMPLE_AT",
  "check_subpixel_scale",
  "interpolate",
  "pixel_shuffle",
  "sr_frame",
]
