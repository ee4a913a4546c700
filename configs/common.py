"""Pieces shared by the config files: presets (checked here, so a typo names the choices), the
tiny size of every space, and the skeleton every one-shot search config starts from."""

import ml_collections

from nasr.core.errors import ConfigError

PRESETS = ("tiny", "default", "paper")

# The tiny size of each registered space, declared once: the tiny presets search it (seconds on
# a 2-core CPU) and the tests build it (tests/spaces/test_contract.py fails for a space without).
TINY_SPACES = {
  "bench": {"cells": 1, "channels": 4},
  "deconas": {"blocks": 2, "nodes": 2, "channels": 8},
  "hnas": {"layers": 3, "nodes": 2, "channels": 4},
  "darts_sr": {"cells": 2, "channels": 8, "nodes": 2},
  "drn": {
    "features": (4, 8),
    "blocks": (1, 2),
    "stages": (1, 2),
    "rcan_groups": (1, 2),
    "rcan_blocks": (1, 2),
  },
}


def check_preset(preset: str | None, allowed=PRESETS) -> str:
  """Return the preset name (default 'default'), or raise ConfigError listing the allowed ones."""
  preset = preset or "default"
  if preset not in allowed:
    raise ConfigError(f"unknown preset {preset!r}; available: {', '.join(allowed)}")
  return preset


def data_config(preset: str) -> ml_collections.ConfigDict:
  """Return the data section: where pixels come from and how training patches are cut."""
  d = ml_collections.ConfigDict()
  # "embedded" (photos shipped with scikit-image), a folder of HR images, a folder with HR/ and LR/
  # sub-folders, or "tfds:<builder>/<config>" (e.g. tfds:nasr_div2k/bicubic_x2 with manual_dir).
  d.train = "embedded"
  # Validation images: "embedded", a folder, or "" to carve `num_val` images (or `val_fraction`)
  # out of the training set.
  d.val = "embedded"
  d.num_val = 2
  # In (0, 1): carve this fraction of the training images instead (rounded; at least 1 for each
  # side; HNAS: 0.6 for the controller, 0.4 for the shared weights); 0 = use num_val.
  d.val_fraction = 0.0
  d.max_val_images = 0  # 0 = all; limits per-evaluation time on large validation folders
  d.patch_size = 48  # LR patch side
  d.batch_size = 16  # global batch, split over all devices
  d.augment = True  # random hflip / vflip / rot90 (all 8 flips and transposes)
  # Threads that crop batches and put them on the devices ahead of the step (0 or 1 = one thread).
  # Two overlap one batch's transfer with the next one's crops; more only pay on hosts with idle
  # cores (BENCHMARKS.md, input pipeline). The batches are the same for any number.
  d.workers = 2
  # Real-image SR (folders with HR/ and LR/ pairs from cameras): pairs whose normalised
  # cross-correlation, LR bicubic-upscaled to the HR size, is below this are excluded and logged
  # (Yu et al. 2020 use 0.99, with patch_size=120 and loss=ms_ssim_l1). 0 = keep every pair.
  d.ncc_threshold = 0.0
  d.manual_dir = ""  # where TFDS builders find manually downloaded archives
  d.tfds_dir = ""  # TFDS data_dir ("" = TFDS default)
  # A folder where folder and TFDS images are decoded once (LR and HR as .npy) and read back
  # memory-mapped, a few files at a time: memory stays bounded whatever the dataset's size, and a
  # changed source file is decoded again. "" = decode everything into memory (embedded always is).
  d.cache_dir = ""
  if preset == "tiny":
    d.patch_size = 12
    d.batch_size = 4
    d.max_val_images = 1
  elif preset == "paper":
    d.train = "tfds:nasr_div2k/bicubic_x{scale}"
    d.val = ""
    d.num_val = 10
  return d


def optim_config(preset: str) -> ml_collections.ConfigDict:
  """Return the Adam section shared by training and supernet search."""
  o = ml_collections.ConfigDict()
  o.lr = 2e-4
  o.schedule = "step"  # constant | step (halve every decay_every steps) | cosine
  o.decay_every = 0  # 0 = no decay
  o.decay_factor = 0.5
  o.warmup_steps = 0
  o.lr_end = 0.0  # where "cosine" ends (HNAS: 1e-5); the other schedules ignore it
  o.b1 = 0.9
  o.b2 = 0.999
  o.weight_decay = 0.0
  o.grad_clip = 0.0  # global-norm clip; 0 = off
  if preset == "paper":
    o.lr = 1e-4
  return o


