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
