"""Plots of search results, drawn where people would rather look than read (PNG, no display).

Every function writes its PNG and returns the matplotlib Figure (closed, but still inspectable:
axes, labels, legends), or None when matplotlib is not installed.
"""

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import logging

# x axis of `plot_candidates` per cost key of a candidate row: (label, divisor).
COST_AXES = {
  "params": ("parameters (K)", 1e3),
  "macs_per_lr_pixel": ("multiply-adds per LR pixel (K)", 1e3),
}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")


def _figure(path: Path, size: tuple[float, float], nrows: int = 1, ncols: int = 1):
  """Return (figure, axes) on the file-only Agg backend, or None when matplotlib is missing."""
  try:
    import matplotlib
  except ImportError:  # plotting is optional: the JSON files hold the same numbers
    logging.warning("matplotlib is not installed: %s is not drawn", path)
    return None
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  # Constrained layout leaves room for colour bars and rotated tick labels, as tight_layout does not.
  return plt.subplots(nrows, ncols, figsize=size, dpi=120, layout="constrained", squeeze=False)


def _save(fig, path: Path, title: str, ax=None) -> None:
  """Title the panel `ax` (or the figure when it has several), save it and close it."""
  import matplotlib.pyplot as plt

  if ax is not None:
    ax.set_title(title)
  else:
    fig.suptitle(title)
  fig.savefig(path)
  plt.close(fig)  # the returned figure stays readable; pyplot just forgets it


def pareto_front(cost: Sequence[float], psnr: Sequence[float]) -> list[int]:
  """Return the indices of the non-dominated points (lower cost, higher PSNR), by rising cost."""
  # Cheapest first, and at equal cost the most accurate first: a point is on the front exactly
  # when it beats the PSNR of every cheaper-or-equal point before it (so of equal points one is
  # kept, and a point with a NaN or infinite cost or PSNR, such as a diverged child, never is).
  order = sorted(
    (i for i in range(len(cost)) if math.isfinite(cost[i]) and math.isfinite(psnr[i])),
    key=lambda i: (cost[i], -psnr[i]),
  )
  front, best = [], -math.inf
  for i in order:
    if psnr[i] > best:
      front.append(i)
      best = psnr[i]
  return front


def plot_candidates(
  rows: list[dict],
  path: Path,
  title: str = "",
  *,
  cost: str = "params",
  bicubic_psnr: float | None = None,
  history: list[dict] | None = None,
):
  """Draw PSNR against cost with the Pareto front (DeCoNAS Fig. 4) and the controller's epochs.

  Returns the Figure (None without matplotlib). `rows` are sorted by reward, best first; `cost` is
  the row key on the x axis; `history` (the search's per-epoch records) adds a second panel.
  """
  panels = 1 if history is None else 2
  drawn = _figure(path, (5.5 * panels, 4.2), 1, panels)
  if drawn is None:
    return None
  fig, axes = drawn
  ax = axes[0, 0]
  label, unit = COST_AXES.get(cost, (cost, 1.0))
  x = np.array([r[cost] for r in rows], np.float64) / unit
  psnr = np.array([r["psnr"] for r in rows], np.float64)
  ax.scatter(x, psnr, s=14, alpha=0.5, color="tab:blue", label="candidates")
  front = pareto_front(x.tolist(), psnr.tolist())
  if front:
    # Post steps: at a given cost the best reachable PSNR is that of the dearest front point below.
    ax.plot(
      x[front],
      psnr[front],
      drawstyle="steps-post",
      marker="o",
      ms=6,
      mfc="none",
      color="tab:green",
      lw=1.2,
      label="Pareto front",
    )
  if rows:
    ax.scatter(x[:1], psnr[:1], s=80, marker="*", color="crimson", zorder=3, label="best reward")
  if bicubic_psnr is not None and math.isfinite(bicubic_psnr):
    ax.axhline(bicubic_psnr, ls="--", lw=1, color="gray", label=f"bicubic ({bicubic_psnr:.2f} dB)")
  ax.set_xlabel(label)
  ax.set_ylabel("validation PSNR with shared weights (dB)")
  ax.grid(alpha=0.3)
  # below the panel: candidates fill the lower right as often as any other corner
  ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8)
  if history is not None:
    ax.set_title("candidates")
    _controller_panel(axes[0, 1], history)
  _save(fig, path, title or "candidates", ax if history is None else None)
  return fig


