r"""DeCoNAS: LSTM controller + REINFORCE over densely connected blocks, complexity-penalised reward.

python -m launch.search --config=configs/deconas.py:tiny --workdir=/tmp/nasr/deconas_tiny
python -m launch.search --config=configs/deconas.py --config.space.fusion_search=True --workdir=W
python -m launch.train --config=configs/train.py --config.arch=W/best.json --workdir=W/retrain
python -m launch.train --config=configs/deconas.py:final --workdir=W/deconasnet   # the paper's net

The paper's four settings CB{0,1}_FF{0,1} are two plain keys; the presets search CB1_FF0.
CB (complexity-based penalty): CB1 is reward.terms.params = -2, CB0 is
--config.reward.terms.params=0. FF (feature-fusion search): FF1 is --config.space.fusion_search=True.
"""

from pathlib import Path

import ml_collections

from nasr.configs import common
from nasr.configs import train as train_config

PRESETS = (*common.PRESETS, "final")
DECONASNET = str(Path(__file__).resolve().parent / "archs" / "deconasnet.json")


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Return the DeCoNAS search config for `preset` (tiny, default, paper) or the `final` retrain."""
  preset = common.check_preset(preset, PRESETS)
  if preset == "final":
    return _final()
  c = common.one_shot_config(
    preset,
    {"name": "deconas", "blocks": 4, "nodes": 4, "channels": 16},
    "reinforce",
    epochs=45,  # default: about 10 minutes on the 2-core CPU (BENCHMARKS.md)
    train_steps_per_epoch=60,
    controller_steps_per_epoch=20,
    patch_size=32,
  )
  c.space.fusion_search = False  # True: the paper's FF1, the LFF / GFF connections are searched
  # The network as the authors' code builds it; True: nasr's network before issue 26 (a 1x1 conv
  # before every DNB, eq. (3) literally; biases on the depthwise convs). nasr/spaces/deconas.py.
  c.space.fuse_before_first = False
  c.space.depthwise_bias = False
  # R = PSNR - alpha * params/params_max, alpha = 2: the paper's CB1 (CB0: params = 0);
  # nasr.searches.reward lists the terms.
  c.reward = ml_collections.ConfigDict({"terms": {"psnr": 1.0, "params": -2.0}})
  c.reward.latency_side = 128  # LR side the "latency" term times its ops at (once per host)
  r = c.strategy.reinforce = ml_collections.ConfigDict()
  r.hidden = 64  # LSTM units per layer
  r.layers = 2  # stacked LSTM layers
  r.tanh_constant = 1.1  # logits = c * tanh(logits / T)
  r.op_tanh_reduce = 2.5  # op-bit heads use c = 1.1 / 2.5 (ENAS/DeCoNAS reference code)
  r.temperature = 0.0  # T; 0 = none
  r.learning_rate = 3e-4  # Adam
  r.baseline_decay = 0.99  # moving average of the reward baseline
  r.entropy_weight = 1e-4  # entropy bonus in the controller's loss
  r.grad_clip = 0.0  # global-norm clip; 0 = off
  c.data.num_val = 2
  c.optim.lr = 1e-4
  # lax.cond per input slot computes only the child's convs: with shifted depthwise convs it is
  # 1.6x faster than masking every slot at the default size and 2.5x at paper size on the CPU
  # (BENCHMARKS.md), so it is the default.
  c.supernet.skip_inactive = True
  # With skip_inactive: one lax.switch per op over its gathered input slots instead of a lax.cond
  # per slot (a paper-size step: 72 conditionals instead of 324, the same child-only FLOPs).
  # config.kernels=accelerator (auto on a GPU) turns it on; the CPU keeps the per-slot form.
  c.supernet.gathered = False
  # Recompute each DNB in the backward pass: needed at paper size, where the stored activations of
  # the masked supernet step take 50.9 GB (BENCHMARKS.md); costs about a third more compute.
  c.supernet.remat = False
  # Depthwise convs of the supernet as shifted multiply-adds: the same function; XLA:CPU's
  # depthwise-conv gradient is far slower (BENCHMARKS.md). False = conv_general_dilated (compare
  # on accelerators with benchmarks/deconas_speed.py).
  c.supernet.shifted = True
  if preset == "default":
    # The paper's 3e-4 moves the policy over 20,000 updates (200 epochs x 100); this preset makes
    # 900, and at 3e-4 its entropy fell from 20.791 to 20.788 of 20.794 nats. 10x the step size
    # for 22x fewer updates (ENAS' reference code uses 3.5e-3); RESULTS.md has the runs.
    r.learning_rate = 3e-3
  elif preset == "paper":
    c.space.update({"blocks": 16, "nodes": 8, "channels": 64})
    # DIV2K: its training images train the shared weights, its validation images score rewards.
    c.data.update(
      {"train": "tfds:nasr_div2k/bicubic_x{scale}", "val": "tfds:nasr_div2k/bicubic_x{scale}"}
    )
    c.data.patch_size, c.data.batch_size, c.val_patch = 64, 16, 64
    c.epochs, c.train_steps_per_epoch, c.controller_steps_per_epoch = 200, 1000, 100
    c.optim.decay_every = 50_000  # halve every 50 epochs
    c.supernet.remat = True
  return c


def _final() -> ml_collections.ConfigDict:
  """Return the retrain config of the paper's DeCoNASNet (1,000 epochs x 1,000 steps, patch 64)."""
  c = train_config.get_config("paper")
  c.preset = "final"
  c.arch = DECONASNET
  c.data.patch_size = 64
  c.steps = 1_000_000
  c.optim.lr = 1e-4
  c.optim.decay_every = 200_000  # halve every 200 epochs
  c.eval_every = 10_000
  return c
