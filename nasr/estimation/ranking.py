"""Does a cheap estimate rank architectures as training them does? Rank statistics and sampling.

`kendall_tau` (tau-b, what scipy.stats.kendalltau returns by default) and `spearman_rho` (Pearson
correlation of average ranks, scipy.stats.spearmanr) compare shared-weight PSNR with stand-alone
PSNR (Yu et al. 2020, "Evaluating the search phase of NAS"); `stratified_sample` picks the
architectures to train so that they cover the estimate's whole range, not only its crowded middle.
NumPy only: scipy is not a dependency (the tests compare against it where it is installed).
"""

import math
from collections.abc import Sequence

import numpy as np

from nasr.core.errors import ConfigError


def average_ranks(x: Sequence[float]) -> np.ndarray:
  """Return the 0-based ranks of `x` (float64), tied values sharing their mean rank."""
  x = np.asarray(x, np.float64)
  order = np.argsort(x, kind="stable")
  ranks = np.empty(len(x))
  ranks[order] = np.arange(len(x))
  for v in np.unique(x):
    tie = x == v
    ranks[tie] = ranks[tie].mean()
  return ranks


def _pair(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(f"two 1-D sequences of one length are needed, got {a.shape} and {b.shape}")
  return a, b


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
  """Return Spearman's rank correlation of `a` and `b` (NaN when either is constant or n < 2)."""
  a, b = _pair(a, b)
  ra, rb = average_ranks(a), average_ranks(b)
  ra, rb = ra - ra.mean(), rb - rb.mean()
  denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
  return float(ra @ rb / denom) if denom > 0 else math.nan


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
  """Return Kendall's tau-b of `a` and `b` (ties corrected; NaN when either is constant)."""
  a, b = _pair(a, b)
  i, j = np.triu_indices(len(a), k=1)
  da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
  concordance = float(np.sum(da * db))  # concordant minus discordant pairs
  # tau-b divides by the geometric mean of the pairs untied in each sequence.
  denom = math.sqrt(float(np.sum(da != 0)) * float(np.sum(db != 0)))
  return concordance / denom if denom > 0 else math.nan


def stratified_sample(values: Sequence[float], k: int, rng: np.random.Generator) -> list[int]:
  """Return `k` distinct indices of `values` spread over their range, lowest value first.

  [min, max] is cut into `k` bins of equal width and one index is drawn (uniformly, with `rng`)
  from each bin that holds any. The draws of empty bins go, one at a time, to the unpicked value
  nearest to the empty bin's centre: a skewed estimate (most architectures within 0.1 dB, a few
  far below) still gives `k` architectures, the extremes among them. Non-finite values are never
  picked.
  """
  v = np.asarray(values, np.float64)
  finite = np.flatnonzero(np.isfinite(v))
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ConfigError(
      f"the number of architectures to sample must be a positive integer, got {k!r}"
    )
  if k > len(finite):
    raise ConfigError(
      f"cannot pick {k} architectures from {len(finite)} with a finite estimate; sample fewer or "
      "score more"
    )
  lo, hi = float(v[finite].min()), float(v[finite].max())
  width = (hi - lo) / k
  if width == 0:  # one value: the bins collapse, every draw is uniform
    return sorted(int(i) for i in rng.choice(finite, size=k, replace=False))
  bins = np.minimum(((v[finite] - lo) / width).astype(int), k - 1)
  picked, empty = [], []
  for b in range(k):
    members = finite[bins == b]
    if len(members):
      picked.append(int(rng.choice(members)))
    else:
      empty.append(b)
  for b in empty:
    centre = lo + (b + 0.5) * width
    rest = np.setdiff1d(finite, picked)
    picked.append(int(rest[np.argmin(np.abs(v[rest] - centre))]))
  return sorted(picked, key=lambda i: (v[i], i))
