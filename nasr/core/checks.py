"""Checks of settings every room shares."""

import math
import numbers

from nasr.core.errors import ConfigError

SCALES = (2, 3, 4)


def check_scale(scale, key: str = "scale") -> int:
  """Return `scale` as an int, or raise ConfigError naming `key` unless it is 2, 3 or 4."""
  ok = (
    not isinstance(scale, bool)
    and isinstance(scale, numbers.Real)
    and float(scale).is_integer()
    and int(scale) in SCALES
  )
  if not ok:
    raise ConfigError(f"{key} must be one of {', '.join(map(str, SCALES))}, got {scale!r}")
  return int(scale)


def finite_json(obj):
  """Return `obj` with every NaN / infinite float replaced by None (strict JSON: RFC 8259).

  Python's json writes NaN and Infinity, which other readers reject; a missing number (no
  validation yet, a diverged value) is null instead.
  """
  if isinstance(obj, dict):
    return {k: finite_json(v) for k, v in obj.items()}
  if isinstance(obj, list | tuple):
    return [finite_json(v) for v in obj]
  if isinstance(obj, numbers.Real) and not isinstance(obj, numbers.Integral):
    value = float(obj)
    return value if math.isfinite(value) else None
  return obj


# Numeric config keys every launcher checks where a config has them: (kind, bound) with kind
# "int" or "float"; bound ">0" or ">=0". A float is also never NaN or infinite.
NUMBER_RULES = {
  "steps": ("int", ">0"),
  "epochs": ("int", ">0"),
  "log_every": ("int", ">0"),
  "eval_every": ("int", ">0"),
  "checkpoint_every": ("int", ">0"),
  "keep_checkpoints": ("int", ">0"),
  "seed": ("int", ">=0"),
  "train_steps_per_epoch": ("int", ">0"),
  "controller_steps_per_epoch": ("int", ">=0"),
  "controller_batch": ("int", ">0"),
  "val_patch": ("int", ">0"),
  "derive.candidates": ("int", ">0"),
  "data.patch_size": ("int", ">0"),
  "data.batch_size": ("int", ">0"),
  "data.num_val": ("int", ">=0"),
  "data.max_val_images": ("int", ">=0"),
  "data.val_fraction": ("float", ">=0"),
  "optim.lr": ("float", ">0"),
  "optim.lr_end": ("float", ">=0"),
  "optim.decay_every": ("int", ">=0"),
  "optim.decay_factor": ("float", ">0"),
  "optim.warmup_steps": ("int", ">=0"),
  "optim.weight_decay": ("float", ">=0"),
  "optim.grad_clip": ("float", ">=0"),
  "ms_ssim_weight": ("float", ">=0"),
  "supernet.unroll": ("int", ">=0"),
  # DARTS-SR
  "steps_per_epoch": ("int", ">0"),
  "alpha_init_std": ("float", ">=0"),
  "fd_scale": ("float", ">0"),
  "alpha_optim.lr": ("float", ">0"),
  "alpha_optim.weight_decay": ("float", ">=0"),
  "w_optim.lr": ("float", ">0"),
  "w_optim.lr_min": ("float", ">=0"),
  "w_optim.momentum": ("float", ">=0"),
  "w_optim.weight_decay": ("float", ">=0"),
  "w_optim.grad_clip": ("float", ">=0"),
  # One-shot strategies (DeCoNAS, HNAS) and GP-NAS
  "lam": ("float", ">=0"),
  "strategy.learning_rate": ("float", ">0"),
  "strategy.lr_end": ("float", ">=0"),
  "strategy.decay_steps": ("int", ">=0"),
  "strategy.entropy_weight": ("float", ">=0"),
  "strategy.baseline_decay": ("float", ">=0"),
  "strategy.tanh_constant": ("float", ">=0"),
  "strategy.temperature": ("float", ">=0"),
  "strategy.grad_clip": ("float", ">=0"),
  "strategy.hidden": ("int", ">0"),
  "strategy.layers": ("int", ">0"),
  "strategy.fit_steps": ("int", ">0"),
  "strategy.fit_restarts": ("int", ">0"),
  "strategy.reference_size": ("int", ">0"),
  "strategy.max_grid": ("int", ">0"),
  "strategy.prior_std": ("float", ">0"),
  "strategy.ucb_beta": ("float", ">=0"),
  "rounds": ("int", ">0"),
  "batch": ("int", ">0"),
  "topk": ("int", ">0"),
  "report_top": ("int", ">0"),
}


def check_numbers(config, rules: dict | None = None) -> None:
  """Raise ConfigError naming the first key of `rules` (NUMBER_RULES) whose value breaks it.

  Keys the config does not have are skipped, so one table serves every method's config.
  """
  for key, (kind, bound) in (rules or NUMBER_RULES).items():
    node, found = config, True
    for part in key.split("."):
      try:
        node = node[part]
      except (KeyError, TypeError, AttributeError):
        found = False
        break
    if not found:
      continue
    value = node
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if kind == "int":
      ok = real and float(value).is_integer()
    else:
      ok = real and math.isfinite(float(value))
    if ok:
      ok = float(value) > 0 if bound == ">0" else float(value) >= 0
    if not ok:
      what = "an integer" if kind == "int" else "a finite number"
      raise ConfigError(
        f"config.{key} must be {what} {'> 0' if bound == '>0' else '>= 0'}, got {value!r}"
      )
