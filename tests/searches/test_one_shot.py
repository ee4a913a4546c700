"""The one-shot loop runs any registered strategy on any supernet space; its reward terms are exact."""

import contextlib
import io
import json

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax._src.array import ArrayImpl

from nasr import spaces, strategies
from nasr.configs.common import TINY_SPACES
from nasr.core.errors import ConfigError
from nasr.estimation import cost
from nasr.experiment import load_config
from nasr.searches import loop, one_shot, op_latency
from nasr.searches.reward import Reward
from nasr.spaces.base import SupernetSpace
from tests.launch_utils import REPO

TINY_SUPERNET = {"deconas": {"skip_inactive": True, "shifted": True}, "hnas": {"shifted": True}}
TINY_STRATEGIES = {
  "reinforce": {"hidden": 8, "layers": 1},
  "random": {},
  "gp": {"capacity": 16, "fit_steps": 5, "fit_restarts": 1},
  "hierarchical": {"hidden": 8},
  "evolution": {"population": 4, "sample_size": 2},
  "local_search": {},
}


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
  """Share compiled steps between the strategies of one space (the supernet step is the same)."""
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  before = [getattr(jax.config, n) for n in names]
  jax.config.update(names[0], str(tmp_path_factory.mktemp("one_shot_xla_cache")))
  jax.config.update(names[1], 0.0)
  yield
  for n, v in zip(names, before, strict=True):
    jax.config.update(n, v)


def _supernet_spaces() -> list[str]:
  out = []
  for name in spaces.SPACES.names():
    if name not in TINY_SPACES:
      continue
    if isinstance(spaces.get(name, **TINY_SPACES[name]), SupernetSpace):
      out.append(name)
  return out


def test_every_supernet_space_and_strategy_has_tiny_settings():
  for name in spaces.SPACES.names():
    kwargs = TINY_SPACES.get(name)
    if kwargs is None:
      space = spaces.get(name)
      assert not isinstance(space, SupernetSpace), f"add tiny settings for the space {name!r}"
  assert set(strategies.STRATEGIES.names()) <= set(TINY_STRATEGIES)
  assert {"deconas", "drn", "hnas"} <= set(_supernet_spaces())


def _config(space: str, strategy: str, terms: dict | None = None) -> ml_collections.ConfigDict:
  c = load_config(REPO / "configs" / "deconas.py", "tiny", lock=False)
  c.space = ml_collections.ConfigDict({"name": space, **TINY_SPACES[space]})
  c.supernet = ml_collections.ConfigDict(TINY_SUPERNET.get(space, {}))
  c.strategy = ml_collections.ConfigDict({"name": strategy, strategy: TINY_STRATEGIES[strategy]})
  c.reward.terms = terms or {"psnr": 1.0, "params": -1.0}
  c.epochs, c.train_steps_per_epoch, c.controller_steps_per_epoch = 2, 2, 1
  c.controller_batch, c.derive.candidates = 2, 3
  c.data.patch_size, c.data.batch_size, c.val_patch = 8, 2, 8
  return c


# The default suite runs every strategy on DeCoNAS and every supernet space with REINFORCE; the
# rest of the cross product is slow (a strategy sees only tokens and rewards, so one space shows
# it runs; a space's supernet is the same under every strategy). HNAS compiles seven op branches
# per edge (77 s for one pair here): in the default suite its own strategy runs through the
# launcher (tests/test_launch_hnas.py: the tiny search, derive, retrain and a SIGKILL resume).
def _default_pair(space: str, strategy: str) -> bool:
  return space != "hnas" and (space == "deconas" or strategy == "reinforce")


def _pairs():
  out = []
  for space in _supernet_spaces():
    size = spaces.get(space, **TINY_SPACES[space]).token_spec().size
    for s in sorted(TINY_STRATEGIES):
      if s == "gp" and size > 200_000:  # GP-NAS enumerates its grid (max_grid): no such search
        mark = pytest.mark.skip(reason=f"gp enumerates the grid; {space} has {size:.3g} members")
        out.append(pytest.param(space, s, marks=mark))
      elif _default_pair(space, s):
        out.append((space, s))
      else:
        out.append(pytest.param(space, s, marks=pytest.mark.slow))
  return out