def _controller_panel(ax, history: list[dict]) -> None:
  """Draw the strategy's mean reward (and a controller's baseline) per epoch, and its entropy on a
  second axis."""
  epochs = [h["epoch"] for h in history]
  learned = any("controller_baseline" in h for h in history)
  ax.set_title("controller" if learned else "strategy (no learned policy)")
  ax.set_xlabel("epoch")
  ax.set_ylabel("reward")
  ax.grid(alpha=0.3)
  if not history:
    ax.text(0.5, 0.5, "no epochs recorded", ha="center", va="center", transform=ax.transAxes)
    return
  from matplotlib.ticker import MaxNLocator

  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  top = ax  # the legend goes on the axes drawn last, or the twin's line crosses over it
  handles = ax.plot(epochs, _column(history, "reward"), "o-", color="tab:blue", label="reward")
  if any("controller_baseline" in h for h in history):  # REINFORCE keeps one; random search not
    handles += ax.plot(
      epochs, _column(history, "controller_baseline"), "--", color="tab:gray", label="baseline"
    )
  if any("controller_entropy_mean" in h for h in history):
    ax2 = top = ax.twinx()  # entropy is in nats, not on the reward's scale
    handles += ax2.plot(
      epochs, _column(history, "controller_entropy_mean"), "s-", color="tab:orange", label="entropy"
    )
    ax2.set_ylabel("policy entropy (nats)", color="tab:orange")
    # A converged policy's entropy moves in the 4th decimal: plain ticks, not "+2.25e1" offsets.
    ax2.ticklabel_format(axis="y", useOffset=False)
    # At least 1% of the entropy (+ 1e-3 nats) tall: a change of 3e-6 nats is not a steep fall.
    values = [v for v in _column(history, "controller_entropy_mean") if math.isfinite(v)]
    if values:
      lo, hi = min(values), max(values)
      span = max(hi - lo, 0.01 * abs(hi) + 1e-3)
      mid = (lo + hi) / 2
      ax2.set_ylim(mid - 0.6 * span, mid + 0.6 * span)
  ax.ticklabel_format(axis="y", useOffset=False)
  # Below the panel: reward and entropy cross anywhere, and "best" sees only one axes' lines.
  top.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8)


def _column(history: list[dict], key: str) -> list[float]:
  """Return history[i][key] for every epoch, NaN where missing or null (gaps in the line)."""
  return [float("nan") if h.get(key) is None else float(h[key]) for h in history]


