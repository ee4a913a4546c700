"""Flax linen leaf layers with no search knowledge, shared by the baselines and every space."""

from nasr.ops.attention import RCAB, ChannelAttention
from nasr.ops.blocks import ResBlock
from nasr.ops.conv import Conv, PreActConv, ResidualOp, SepConv
from nasr.ops.darts_ops import ShiftDepthwiseConv, ShiftSepConv
from nasr.ops.upsample import (
  DIV2K_RGB_MEAN,
  RESIZE_METHODS,
  SUBPIXEL_SCALES,
  Deconv,
  MeanShift,
  ResizeUpsampler,
  SubPixelUpsampler,
  check_subpixel_scale,
  pixel_shuffle,
)

__all__ = [
  "DIV2K_RGB_MEAN",
  "RCAB",
  "RESIZE_METHODS",
  "SUBPIXEL_SCALES",
  "ChannelAttention",
  "Conv",
  "Deconv",
  "MeanShift",
  "PreActConv",
  "ResBlock",
  "ResidualOp",
  "ResizeUpsampler",
  "SepConv",
  "ShiftDepthwiseConv",
  "ShiftSepConv",
  "SubPixelUpsampler",
  "check_subpixel_scale",
  "pixel_shuffle",
]