@pytest.mark.parametrize("space,strategy", _pairs())
def test_every_strategy_runs_two_epochs_on_every_supernet_space(space, strategy, tmp_path):
  result = one_shot.run(_config(space, strategy), tmp_path)
  rows = json.loads((tmp_path / "candidates.json").read_text())
  assert [r["reward"] for r in rows] == sorted((r["reward"] for r in rows), reverse=True)
  assert all(np.isfinite(r["psnr"]) and r["params"] > 0 for r in rows)
  loaded_space, arch = spaces.load_arch(tmp_path / "best.json")
  assert loaded_space.count_params(arch, 2) == rows[0]["params"] == result["best_params"]
  history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [h["step"] for h in history] == [1, 2]
  assert all(np.isfinite(h["reward"]) for h in history)


def _macs_directly(space, arch, scale: int, side: int = 32) -> float:
  child = space.build(arch, scale)
  x = jnp.zeros((1, side, side, 3))
  params = child.init(jax.random.PRNGKey(1), x)  # real arrays: an independent route to the count
  return cost.count_macs(child, params, x.shape) / (side * side)


@pytest.mark.parametrize("space_name", ["deconas", "drn", "hnas"])
def test_macs_term_is_the_childs_exact_multiply_adds(space_name):
  space = spaces.get(space_name, **TINY_SPACES[space_name])
  reward = Reward({"psnr": 0.6, "macs": -0.4}, space, scale=2)
  max_macs = _macs_directly(space, space.max_arch(), 2)
  assert reward.max_cost["macs"] == pytest.approx(max_macs, rel=1e-12)
  rng = np.random.default_rng(0)
  spec = space.token_spec()
  for tokens in spec.sample(rng, 2):
    arch = space.decode(tokens)
    want = _macs_directly(space, arch, 2)
    costs = reward.costs(tokens)
    assert costs["macs"] == pytest.approx(want, rel=1e-12)
    assert costs["macs_ratio"] == pytest.approx(want / max_macs, rel=1e-12)
    value = reward(30.0, {"macs": costs["macs_ratio"]})
    assert value == pytest.approx(0.6 * 30.0 - 0.4 * want / max_macs, rel=1e-12)
  assert max(reward.costs(t)["macs_ratio"] for t in spec.sample(rng, 16)) <= 1.0 + 1e-12


def test_reward_terms_are_checked_and_the_deconas_settings_are_plain_keys():
  space = spaces.get("deconas", **TINY_SPACES["deconas"])
  with pytest.raises(ValueError, match="unknown term"):
    Reward({"psnr": 1.0, "flops": -1.0}, space, 2)
  # CB0, no complexity penalty: a params weight of 0 leaves the PSNR exactly.
  for psnr, ratio in ((30.25, 0.7), (np.array([20.5, 31.0]), np.array([0.1, 1.0]))):
    np.testing.assert_array_equal(
      Reward({"psnr": 1.0, "params": 0.0}, space, 2)(psnr, {"params": ratio}), psnr
    )
  # FF1, fusion search: the space's own option.
  c = load_config("deconas", "tiny", lock=False)
  assert loop.space_kwargs(c)["fusion_search"] is False
  c.space.fusion_search = True
  assert len(spaces.get("deconas", **loop.space_kwargs(c)).token_spec()) > len(
    spaces.get("deconas", **TINY_SPACES["deconas"]).token_spec()
  )


def test_entropy_bonus_adds_the_policys_entropy():
  space = spaces.get("deconas", **TINY_SPACES["deconas"])
  reward = Reward({"psnr": 1.0, "entropy": 0.5}, space, 2)
  psnr, entropy = np.array([20.0, 21.0]), np.array([3.0, 1.0])
  np.testing.assert_allclose(reward(psnr, {}, entropy), psnr + 0.5 * entropy)
  with pytest.raises(ValueError, match="entropy"):
    reward(psnr, {})


