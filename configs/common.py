"""Pieces shared by the config files: presets are checked here so a typo names the choices."""

import ml_collections

from nasr.core.errors import ConfigError

PRESETS = ("tiny", "default", "paper")


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
