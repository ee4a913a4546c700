"""Controller diagnostics of the one-shot search: entropy against its maximum, per-decision
probabilities, and the warning when the policy has not moved."""

import json
import math
import types
from unittest import mock

import jax
import numpy as np
import pytest

from nasr import spaces, strategies
from nasr.checkpoint import Checkpointer
from nasr.experiment import load_config
from nasr.searches import loop, one_shot


def _space(name: str):
  c = load_config(name, "tiny", lock=False)
  return spaces.get(c.space.name, **loop.space_kwargs(c))


def _spec(name: str):
  return _space(name).token_spec()


def test_entropy_max_is_the_sum_of_log_choices_and_the_uniform_policys_entropy():
  spec = _spec("deconas")
  assert strategies.max_entropy(spec) == pytest.approx(sum(math.log(c) for c in spec.choices))
  assert strategies.max_entropy(spec) == pytest.approx(9 * math.log(2))  # 9 binary op bits
  # HNAS: every decision of its three controllers, of 2 to 7 choices.
  spec = _spec("hnas")
  assert len(set(spec.choices)) > 1 and spec.num_groups == 3
  assert strategies.max_entropy(spec) == pytest.approx(sum(math.log(c) for c in spec.choices))
  # Random search samples the uniform policy: its entropy is the maximum, by another route.
  random = strategies.get("random", spec)
  _, aux = random.propose(random.init(jax.random.key(0)), jax.random.key(1), 2)
  np.testing.assert_allclose(aux["entropy"], strategies.max_entropy(spec), rtol=1e-6)


def test_decision_frequencies_have_a_row_per_decision_summing_to_one():
  spec = _spec("hnas")
  tokens = np.stack(list(spec.sample(np.random.default_rng(0), one_shot.PROBE_SAMPLES)))
  probs = strategies.decision_frequencies(tokens, spec)
  assert [len(p) for p in probs] == list(spec.choices)
  assert all(abs(sum(p) - 1.0) < 1e-9 for p in probs)  # 200 samples: exact at 3 digits
  assert probs[0] == [round(float(np.mean(tokens[:, 0] == k)), 3) for k in range(2)]
  with pytest.raises(ValueError, match="tokens must be"):
    strategies.decision_frequencies(tokens[:, :3], spec)


def test_policy_stuck_only_after_half_the_run_within_a_thousandth_of_the_maximum():
  assert one_shot.policy_stuck(2, 2, 0.9995)
  assert one_shot.policy_stuck(3, 4, 0.99999)
  assert not one_shot.policy_stuck(1, 2, 1.0)  # half the run is not past half
  assert not one_shot.policy_stuck(2, 4, 1.0)
  assert not one_shot.policy_stuck(2, 2, 0.998)  # clearly below the maximum: it moved
  assert not one_shot.policy_stuck(45, 45, 20.0 / 20.794)
  assert not one_shot.policy_stuck(2, 2, float("nan"))


def test_strategies_without_a_policy_record_nothing():
  spec = _spec("deconas")
  for name in ("random", "gp"):
    p = types.SimpleNamespace(strategy=strategies.get(name, spec), space=_space("deconas"))
    assert not p.strategy.policy
    assert one_shot._policy_record(p, None, None, None) == {}  # not even sampled
  assert strategies.get("reinforce", spec).policy


def test_a_frozen_controller_warns_once_and_records_its_diagnostics(tmp_path):
  c = load_config("deconas", "tiny", lock=False)
  c.epochs, c.train_steps_per_epoch, c.controller_steps_per_epoch = 2, 1, 1
  c.derive.candidates = 3
  c.strategy.reinforce.learning_rate = 0.0  # the policy cannot move
  draw = mock.patch.object(one_shot.plots, "plot_controller", wraps=one_shot.plots.plot_controller)
  with mock.patch.object(one_shot.logging, "warning") as warning, draw as drawn:
    summary = one_shot.run(c, tmp_path)
  stuck = [call for call in warning.call_args_list if "has not moved" in call.args[0]]
  assert len(stuck) == 1
  message = stuck[0].args[0] % stuck[0].args[1:]
  assert "entropy 6.238" in message and "of a maximum 6.2383 nats" in message
  assert "after 2 of 2 epochs" in message and "strategy.reinforce.learning_rate" in message
  assert summary["policy_stuck"] is True
  assert json.loads((tmp_path / "search_result.json").read_text())["policy_stuck"] is True

  spec = _spec("deconas")
  history = Checkpointer(tmp_path).restore_meta()["history"]
  for h in history:
    assert h["entropy_max"] == pytest.approx(strategies.max_entropy(spec))
    assert h["entropy_ratio"] == pytest.approx(h["entropy"] / h["entropy_max"])
    assert 0.999 < h["entropy_ratio"] <= 1.0 + 1e-6
    assert [len(p) for p in h["decision_probs"]] == list(spec.choices)
    assert all(abs(sum(p) - 1.0) < 1e-9 for p in h["decision_probs"])
  # Frozen, and probed with the same key every epoch: the same numbers each time.
  assert history[0]["decision_probs"] == history[1]["decision_probs"]
  assert history[0]["entropy"] == history[1]["entropy"]
  metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert all("entropy_ratio" in m and "decision_probs" not in m for m in metrics)
  assert (tmp_path / "controller.png").stat().st_size > 1000
  # The heatmap is drawn with the space's names of each decision's choices.
  assert drawn.call_args.kwargs["choices"] == [spec.choice_labels(i) for i in range(len(spec))]
  assert drawn.call_args.kwargs["choices"][0] == ("off", "on")