@pytest.mark.parametrize("norm", ["max", "paper", "reference"])
def test_device_costs_equal_the_host_costs(norm):
  # The search's reward costs its children on the devices from the space's cost table.
  rng = np.random.default_rng(4)
  for name, terms in (("deconas", {"psnr": 1.0, "params": -2.0}), ("hnas", {"macs": -0.4})):
    space = spaces.get(
      name, **TINY_SPACES[name], **({"fusion_search": True} if name == "deconas" else {})
    )
    reward = Reward(terms, space, 2, norm)
    tokens = space.token_spec().sample(rng, 8)
    device = jax.jit(reward.device_costs())(jnp.asarray(tokens))
    host = reward.batch_costs(tokens)
    assert set(device) == set(host)
    for k in host:
      np.testing.assert_allclose(np.asarray(device[k]), host[k], rtol=1e-6)
  drn = Reward({"psnr": 1.0, "params": -1.0}, spaces.get("drn", **TINY_SPACES["drn"]), 2)
  assert drn.device_costs() is None  # no cost table: the search looks costs up on the host


def test_a_latency_reward_searches_and_records_measured_beside_predicted(tmp_path, monkeypatch):
  # --config.reward.terms='{"psnr": 1.0, "latency": -0.5}': each op timed once on this host.
  monkeypatch.setenv(op_latency.CACHE_ENV, str(tmp_path / "latency.json"))
  c = _config("bench", "reinforce", {"psnr": 1.0, "latency": -0.5})
  c.reward.latency_side = 16
  one_shot.run(c, tmp_path / "w")
  rows = json.loads((tmp_path / "w" / "candidates.json").read_text())
  assert all(r["latency_ms"] > 0 and r["latency_pred_ms"] > 0 for r in rows)
  assert all(0 < r["latency_ratio"] for r in rows)
  ((host, pieces),) = json.loads((tmp_path / "latency.json").read_text()).items()
  assert "backend=cpu" in host and all(ms > 0 for ms in pieces.values())


def test_the_controller_step_runs_on_the_devices_as_the_host_path_does():
  c = _config("deconas", "reinforce", {"psnr": 1.0, "params": -2.0, "entropy": 0.1})
  p = one_shot._prepare(c)
  state = one_shot._init_state(p)
  steps = {
    "propose": jax.jit(p.strategy.propose, static_argnums=2),
    "update": jax.jit(p.strategy.update),
    "psnr": jax.jit(one_shot.make_psnr_fn(p.supernet, p.scale)),
  }
  params, key = state["w"].params, jax.random.PRNGKey(3)
  host_state, host = one_shot._host_controller_step(p, steps, state["strategy"], params, key)
  with _no_host_reads():  # nothing in the step is read on the host
    dev_state, dev = one_shot.make_controller_step(p)(
      state["strategy"], params, p.val["lr"], p.val["hr"], key
    )
  for k in ("reward", "val_psnr", "complexity"):
    np.testing.assert_allclose(float(dev["seen"][k]), float(host["seen"][k]), rtol=1e-6)
  # The reward in float32 on the devices, in float64 on the host: the advantage (reward minus
  # baseline, a difference of numbers near 20 dB) differs by a few 1e-6.
  for k in host["c_metrics"]:
    np.testing.assert_allclose(dev["c_metrics"][k], host["c_metrics"][k], rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(dev_state, host_state, rtol=1e-5, atol=1e-5)


@contextlib.contextmanager
def _no_host_reads():
  """Make reading any jax array on the host an error while inside.

  jax's transfer guard (what `loop.on_device` sets) sees no transfer on the CPU backend, whose
  arrays already live in host memory; every host read (float(), np.asarray, device_get) goes
  through ArrayImpl._value.
  """
  before = ArrayImpl._value

  def read(self):
    raise AssertionError(f"a {self.dtype}{list(self.shape)} device value was read on the host")

  ArrayImpl._value = property(read)
  try:
    yield
  finally:
    ArrayImpl._value = before


def test_a_search_reads_nothing_on_the_host_between_its_steps(tmp_path, monkeypatch):
  # Every supernet and controller step is dispatched inside loop.on_device(): here, any host read
  # of a device value there fails the run (the host never waits for the devices within an epoch).
  entered = []

  @contextlib.contextmanager
  def guarded():
    entered.append(1)
    with _no_host_reads():
      yield

  monkeypatch.setattr(loop, "on_device", guarded)
  c = _config("deconas", "reinforce", {"psnr": 1.0, "params": -2.0})
  c.controller_steps_per_epoch = 2
  result = one_shot.run(c, tmp_path)
  assert len(entered) == c.epochs * (c.train_steps_per_epoch + c.controller_steps_per_epoch)
  assert np.isfinite(result["best_psnr"])


def _unread_values() -> dict:
  """Return device values not yet read on the host (a read value keeps its host copy).

  On the CPU backend jax hands a float32 array to numpy without a copy, and the transfer guard
  sees only copies: there the values are int4, which numpy holds unpacked (always a copy). On an
  accelerator they are float32, the search's own values.
  """
  dtype = jnp.int4 if jax.default_backend() == "cpu" else jnp.float32
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("d",))
  spread = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
  return {
    "scalar": jnp.ones((), dtype) * 2,  # computed on the devices, as a step's metrics are
    "vector": jnp.ones((3,), dtype) * 2,
    "sharded": jax.device_put(jnp.ones((2 * len(jax.devices()),), dtype), spread) * 2,
  }