def plot_history(
  history: list[dict],
  path: Path,
  title: str = "",
  *,
  ops: Sequence[str] | None = None,
  edges: Sequence[str] | None = None,
  max_skip: int | None = None,
):
  """Draw softmax(alpha) over epochs and at the end, skip-connects and PSNR (DARTS Fig. 2 / 4).

  Returns the Figure (None without matplotlib). Rows carry "alpha_softmax" [edges][ops]; `ops` and
  `edges` name its columns and rows (numbered when not given). `max_skip` (the most skip-connects a
  derived architecture holds) tops the skip-connect axis; default: the most recorded.
  """
  drawn = _figure(path, (12, 8), 2, 2)
  if drawn is None:
    return None
  from matplotlib.ticker import MaxNLocator

  fig, axes = drawn
  epochs = [h["epoch"] for h in history]
  with_alpha = [h for h in history if h.get("alpha_softmax")]
  ax = axes[0, 0]
  if with_alpha:
    probs = np.array([h["alpha_softmax"] for h in with_alpha], np.float64)  # [epochs, edges, ops]
    ops = list(ops) if ops is not None else [f"op {k}" for k in range(probs.shape[2])]
    edges = list(edges) if edges is not None else [f"edge {e}" for e in range(probs.shape[1])]
    mean = probs.mean(axis=1)
    x = [h["epoch"] for h in with_alpha]
    for k, op in enumerate(ops):
      ax.plot(x, mean[:, k], marker=_MARKERS[k % len(_MARKERS)], ms=4, label=op)
    ax.legend(loc="best", fontsize=7, ncol=2)
    _alpha_heatmap(fig, axes[0, 1], probs[-1], ops, edges, x[-1])
  else:
    axes[0, 1].set_axis_off()
  ax.set_title("softmax(alpha) per op, mean over edges")
  ax.set_xlabel("epoch")
  ax.set_ylabel("mean softmax(alpha)")
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3)

  ax = axes[1, 0]
  ax.plot(epochs, [h["num_skip"] for h in history], "o-", color="tab:red", label="skip-connects")
  ax.set_title("skip-connects in the derived cell")
  ax.set_xlabel("epoch")
  ax.set_ylabel("skip-connects")
  if max_skip is None:
    max_skip = max((h["num_skip"] for h in history), default=1)
  ax.set_ylim(0, max(max_skip, 1) + 0.5)  # up to every kept edge
  ax.yaxis.set_major_locator(MaxNLocator(integer=True))
  ax.grid(alpha=0.3)

  ax = axes[1, 1]
  ax.plot(epochs, [h["val_psnr"] for h in history], "s-", color="tab:blue", label="val PSNR")
  ax.set_title("supernet on the validation crops")
  ax.set_xlabel("epoch")
  ax.set_ylabel("validation PSNR (dB)")
  ax.grid(alpha=0.3)
  for ax in (axes[0, 0], axes[1, 0], axes[1, 1]):
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  _save(fig, path, title or "darts_sr search")
  return fig


