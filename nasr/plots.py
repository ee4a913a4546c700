"""Plots of search results, drawn where people would rather look than read (PNG, no display)."""

from pathlib import Path

import numpy as np
from absl import logging


def _figure(path: Path, size: tuple[float, float]):
  """Return (figure, axes) on the file-only Agg backend, or None when matplotlib is missing."""
  try:
    import matplotlib
  except ImportError:  # plotting is optional: the JSON files hold the same numbers
    logging.warning("matplotlib is not installed: %s is not drawn", path)
    return None
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt.subplots(figsize=size, dpi=120)


def _save(fig, ax, path: Path, title: str) -> None:
  import matplotlib.pyplot as plt

  ax.set_title(title)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def plot_candidates(rows: list[dict], path: Path, title: str = "") -> None:
  """Draw validation PSNR against parameters for every candidate (DeCoNAS's Fig. 4)."""
  drawn = _figure(path, (6, 4))
  if drawn is None:
    return
  fig, ax = drawn
  params = np.array([r["params"] for r in rows]) / 1e3
  psnr = np.array([r["psnr"] for r in rows])
  ax.scatter(params, psnr, s=14, alpha=0.7, label="candidates")
  ax.scatter(params[:1], psnr[:1], s=60, marker="*", color="crimson", label="best reward")
  ax.set_xlabel("parameters (K)")
  ax.set_ylabel("validation PSNR with shared weights (dB)")
  ax.legend(loc="lower right")
  _save(fig, ax, path, title or "candidates")


def plot_history(history: list[dict], path: Path, title: str = "") -> None:
  """Draw skip-connects in the derived cell and validation PSNR per epoch (DARTS Fig. 2 / 4)."""
  drawn = _figure(path, (6, 4))
  if drawn is None:
    return
  from matplotlib.ticker import MaxNLocator

  fig, ax = drawn
  epochs = [h["epoch"] for h in history]
  ax.plot(epochs, [h["num_skip"] for h in history], "o-", color="tab:red", label="skip-connects")
  ax.set_xlabel("epoch")
  ax.set_ylabel("skip-connects in the derived cell", color="tab:red")
  ax.set_ylim(0, max(len(h["genotype"]) for h in history) + 0.5)  # up to every kept edge
  ax.yaxis.set_major_locator(MaxNLocator(integer=True))
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax2 = ax.twinx()
  ax2.plot(epochs, [h["val_psnr"] for h in history], "s-", color="tab:blue", label="val PSNR")
  ax2.set_ylabel("validation PSNR of the supernet (dB)", color="tab:blue")
  _save(fig, ax, path, title or "darts_sr search")


def plot_gp(observed: list[dict], path: Path, title: str = "") -> None:
  """Draw leave-one-out predicted against measured PSNR of every observed candidate (GP-NAS)."""
  drawn = _figure(path, (5, 5))
  if drawn is None:
    return
  fig, ax = drawn
  rows = [o for o in observed if o["psnr"] is not None and o["loo_mean"] is not None]
  if rows:
    y = np.array([o["psnr"] for o in rows])
    loo = np.array([o["loo_mean"] for o in rows])
    err = np.array([o["loo_std"] or 0.0 for o in rows])
    post = np.array([o["pred_mean"] for o in rows])
    ax.errorbar(y, loo, yerr=err, fmt="o", ms=4, alpha=0.8, label="leave-one-out prediction")
    ax.scatter(y, post, s=10, marker="x", color="gray", alpha=0.7, label="posterior mean")
    lo, hi = float(min(y.min(), loo.min())), float(max(y.max(), loo.max()))
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
    ax.legend(loc="upper left", fontsize=8)
  ax.set_xlabel("measured validation PSNR (dB)")
  ax.set_ylabel("predicted PSNR (dB)")
  _save(fig, ax, path, title or "GP-NAS")


def plot_pareto(pareto: dict, path: Path, title: str = "") -> None:
  """Draw PSNR against GMACs at 480x480 of every candidate, each lambda's best and the front (HNAS)."""
  drawn = _figure(path, (6, 4))
  if drawn is None:
    return
  fig, ax = drawn
  cands = pareto["candidates"]
  if cands:
    gm = np.array([c["gmacs_480"] for c in cands])
    ps = np.array([c["psnr"] for c in cands])
    ax.scatter(gm, ps, s=10, alpha=0.3, color="gray", label="candidates")
    front = sorted(pareto["front"], key=lambda i: gm[i])
    if front:
      # Post steps: at a given cost the best reachable PSNR is that of the dearest front point below.
      ax.step(gm[front], ps[front], where="post", color="tab:green", lw=1.2, label="front")
  # Neighbouring lambdas often pick networks a few G apart (or the same one): each label gets its
  # own height, joined to its star by a line, instead of overprinting the others.
  for i, p in enumerate(sorted(pareto["points"], key=lambda p: p["lambda"])):
    xy = (p["gmacs_480"], p["psnr"])
    ax.scatter([xy[0]], [xy[1]], s=60, marker="*", color="crimson", zorder=3)
    value = f"lambda={p['lambda']:g}"
    ax.annotate(
      p["label"] if p["label"] == value else f"{p['label']} ({value})",
      xy,
      textcoords="offset points",
      xytext=(12, -18 - 13 * i),
      fontsize=8,
      arrowprops={"arrowstyle": "-", "color": "crimson", "lw": 0.6},
    )
  if pareto["points"]:
    ax.scatter([], [], s=60, marker="*", color="crimson", label="best per lambda")
  ax.margins(x=0.15, y=0.1)  # room for the labels of the extreme points
  if cands and np.all(gm > 0) and gm.max() > 10 * gm.min():
    ax.set_xscale("log")  # children's costs span orders of magnitude
  shape = pareto.get("input", [1, 480, 480, 3])
  ax.set_xlabel(f"multiply-adds per {shape[1]}x{shape[2]} LR image (G)")
  ax.set_ylabel("validation PSNR of the search (dB)")
  if cands or pareto["points"]:
    ax.legend(loc="lower right", fontsize=8)
  _save(fig, ax, path, title or "lambda sweep")