# What a search step's loop could do by accident to a value the step returned.
_HOST_READS = {
  "float": lambda v: float(v["scalar"]),
  "int": lambda v: int(v["scalar"]),
  "bool": lambda v: bool(v["scalar"]),
  "item": lambda v: v["scalar"].item(),
  "format": lambda v: f"{v['scalar']:.2f}",
  "np.asarray": lambda v: np.asarray(v["vector"]),
  "np.asarray of a sharded value": lambda v: np.asarray(v["sharded"]),
  "tolist": lambda v: v["vector"].tolist(),
  "print": lambda v: print(v["vector"], file=io.StringIO()),
}
_GUARDS = {"loop.on_device": loop.on_device, "the tests' stand-in": _no_host_reads}


@pytest.mark.parametrize("guard", list(_GUARDS))
@pytest.mark.parametrize("read", list(_HOST_READS))
def test_the_guard_makes_every_host_read_an_error(guard, read):
  # The production guard on its own (jax's transfer guard), and the stand-in the search tests use
  # where that guard is blind (CPU float32): each way a loop can read a device value fails.
  values = _unread_values()
  with pytest.raises(
    (jax.errors.JaxRuntimeError, AssertionError),
    match="Disallowed device-to-host transfer|read on the host",
  ):
    with _GUARDS[guard]():
      _HOST_READS[read](values)
  _HOST_READS[read](values)  # outside the guard the same read works


@pytest.mark.parametrize("guard", list(_GUARDS))
def test_a_step_runs_inside_the_guard_and_its_results_are_read_after_it(guard):
  # What the searches do inside the guard: host integers to the devices (the step number, a
  # fold_in), a jitted step on device values, its results kept as device arrays.
  @jax.jit
  def step(w, key, at):
    w = w + jax.random.uniform(key, w.shape) * at
    return w, {"loss": jnp.mean(w)}

  w, losses = jnp.zeros((4,)), []
  with _GUARDS[guard]():
    for at in range(3):
      key = jax.random.fold_in(jax.random.key(0), at)
      w, m = step(w, key, jnp.int32(at))
      losses.append(m["loss"])
    assert w.shape == (4,) and w.dtype == jnp.float32  # metadata is no transfer
  got = loop.floats(losses)  # the phase's end: one fetch of everything
  assert len(got) == 3 and got[0] == 0.0 and got[2] > got[1] > 0.0


