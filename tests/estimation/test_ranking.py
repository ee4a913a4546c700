"""Rank statistics of the diagnostics against scipy, and the stratified sampler."""

import math

import numpy as np
import pytest

from nasr.core import ConfigError
from nasr.estimation import ranking

stats = pytest.importorskip("scipy.stats", reason="scipy (a scikit-image dependency) is missing")

# Fixed data with ties in both sequences, as PSNRs rounded to 0.01 dB have.
A = [31.20, 30.95, 31.20, 30.10, 31.45, 30.95, 29.80, 31.02, 31.20, 30.40]
B = [30.10, 30.12, 29.90, 29.50, 30.40, 30.12, 29.55, 29.95, 30.31, 29.50]


@pytest.mark.parametrize(
  ("a", "b"),
  [
    (A, B),
    (A, A[::-1]),  # ties on both sides, reversed
    ([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]),  # perfect disagreement
    ([3.0, 1.0, 2.0, 5.0, 4.0], [2.5, 1.5, 1.5, 4.0, 4.0]),
  ],
)
def test_kendall_and_spearman_match_scipy(a, b):
  want_tau = stats.kendalltau(a, b).statistic  # tau-b, scipy's default
  want_rho = stats.spearmanr(a, b).statistic
  assert ranking.kendall_tau(a, b) == pytest.approx(want_tau, abs=1e-12)
  assert ranking.spearman_rho(a, b) == pytest.approx(want_rho, abs=1e-12)


def test_correlations_of_a_constant_are_nan():
  assert math.isnan(ranking.kendall_tau([1, 1, 1], [1, 2, 3]))
  assert math.isnan(ranking.spearman_rho([1, 2, 3], [5, 5, 5]))
  with pytest.raises(ValueError, match="one length"):
    ranking.kendall_tau([1, 2], [1, 2, 3])


def test_stratified_sample_takes_one_per_bin_from_the_whole_range():
  rng = np.random.default_rng(0)
  # Skewed like shared-weight PSNR: most within 0.1 dB, a tail far below.
  values = np.concatenate([rng.normal(30.0, 0.03, 90), rng.uniform(25.0, 29.0, 10)])
  picked = ranking.stratified_sample(values, 5, np.random.default_rng(1))
  assert len(set(picked)) == 5
  assert [values[i] for i in picked] == sorted(values[i] for i in picked)
  lo, hi = values.min(), values.max()
  bins = {min(int((values[i] - lo) / ((hi - lo) / 5)), 4) for i in picked}
  occupied = {min(int((v - lo) / ((hi - lo) / 5)), 4) for v in values}
  assert occupied <= bins  # every occupied bin gave one
  # A uniform draw of 5 from this pool would mostly be the crowd at 30 dB: the tail is covered.
  assert min(values[i] for i in picked) < 27.0
  # Deterministic per generator seed; another seed draws others within the bins.
  assert ranking.stratified_sample(values, 5, np.random.default_rng(1)) == picked


def test_stratified_sample_fills_empty_bins_and_skips_non_finite():
  values = [1.0, 1.01, 1.02, 1.03, 5.0, float("nan")]  # bins 1..3 of 4 are empty
  picked = ranking.stratified_sample(values, 4, np.random.default_rng(0))
  assert len(set(picked)) == 4 and 5 not in picked
  assert 4 in picked  # the maximum's bin
  with pytest.raises(ConfigError, match="cannot pick 6 architectures from 5"):
    ranking.stratified_sample(values, 6, np.random.default_rng(0))
  with pytest.raises(ConfigError, match="positive integer"):
    ranking.stratified_sample(values, 0, np.random.default_rng(0))
  same = ranking.stratified_sample([2.0] * 4, 3, np.random.default_rng(0))
  assert len(set(same)) == 3
