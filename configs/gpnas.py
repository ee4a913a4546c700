r"""GP-NAS over dense residual networks and RCAN-style networks (AIM 2020 real-image SR winners).

python -m launch.search --config=configs/gpnas.py:tiny --workdir=/tmp/nasr/gpnas_tiny
python -m launch.search --config=configs/gpnas.py --workdir=W          # CPU, embedded data
python -m launch.train --config=configs/train.py --config.arch=W/topk/0.json --workdir=W/final

Each round the GP proposes `batch` architectures of the grid, each is trained from scratch for the
proxy budget in `train` (the same trainer as launch.train, validation PSNR on images carved from the
training set), and the GP is refitted. Finally the whole grid is ranked by predicted PSNR:
W/gp.json, W/topk.json (+ W/topk/<rank>.json architecture files), W/gp.png.
"""

import ml_collections

from nasr.configs import common
from nasr.configs import train as train_config


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Return the GP-NAS search config for `preset` (tiny, default or paper)."""
  preset = common.check_preset(preset)
  c = ml_collections.ConfigDict()
  c.method = "gp"
  c.preset = preset
  c.seed = 0
  c.scale = 2
  # The grid: family x features x depth x block size (see nasr/spaces/drn.py). The RCAN family
  # reads the depth / size positions from rcan_groups / rcan_blocks (same lengths).
  c.space = ml_collections.ConfigDict(
    {
      "name": "drn",
      "features": (8, 16, 24),
      "blocks": (1, 2, 3, 4),
      "stages": (1, 2, 3),
      "families": ("drn", "rcan"),
      "rcan_groups": (1, 2, 3, 4),
      "rcan_blocks": (1, 2, 3),
      "reduction": 4,
    }
  )
  c.strategy = ml_collections.ConfigDict()
  # GP-NAS; any registered strategy runs this search (--config.strategy.name=random: the
  # random-search baseline, reported by measured PSNR in W/candidates.json and W/topk.json).
  c.strategy.name = "gp"
  g = c.strategy.gp = ml_collections.ConfigDict()
  g.kernel = "matern52"  # rbf | matern32 | matern52 | exponential
  g.acquisition = "mi"  # mi (variance reduction over the grid) | variance | ucb | ei
  g.ard = True  # one length-scale per token position
  g.fit_steps = 150  # Adam steps per marginal-likelihood refit
  g.fit_restarts = 3
  g.learning_rate = 0.05  # Adam, of the refit
  g.prior_std = 2.0  # weak prior on log hyper-parameters (0 = pure maximum likelihood)
  g.ucb_beta = 2.0
  g.max_grid = 200_000
  g.reference_size = 2048
  c.rounds = 4  # propose -> train -> refit cycles
  c.batch = 3  # architectures trained per round
  c.topk = 3  # architectures returned for the ensemble (heterogeneous families first)
  c.report_top = 20  # grid predictions listed in gp.json
  # Train the top-k the search never measured with the proxy budget, so topk.json holds predicted
  # against measured PSNR for every one of them.
  c.measure_topk = True
  c.keep_checkpoints = 2
  c.distributed = common.distributed_config()
  # The proxy training of every candidate: a configs/train.py config (its arch, scale and seed are
  # set by the search). The reward is the final validation PSNR on images carved from the
  # training set (data.val = ""), never on a benchmark.
  t = train_config.get_config(preset)
  t.data.val = ""
  t.data.num_val = 2
  t.data.max_val_images = 2
  t.steps = 150
  t.data.patch_size = 24
  t.data.batch_size = 8
  t.optim.lr = 5e-4
  t.optim.decay_every = 0
  t.log_every = 50
  t.eval_every = t.steps
  t.checkpoint_every = 50
  t.keep_checkpoints = 1
  c.train = t
  if preset == "tiny":
    c.space.update(common.TINY_SPACES["drn"])
    c.rounds, c.batch, c.topk, c.report_top = 2, 2, 2, 5
    g.fit_steps, g.fit_restarts = 30, 1
    t.steps, t.data.patch_size, t.data.batch_size = 5, 12, 4
    t.data.num_val, t.data.max_val_images = 1, 1
    t.log_every, t.eval_every, t.checkpoint_every = 5, 5, 2
  elif preset == "paper":
    # The paper's grid (F, D, L; RCAN* = 128 features, 5 groups x 10 blocks; RCAN = 64, 10 x 20).
    # Its search budget is not stated: 8 rounds x 8 candidates (10% of the 672 architectures),
    # each trained for 5,000 steps, is ours. For the AIM 2020 real-SR track point data.train at
    # the pairs folder (HR/ and LR/) and set data.ncc_threshold = 0.99, as the paper filters pairs.
    c.space = ml_collections.ConfigDict(
      {
        "name": "drn",
        "features": (32, 64, 96, 128),
        "blocks": tuple(range(4, 25)),
        "stages": (2, 3, 4, 5),
        "families": ("drn", "rcan"),
        "rcan_groups": tuple(range(2, 23)),
        "rcan_blocks": (5, 10, 15, 20),
        "reduction": 16,
      }
    )
    c.rounds, c.batch, c.topk = 8, 8, 3
    t.loss = "ms_ssim_l1"  # the paper's L1 + MS-SSIM
    t.data.patch_size, t.data.batch_size = 120, 16
    t.data.num_val, t.data.max_val_images = 10, 10
    t.steps = 5000
    t.optim.lr = 1e-4
    t.log_every, t.eval_every, t.checkpoint_every = 500, 5000, 1000
  return c
