r"""The tabular SR benchmark: train every member of the `bench` space (216 cells) stand-alone.

nasr bench build --config=bench --workdir=W \
  --config.tests=../shared/data/benchmarks/Set5,../shared/data/benchmarks/Set14
nasr bench build --config=bench:tiny --workdir=/tmp/nasr/bench_tiny     # 2 members, 2 steps

Resumable: run the same command again and only the missing (member, seed) runs are trained.
W/table.json is the table (the one shipped in nasr/bench/data was built with the default preset).
"""

import ml_collections

from nasr.configs import common

PRESETS = ("tiny", "default")


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Return the benchmark build config for `preset` (default, or tiny for tests)."""
  preset = common.check_preset(preset, PRESETS)
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.scale = 2
  # skip: the frame's long skip, the bilinearly upscaled input added to the output (see
  # nasr/spaces/bench.py SKIPS; RESULTS.md, the bench protocol, says why not the others)
  c.space = ml_collections.ConfigDict(
    {"name": "bench", "cells": 2, "channels": 16, "skip": "bilinear"}
  )
  c.members = ""  # "" = all 216; or ids and ranges, e.g. "0-9,37"
  c.seeds = 3  # stand-alone runs per member (seed s: initial weights and batch order)
  c.steps = 600  # Adam steps per run
  c.curve = (75, 150, 300, 600)  # validation points: the learning curve (the last is the result)
  c.data = ml_collections.ConfigDict()
  c.data.train = "embedded"  # the training images (scikit-image's photographs: any machine)
  c.data.val = "embedded"  # its validation split: the table's own metric
  c.data.patch_size = 24  # LR patch side
  c.data.batch_size = 16
  c.data.augment = True
  c.optim = ml_collections.ConfigDict({"lr": 1e-3, "schedule": "cosine"})
  # Comma-separated HR folders scored at the end of every run (e.g. Set5 and Set14); each folder's
  # name becomes a column of the table. "" = validation only.
  c.tests = ""
  c.eval_tile = 64  # LR tile side of whole-image evaluation: one compiled shape per member
  c.shifted = True  # depthwise convs as shifted multiply-adds (the same function, fast on CPU)
  # Processes training members side by side: 0 = one per CPU core (CPU) or per device.
  c.workers = 0
  c.check = True  # compare rebuilt runs with the shipped table's
  if preset == "tiny":
    c.space.channels = 4
    c.space.cells = 1
    c.members = "0,215"
    c.seeds = 1
    c.steps = 2
    c.curve = (1, 2)
    c.data.patch_size = 12
    c.data.batch_size = 2
    c.workers = 1
  return c
