"""Numpy-only data room: images in and out, MATLAB bicubic, paired datasets, patches, TFDS.

Imports only numpy, Pillow, scikit-image and nasr.core; TFDS is imported lazily by `load_tfds`.
"""

from nasr.data.cache import CachedImages, DecodeCache, MapPool
from nasr.data.datasets import SRPairs, load_folder_or_pairs, load_hr_folder, load_paired_folders
from nasr.data.embedded import embedded_names, load_embedded
from nasr.data.imresize import bicubic_degrade, check_scale, imresize, modcrop
from nasr.data.io import list_images, read_image, write_png
from nasr.data.patches import PatchSampler
from nasr.data.real_pairs import filter_pairs, is_paired_folder, ncc, pair_ncc
from nasr.data.sources import center_crops, filter_misaligned, load_dataset, load_train_val
from nasr.data.tfds_builders import load_tfds

__all__ = [
  "load_train_val",
  "load_dataset",
  "filter_misaligned",
  "center_crops",
  "PatchSampler",
  "SRPairs",
  "CachedImages",
  "DecodeCache",
  "MapPool",
  "bicubic_degrade",
  "check_scale",
  "embedded_names",
  "filter_pairs",
  "imresize",
  "is_paired_folder",
  "list_images",
  "load_embedded",
  "load_folder_or_pairs",
  "load_hr_folder",
  "load_paired_folders",
  "load_tfds",
  "modcrop",
  "ncc",
  "pair_ncc",
  "read_image",
  "write_png",
]
