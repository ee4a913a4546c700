r"""Train an SR network from scratch (a baseline or an architecture found by search).

python -m launch.train --config=configs/train.py:tiny --workdir=/tmp/nasr/train_tiny
python -m launch.train --config=configs/train.py --workdir=/tmp/nasr/edsr_x2
python -m launch.train --config=configs/train.py --config.arch=W/best.json --workdir=W/retrain
"""

import ml_collections

from nasr.configs import common

# quick: the README's first command, a few minutes on 2 CPU cores; default: the longer recipe.
PRESETS = ("tiny", "quick", "default", "paper")


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Return the training config for `preset` (tiny, quick, default or paper)."""
  preset = common.check_preset(preset, PRESETS)
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0
  c.scale = 2
  # A registered network ("edsr") with its fields, or `arch`: a JSON file written by a search
  # (best.json / genotype.json), which takes precedence.
  c.model = "edsr"
  c.model_kwargs = ml_collections.ConfigDict({"blocks": 8, "channels": 32})
  c.arch = ""
  # The width to train `arch` at; 0 keeps the file's (HNAS searches at 8 and retrains at 64).
  c.arch_channels = 0
  # Depthwise convs of a searched network (DeCoNAS, DARTS): "conv" = conv_general_dilated, or
  # "shifted" multiply-adds (the same function and parameters). Which is faster depends on the
  # network and device: on the 2-core CPU a DARTS-SR child (8 cells x 32) trains 2x slower
  # shifted, while the DeCoNAS supernet searches 2x faster (BENCHMARKS.md).
  c.depthwise = "conv"
  c.loss = "l1"
  c.ms_ssim_weight = 0.84  # w of loss=ms_ssim_l1: w * (1 - MS-SSIM) + (1 - w) * L1
  common.compute_config(c)
  c.data = common.data_config(preset)
  c.optim = common.optim_config(preset)
  # The default is sized for a 2-core CPU: small LR patches make many cheap updates.
  c.steps = 3000
  c.data.patch_size = 32
  c.optim.lr = 5e-4
  c.optim.decay_every = 2000
  c.log_every = 100
  c.eval_every = 500
  c.checkpoint_every = 250
  c.keep_checkpoints = 2
  c.eval_tile = 0  # LR tile size for validation (0 = whole image)
  c.distributed = common.distributed_config()
  if preset == "tiny":
    c.model_kwargs = ml_collections.ConfigDict({"blocks": 1, "channels": 8})
    c.data.patch_size = 12
    c.steps = 6
    c.optim.decay_every = 0
    c.log_every = 2
    c.eval_every = 3
    c.checkpoint_every = 2
  elif preset == "quick":  # 2 quiet CPU cores: ~1.5 min, about +1 dB over bicubic (README)
    c.model_kwargs = ml_collections.ConfigDict({"blocks": 4, "channels": 32})
    c.data.patch_size = 24
    c.steps = 1500
    c.optim.lr = 1e-3
    c.optim.decay_every = 1000
    c.eval_every = 500
    c.checkpoint_every = 500
  elif preset == "paper":  # EDSR-baseline (Lim et al. 2017): 16 blocks, 64 channels, 300k steps.
    c.model_kwargs = ml_collections.ConfigDict({"blocks": 16, "channels": 64})
    c.steps = 300_000
    c.data.patch_size = 48
    c.optim.lr = 1e-4
    c.optim.decay_every = 200_000
    c.log_every = 1000
    c.eval_every = 10_000
    c.checkpoint_every = 5000
  return c
