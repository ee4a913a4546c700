r"""Latency on this host: the per-op table's prediction against measurement, and the paper networks.

  python -m benchmarks.latency --part=prediction --archs=20 --side=128   # per one-shot space
  python -m benchmarks.latency --part=paper --output=720,1280            # HNAS-A/B/C, DeCoNASNet, EDSR

prediction  for each one-shot space at its search config's default size (deconas, hnas, bench),
            `--archs` random architectures: the latency the reward's `latency` term predicts (the
            sum of each op's time, nasr.searches.op_latency, measured here into a fresh cache) against
            the network's measured forward pass on a `--side` x `--side` LR image (both XLA, plain
            forms). One JSON line per space: median absolute error (ms and % of measured), the
            Spearman rank correlation of predicted and measured, and the measured range.
paper       `nasr latency` of each paper network at x2 (their retrain widths) at `--output`:
            parameters, multiply-adds, XLA and onnxruntime medians, ms per G multiply-adds.

Numbers depend on the host and on what else runs on it: BENCHMARKS.md says which machine.
"""

import json
import tempfile
from pathlib import Path

import numpy as np
from absl import app, flags

from nasr import experiment, spaces
from nasr.estimation import latency
from nasr.searches import loop, op_latency

ARCHS = Path(__file__).resolve().parents[1] / "configs" / "archs"
SEARCHES = {"deconas": "deconas", "hnas": "hnas", "bench": "bench_one_shot"}
PAPER = {
  "HNAS-A": {"arch": str(ARCHS / "hnas_a.json"), "arch_channels": 64},
  "HNAS-B": {"arch": str(ARCHS / "hnas_b.json"), "arch_channels": 64},
  "HNAS-C": {"arch": str(ARCHS / "hnas_c.json"), "arch_channels": 64},
  "DeCoNASNet": {"arch": str(ARCHS / "deconasnet.json")},
  "EDSR baseline": {"model": "edsr"},
}

_PART = flags.DEFINE_enum("part", "prediction", ["prediction", "paper"], "what to measure")
_ARCHS = flags.DEFINE_integer("archs", 20, "random architectures per space (prediction)")
_SIDE = flags.DEFINE_integer("side", 128, "LR side of the prediction's images")
_SPACES = flags.DEFINE_list("spaces", list(SEARCHES), "one-shot spaces (prediction)")
_OUTPUT = flags.DEFINE_string("output", "720,1280", "SR output height,width (paper)")
_REPEATS = flags.DEFINE_integer("repeats", 10, "timed calls per measurement")
_SEED = flags.DEFINE_integer("seed", 0, "random architectures' seed")


def prediction(name: str, archs: int, side: int, repeats: int, seed: int) -> dict:
  """Return the prediction error of the per-op table over `archs` random architectures of the
  space `name` at its search config's default size."""
  import scipy.stats

  config = experiment.load_config(SEARCHES[name], "default")
  space = spaces.get(config.space.name, **loop.space_kwargs(config))
  scale = int(config.scale)
  with tempfile.TemporaryDirectory() as tmp:  # a fresh table: every op measured here, now
    table = op_latency.PieceLatency(Path(tmp) / "latency.json")
    rows = []
    for tokens in space.token_spec().sample(np.random.default_rng(seed), archs):
      arch = space.decode(tokens)
      predicted = op_latency.predict_ms(space, arch, scale, side, table)
      measured = latency.network_ms(space.build(arch, scale), (1, side, side, 3), repeats=repeats)
      rows.append((predicted, measured["median_ms"]))
  pred, meas = np.array(rows).T
  err = np.abs(pred - meas)
  return {
    "space": name,
    "space_kwargs": loop.space_kwargs(config),
    "side": side,
    "archs": archs,
    "ops_timed": len(table),
    "median_abs_error_ms": round(float(np.median(err)), 3),
    "median_abs_error_pct": round(float(np.median(100 * err / meas)), 1),
    "spearman": round(float(scipy.stats.spearmanr(pred, meas).statistic), 3),
    "measured_ms": [round(float(meas.min()), 2), round(float(meas.max()), 2)],
    "predicted_ms": [round(float(pred.min()), 2), round(float(pred.max()), 2)],
    "host": latency.host(),
  }


def paper(output: str, repeats: int) -> list[dict]:
  """Return `nasr latency` of each paper network at x2 at `output`."""
  out = []
  for label, what in PAPER.items():
    c = experiment.load_config("latency")
    with c.unlocked():
      c.update({**what, "output": output, "repeats": repeats})
    with tempfile.TemporaryDirectory() as tmp:
      r = experiment.latency(c, tmp)
    r["network"] = label
    print(experiment.latency_report(r), flush=True)
    out.append(r)
  return out


def main(argv):
  del argv
  if _PART.value == "prediction":
    for name in _SPACES.value:
      print(json.dumps(prediction(name, _ARCHS.value, _SIDE.value, _REPEATS.value, _SEED.value)))
  else:
    for r in paper(_OUTPUT.value, _REPEATS.value):
      print(json.dumps(r))


if __name__ == "__main__":
  app.run(main)
