"""The PNG plots: each function draws its panels, labels and legend entries, and writes the file."""

import json
import math

import numpy as np
import pytest

from nasr import plots

pytest.importorskip("matplotlib")

OPS = ("none", "skip_connect", "res_sep_conv_3x3")
EDGES = ("node0<-in0", "node0<-in1", "node1<-in0", "node1<-in1", "node1<-node0")


def _panels(fig) -> list:
  """Return the figure's panels: its axes less colour bars and twin axes (same grid cell)."""
  cells, out = set(), []
  for ax in fig.axes:
    spec = ax.get_subplotspec()
    if spec is None or ax.get_label() == "<colorbar>":
      continue
    cell = (spec.rowspan, spec.colspan)
    if cell not in cells:
      cells.add(cell)
      out.append(ax)
  return out


def _legend(ax) -> list[str]:
  legend = ax.get_legend()
  return [] if legend is None else [t.get_text() for t in legend.get_texts()]


def _darts_history(epochs: int = 3) -> list[dict]:
  rng = np.random.default_rng(0)
  rows = []
  for e in range(1, epochs + 1):
    a = rng.normal(size=(len(EDGES), len(OPS)))
    p = np.exp(a) / np.exp(a).sum(axis=1, keepdims=True)
    rows.append(
      {
        "epoch": e,
        "train_loss": 0.1,
        "val_loss": 0.1,
        "val_psnr": 20.0 + e,
        "num_skip": e % 3,
        "genotype": [["skip_connect", 0], ["res_sep_conv_3x3", 1]] * 2,
        "alpha_softmax": np.round(p, 6).tolist(),
        "xi": 0.0,
        "steps_per_sec": 1.0,
      }
    )
  return rows


def test_plot_history_shows_alpha_per_op_heatmap_skips_and_psnr(tmp_path):
  path = tmp_path / "alpha.png"
  history = _darts_history()
  fig = plots.plot_history(history, path, title="darts", ops=OPS, edges=EDGES, max_skip=4)
  assert path.stat().st_size > 1000
  panels = _panels(fig)
  assert len(panels) == 4
  curves, heat, skips, psnr = panels
  assert _legend(curves) == list(OPS)
  assert curves.get_ylabel() == "mean softmax(alpha)" and curves.get_xlabel() == "epoch"
  np.testing.assert_allclose(
    curves.get_lines()[1].get_ydata(),
    [np.mean(np.asarray(h["alpha_softmax"])[:, 1]) for h in history],
  )
  # The heatmap is the last epoch's softmax(alpha), edges down and ops across.
  image = heat.get_images()[0]
  np.testing.assert_allclose(image.get_array(), history[-1]["alpha_softmax"])
  assert [t.get_text() for t in heat.get_xticklabels()] == list(OPS)
  assert [t.get_text() for t in heat.get_yticklabels()] == list(EDGES)
  assert heat.get_title() == "softmax(alpha) at epoch 3"
  assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
  assert skips.get_ylabel() == "skip-connects"
  assert list(skips.get_lines()[0].get_ydata()) == [1, 2, 0]
  assert skips.get_ylim() == (0, 4.5)  # up to the most skip-connects a genotype can hold
  assert psnr.get_ylabel() == "validation PSNR (dB)"
  assert fig.get_suptitle() == "darts"


def test_plot_history_numbers_ops_without_names_and_survives_rows_without_alpha(tmp_path):
  history = _darts_history(2)
  fig = plots.plot_history(history, tmp_path / "a.png")
  assert _legend(_panels(fig)[0]) == ["op 0", "op 1", "op 2"]
  old = [{k: v for k, v in h.items() if k != "alpha_softmax"} for h in history]
  fig = plots.plot_history(old, tmp_path / "b.png")
  assert len(_panels(fig)) == 4 and (tmp_path / "b.png").is_file()


def _candidates() -> list[dict]:
  # Sorted by reward, as candidates.json: the best reward is not on the front here.
  return [
    {"params": 3000, "psnr": 30.0, "macs_per_lr_pixel": 9000.0, "reward": 1.0},
    {"params": 1000, "psnr": 29.0, "macs_per_lr_pixel": 2000.0, "reward": 0.9},
    {"params": 2000, "psnr": 28.0, "macs_per_lr_pixel": 4000.0, "reward": 0.8},
    {"params": 4000, "psnr": 31.0, "macs_per_lr_pixel": 12000.0, "reward": 0.7},
    {"params": 5000, "psnr": 30.5, "macs_per_lr_pixel": 15000.0, "reward": 0.6},
  ]


