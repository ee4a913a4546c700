r"""nasr's steps and the PyTorch reference code timed side by side, in one run, round after round.

  python3 -m venv /tmp/peervenv && /tmp/peervenv/bin/pip install torch numpy
  python -m benchmarks.side_by_side --peer_python=/tmp/peervenv/bin/python --peer_threads=2   # CPU
  python -m benchmarks.side_by_side --peer_python=... --pair_device=cuda --pairs=edsr,darts1

A ratio between two implementations holds only when both ran on the same machine under the same
load, so each round runs the reference's step (../shared/peers/peer_bench.py, the authors' or
BasicSR's code) and then nasr's matching benchmark, pair after pair; every pair's ratio is reported
per round (reference median / nasr median: above 1, nasr is faster). Pairs (paper sizes):

  edsr        EDSR 16x64, x2, batch 16 of 48x48, L1, Adam, f32: BasicSR's EDSR step against
              `benchmarks.suite --sections=edsr:f32`
  hnas_super  HNAS supernet step at the search size (L=12, 4 nodes, C=8, batch 16 of 48x48, a new
              architecture each step): HNAS-SR's trainer.py step against `benchmarks.hnas_speed
              --parts=supernet --normal_ops=reference --shifted --unroll=0` (the released code's six
              normal ops, the `paper` preset's unrolled layers)
  hnas_ctrl   HNAS controller step (propose, score on the batch, cost, REINFORCE update): HNAS-SR's
              controller_trainer.py step against `benchmarks.hnas_speed --parts=controller ...`
  darts1      DARTS first-order search step, 8 cells x 64: quark0/darts' architect + weight step
              against `benchmarks.suite --sections=darts:first_order` (nasr's DARTS-SR ops: the
              same cell shape, not the same ops; a GPU pair)

Every step is synchronised and the figure is a median over --steps timed steps after warm-up. One
JSON line per pair and round on stdout, then a table; the reference's own JSON line is kept whole.
Flag names carry `pair_`/`peer_`: the benchmark modules share absl's flag registry in a test process.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from absl import app, flags

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ("edsr", "hnas_super", "hnas_ctrl", "darts1")
_HNAS = ["--normal_ops=reference", "--shifted", "--unroll=0"]

_PEER_PYTHON = flags.DEFINE_string(
  "peer_python", None, "Python of a virtual environment with torch and numpy (the reference's)."
)
_PEERS = flags.DEFINE_string(
  "peers", str(ROOT.parent / "shared" / "peers"), "Folder of peer_bench.py and the reference code."
)
_PAIRS = flags.DEFINE_list("pairs", ["edsr", "hnas_super", "hnas_ctrl"], f"Pairs, of {PAIRS}.")
_ROUNDS = flags.DEFINE_integer("pair_rounds", 2, "Rounds: each runs every pair, reference first.")
_STEPS = flags.DEFINE_integer(
  "pair_steps", 5, "Timed steps per measurement (the median is reported)."
)
_DEVICE = flags.DEFINE_enum("pair_device", "cpu", ["cpu", "cuda"], "Where both sides run.")
_THREADS = flags.DEFINE_integer("peer_threads", 0, "torch threads on the CPU (0: one per core).")
_TIMEOUT = flags.DEFINE_integer("pair_timeout_s", 900, "Limit of each measurement's process.")


def nasr_command(pair: str, steps: int) -> list[str]:
  """Return the command line of nasr's benchmark matching reference workload `pair`."""
  py = [sys.executable, "-m"]
  if pair == "edsr":
    return [*py, "benchmarks.suite", "--sections=edsr:f32", f"--steps={steps}"]
  if pair == "darts1":
    return [*py, "benchmarks.suite", "--sections=darts:first_order", f"--steps={steps}"]
  part = {"hnas_super": "supernet", "hnas_ctrl": "controller"}[pair]
  return [*py, "benchmarks.hnas_speed", f"--parts={part}", *_HNAS, f"--repeats={steps}"]