def test_child_sampler_modes_policy_uniform_and_strictly_fair():
  spec = spaces.get("deconas", **TINY_SPACES["deconas"]).token_spec()
  strategy = strategies.get("reinforce", spec, hidden=8, layers=1)
  s_state = strategy.init(jax.random.key(0))
  sample = jax.jit(one_shot.child_sampler(spec, strategy.propose), static_argnums=2)
  fair_key = jax.random.key(7)
  key = jax.random.key(3)

  def tokens(mode, step=0, k=key):
    return np.asarray(sample((s_state, jnp.int32(mode), jnp.int32(step), fair_key), k, 1)[0][0])

  want, _ = strategy.propose(s_state, key, 1)
  np.testing.assert_array_equal(tokens(0), want[0])  # "policy": the strategy's own sample
  uniform = np.stack([tokens(1, k=jax.random.key(i)) for i in range(64)])
  assert np.all(uniform < np.asarray(spec.choices)) and len({tuple(t) for t in uniform}) > 32
  # "fair": in each cycle of max(choices) steps, every decision takes each choice equally often.
  width = max(spec.choices)
  for cycle in range(2):
    seen = np.stack([tokens(2, cycle * width + i) for i in range(width)])
    for d, c in enumerate(spec.choices):
      counts = np.bincount(seen[:, d], minlength=c)
      assert counts.max() - counts.min() <= (0 if width % c == 0 else 1), (d, counts)
  assert not np.array_equal(  # a new order each cycle
    [tokens(2, i) for i in range(width)], [tokens(2, width + i) for i in range(width)]
  )


def test_a_warm_up_trains_the_weights_uniformly_before_the_strategy_learns(tmp_path):
  c = _config("deconas", "reinforce")
  c.epochs, c.sampling.warmup_epochs, c.sampling.mode = 3, 1, "fair"
  one_shot.run(c, tmp_path)
  history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [h["step"] for h in history] == [1, 2, 3]
  # Epoch 1 warms the weights up: no strategy step (no reward); then the strategy learns.
  assert history[0]["reward"] is None and "controller_loss" not in history[0]
  assert all(np.isfinite(h["reward"]) for h in history[1:])
  c.sampling.mode = "best"
  with pytest.raises(ConfigError, match="sampling.mode must be one of policy, uniform, fair"):
    one_shot.run(c, tmp_path / "bad")


def test_a_fixed_decision_holds_in_every_sampling_mode():
  spec = spaces.get("bench", **TINY_SPACES["bench"]).token_spec()
  strategy = strategies.get("random", spec)
  s_state = strategy.init(jax.random.key(0))
  sample = jax.jit(one_shot.child_sampler(spec, strategy.propose, (1, 4)), static_argnums=2)
  seen = np.concatenate(
    [
      np.asarray(
        sample((s_state, jnp.int32(m), jnp.int32(i), jax.random.key(7)), jax.random.key(i), 4)[0]
      )
      for m in range(3)
      for i in range(8)
    ]
  )
  assert np.all(seen[:, 1] == 4)  # decision 1 is the sub-supernet's: always choice 4
  assert len(set(seen[:, 0])) > 1 and len(set(seen[:, 2])) > 1  # the others still vary


def test_a_few_shot_sub_supernet_starts_from_its_parents_weights(tmp_path):
  parent = _config("bench", "random", {"psnr": 1.0})
  one_shot.run(parent, tmp_path / "parent")
  child = _config("bench", "random", {"psnr": 1.0})
  child.sampling.fix, child.init_from = "0=3", str(tmp_path / "parent")
  p = one_shot._prepare(child)
  fresh = one_shot._init_state(p)
  want = loop.restore_final(tmp_path / "parent", fresh)["w"]
  chex.assert_trees_all_equal(fresh["w"].params, want.params)
  assert int(fresh["w"].step) == 0  # the optimiser starts afresh
  for bad in ("3=0", "0=6", "zero", "0:1"):
    child.sampling.fix = bad
    with pytest.raises(ConfigError, match=f"config.sampling.fix must be 'D=C'.*{bad!r}"):
      one_shot._prepare(child)
