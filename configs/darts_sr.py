r"""Improved DARTS for SR: bilevel search of one cell (weights on one half of the images, alpha on
the other), then retraining of the derived genotype.

python -m launch.search --config=configs/darts_sr.py:tiny --workdir=/tmp/nasr/darts_tiny
python -m launch.search --config=configs/darts_sr.py --workdir=W                 # ~15 CPU-minutes
python -m launch.search --config=configs/darts_sr.py --config.space.ops=original --workdir=W0
python -m launch.search --config=configs/darts_sr.py:paper --workdir=W          # 8 cells x 64, 50 ep.
python -m launch.train --config=configs/train.py --config.arch=W/genotype.json --workdir=W/retrain

`space.ops`: "improved" (the paper's residual separable/dilated convolutions, skip, zero) or
"original" (DARTS' set with pooling, convolutions without the shortcut), or a comma-separated op
list. `alpha_mode`: exact (second order through the virtual step, the default), finite_difference
(DARTS' second order) or first_order. genotype.json is written with `retrain.cells` cells of
`retrain.channels` channels, the size `launch.train` builds. `space.node_reduce`: "mean" (default;
a node averages its incoming edges, which keeps deep residual cells at scale) or "sum" (DARTS).
"""

import ml_collections

from nasr.configs import common


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Return the DARTS-SR search config for `preset` (tiny, default or paper)."""
  preset = common.check_preset(preset)
  c = ml_collections.ConfigDict()
  c.method = "darts"
  c.preset = preset
  c.seed = 0
  c.scale = 2
  # The default is sized for ~15 minutes on a 2-core CPU (BENCHMARKS.md: darts_speed).
  c.space = ml_collections.ConfigDict(
    {
      "name": "darts_sr",
      "ops": "improved",
      "cells": 3,
      "channels": 16,
      "nodes": 4,
      "node_reduce": "mean",  # mean | sum: how a node combines its incoming edges
    }
  )
  # The size genotype.json asks `launch.train` to build (0 = the search network's).
  c.retrain = ml_collections.ConfigDict({"cells": 8, "channels": 32})
  c.alpha_mode = "exact"  # exact | finite_difference | first_order
  c.xi = -1.0  # virtual-step size; < 0 = the weights' current learning rate (DARTS)
  c.fd_scale = 0.01  # finite_difference: eps = fd_scale / ||grad_w' L_val||
  # exact: "reverse" = jax.grad through the virtual step; "jvp" = the same gradient with its
  # second-order term forward over reverse, far less memory (nasr.estimation.darts).
  c.exact_form = "reverse"
  # Options of space.supernet(scale, **c.supernet).
  c.supernet = ml_collections.ConfigDict()
  c.supernet.remat = False  # recompute cells in the backward pass (less memory, more compute)
  # Depthwise convs of the supernet as shifted multiply-adds: several times faster on CPU, slower
  # to compile; False = conv_general_dilated (compare on accelerators with the benchmark).
  c.supernet.shifted = True
  c.alpha_init_std = 1e-3  # alpha = std * N(0, 1) at the start (DARTS)
  # Weights: SGD, momentum 0.9, lr 1e-2, weight decay 1e-3 (paper); gradient clip 5 (DARTS).
  c.w_optim = ml_collections.ConfigDict(
    {
      "lr": 1e-2,
      "momentum": 0.9,
      "weight_decay": 1e-3,
      "schedule": "cosine",  # constant | cosine (to lr_min over the run, DARTS)
      "lr_min": 0.0,
      "grad_clip": 5.0,  # global-norm clip; 0 = off
    }
  )
  # Architecture: Adam, lr 3e-4, betas (0.9, 0.999), weight decay 1e-3 (paper; see `default`
  # for what that decay does at this loss scale).
  c.alpha_optim = ml_collections.ConfigDict(
    {"lr": 3e-4, "b1": 0.9, "b2": 0.999, "weight_decay": 1e-3}
  )
  c.loss = "l1"  # l1 | charbonnier | ms_ssim | ms_ssim_l1
  c.ms_ssim_weight = 0.84  # w of loss=ms_ssim_l1: w * (1 - MS-SSIM) + (1 - w) * L1
  common.compute_config(c)
  c.data = common.data_config(preset)
  # The training images are split in halves (w / alpha); data.val scores the supernet's PSNR.
  c.data.val = "embedded"
  c.data.patch_size = 16
  c.data.batch_size = 8
  c.data.max_val_images = 2
  c.val_patch = 48  # LR side of the validation centre crops
  c.epochs = 10
  c.steps_per_epoch = 30
  c.keep_checkpoints = 2
  c.distributed = common.distributed_config()
  if preset == "default":
    # The paper's alpha step 3e-4 acts over 25,000 steps (50 epochs x 500); this preset makes 300,
    # and Adam moves a logit by about its step size per step at most: 0.09 in all, so softmax(alpha)
    # could hardly leave uniform. 10x the step size for 80x fewer steps; RESULTS.md has the runs.
    c.alpha_optim.lr = 3e-3
    # The paper's alpha decay 1e-3 is an L2 term added to the gradient; with an L1 loss on [0, 1]
    # pixels the architecture gradient is ~4e-5, so the decay holds |alpha| near |grad| / 1e-3
    # (~0.04) whatever the step size: softmax(alpha) stayed within 0.02 of uniform. Without it
    # alpha keeps moving every epoch (RESULTS.md).
    c.alpha_optim.weight_decay = 0.0
  if preset == "tiny":
    c.space.update(common.TINY_SPACES["darts_sr"])
    c.retrain.update({"cells": 2, "channels": 8})
    c.data.patch_size, c.data.batch_size, c.val_patch = 12, 4, 16
    c.data.max_val_images = 1
    c.epochs, c.steps_per_epoch = 3, 2
    # A few steps: compiling dominates, and XLA's own depthwise convs compile in half the time
    # of the shifted form (the whole tiny search: 32 s instead of 55 s on 2 cores).
    c.supernet.shifted = False
  elif preset == "paper":
    c.space.update({"cells": 8, "channels": 64, "nodes": 4})
    # Retraining: 20 cells (paper Sec. 5.3.1: 256 channels, 26.68M parameters at x4).
    c.retrain.update({"cells": 20, "channels": 256})
    c.scale = 4
    # Half of the DIV2K training images train w, the other half alpha.
    c.data.train = "tfds:nasr_div2k/bicubic_x{scale}"
    c.data.val = "tfds:nasr_div2k/bicubic_x{scale}"
    c.data.max_val_images = 10
    c.data.patch_size, c.data.batch_size, c.val_patch = 64, 16, 64
    c.epochs = 50
    c.steps_per_epoch = 500  # not stated in the paper; 8 h on a TITAN Xp bounds it
    # XLA's estimate of the exact step at this size: 328 GiB, 51.5 GiB rematerialised (cells and
    # ops), 11.6 GiB in the jvp form (first order 47 / 8.4 GiB; BENCHMARKS.md).
    c.supernet.remat = True
    c.exact_form = "jvp"
  return c
