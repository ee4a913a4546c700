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


def positive_int(value, key: str) -> int:
  """Return `value` as an int, or raise ConfigError naming `key` unless it is an integer >= 1."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    raise ConfigError(f"{key} must be a positive integer, got {value!r}")
  return int(value)


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
# "int" or "float"; bound ">0", ">=0", "[0,1)", "[-1,1]" or "any". A float is also never NaN or
# infinite. A "*" part stands for every key at its level: "reward.terms.*" rules every term,
# "strategy.*.learning_rate" the learning rate in every strategy's section. The keys a config's
# owner checks instead (the scale, a space's or model's sizes) are OWNER_CHECKED; a test keeps
# both lists covering every numeric key of every preset. GP-NAS's candidate training config
# (`train`) is checked with the same rules.
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
  "sampling.warmup_epochs": ("int", ">=0"),
  "val_patch": ("int", ">0"),
  "derive.candidates": ("int", ">0"),
  "reward.latency_side": ("int", ">0"),
  "warmup": ("int", ">=0"),  # nasr latency: untimed calls
  "repeats": ("int", ">0"),  # nasr latency: timed calls
  "data.patch_size": ("int", ">0"),
  "data.batch_size": ("int", ">0"),
  "data.workers": ("int", ">=0"),
  "data.num_val": ("int", ">=0"),
  "data.max_val_images": ("int", ">=0"),
  "data.val_fraction": ("float", "[0,1)"),
  "data.ncc_threshold": ("float", "[-1,1]"),
  "eval_tile": ("int", ">=0"),
  "arch_channels": ("int", ">=0"),
  "tile": ("int", ">=0"),
  "stride": ("int", ">=0"),
  "distributed.num_processes": ("int", ">=0"),
  "distributed.process_id": ("int", ">=0"),
  "distributed.heartbeat_timeout_s": ("int", ">0"),
  "distributed.init_timeout_s": ("int", ">0"),
  "optim.b1": ("float", "[0,1)"),
  "optim.b2": ("float", "[0,1)"),
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
  "xi": ("float", "any"),  # < 0: the weights' learning rate
  "alpha_optim.lr": ("float", ">0"),
  "alpha_optim.b1": ("float", "[0,1)"),
  "alpha_optim.b2": ("float", "[0,1)"),
  "alpha_optim.weight_decay": ("float", ">=0"),
  "w_optim.lr": ("float", ">0"),
  "w_optim.lr_min": ("float", ">=0"),
  "w_optim.momentum": ("float", "[0,1)"),
  "w_optim.weight_decay": ("float", ">=0"),
  "w_optim.grad_clip": ("float", ">=0"),
  # Diagnostics (configs/diagnose.py)
  "pool": ("int", ">0"),
  "samples": ("int", ">0"),
  "random": ("int", ">=0"),
  # One-shot strategies (DeCoNAS, HNAS) and GP-NAS
  "lam": ("float", ">=0"),
  "reward.terms.*": ("float", "any"),
  "strategy.*.op_tanh_reduce": ("float", ">0"),
  "strategy.*.learning_rate": ("float", ">0"),
  "strategy.*.lr_end": ("float", ">=0"),
  "strategy.*.decay_steps": ("int", ">=0"),
  "strategy.*.entropy_weight": ("float", ">=0"),
  "strategy.*.baseline_decay": ("float", ">=0"),
  "strategy.*.baseline_reset_every": ("int", ">=0"),
  "strategy.*.tanh_constant": ("float", ">=0"),
  "strategy.*.temperature": ("float", ">=0"),
  "strategy.*.grad_clip": ("float", ">=0"),
  "strategy.*.hidden": ("int", ">0"),
  "strategy.*.layers": ("int", ">0"),
  "strategy.*.fit_steps": ("int", ">0"),
  "strategy.*.fit_restarts": ("int", ">0"),
  "strategy.*.reference_size": ("int", ">0"),
  "strategy.*.max_grid": ("int", ">0"),
  "strategy.*.prior_std": ("float", ">0"),
  "strategy.*.ucb_beta": ("float", ">=0"),
  "rounds": ("int", ">0"),
  "batch": ("int", ">0"),
  "topk": ("int", ">0"),
  "report_top": ("int", ">0"),
  "strategy.*.population": ("int", ">0"),
  "strategy.*.sample_size": ("int", ">0"),
  "strategy.*.capacity": ("int", ">0"),
  # The tabular benchmark (configs/bench.py, configs/bench_eval.py)
  "seeds": ("int", ">0"),
  "workers": ("int", ">=0"),
  "search_seeds": ("int", ">0"),
  "queries": ("int", ">0"),
  "weight_sharing.seeds": ("int", ">=0"),
  # nasr export (configs/export.py): the LR size of the files, 0 = any
  "height": ("int", ">=0"),
  "width": ("int", ">=0"),
}


# Numeric keys checked where they are used, with messages that name them: config.scale by
# check_scale, a space's sizes by the space, a model's by the model, DARTS' retrain size by the
# DARTS search, the train-config keys a search's retrain command passes by that training config.
OWNER_CHECKED = ("scale", "space.*", "model_kwargs.*", "retrain.*", "retrain_overrides.*")

_BOUNDS = {
  ">0": (lambda v: v > 0, "> 0"),
  ">=0": (lambda v: v >= 0, ">= 0"),
  "[0,1)": (lambda v: 0 <= v < 1, "in [0, 1)"),
  "[-1,1]": (lambda v: -1 <= v <= 1, "in [-1, 1]"),
  "any": (lambda v: True, ""),
}


def _leaves(config, key: str, prefix: str = ""):
  """Yield (full key, value) of `key` in config; a "*" part matches every key at its level."""
  part, _, rest = key.partition(".")
  if part == "*":
    names = list(config.keys()) if hasattr(config, "items") else []
  else:
    names = [part]
  for name in names:
    try:
      node = config[name]
    except (KeyError, TypeError, AttributeError, IndexError):
      continue
    if rest:
      yield from _leaves(node, rest, f"{prefix}{name}.")
    else:
      yield f"{prefix}{name}", node


def check_numbers(config, rules: dict | None = None, prefix: str = "") -> None:
  """Raise ConfigError naming the first key of `rules` (NUMBER_RULES) whose value breaks it.

  Keys the config does not have are skipped, so one table serves every method's config.
  """
  for rule, (kind, bound) in (rules or NUMBER_RULES).items():
    for key, value in _leaves(config, rule):
      real = isinstance(value, numbers.Real) and not isinstance(value, bool)
      if kind == "int":
        ok = real and float(value).is_integer()
      else:
        ok = real and math.isfinite(float(value))
      test, words = _BOUNDS[bound]
      if ok:
        ok = test(float(value))
      if not ok:
        what = "an integer" if kind == "int" else "a finite number"
        raise ConfigError(
          f"config.{prefix}{key} must be {what}{' ' + words if words else ''}, got {value!r}"
        )
  train = config.get("train") if hasattr(config, "get") else None
  if hasattr(train, "items") and not prefix:  # GP-NAS: the candidates' training config
    check_numbers(train, rules, prefix="train.")
