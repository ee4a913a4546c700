r"""One-shot search of the benchmark space (the `bench` cells): shared weights + a strategy.

nasr search --config=bench_one_shot --workdir=W        # REINFORCE on uniformly trained weights
nasr search --config=bench_one_shot --config.strategy.name=random --workdir=W  # random search

`nasr bench evaluate` runs it (and bench_darts) to see whether the shared weights rank the
members as the table's stand-alone training does.
"""

import ml_collections

from nasr.configs import common

PRESETS = ("tiny", "default")
# The table's space (configs/bench.py): the searched members are the table's members.
SPACE = {"name": "bench", "cells": 2, "channels": 16, "skip": "bilinear"}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Return the one-shot bench search config for `preset` (tiny or default)."""
  preset = common.check_preset(preset, PRESETS)
  c = common.one_shot_config(
    preset,
    SPACE,
    "reinforce",
    epochs=30,
    train_steps_per_epoch=60,
    controller_steps_per_epoch=10,
    patch_size=24,
  )
  c.reward = ml_collections.ConfigDict({"terms": {"psnr": 1.0}})  # the table ranks by PSNR alone
  c.reward.latency_side = 128  # LR side the "latency" term times its ops at (once per host)
  r = c.strategy.reinforce = ml_collections.ConfigDict()
  r.hidden = 32  # LSTM units per layer
  r.layers = 1  # stacked LSTM layers
  r.learning_rate = 1e-2  # Adam: 300 updates over a 3-decision space
  r.baseline_decay = 0.9  # moving average of the reward baseline
  # The shared weights train on uniformly sampled children (SPOS) while REINFORCE searches on
  # them: on the benchmark table this ranks the members with tau 0.59 where the policy's own
  # samples (ENAS, "policy") reach 0.05 (RESULTS.md, the supernet-training tries).
  c.sampling.mode = "uniform"
  c.supernet.shifted = True  # depthwise convs as shifted multiply-adds (fast on CPU)
  c.derive.candidates = 20
  return c