def test_pareto_front_keeps_the_non_dominated_points_by_rising_cost():
  cost = [3, 1, 2, 4, 5, 1, math.nan]
  psnr = [30, 29, 28, 31, 30.5, 27, 40]
  assert plots.pareto_front(cost, psnr) == [1, 0, 3]
  assert plots.pareto_front([], []) == []


def test_plot_candidates_draws_front_bicubic_and_controller_panel(tmp_path):
  path = tmp_path / "candidates.png"
  history = [
    {
      "epoch": e,
      "reward": 0.5 + 0.1 * e,
      "controller_baseline": 0.4 + 0.1 * e,
      "controller_entropy_mean": 2.0 - 0.3 * e,
    }
    for e in (1, 2, 3)
  ]
  fig = plots.plot_candidates(
    _candidates(), path, title="deconas x2", bicubic_psnr=27.5, history=history
  )
  assert path.stat().st_size > 1000
  scatter, controller = _panels(fig)
  assert scatter.get_xlabel() == "parameters (K)"
  assert scatter.get_ylabel() == "validation PSNR with shared weights (dB)"
  entries = _legend(scatter)
  assert entries[:3] == ["candidates", "Pareto front", "best reward"]
  assert entries[3] == "bicubic (27.50 dB)"
  front = next(line for line in scatter.get_lines() if line.get_label() == "Pareto front")
  np.testing.assert_allclose(front.get_xdata(), [1.0, 3.0, 4.0])
  np.testing.assert_allclose(front.get_ydata(), [29.0, 30.0, 31.0])
  bicubic = next(line for line in scatter.get_lines() if line.get_label().startswith("bicubic"))
  assert list(bicubic.get_ydata()) == [27.5, 27.5]
  assert controller.get_xlabel() == "epoch" and controller.get_ylabel() == "reward"
  (twin,) = [ax for ax in fig.axes if ax not in _panels(fig)]
  assert twin.get_ylabel() == "policy entropy (nats)"
  assert _legend(twin) == ["reward", "baseline", "entropy"]
  assert fig.get_suptitle() == "deconas x2"


def test_plot_candidates_cost_axis_and_optional_parts(tmp_path):
  # Random search keeps no baseline or entropy; no bicubic value means no line.
  history = [{"epoch": 1, "reward": 0.3, "controller_best_reward": 0.3}]
  fig = plots.plot_candidates(
    _candidates(), tmp_path / "c.png", cost="macs_per_lr_pixel", history=history
  )
  scatter, controller = _panels(fig)
  assert scatter.get_xlabel() == "multiply-adds per LR pixel (K)"
  assert not any(e.startswith("bicubic") for e in _legend(scatter))
  assert _legend(controller) == ["reward"]
  fig = plots.plot_candidates(_candidates(), tmp_path / "d.png", title="t")
  assert len(fig.axes) == 1 and fig.axes[0].get_title() == "t"
  assert (tmp_path / "d.png").stat().st_size > 1000


def _observed() -> list[dict]:
  rows = []
  for i, (family, psnr) in enumerate([("drn", 30.0), ("rcan", 31.0), ("drn", 30.5), ("rcan", 29)]):
    rows.append(
      {
        "candidate": i,
        "arch": {"family": family, "features": 4, "blocks": 1, "stages": 1},
        "psnr": psnr,
        "loo_mean": psnr + 0.2,
        "loo_std": 0.1,
        "pred_mean": psnr + 0.05,
      }
    )
  rows.append({**rows[0], "candidate": 4, "psnr": None})  # a diverged candidate is left out
  return rows


