"""Test set-up: two simulated CPU devices, and the shared data folder when present."""

import os
import tempfile
from pathlib import Path

# Before JAX is imported anywhere: multi-device code runs on 2 simulated CPU devices.
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Latencies a test measures never land in the user's per-host cache (~/.cache/nasr/latency.json).
os.environ.setdefault(
  "NASR_LATENCY_CACHE",
  os.path.join(tempfile.mkdtemp(prefix="nasr-latency-"), "l.json"),
)

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BENCHMARKS = SHARED / "data" / "benchmarks"


def shared_benchmark(name: str) -> Path:
  """Return ../shared/data/benchmarks/<name>, skipping the test when it is absent."""
  path = BENCHMARKS / name
  if not path.is_dir():
    pytest.skip(f"{path} not found: the shared benchmark data sits beside the repository")
  return path


@pytest.fixture
def set5() -> Path:
  """Return the Set5 folder (skips when ../shared is absent)."""
  return shared_benchmark("Set5")