def distributed_config() -> ml_collections.ConfigDict:
  """Return the multi-process section (jax.distributed); its defaults run a single process."""
  d = ml_collections.ConfigDict()
  # Every process runs the same command; process 0 writes the files. Unset values come from the
  # cluster's environment (srun, mpirun, a Kubernetes Indexed Job; nasr.parallel.COUNT_ENV and
  # ID_ENV, JAX_COORDINATOR_ADDRESS); values set here win. BUILD.md has the commands.
  d.coordinator = ""  # HOST:PORT of process 0, the same on every process
  d.num_processes = 0  # 0 = from the environment (none there: one process); 1 = one process
  d.process_id = 0  # this process's index (0 .. num_processes-1); used with num_processes
  # When another process stops answering (killed, its host lost), the others end with an error
  # after this many seconds; rerun every process to resume from the last checkpoint.
  d.heartbeat_timeout_s = 100
  # How long each process waits for all the others to connect at the start before it ends with
  # one line saying so (a process never started, a wrong coordinator address).
  d.init_timeout_s = 120
  return d


def compute_config(c: ml_collections.ConfigDict) -> None:
  """Add the compute keys every config that builds networks has: dtype and kernel forms."""
  # float32 | bfloat16: what networks, supernets and searches compute in. Parameters, optimiser
  # state, losses and metrics stay float32.
  c.compute_dtype = "float32"
  # auto | cpu | accelerator: "cpu" uses the forms this config tunes for XLA:CPU (`depthwise`,
  # `supernet.shifted`: shifted depthwise convs, tap-matmul kernel gradients); "accelerator" uses
  # XLA's own convolutions; "auto" picks by the JAX backend. The choice is logged.
  c.kernels = "auto"


def one_shot_config(
  preset: str,
  space: dict,
  strategy: str,
  epochs: int,
  train_steps_per_epoch: int,
  controller_steps_per_epoch: int,
  patch_size: int,
) -> ml_collections.ConfigDict:
  """Return the keys every one-shot search config shares, for `space` searched by `strategy`.

  The sizes are the search's own at the default preset; `tiny` replaces them (and the space's
  with TINY_SPACES) by sizes that run in seconds. The caller adds its reward, its strategy's
  section, its supernet options and what its presets change.
  """
  c = ml_collections.ConfigDict()
  c.method = "one_shot"
  c.preset = preset
  c.seed = 0
  c.scale = 2
  c.space = ml_collections.ConfigDict(space)
  c.strategy = ml_collections.ConfigDict()
  # reinforce | hierarchical | random | ...: each reads its options from its own section,
  # strategy.<name>, and one without a section runs with its defaults
  # (--config.strategy.name=random is the random-search baseline).
  c.strategy.name = strategy
  c.loss = "l1"  # l1 | charbonnier | ms_ssim | ms_ssim_l1
  c.ms_ssim_weight = 0.84  # w of loss=ms_ssim_l1: w * (1 - MS-SSIM) + (1 - w) * L1
  compute_config(c)
  c.data = data_config(preset)
  c.data.val = ""  # the reward's validation split is carved from the training images
  c.data.patch_size, c.data.batch_size = patch_size, 8
  c.val_patch = 48  # LR side of the centre crops that score children
  c.optim = optim_config(preset)  # of the shared weights
  c.epochs = epochs  # each: the shared-weight steps, then the strategy's steps
  c.train_steps_per_epoch = train_steps_per_epoch  # shared-weight steps, one sampled child each
  c.controller_steps_per_epoch = controller_steps_per_epoch  # strategy updates per epoch
  c.controller_batch = 1  # children per controller step (ENAS: 1)
  # How the shared-weight steps pick their child: "policy" (the strategy's samples, ENAS),
  # "uniform" (single-path uniform sampling, SPOS: the weights train apart from the strategy) or
  # "fair" (FairNAS's strict fairness: within each cycle of steps every choice of every decision
  # is trained equally often). `warmup_epochs`: first epochs that train the weights on uniform
  # samples and skip the strategy's steps.
  c.sampling = ml_collections.ConfigDict({"mode": "policy", "warmup_epochs": 0})
  c.supernet = ml_collections.ConfigDict()  # options of space.supernet(scale, **c.supernet)
  c.keep_checkpoints = 2
  c.derive = ml_collections.ConfigDict()
  c.derive.candidates = 100  # children the final policy proposes, scored and ranked at the end
  c.distributed = distributed_config()
  if preset == "tiny":
    c.space.update(TINY_SPACES[c.space.name])
    c.data.patch_size, c.data.batch_size, c.val_patch = 12, 4, 16
    c.epochs, c.train_steps_per_epoch, c.controller_steps_per_epoch = 3, 3, 2
    c.controller_batch = 2
    c.derive.candidates = 6
  return c
