r"""Does the search work? Ranking correlation of a finished search's shared weights and a random
baseline at equal budget (nasr.searches.diagnose).

python -m launch.diagnose --config=configs/diagnose.py:tiny --config.search=W --workdir=W/diagnose
nasr diagnose --config=diagnose --config.search=W --workdir=W/diagnose

`search` is the workdir of a finished one-shot (DeCoNAS, HNAS) or DARTS-SR search. Every
architecture is trained stand-alone with `train` (a configs/train.py config: its arch, scale, seed
and data come from the search); ranking.json and ranking.png land in --workdir.
"""

import ml_collections

from nasr.configs import common
from nasr.configs import train as train_config


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Return the diagnostics config for `preset` (tiny, default or paper)."""
  preset = common.check_preset(preset)
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.search = ""  # the finished search's workdir (required)
  c.seed = 0  # draws the pool and the stratified sample
  c.pool = 64  # uniformly random architectures scored with the shared weights
  c.samples = 8  # of the pool, stratified over its shared-weight PSNR range, trained stand-alone
  c.random = 8  # the pool's first (a uniform sample), trained stand-alone: the random baseline
  # One-shot searches: the same search with the `random` strategy (same supernet steps and scored
  # children) in W/random_search, its derived architecture trained stand-alone as well.
  c.random_search = True
  # A benchmark table (`nasr bench build`'s table.json; "" = the one nasr ships, if any): when the
  # searched space is the table's, its stand-alone PSNRs are looked up instead of trained and the
  # whole space is ranked with the shared weights. A table named here of another space is an error.
  c.table = ""
  c.distributed = common.distributed_config()
  # The stand-alone proxy budget: the same steps, patches and seed for every architecture.
  t = train_config.get_config("quick" if preset == "default" else preset)
  t.steps = 800
  t.data.batch_size = 8
  t.optim.decay_every = 500
  t.eval_every = t.steps
  t.checkpoint_every = 200
  t.log_every = 200
  if preset == "tiny":
    c.pool, c.samples, c.random = 6, 3, 2
    t.steps, t.data.patch_size, t.data.batch_size = 4, 12, 4
    t.eval_every, t.checkpoint_every, t.log_every = 4, 4, 2
  elif preset == "paper":  # Yu et al. 2020 train each architecture far longer; so should we here
    c.pool, c.samples, c.random = 200, 16, 16
    t.steps = 20_000
    t.optim.decay_every = 10_000
    t.eval_every, t.checkpoint_every, t.log_every = t.steps, 2000, 1000
  c.train = t
  return c