def peer_command(peer_python: str, peers: Path, pair: str, steps: int, device: str, threads: int):
  """Return the command line of the reference's step `pair` (peer_bench.py at paper size)."""
  cmd = [peer_python, str(peers / "peer_bench.py"), "--device", device, "--size", "paper"]
  cmd += ["--only", pair, "--steps", str(steps), "--budget_s", str(_TIMEOUT.value - 30)]
  return cmd + (["--threads", str(threads)] if threads else [])


def _run(cmd: list[str], env: dict | None = None) -> str:
  """Return the stdout of `cmd`; raise naming the command and its last stderr lines on failure."""
  proc = subprocess.run(
    cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=_TIMEOUT.value, check=False
  )
  if proc.returncode != 0:
    tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
    raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
  return proc.stdout


def peer_seconds(stdout: str, pair: str) -> tuple[float, dict]:
  """Return (median seconds per step, the reference's JSON line) of workload `pair`."""
  for line in stdout.splitlines():
    if line.startswith("{"):
      row = json.loads(line)
      if row.get("name") == pair:
        if "median_s_per_step" not in row:
          raise RuntimeError(f"reference workload {pair} did not run: {row}")
        return float(row["median_s_per_step"]), row
  raise RuntimeError(f"no JSON line for reference workload {pair} in:\n{stdout[-2000:]}")


def nasr_seconds(pair: str, steps: int) -> tuple[float, dict]:
  """Return (median seconds per step, nasr's row) of the benchmark matching `pair`."""
  env = dict(os.environ)
  if _DEVICE.value == "cpu":
    env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")  # one device, as the reference
  cmd = nasr_command(pair, steps)
  if pair in ("edsr", "darts1"):
    with tempfile.TemporaryDirectory() as tmp:
      out = Path(tmp) / "rows.json"
      _run([*cmd, f"--out={out}"], env)
      (row,) = json.loads(out.read_text())
    if row["status"] != "ok" or row["median_ms"] is None:
      raise RuntimeError(f"{' '.join(cmd)}: {row['status']}")
    return row["median_ms"] / 1000, row
  rows = [json.loads(x) for x in _run(cmd, env).splitlines() if x.startswith("{")]
  return float(rows[-1]["median_s"]), rows[-1]


def main(argv):
  del argv
  if not _PEER_PYTHON.value:
    raise app.UsageError("--peer_python: the python of a venv with torch (module docstring)")
  peers = Path(_PEERS.value).expanduser().resolve()
  if not (peers / "peer_bench.py").is_file():
    raise app.UsageError(f"--peers={_PEERS.value}: no peer_bench.py in {peers}")
  unknown = sorted(set(_PAIRS.value) - set(PAIRS))
  if unknown:
    raise app.UsageError(f"--pairs: unknown {unknown}; pairs: {', '.join(PAIRS)}")
  results: dict[str, list[tuple[float, float]]] = {p: [] for p in _PAIRS.value}
  for r in range(1, _ROUNDS.value + 1):
    for pair in _PAIRS.value:
      cmd = peer_command(
        _PEER_PYTHON.value, peers, pair, _STEPS.value, _DEVICE.value, _THREADS.value
      )
      ref_s, ref_row = peer_seconds(_run(cmd), pair)
      ours_s, ours_row = nasr_seconds(pair, _STEPS.value)
      results[pair].append((ref_s, ours_s))
      line = {"pair": pair, "round": r, "reference_s": round(ref_s, 4), "nasr_s": round(ours_s, 4)}
      line["reference_over_nasr"] = round(ref_s / ours_s, 3)
      line.update(
        reference=ref_row, nasr=ours_row, nasr_command=" ".join(nasr_command(pair, _STEPS.value))
      )
      print(json.dumps(line), flush=True)
  print(f"\n{'pair':<11} {'round':>5} {'reference s':>12} {'nasr s':>9} {'ref/nasr':>9}")
  for pair, runs in results.items():
    for r, (ref_s, ours_s) in enumerate(runs, 1):
      print(f"{pair:<11} {r:>5} {ref_s:>12.3f} {ours_s:>9.3f} {ref_s / ours_s:>8.2f}x")
    ratios = [a / b for a, b in runs]
    print(f"{pair:<11} {'all':>5} {'':>12} {'':>9} {statistics.median(ratios):>8.2f}x (median)")
  return 0


if __name__ == "__main__":
  app.run(main)