def test_plot_gp_marks_each_family(tmp_path):
  path = tmp_path / "gp.png"
  observed = _observed()
  families = [o["arch"]["family"] for o in observed]
  fig = plots.plot_gp(observed, path, title="GP-NAS drn+rcan x2", families=families)
  assert path.stat().st_size > 1000
  (ax,) = _panels(fig)
  assert _legend(ax) == ["drn (leave-one-out)", "rcan (leave-one-out)", "posterior mean"]
  assert ax.get_xlabel() == "measured validation PSNR (dB)"
  assert ax.get_ylabel() == "predicted PSNR (dB)"
  assert ax.get_title() == "GP-NAS drn+rcan x2"
  markers = {c.get_label(): c.lines[0].get_marker() for c in ax.containers}
  assert markers["drn (leave-one-out)"] != markers["rcan (leave-one-out)"]
  drn = next(c for c in ax.containers if c.get_label() == "drn (leave-one-out)")
  np.testing.assert_allclose(drn.lines[0].get_xdata(), [30.0, 30.5])
  # Without `families` the rows' own arch says which family; JSON rows work as they are read.
  again = plots.plot_gp(json.loads(json.dumps(observed)), tmp_path / "gp2.png")
  assert _legend(_panels(again)[0]) == _legend(ax)


def test_plot_gp_draws_the_grids_predictions_beside_the_measurements(tmp_path):
  observed = _observed()  # the last row diverged: no measurement to draw
  mean = np.array([30.0, 31.5, 29.0, 30.8, 31.2, 28.5])
  std = np.array([0.5, 0.2, 1.0, 0.1, 0.3, 0.8])
  fig = plots.plot_gp(
    observed, tmp_path / "gp.png", grid_mean=mean, grid_std=std, observed_grid=[0, 1, 3, 5, 0]
  )
  loo, grid = _panels(fig)
  assert loo.get_title() == "leave-one-out predictions" and grid.get_title() == "GP over the grid"
  assert _legend(grid) == ["predicted mean", "+-2 sd", "measured"]
  (line,) = grid.get_lines()
  np.testing.assert_allclose(line.get_xdata(), [1, 2, 3, 4, 5, 6])
  np.testing.assert_allclose(line.get_ydata(), [31.5, 31.2, 30.8, 30.0, 29.0, 28.5])
  band = grid.collections[0].get_paths()[0].vertices[:, 1]
  assert band.max() == pytest.approx(31.9) and band.min() == pytest.approx(26.9)  # +-2 sd
  # Measured PSNRs sit at their architectures' ranks: grid rows 0, 1, 3, 5 rank 4, 1, 3, 6.
  dots = grid.collections[-1].get_offsets()
  np.testing.assert_allclose(dots, [[4, 30.0], [1, 31.0], [3, 30.5], [6, 29.0]])
  assert grid.get_xlabel() == "grid architecture, by predicted PSNR (of 6)"


def test_plot_gp_without_families_or_measurements(tmp_path):
  rows = [{k: v for k, v in o.items() if k != "arch"} for o in _observed()]
  fig = plots.plot_gp(rows, tmp_path / "a.png")
  assert _legend(fig.axes[0]) == ["leave-one-out prediction", "posterior mean"]
  fig = plots.plot_gp([{**rows[0], "psnr": None}], tmp_path / "b.png")
  assert fig.axes[0].get_legend() is None and (tmp_path / "b.png").is_file()


def test_plot_pareto_returns_its_figure(tmp_path):
  pareto = {
    "candidates": [{"gmacs_480": 1.0, "psnr": 30.0}, {"gmacs_480": 2.0, "psnr": 31.0}],
    "front": [0, 1],
    "points": [{"lambda": 0.5, "label": "lambda=0.5", "gmacs_480": 2.0, "psnr": 31.0}],
  }
  fig = plots.plot_pareto(pareto, tmp_path / "pareto.png", title="sweep")
  assert _legend(fig.axes[0]) == ["candidates", "front", "best per lambda"]
  assert fig.axes[0].get_title() == "sweep" and (tmp_path / "pareto.png").stat().st_size > 1000


def _controller_history(epochs: int = 3) -> list[dict]:
  choices = (2, 7, 3)  # mixed widths: the heatmap pads the narrow decisions with blank cells
  rows = []
  for e in range(1, epochs + 1):
    probs = [[round(1.0 / c, 3)] * c for c in choices]
    rows.append(
      {
        "epoch": e,
        "reward": 30.0,
        "entropy": 4.0 - 0.1 * e,
        "entropy_max": 4.0,
        "entropy_ratio": (4.0 - 0.1 * e) / 4.0,
        "decision_probs": probs,
      }
    )
  return rows


