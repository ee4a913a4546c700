r"""HNAS: hierarchical LSTM controllers pick two cells and the upsampling position; REINFORCE.

python -m launch.search --config=configs/hnas.py:tiny --workdir=/tmp/nasr/hnas_tiny
python -m launch.search --config=configs/hnas.py --config.lam=0.2 --workdir=W
python -m launch.search --config=configs/hnas.py --config.lambdas=0.2,0.6,0.9 --workdir=W  # sweep
python -m launch.train --config=configs/train.py --config.arch=W/best.json \
    --config.arch_channels=64 --workdir=W/retrain   # the paper's retrain width
python -m launch.train --config=configs/hnas.py:final --workdir=W/hnas_a   # the paper's HNAS-A

Guo et al., "Hierarchical Neural Architecture Search for Single Image Super-Resolution" (HNAS):
a normal and an upsampling cell (each node takes two earlier nodes through an operation) and the
layer of the upsampling cell, sampled by two cell-level LSTMs and a network-level LSTM started from
their final states (the `hierarchical` strategy), trained by REINFORCE on the joint reward

  R = lam * PSNR - (1 - lam) * Cost,   Cost = multiply-adds of the child in the authors' units

plus the sample entropy weighted by 1 (Supplementary B). The paper gives Cost as FLOPs; its
released code (controller_trainer.py) uses MACs at a 48x48 LR input times 0.5e-8 (1/20 of G
MACs at 480x480): reward.norm = "reference", the scale that produced HNAS-A/B/C. Divided by the
most complex child's instead (norm = "max"; that child, every normal edge a UDPB, costs about ten
times a typical one) the cost term of lam = 0.2 spanned 0.16 while the candidates' shared-weight
PSNRs spread over several dB, and a 0.2 / 0.6 / 0.9 sweep picked one network three times; in G
(norm = "paper") a child's 10-100 G outweigh any PSNR gap at lam = 0.6 already (0.4 per G against
0.6 per dB). HNAS-A/B/C are lam = 0.2 / 0.6 / 0.9; `lam` sets the reward terms (--config.lam=0.2 works), `lambdas` runs one search per lambda and
draws the Pareto front (nasr.searches.sweep). The search uses 40% of the training images for the
shared weights and 60% for the controller's reward and the derivation (data.val_fraction = 0.6).
"""

from pathlib import Path

import ml_collections

from nasr.configs import common
from nasr.configs import train as train_config

