"""Every config file loads with every preset, locked, in Python exactly as the launchers load it."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nasr
from nasr import experiment, training
from nasr.core.checks import NUMBER_RULES, OWNER_CHECKED, check_numbers, check_scale
from nasr.core.errors import ConfigError
from nasr.searches import darts, loop

CONFIGS = sorted(
  p
  for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.py")
  if p.name not in ("__init__.py", "common.py")
)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
@pytest.mark.parametrize("preset", ["tiny", "default", "paper", None])
def test_config_loads_locked(path, preset):
  presets = experiment.describe_configs()[path.stem]["presets"]
  if preset is not None and preset not in presets:  # a config with fewer presets names them
    with pytest.raises(ConfigError, match=f"unknown preset {preset!r}; available: "):
      nasr.load_config(path, preset)
    return
  config = nasr.load_config(path, preset)
  assert config.preset == (preset or "default")
  with pytest.raises(AttributeError):
    config.no_such_key = 1  # locked: a typo is an error, not a new field


# Values each bound refuses (an int key also refuses 1.5).
_BAD = {
  ">0": [-1, 0, float("nan"), float("inf")],
  ">=0": [-1, float("nan"), float("inf")],
  "[0,1)": [-0.5, 1.0, float("nan")],
  "[-1,1]": [-2, 1.5, float("nan")],
  "any": [float("nan"), float("inf"), float("-inf")],
}


def _numeric_leaves(node, prefix=""):
  for k, v in node.items():
    if hasattr(v, "items"):
      yield from _numeric_leaves(v, f"{prefix}{k}.")
    elif isinstance(v, int | float) and not isinstance(v, bool):
      yield f"{prefix}{k}", node, k


def _same(a, b) -> bool:
  return a == b or (a != a and b != b)  # NaN equals NaN here


def _ruled(key: str, rules) -> bool:
  """Return whether a rule names `key` ("*" matches one part; a trailing ".*" every key below)."""
  parts = key.split(".")
  for rule in rules:
    names = rule.split(".")
    deep = names[-1] == "*" and len(parts) >= len(names)
    if (len(parts) == len(names) or deep) and all(
      n in ("*", p) for n, p in zip(names, parts, strict=False)
    ):
      return True
  return False


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
@pytest.mark.parametrize("preset", ["tiny", "quick", "default", "paper", "final", None])
def test_every_presets_numbers_pass_and_every_bad_one_is_named(path, preset):
  try:
    config = nasr.load_config(path, preset)
  except nasr.ConfigError:
    pytest.skip(f"{path.name} has no {preset} preset")
  check_numbers(config)
  tried = 0
  for key, node, leaf in list(_numeric_leaves(config)):
    plain = key.removeprefix("train.") if key.startswith("train.") and "train" in config else key
    rule = next((r for r in NUMBER_RULES if _ruled(plain, [r])), None)
    if rule is None:
      # Every number is ruled here or checked by its owner (a fuzz of every key of every preset).
      assert _ruled(plain, OWNER_CHECKED), f"config.{key} of {path.name} is checked nowhere"
      continue
    kind, bound = NUMBER_RULES[rule]
    bad = _BAD[bound] + ([1.5] if kind == "int" else [])
    original = node[leaf]
    before = {k: n[lf] for k, n, lf in _numeric_leaves(config)}
    for value in bad:
      with node.ignore_type():
        node[leaf] = value
      # The message names this key, or a key it is linked to (hnas: reward.terms follow lam).
      moved = {k for k, n, lf in _numeric_leaves(config) if not _same(n[lf], before[k])}
      names = "|".join(re.escape(k) for k in sorted(moved | {key}))
      with pytest.raises(ConfigError, match=rf"config\.({names}) must be .*got"):
        check_numbers(config)
      tried += 1
    with node.ignore_type():
      node[leaf] = original
  assert tried or path.name in ("evaluate.py", "upscale.py")  # they train nothing


# Owner-checked keys where 0 means something: EDSR without residual blocks; DARTS' retrain size
# 0 = the search network's; a retrain's arch_channels 0 = the architecture file's width.
ZERO_IS_A_NETWORK = ("model_kwargs.blocks", "retrain.*", "retrain_overrides.arch_channels")


def _owner_checks(config) -> None:
  """Run the checks that own the keys of OWNER_CHECKED, as the launchers run them."""
  check_scale(config.scale, "config.scale")
  if config.get("space"):
    nasr.spaces.get(config.space.name, **loop.space_kwargs(config))
  if config.get("retrain"):
    nasr.spaces.get(config.space.name, **darts.retrain_kwargs(config))
  if config.get("retrain_overrides"):  # the train keys a search's retrain command passes
    check_numbers(config.retrain_overrides, prefix="retrain_overrides.")
  if config.get("model") and not config.get("arch"):
    network = training.build_network(config, config.scale)
    jax.eval_shape(network.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
@pytest.mark.parametrize("preset", ["tiny", "default", "paper", "final"])
def test_owner_checked_numbers_work_or_are_named_by_their_owner(path, preset):
  try:
    config = nasr.load_config(path, preset)
  except nasr.ConfigError:
    pytest.skip(f"{path.name} has no {preset} preset")
  tried = 0
  for key, _, leaf in list(_numeric_leaves(config)):
    if not _ruled(key, OWNER_CHECKED):
      continue
    if key.startswith("model_kwargs.") and (config.get("arch") or not config.get("model")):
      continue  # an architecture file decides the network, or none is named: not read
    for value in (-1, 0, float("nan")):
      fresh = nasr.load_config(path, preset)  # (a value set with ignore_type changes the type)
      node = next(n for k, n, _ in _numeric_leaves(fresh) if k == key)
      with node.ignore_type():
        node[leaf] = value
      try:
        _owner_checks(fresh)  # e.g. EDSR with 0 residual blocks is a network
      except ConfigError as e:
        assert leaf in str(e), f"config.{key}={value}: {e}"
      else:
        # a negative or NaN size or scale is never a network; 0 is, for the keys that say so
        assert value == 0 and _ruled(key, ZERO_IS_A_NETWORK), f"config.{key}={value} was accepted"
      tried += 1
  # diagnose.py's own numbers are all ruled (NUMBER_RULES); its train section is GP-NAS's kind.
  # bench_eval.py names its space without sizes (the table fixes them); export.py's network and
  # scale come from the checkpoint.
  assert tried or path.name in ("diagnose.py", "bench_eval.py", "export.py")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_path_colon_preset(path):
  assert nasr.load_config(f"{path}:tiny").preset == "tiny"


def test_unknown_preset_names_the_choices():
  with pytest.raises(nasr.ConfigError, match="unknown preset 'huge'; available: tiny"):
    nasr.load_config(CONFIGS[0], "huge")


def test_missing_config_file():
  with pytest.raises(nasr.ConfigError, match="does not exist"):
    nasr.load_config("configs/nope.py")


def test_deconas_final_preset_retrains_the_papers_network():
  config = nasr.load_config("configs/deconas.py", "final")
  assert config.preset == "final" and config.steps == 1_000_000 and config.data.patch_size == 64
  network = nasr.spaces.build_from_file(config.arch, scale=2)
  assert network.arch.compact() == [7, 6, 4, 3, 0, 2, 2, 3, 4, 1]
  assert nasr.spaces.get("deconas").count_params(network.arch, 2) == 1_713_795  # the paper's


def test_hnas_reward_and_controller_decay_follow_lam_and_epochs():
  config = nasr.load_config("configs/hnas.py", "default")
  assert dict(config.reward.terms) == pytest.approx({"psnr": 0.6, "macs": -0.4, "entropy": 1.0})
  config.lam, config.epochs = 0.2, 7  # as --config.lam=0.2 --config.epochs=7 set them
  assert dict(config.reward.terms) == pytest.approx({"psnr": 0.2, "macs": -0.8, "entropy": 1.0})
  assert config.strategy.hierarchical.decay_steps == 7 * config.controller_steps_per_epoch
  assert config.data.val == "" and config.data.val_fraction == 0.6


def test_hnas_paper_preset_runs_the_released_search_schedule():
  config = nasr.load_config("configs/hnas.py", "paper")
  # Per epoch 200 weight steps and 300 controller steps, 400 epochs (search.py, option.py).
  assert (config.epochs, config.train_steps_per_epoch, config.controller_steps_per_epoch) == (
    400,
    200,
    300,
  )
  h = config.strategy.hierarchical
  # No tanh on the logits; the baseline decays at 0.95 and starts again every epoch.
  assert (h.tanh_constant, h.baseline_decay, h.baseline_reset_every) == (0.0, 0.95, 300)
  config.controller_steps_per_epoch = 50  # the reset follows the epoch's length
  assert config.strategy.hierarchical.baseline_reset_every == 50


def test_hnas_final_preset_retrains_hnas_a():
  config = nasr.load_config("configs/hnas.py", "final")
  assert config.preset == "final" and config.optim.schedule == "cosine"
  assert (config.optim.lr, config.optim.lr_end) == (1e-3, 1e-5)
  space, arch = nasr.spaces.load_arch(config.arch)
  assert arch.position == 10 and arch.normal[0] == (1, "identity", 1, "sep_conv_5x5")
  # Searched at 8 channels, trained at 64: the network launch.train builds is the wide one.
  assert space.channels == 8 and config.arch_channels == 64
  network = training.build_network(config, config.scale)
  shapes = jax.eval_shape(network.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  n = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes))
  wide = nasr.spaces.get("hnas", layers=12, nodes=4, channels=64)
  assert n == wide.count_params(arch, config.scale) > 20 * space.count_params(arch, config.scale)
  assert n == 974_019  # the authors' HNAS-A (released code, x2): tests/spaces/test_hnas.py
  assert config.steps == 300_000  # their README's 300 epochs of 1,000 mini-batches
  assert network.shifted  # its depthwise convs in the CPU form that trains 5.8x faster
  config.arch_channels = -1
  with pytest.raises(ConfigError, match="arch_channels"):
    training.build_network(config, config.scale)


def test_a_search_checks_its_retrain_commands_numbers_before_searching(tmp_path):
  config = nasr.load_config("hnas", "tiny", lock=False)
  config.retrain_overrides.arch_channels = -1
  with pytest.raises(ConfigError, match=r"config\.retrain_overrides\.arch_channels must be"):
    nasr.run_search(config, tmp_path / "w")
  assert not (tmp_path / "w").exists()