def test_plot_controller_draws_entropy_ratio_and_last_epochs_probabilities(tmp_path):
  path = tmp_path / "controller.png"
  names = ("input a", "op a", "position")
  fig = plots.plot_controller(
    _controller_history(), path, "deconas x2", decisions=names, samples=200, threshold=0.999
  )
  assert path.stat().st_size > 1000
  ratio, heat = _panels(fig)
  assert (ratio.get_xlabel(), ratio.get_ylabel()) == ("epoch", "policy entropy / its maximum")
  assert "entropy 3.700 of 4.000 nats at epoch 3" == ratio.get_title()
  assert _legend(ratio) == ["maximum (uniform policy)", "not moved above 0.999", "policy"]
  lines = {line.get_label(): line for line in ratio.get_lines()}
  np.testing.assert_allclose(lines["policy"].get_ydata(), [0.975, 0.95, 0.925])
  assert list(lines["maximum (uniform policy)"].get_ydata()) == [1.0, 1.0]
  assert (heat.get_xlabel(), heat.get_ylabel()) == ("choice", "decision")
  assert heat.get_title() == "choice probabilities at epoch 3"
  assert [t.get_text() for t in heat.get_yticklabels()] == list(names)
  grid = heat.get_images()[0].get_array()
  assert grid.shape == (3, 7)
  assert list(np.ma.getmaskarray(grid).sum(axis=1)) == [5, 0, 4]  # blank where no choice exists
  np.testing.assert_allclose(grid[1].filled(0), [0.143] * 7)
  colourbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
  assert colourbars[0].get_ylabel() == "probability (200 samples)"
  assert fig.get_suptitle() == "deconas x2"


def test_plot_controller_names_the_choices_of_each_decision(tmp_path):
  names = ("input a", "op a", "position")
  choices = (("cell k-2", "cell k-1"), ("identity", "sep3", "sep5", "dil3", "dil5", "udpb", "rcab"))
  choices += (("layer 1", "layer 2", "layer 3"),)
  history = _controller_history()
  history[-1]["decision_probs"][1] = [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.4]
  fig = plots.plot_controller(history, tmp_path / "c.png", decisions=names, choices=choices)
  heat = _panels(fig)[1]
  # Choices differ by decision: each row names its most probable one, each cell its own.
  rows = [t.get_text() for t in heat.get_yticklabels()]
  assert rows == ["input a: cell k-2", "op a: rcab", "position: layer 1"]
  cells = {t.get_text() for t in heat.texts}
  assert {"rcab\n0.40", "udpb\n0.10", "cell k-1\n0.50", "layer 3\n0.33"} <= cells
  # Choices every decision shares name the columns.
  ops = ("zero", "skip", "conv3x3")
  shared = [{**h, "decision_probs": [[0.2, 0.3, 0.5]] * 3} for h in history]
  fig = plots.plot_controller(shared, tmp_path / "d.png", decisions=names, choices=[ops] * 3)
  heat = _panels(fig)[1]
  assert [t.get_text() for t in heat.get_xticklabels()] == list(ops)
  assert [t.get_text() for t in heat.get_yticklabels()] == list(names)
  assert {t.get_text() for t in heat.texts} == {"0.20", "0.30", "0.50"}


def test_plot_controller_without_probabilities_or_names(tmp_path):
  history = [{k: v for k, v in h.items() if k != "decision_probs"} for h in _controller_history()]
  fig = plots.plot_controller(history, tmp_path / "c.png")
  ratio, heat = fig.axes[:2]
  assert len(ratio.get_lines()) == 2 and not heat.axison  # no threshold; no heatmap to draw
  fig = plots.plot_controller(_controller_history(1), tmp_path / "c.png")
  heat = _panels(fig)[1]
  assert heat.get_ylabel() == "decision"
  assert heat.get_images()[0].get_array().shape == (3, 7)


def _ranking_rows() -> list[dict]:
  row = lambda roles, s, a: {"roles": roles, "shared_psnr": s, "standalone_psnr": a}  # noqa: E731
  return [
    row(["searched"], 30.4, 31.0),
    row(["random_search"], 30.2, 30.9),
    row(["stratified", "random"], 29.0, 30.5),
    row(["stratified"], 29.8, 30.7),
    row(["random"], 30.0, 30.6),
    row(["random"], 30.1, float("nan")),  # diverged: left out
  ]