PRESETS = (*common.PRESETS, "final")
ARCHS = Path(__file__).resolve().parent / "archs"
# The network's forms, the released code's (docs/fidelity.md; nasr's earlier forms in comments):
# --config.space.cell_preprocess=concat_conv etc. switch each back.
FORMS = {
  "cell_preprocess": "relu_conv",  # or "concat_conv": one 1x1 conv of the cell's concat
  "conv_bias": False,  # True: biases on the stem, preprocessing, separable and dilated convs
  "deconv_kernel": "released",  # 3 at x2, 5 at x4; "2s": kernel 2s (needed for x3)
  "after_upsampling": "repeat",  # "resize": the LR cell, resized, as the next cell's two-back input
  "skip": "none",  # "image": bicubic(x) added to the output (short runs learn faster)
  "reduction": 3,  # RCAB's channel-attention reduction (nasr's earlier 4)
}
HNAS_A = str(ARCHS / "hnas_a.json")


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Return the HNAS search config for `preset` (tiny, default, paper) or the `final` retrain."""
  preset = common.check_preset(preset, PRESETS)
  if preset == "final":
    return _final()
  c = common.one_shot_config(
    preset,
    {"name": "hnas", "layers": 12, "nodes": 4, "channels": 8, **FORMS},
    "hierarchical",
    epochs=400,
    train_steps_per_epoch=200,
    controller_steps_per_epoch=300,
    patch_size=24,
  )
  # The accuracy/cost trade-off of the reward (HNAS-A/B/C: 0.2 / 0.6 / 0.9); the reward's terms
  # follow it. `lambdas`: a comma list ("0.2,0.6,0.9") runs a sweep, one search per lambda.
  c.lam = 0.6
  c.lambdas = ""
  lam = c.get_ref("lam")
  # R = lam * PSNR - (1 - lam) * MACs(48x48) * 0.5e-8 + 1 * entropy (nasr.searches.reward).
  c.reward = ml_collections.ConfigDict(
    {"terms": {"psnr": lam, "macs": lam - 1.0, "entropy": 1.0}, "norm": "reference"}
  )
  c.reward.latency_side = 128  # LR side the "latency" term times its ops at (once per host)
  h = c.strategy.hierarchical = ml_collections.ConfigDict()
  h.hidden = 100  # units of each LSTM (Supplementary B)
  h.layers = 1  # one layer per LSTM (Supplementary B)
  # Logits as c * tanh(logits / T); 0 = raw logits, as the released code (controller_tanh_constant
  # None); ENAS's cell controller used 1.1.
  h.tanh_constant = 0.0
  h.temperature = 0.0  # T; 0 = none
  h.learning_rate = 3e-4  # cosine from 3e-4 to 1.5e-4 over the search (Supplementary B)
  h.lr_end = 1.5e-4  # where the cosine ends, after decay_steps updates
  # Every controller update of the search; follows --config.epochs and the steps per epoch.
  h.decay_steps = c.get_ref("epochs") * c.get_ref("controller_steps_per_epoch")
  # The reward baseline: a moving average with decay 0.95 that starts again from the reward each
  # epoch (the released controller_trainer.py: ema_baseline_decay, baseline = None per epoch).
  h.baseline_decay = 0.95
  h.baseline_reset_every = c.get_ref("controller_steps_per_epoch")  # updates; 0 = never
  h.entropy_weight = 0.0  # the entropy is a reward term above, as HNAS adds it
  h.grad_clip = 0.0  # global-norm clip; 0 = off
  c.data.val_fraction = 0.6  # of the training images: 60% for the controller, 40% for the weights
  c.optim.lr = 1e-3  # shared weights: Adam, cosine from 1e-3 to 1e-5 (Supplementary B)
  c.optim.schedule = "cosine"
  c.optim.lr_end = 1e-5
  # Options of space.supernet(scale, **c.supernet): `remat` recomputes each cell in the backward
  # pass (less memory, more compute); `shifted` computes depthwise convs as shifted multiply-adds
  # (the same function; XLA:CPU's depthwise convs are slow); `unroll` is the layers per scan
  # iteration (0 = unrolled: slower to compile, faster steps on the CPU).
  c.supernet.update({"remat": False, "shifted": True, "unroll": 0})
  # What `nasr train` adds to the found architecture (the next commands a search prints): HNAS
  # searches at 8 channels and retrains at the paper's 64.
  c.retrain_overrides = ml_collections.ConfigDict({"arch_channels": 64})
  if preset == "tiny":
    c.supernet.unroll = 1  # a rolled scan compiles faster
    c.supernet.shifted = False  # so do XLA's own convs (tiny steps: their speed does not matter)
  elif preset == "default":  # sized for the 2-core CPU: a search of about 6-7 minutes
    c.space.update({"layers": 6, "nodes": 4, "channels": 8})
    c.data.patch_size, c.val_patch = 16, 32
    c.epochs, c.train_steps_per_epoch, c.controller_steps_per_epoch = 24, 20, 10
    c.derive.candidates = 20
    # The paper's 3e-4 moves a logit by about 0.07 in this search's 240 updates (Adam steps are
    # about lr each): the policy would stay uniform. ENAS's controller rate, halved by the cosine.
    h.learning_rate, h.lr_end = 3.5e-3, 1.75e-3
    c.supernet.unroll = 1  # compiles in a third of the time; steps as fast on the CPU
  elif preset == "paper":
    # DIV2K's 800 training images, 40% / 60% (the tfds validation split is not used).
    c.data.train = "tfds:nasr_div2k/bicubic_x{scale}"
    c.data.patch_size, c.data.batch_size = 48, 16  # LR 48x48, batch 16
    # The released schedule (search.py --epoch 400, option.py): per epoch the weights see their
    # 320 images 10 times (repeat_data_time) in batches of 16, 200 steps, and the controller its
    # 480, 300 steps (data_range 1-320/321-800: the 40% / 60% split above).
    c.epochs, c.train_steps_per_epoch, c.controller_steps_per_epoch = 400, 200, 300
  return c


def _final() -> ml_collections.ConfigDict:
  """Return the retrain config of the paper's HNAS-A (configs/archs/hnas_a.json).

  Supplementary B: the search's settings (Adam, cosine 1e-3 -> 1e-5, batch 16, L1) with 64
  channels per operation. The step count is the released code's: its README retrains for 300
  epochs, and an epoch of the EDSR data loader it uses is test_every = 1,000 mini-batches.
  The network is the authors' (the hnas space's defaults): 974,019 parameters at x2.
  """
  c = train_config.get_config("paper")
  c.preset = "final"
  c.arch = HNAS_A
  c.arch_channels = 64  # searched at 8
  # HNAS-A's separable and dilated convs: a training step on the 2-core CPU takes 4.8 s with
  # depthwise convs as shifted multiply-adds, 27.6 s as conv_general_dilated (BENCHMARKS.md).
  c.depthwise = "shifted"
  c.data.patch_size = 48
  c.data.batch_size = 16
  c.steps = 300_000
  c.optim.lr = 1e-3
  c.optim.schedule = "cosine"
  c.optim.lr_end = 1e-5
  c.optim.decay_every = 0
  c.eval_every = 10_000
  return c
