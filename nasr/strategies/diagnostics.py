"""How far a policy has moved from uniform: its entropy against the maximum, and its choices.

A policy over a `TokenSpec` that samples every decision uniformly has the largest entropy any
policy over that spec can have, sum over decisions of log(choices) nats; a search whose
controller's entropy stays there has learned nothing. An autoregressive policy's per-decision
marginals are sums over every earlier path (intractable), so `decision_frequencies` estimates
them from samples, and the mean of the samples' summed per-step entropies estimates the
sequence's entropy (by the chain rule it is unbiased).
"""

import math

import numpy as np

from nasr.core import TokenSpec


def max_entropy(spec: TokenSpec) -> float:
  """Return the entropy of the uniform policy over `spec` in nats: sum of log(choices)."""
  return float(sum(math.log(c) for c in spec.choices))


def decision_frequencies(tokens, spec: TokenSpec, digits: int = 3) -> list[list[float]]:
  """Return per decision the fraction of `tokens` rows taking each choice, rounded to `digits`.

  `tokens` is int [num, len(spec)]; row p of the result has `spec.choices[p]` entries.
  """
  tokens = np.asarray(tokens)
  if tokens.ndim != 2 or tokens.shape[1] != len(spec) or len(tokens) == 0:
    raise ValueError(f"tokens must be [num > 0, {len(spec)}], got {tokens.shape}")
  return [
    [round(float(f), digits) for f in np.bincount(tokens[:, p], minlength=c)[:c] / len(tokens)]
    for p, c in enumerate(spec.choices)
  ]