def test_plot_ranking_scatters_roles_and_compares_with_random(tmp_path):
  fig = plots.plot_ranking(
    _ranking_rows(),
    tmp_path / "ranking.png",
    title="deconas x2",
    kendall_tau=0.6,
    spearman_rho=0.7,
    bicubic_psnr=29.9,
  )
  assert (tmp_path / "ranking.png").stat().st_size > 0
  assert fig.get_suptitle() == "deconas x2"
  scatter, baseline = _panels(fig)
  assert scatter.get_xlabel() == "shared-weight PSNR (dB)"
  assert scatter.get_ylabel() == "stand-alone PSNR (dB)"
  assert "Kendall tau 0.60" in scatter.get_title() and "Spearman rho 0.70" in scatter.get_title()
  assert _legend(scatter) == [
    "stratified sample",
    "uniformly random",
    "searched",
    "random search, same budget",
  ]
  # One point per finite architecture, by its first role: 2 stratified, 1 random.
  sizes = [len(c.get_offsets()) for c in scatter.collections]
  assert sizes == [2, 1, 1, 1]
  assert _legend(baseline) == [
    "uniformly random",
    "random median",
    "searched",
    "random search, same budget",
    "bicubic",
  ]
  assert len(baseline.collections[0].get_offsets()) == 2  # the finite random architectures
  lines = {line.get_label(): line.get_ydata()[0] for line in baseline.get_lines()}
  assert lines["searched"] == 31.0 and lines["bicubic"] == 29.9
  assert baseline.collections[1].get_segments()[0][0][1] == pytest.approx(30.55)  # the median


def test_plot_ranking_without_correlations_or_random_architectures(tmp_path):
  rows = [r for r in _ranking_rows() if "random" not in r["roles"]]
  fig = plots.plot_ranking(rows, tmp_path / "r.png", kendall_tau=float("nan"), bicubic_psnr=27.0)
  scatter, baseline = _panels(fig)
  assert scatter.get_title() == "ranking (too few architectures)"
  assert "uniformly random" not in _legend(baseline)
  # Bicubic far below the networks is named in the title, not drawn (it would squash them).
  assert "bicubic" not in _legend(baseline) and "(bicubic 27.00 dB, below)" in baseline.get_title()


def test_plots_say_what_they_show_when_the_numbers_are_extreme(tmp_path):
  # random search has no policy: its panel is not a controller's, and a flat entropy stays flat
  history = [
    {"epoch": e, "reward": 30.0 + e, "controller_entropy_mean": 20.0 - 1e-6 * e} for e in (1, 2, 3)
  ]
  fig = plots.plot_candidates(_candidates(), tmp_path / "c.png", history=history)
  scatter, panel = _panels(fig)
  assert panel.get_title() == "strategy (no learned policy)"
  (twin,) = [ax for ax in fig.axes if ax not in _panels(fig)]
  lo, hi = twin.get_ylim()
  assert hi - lo >= 0.2  # 1% of 20 nats: a 3e-6 change is drawn flat, not as a fall
  # the legend sits below the scatter, not over its points
  assert scatter.get_legend().get_bbox_to_anchor().y1 < scatter.get_window_extent().y0 + 1
  # bicubic far above the networks (a tiny search) is named, not drawn up the axis
  fig = plots.plot_ranking(_ranking_rows(), tmp_path / "r.png", bicubic_psnr=45.0)
  _, baseline = _panels(fig)
  assert "bicubic" not in _legend(baseline) and "(bicubic 45.00 dB, above)" in baseline.get_title()
  # a front of one point still shows in the sweep plot
  pareto = {
    "candidates": [{"gmacs_480": 1.0, "psnr": 30.0}, {"gmacs_480": 2.0, "psnr": 29.0}],
    "front": [0],
    "points": [],
  }
  fig = plots.plot_pareto(pareto, tmp_path / "p.png")
  (front,) = [line for line in fig.axes[0].get_lines() if line.get_label() == "front"]
  assert front.get_marker() == "o"