def _alpha_heatmap(fig, ax, probs: np.ndarray, ops, edges, epoch: int) -> None:
  """Draw softmax(alpha) [edges, ops] of one epoch as a heatmap, values written in small grids."""
  image = ax.imshow(probs, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
  fig.colorbar(image, ax=ax, label="softmax(alpha)")
  ax.set_xticks(range(len(ops)), ops, rotation=35, ha="right", fontsize=7)
  ax.set_yticks(range(len(edges)), edges, fontsize=7)
  ax.set_xlabel("op")
  ax.set_ylabel("edge")
  ax.set_title(f"softmax(alpha) at epoch {epoch}")
  if probs.size <= 120:  # beyond that the numbers are too small to read
    for (e, k), v in np.ndenumerate(probs):
      colour = "black" if v > 0.6 else "white"  # readable on viridis' yellow and its blue
      ax.text(k, e, f"{v:.2f}", ha="center", va="center", fontsize=6, color=colour)


def plot_gp(
  observed: list[dict],
  path: Path,
  title: str = "",
  *,
  families: Sequence[str] | None = None,
  grid_mean: Sequence[float] | None = None,
  grid_std: Sequence[float] | None = None,
  observed_grid: Sequence[int] | None = None,
):
  """Draw leave-one-out predicted against measured PSNR, one marker per family (GP-NAS), and,
  given the GP's predictions over its grid, those predictions beside the measurements.

  Returns the Figure (None without matplotlib). `families` names each observed row's family
  (default: its "family", or its arch's, when present). `grid_mean` / `grid_std` are the
  posterior mean and standard deviation of every grid architecture; `observed_grid` the grid row
  of each observed row: the second panel draws the grid by predicted PSNR, its +-2 sd band and
  the measured PSNRs where their architectures rank.
  """
  with_grid = grid_mean is not None and grid_std is not None
  drawn = _figure(path, (11, 5) if with_grid else (5.5, 5.5), 1, 2 if with_grid else 1)
  if drawn is None:
    return None
  fig, axes = drawn
  ax = axes[0, 0]
  if families is None:
    families = [o.get("family") or (o.get("arch") or {}).get("family") or "" for o in observed]
  pairs = [
    (o, f)
    for o, f in zip(observed, families, strict=True)
    if o["psnr"] is not None and o["loo_mean"] is not None
  ]
  if pairs:
    rows = [o for o, _ in pairs]
    y = np.array([o["psnr"] for o in rows], np.float64)
    loo = np.array([o["loo_mean"] for o in rows], np.float64)
    err = np.array([o["loo_std"] or 0.0 for o in rows], np.float64)
    post = np.array([o["pred_mean"] for o in rows], np.float64)
    names = [f for _, f in pairs]
    handles = []
    for k, family in enumerate(dict.fromkeys(names)):  # first-seen order, stable across redraws
      sel = np.array([f == family for f in names])
      bars = ax.errorbar(
        y[sel],
        loo[sel],
        yerr=err[sel],
        fmt=_MARKERS[k % len(_MARKERS)],
        color=f"C{k}",
        ms=5,
        alpha=0.8,
        label=f"{family} (leave-one-out)" if family else "leave-one-out prediction",
      )
      handles.append(bars)
    handles.append(
      ax.scatter(y, post, s=12, marker="x", color="gray", alpha=0.7, label="posterior mean")
    )
    lo, hi = float(min(y.min(), loo.min())), float(max(y.max(), loo.max()))
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
    ax.legend(handles=handles, loc="upper left", fontsize=8)
  ax.set_xlabel("measured validation PSNR (dB)")
  ax.set_ylabel("predicted PSNR (dB)")
  ax.grid(alpha=0.3)
  if not with_grid:
    _save(fig, path, title or "GP-NAS", ax)
    return fig
  ax.set_title("leave-one-out predictions")
  _grid_panel(axes[0, 1], observed, grid_mean, grid_std, observed_grid)
  _save(fig, path, title or "GP-NAS")
  return fig


def _grid_panel(ax, observed, grid_mean, grid_std, observed_grid) -> None:
  """Draw the GP's mean +- 2 sd over the grid, best predicted first, and the measured PSNRs."""
  mean = np.asarray(grid_mean, np.float64)
  std = np.asarray(grid_std, np.float64)
  order = np.argsort(-mean, kind="stable")  # rank 1: the best predicted architecture
  rank = np.empty(len(order), np.int64)
  rank[order] = np.arange(1, len(order) + 1)
  x = np.arange(1, len(order) + 1)
  ax.plot(x, mean[order], color="tab:blue", lw=1.2, label="predicted mean")
  ax.fill_between(
    x, mean[order] - 2 * std[order], mean[order] + 2 * std[order], color="tab:blue", alpha=0.2,
    lw=0, label="+-2 sd",
  )  # fmt: skip
  if observed_grid is not None:
    seen = [
      (int(rank[g]), o["psnr"])
      for o, g in zip(observed, observed_grid, strict=True)
      if o["psnr"] is not None
    ]
    if seen:
      ax.scatter(*zip(*seen, strict=True), s=18, color="crimson", zorder=3, label="measured")
  ax.set_xlabel(f"grid architecture, by predicted PSNR (of {len(order)})")
  ax.set_ylabel("validation PSNR (dB)")
  ax.set_title("GP over the grid")
  ax.grid(alpha=0.3)
  ax.legend(loc="upper right", fontsize=8)


def plot_pareto(pareto: dict, path: Path, title: str = ""):
  """Draw PSNR against GMACs of every candidate, each lambda's best and the front (HNAS).

  Returns the Figure (None without matplotlib).
  """
  drawn = _figure(path, (6, 4))
  if drawn is None:
    return None
  fig, axes = drawn
  ax = axes[0, 0]
  cands = pareto["candidates"]
  if cands:
    gm = np.array([c["gmacs_480"] for c in cands])
    ps = np.array([c["psnr"] for c in cands])
    ax.scatter(gm, ps, s=10, alpha=0.3, color="gray", label="candidates")
    front = sorted(pareto["front"], key=lambda i: gm[i])
    if front:
      # Post steps: at a given cost the best reachable PSNR is that of the dearest front point below.
      # markers too: a front of one point has no step to draw
      ax.step(
        gm[front], ps[front], where="post", color="tab:green", lw=1.2, marker="o", mfc="none",
        label="front",
      )  # fmt: skip
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
  ax.grid(alpha=0.3)
  if cands or pareto["points"]:
    ax.legend(loc="lower right", fontsize=8)
  _save(fig, path, title or "lambda sweep", ax)
  return fig


def plot_controller(
  history: list[dict],
  path: Path,
  title: str = "",
  *,
  decisions: Sequence[str] | None = None,
  choices: Sequence[Sequence[str]] | None = None,
  samples: int | None = None,
  threshold: float | None = None,
):
  """Draw the policy's entropy over its maximum per epoch and its last choice probabilities.

  Returns the Figure (None without matplotlib). Rows of `history` carry "entropy_ratio" and
  "decision_probs" (one list of probabilities per decision); `decisions` names the heatmap's rows
  and `choices` each decision's choices (`TokenSpec.choice_labels`; numbered when not given);
  `samples`, the number of sequences the probabilities were counted from, goes into the colour
  bar's label; `threshold` draws the ratio above which a search warns.
  """
  with_probs = [h for h in history if h.get("decision_probs")]
  rows = len(with_probs[-1]["decision_probs"]) if with_probs else 0
  # A row per decision, readable up to a few dozen decisions; past that the figure stops growing.
  drawn = _figure(path, (11, min(max(4.2, 1.6 + 0.24 * rows), 16)), 1, 2)
  if drawn is None:
    return None
  from matplotlib.ticker import MaxNLocator

  fig, axes = drawn
  ax = axes[0, 0]
  with_ratio = [h for h in history if h.get("entropy_ratio") is not None]
  ax.axhline(1.0, ls="--", lw=1, color="gray", label="maximum (uniform policy)")
  if threshold is not None:
    ax.axhline(threshold, ls=":", lw=1, color="crimson", label=f"not moved above {threshold:g}")
  if with_ratio:
    x = [h["epoch"] for h in with_ratio]
    ax.plot(x, [h["entropy_ratio"] for h in with_ratio], "o-", color="tab:orange", label="policy")
    last = with_ratio[-1]
    ax.set_title(
      f"entropy {last['entropy']:.3f} of {last['entropy_max']:.3f} nats at epoch {last['epoch']}"
    )
  else:
    ax.set_title("policy entropy")
  ax.set_xlabel("epoch")
  ax.set_ylabel("policy entropy / its maximum")
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  # An unmoved policy sits within 1e-4 of the line: plain ticks, not "1 - 1e-4" offsets.
  ax.ticklabel_format(axis="y", useOffset=False)
  ax.grid(alpha=0.3)
  ax.legend(loc="best", fontsize=8)

  ax = axes[0, 1]
  if with_probs:
    last = with_probs[-1]
    _probs_heatmap(fig, ax, last["decision_probs"], decisions, choices, last["epoch"], samples)
  else:
    ax.set_axis_off()
  _save(fig, path, title or "controller")
  return fig


def _probs_heatmap(fig, ax, probs, decisions, choices, epoch: int, samples: int | None) -> None:
  """Draw per-decision choice probabilities as a heatmap, blank where a decision has no choice.

  Choices every decision shares (the same ops on every edge) name the columns; otherwise each
  cell names its choice and each row's label says its most probable one.
  """
  width = max(len(p) for p in probs)
  grid = np.full((len(probs), width), np.nan)
  for d, p in enumerate(probs):
    grid[d, : len(p)] = p
  image = ax.imshow(np.ma.masked_invalid(grid), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
  label = "probability" if samples is None else f"probability ({samples} samples)"
  fig.colorbar(image, ax=ax, label=label)
  ax.set_facecolor("white")  # masked cells (choices a decision does not have) stay blank
  named = choices is not None and len(choices) == len(probs)
  shared = (
    named and all(tuple(c) == tuple(choices[0]) for c in choices) and len(choices[0]) == width
  )
  if shared:
    ax.set_xticks(range(width), list(choices[0]), rotation=45, ha="right", fontsize=7)
  else:
    ax.set_xticks(range(width))
  rows = list(decisions) if decisions is not None else [str(d) for d in range(len(probs))]
  if named and not shared:  # the row's favourite by name: readable however many cells there are
    rows = [f"{r}: {choices[d][int(np.argmax(probs[d]))]}" for d, r in enumerate(rows)]
  if (decisions is not None or named) and len(probs) <= 60:
    ax.set_yticks(range(len(probs)), rows, fontsize=7)
  ax.set_xlabel("choice")
  ax.set_ylabel("decision")
  ax.set_title(f"choice probabilities at epoch {epoch}")
  if grid.size <= 120:  # beyond that the numbers are too small to read
    for (d, k), v in np.ndenumerate(grid):
      if np.isfinite(v):
        colour = "black" if v > 0.6 else "white"  # readable on viridis' yellow and its blue
        text = f"{choices[d][k]}\n{v:.2f}" if named and not shared else f"{v:.2f}"
        ax.text(
          k, d, text, ha="center", va="center", fontsize=5 if "\n" in text else 6, color=colour
        )


# How each role of a diagnosed architecture is drawn in `plot_ranking`: (label, marker, colour).
_ROLES = {
  "stratified": ("stratified sample", "o", "tab:blue"),
  "random": ("uniformly random", "s", "tab:gray"),
  "searched": ("searched", "*", "crimson"),
  "random_search": ("random search, same budget", "D", "tab:green"),
}


def plot_ranking(
  rows: list[dict],
  path: Path,
  title: str = "",
  *,
  kendall_tau: float | None = None,
  spearman_rho: float | None = None,
  bicubic_psnr: float | None = None,
):
  """Draw shared-weight against stand-alone PSNR, and the searched architecture among random ones.

  Returns the Figure (None without matplotlib). Each row has "roles" (keys of _ROLES),
  "shared_psnr" and "standalone_psnr" (NaN: diverged, left out). Left: one point per architecture,
  marked by its first role, the correlations in the title. Right: the stand-alone PSNR of the
  uniformly random architectures (points and their median) with the searched one, random search's
  and bicubic as lines: does the search beat random at this budget?
  """
  drawn = _figure(path, (11, 4.6), 1, 2)
  if drawn is None:
    return None
  fig, axes = drawn
  ax = axes[0, 0]
  finite = [
    r for r in rows if math.isfinite(r["shared_psnr"]) and math.isfinite(r["standalone_psnr"])
  ]
  for role, (label, marker, colour) in _ROLES.items():
    mine = [r for r in finite if r["roles"][0] == role]
    if mine:
      ax.scatter(
        [r["shared_psnr"] for r in mine],
        [r["standalone_psnr"] for r in mine],
        marker=marker,
        s=90 if marker == "*" else 36,
        color=colour,
        label=label,
        zorder=3,
      )
  ax.set_xlabel("shared-weight PSNR (dB)")
  ax.set_ylabel("stand-alone PSNR (dB)")
  parts = []
  if kendall_tau is not None and math.isfinite(kendall_tau):
    parts.append(f"Kendall tau {kendall_tau:.2f}")
  if spearman_rho is not None and math.isfinite(spearman_rho):
    parts.append(f"Spearman rho {spearman_rho:.2f}")
  ax.set_title(", ".join(parts) or "ranking (too few architectures)")
  ax.grid(alpha=0.3)
  if finite:
    ax.legend(loc="best", fontsize=8)

  ax = axes[0, 1]
  random_psnr = [r["standalone_psnr"] for r in finite if "random" in r["roles"]]
  if random_psnr:
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(random_psnr))
    ax.scatter(jitter, random_psnr, color="tab:gray", s=30, label="uniformly random", zorder=3)
    ax.hlines(float(np.median(random_psnr)), -0.3, 0.3, color="black", label="random median")
  lines = [
    ("searched", "crimson", "-"),
    ("random_search", "tab:green", "--"),
  ]
  for role, colour, style in lines:
    mine = [r["standalone_psnr"] for r in finite if role in r["roles"]]
    if mine:
      ax.axhline(mine[0], color=colour, ls=style, label=_ROLES[role][0])
  heading = "the searched architecture against random ones"
  if bicubic_psnr is not None and math.isfinite(bicubic_psnr):
    shown = [r["standalone_psnr"] for r in finite] or [bicubic_psnr]
    lo, hi = min(shown), max(shown)
    # Far from the networks (they differ by hundredths of a dB, bicubic by a dB or more) a line
    # would squash them into one row: the title says where it is instead.
    margin = 2 * (hi - lo + 0.05)
    if lo - margin <= bicubic_psnr <= hi + margin:
      ax.axhline(bicubic_psnr, color="tab:purple", ls=":", label="bicubic")
    else:
      where = "below" if bicubic_psnr < lo else "above"
      heading += f"\n(bicubic {bicubic_psnr:.2f} dB, {where})"
  ax.set_xlim(-0.6, 0.6)
  ax.set_xticks([])
  ax.set_ylabel("stand-alone PSNR (dB)")
  ax.set_title(heading)
  ax.grid(alpha=0.3, axis="y")
  ax.legend(loc="best", fontsize=8)
  _save(fig, path, title or "ranking")
  return fig


def plot_regret(curves: dict, path: Path, title: str = ""):
  """Draw each strategy's mean regret against queries with its 95% band (curves: name -> [(mean,
  low, high)] per query count); return the figure."""
  made = _figure(Path(path), (6.4, 4.2))
  if made is None:
    return None
  fig, axes = made
  ax = axes[0, 0]
  for i, (name, rows) in enumerate(curves.items()):
    r = np.asarray(rows, np.float64)
    q = np.arange(1, len(r) + 1)
    (line,) = ax.plot(q, r[:, 0], label=name, marker=_MARKERS[i % len(_MARKERS)], markevery=0.1)
    ax.fill_between(q, r[:, 1], r[:, 2], color=line.get_color(), alpha=0.2)
  ax.set_xlabel("queries (distinct members trained)")
  ax.set_ylabel("regret of the pick (dB)")
  ax.set_yscale("symlog", linthresh=0.01)
  ax.grid(alpha=0.3)
  ax.legend()
  _save(fig, Path(path), title, ax)
  return fig


def plot_weight_sharing(panels: dict, path: Path, title: str = ""):
  """Draw, per weight-sharing search, every member's shared-weight PSNR against its true PSNR
  (one colour per seed, each seed's pick starred); return the figure.

  panels: search name -> list of runs, each {"shared": [members], "truth": [members], "pick":
  member id, "tau": float}; NaN members are left out.
  """
  made = _figure(Path(path), (4.2 * max(len(panels), 1), 4.0), 1, max(len(panels), 1))
  if made is None:
    return None
  fig, axes = made
  for ax, (name, runs) in zip(axes[0], panels.items(), strict=False):
    for s, run in enumerate(runs):
      shared, truth = np.asarray(run["shared"], float), np.asarray(run["truth"], float)
      ok = np.isfinite(shared) & np.isfinite(truth)
      # Each seed validates on crops of its own, dBs apart: centred, the seeds share one axis.
      shared = shared - np.median(shared[ok]) if ok.any() else shared
      (dots,) = ax.plot(
        shared[ok],
        truth[ok],
        _MARKERS[s % len(_MARKERS)],
        ms=3,
        alpha=0.5,
        ls="none",
        label=f"seed {s}: tau {run['tau']:.2f}",
      )
      p = int(run["pick"])
      if ok[p]:
        ax.plot(shared[p], truth[p], "*", ms=14, color=dots.get_color(), mec="black", zorder=4)
    ax.set_xlabel("shared-weight PSNR - the seed's median (dB)")
    ax.set_ylabel("true PSNR (dB)")
    ax.set_title(name, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
  _save(fig, Path(path), title or "shared weights against the table (star: the search's pick)")
  return fig
