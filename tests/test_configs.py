"""Every config file loads with every preset, locked, in Python exactly as the launchers load it."""

from pathlib import Path

import pytest

import nasr

CONFIGS = sorted(
  p
  for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.py")
  if p.name not in ("__init__.py", "common.py")
)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
@pytest.mark.parametrize("preset", ["tiny", "default", "paper", None])
def test_config_loads_locked(path, preset):
  config = nasr.load_config(path, preset)
  assert config.preset == (preset or "default")
  with pytest.raises(AttributeError):
    config.no_such_key = 1  # locked: a typo is an error, not a new field


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
  assert nasr.spaces.get("deconas").count_params(network.arch, 2) == 1_698_947
