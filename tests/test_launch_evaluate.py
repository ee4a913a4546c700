"""Acceptance: `launch.evaluate` reproduces the bicubic baselines, reports the gain over them and
runs the ensembles."""

import json

import numpy as np
import pytest
import skimage.data

import nasr
from nasr import data as data_lib
from nasr.estimation import metrics
from tests.conftest import shared_benchmark
from tests.launch_utils import check_ok, run_launcher

PUBLISHED = {2: (33.66, 0.9299), 4: (28.42, 0.8104)}


def _printed_table(stdout: str) -> tuple[list[str], dict[str, dict[str, str]]]:
  """Return (header, {dataset: {column: text}}) of the table that ends a launcher's stdout."""
  lines = stdout.rstrip("\n").splitlines()
  assert lines[-1].startswith("params "), stdout[-2000:]  # the table's footer is printed last
  start = max(i for i, line in enumerate(lines) if line.startswith("dataset"))
  header = lines[start].split()
  rows = {}
  for line in lines[start + 1 : -1]:
    fields = line.split()
    rows[fields[0]] = dict(zip(header, fields, strict=True))
  return header, rows


def _check_gains(result: dict, stdout: str) -> None:
  """Assert eval.json's gain_db is PSNR - bicubic PSNR and the printed table shows both."""
  header, rows = _printed_table(stdout)
  assert "bicubic" in header and "gain" in header
  assert set(rows) == set(result["results"])
  for name, r in result["results"].items():
    assert set(r["bicubic"]) == {"psnr", "ssim"}
    assert r["gain_db"] == pytest.approx(r["psnr"] - r["bicubic"]["psnr"], abs=1e-12)
    assert float(rows[name]["bicubic"]) == pytest.approx(r["bicubic"]["psnr"], abs=6e-5)
    assert rows[name]["gain"][0] in "+-"  # signed
    assert float(rows[name]["gain"]) == pytest.approx(r["gain_db"], abs=6e-3)


@pytest.mark.parametrize("scale", sorted(PUBLISHED))
def test_bicubic_set5_through_the_launcher(tmp_path, scale):
  set5 = shared_benchmark("Set5")
  r = run_launcher(
    "evaluate",
    "--config=configs/evaluate.py",
    "--config.model=bicubic",
    f"--config.scale={scale}",
    f"--config.benchmarks={set5}",
    f"--workdir={tmp_path}",
  )
  assert r.returncode == 0, r.stderr[-2000:]
  result = json.loads((tmp_path / "eval.json").read_text())
  assert result["params"] == 0
  set5_result = result["results"]["Set5"]
  assert set5_result["images"] == 5
  psnr, ssim = PUBLISHED[scale]
  assert set5_result["psnr"] == pytest.approx(psnr, abs=0.02)
  assert set5_result["ssim"] == pytest.approx(ssim, abs=0.001)
  assert "Set5" in r.stdout and "PSNR" in r.stdout  # the printed table
  # Bicubic is its own baseline: the same numbers, no gain.
  assert set5_result["bicubic"] == {"psnr": set5_result["psnr"], "ssim": set5_result["ssim"]}
  assert set5_result["gain_db"] == 0.0
  _check_gains(result, r.stdout)
  assert _printed_table(r.stdout)[1]["Set5"]["gain"] == "+0.00"


def test_bicubic_is_scored_once_per_benchmark(tmp_path, monkeypatch):
  _, hr = _face()
  data_lib.write_png(tmp_path / "bench" / "face.png", hr)
  calls = []
  score = nasr.experiment.scoring.score_images
  monkeypatch.setattr(
    nasr.experiment.scoring, "score_images", lambda *a, **k: calls.append(1) or score(*a, **k)
  )
  config = nasr.load_config("configs/evaluate.py", None, lock=False)
  config.model, config.benchmarks = "bicubic", str(tmp_path / "bench")
  result = nasr.experiment.evaluate(config, tmp_path / "eval")
  assert len(calls) == 1
  bench = result["results"]["bench"]
  assert bench["gain_db"] == 0.0 and bench["bicubic"]["psnr"] == bench["psnr"]
  assert set(bench) == {"psnr", "ssim", "images", "bicubic", "gain_db"}  # no per-image rows
  assert json.loads((tmp_path / "eval" / "eval.json").read_text()) == result


def test_format_table_reads_eval_json_written_before_the_bicubic_baseline():
  old = {
    "params": 0,
    "macs_per_lr_pixel": 0.0,
    "scale": 4,
    "results": {"Set5": {"psnr": 28.42, "ssim": 0.81, "images": 5}},
  }
  header, row = nasr.experiment.format_table(old).splitlines()[:2]
  assert header.split()[-2:] == ["bicubic", "gain"]
  assert row.split() == ["Set5", "x4", "28.4200", "0.8100", "5", "-", "-"]
  new = {**old, "results": {"Set5": {**old["results"]["Set5"], "bicubic": {"psnr": 28.5}}}}
  assert nasr.experiment.format_table(new).splitlines()[1].split()[-2:] == ["28.5000", "-0.08"]


# ---------------------------------------------------------------------------------------------------
# Multi-level ensemble: model ensemble of two families x patch ensemble x self-ensemble.
# ---------------------------------------------------------------------------------------------------
LEVELS = {"tile": 16, "stride": 8, "self_ensemble": True}
LEVEL_FLAGS = tuple(f"--config.{k}={v}" for k, v in LEVELS.items())


@pytest.fixture(scope="module")
def two_families(tmp_path_factory):
  """Return the workdirs of two tiny trained networks of different families: EDSR and DeCoNAS."""
  root = tmp_path_factory.mktemp("families")
  photo = skimage.data.astronaut()
  for i in range(2):  # a tiny training folder: fast to load and to validate on
    data_lib.write_png(root / "train" / f"{i}.png", photo[:48, 48 * i : 48 * (i + 1)].copy())
  space_kwargs = {"blocks": 1, "nodes": 2, "channels": 8}
  space = nasr.spaces.get("deconas", **space_kwargs)
  arch = space.decode(np.ones(len(space.token_spec().choices), np.int32))
  nasr.spaces.save_arch(root / "arch.json", "deconas", space_kwargs, arch)
  workdirs = []
  for name, arch_file in (("edsr", ""), ("deconas", str(root / "arch.json"))):
    config = nasr.load_config("configs/train.py", "tiny", lock=False)
    config.arch = arch_file
    config.data.train, config.data.val, config.data.num_val = str(root / "train"), "", 1
    config.steps, config.eval_every, config.checkpoint_every, config.log_every = 2, 2, 2, 2
    nasr.experiment.train(config, root / name)
    workdirs.append(root / name)
  return workdirs


@pytest.fixture(scope="module")
def singles(two_families):
  """Return one multi-level upscaler (tiles + self-ensemble) per trained network, and the networks.

  Unclipped: a model ensemble averages the networks' raw outputs (and clips the average).
  """
  loaded = [nasr.experiment.load_trained(w)[:2] for w in two_families]
  upscalers = [nasr.experiment.network_upscaler(n, p, clip=False, **LEVELS) for n, p in loaded]
  return upscalers, loaded


def _ensemble(checkpoints, **overrides):
  config = nasr.load_config("configs/evaluate.py", None, lock=False)
  config.checkpoint = ",".join(str(c) for c in checkpoints)
  config.update(overrides)
  return nasr.experiment.make_upscaler(config)


def test_model_ensemble_of_two_families_is_their_average(two_families, singles):
  lr = np.random.default_rng(0).integers(0, 256, (21, 35, 3), dtype=np.uint8)
  both, scale, cost = _ensemble(two_families, **LEVELS)
  outs = [fn(lr) for fn in singles[0]]
  assert scale == 2 and outs[0].shape == (42, 70, 3)
  assert np.abs(outs[0] - outs[1]).max() > 1e-3  # two different networks
  np.testing.assert_allclose(both(lr), (outs[0] + outs[1]) / 2, atol=1e-6)
  params = [nasr.count_params(p) for _, p in singles[1]]
  assert cost["params"] == sum(params)
  # Each level changes the output of a trained network, so each setting really reaches it.
  network, p = singles[1][0]
  for off in ({"tile": 0}, {"self_ensemble": False}):
    other = nasr.experiment.network_upscaler(network, p, clip=False, **{**LEVELS, **off})(lr)
    assert np.abs(other - outs[0]).max() > 1e-4, off
  with pytest.raises(nasr.ConfigError, match="stride"):
    _ensemble(two_families, tile=16, stride=17)


def test_multiply_adds_at_480x480_are_counted_on_the_network(two_families, singles):
  gmacs = [nasr.count_macs(n, p, (1, 480, 480, 3)) / 1e9 for n, p in singles[1]]
  _, _, both = _ensemble(two_families, **LEVELS)
  assert both["gmacs_480"] == pytest.approx(8 * sum(gmacs), rel=1e-12)  # x8: self-ensemble
  table = nasr.experiment.format_table(
    {**both, "scale": 2, "results": {"x": {"psnr": 30.0, "ssim": 0.9, "images": 1}}}
  )
  assert f"480x480 LR image {both['gmacs_480']:,.3f} G" in table


def _face():
  hr = np.ascontiguousarray(skimage.data.astronaut()[100:160, 180:236])
  return data_lib.bicubic_degrade(hr, 2), hr


def test_multi_level_ensemble_through_launch_evaluate(two_families, singles, tmp_path):
  checkpoints = f"--config.checkpoint={two_families[0]},{two_families[1]}"
  lr, hr = _face()
  expected = (singles[0][0](lr) + singles[0][1](lr)) / 2
  data_lib.write_png(tmp_path / "bench" / "face.png", hr)
  r = check_ok(
    run_launcher(
      "evaluate",
      "--config=configs/evaluate.py",
      checkpoints,
      *LEVEL_FLAGS,
      f"--config.benchmarks={tmp_path / 'bench'}",
      f"--workdir={tmp_path / 'eval'}",
    )
  )
  result = json.loads((tmp_path / "eval" / "eval.json").read_text())
  assert result["params"] == sum(nasr.count_params(p) for _, p in singles[1])
  assert result["gmacs_480"] > 0 and result["macs_per_lr_pixel"] > 0
  want = metrics.psnr(np.clip(expected, 0, 1) * 255.0, hr, crop_border=2)
  assert result["results"]["bench"]["psnr"] == pytest.approx(want, abs=1e-3)
  # The baseline is MATLAB bicubic on the same pair, whatever the ensemble settings.
  bicubic = nasr.experiment.bicubic_upscaler(2)(lr)
  want = metrics.psnr(np.clip(bicubic, 0, 1) * 255.0, hr, crop_border=2)
  assert result["results"]["bench"]["bicubic"]["psnr"] == pytest.approx(want, abs=1e-3)
  _check_gains(result, r.stdout)


# In the default suite: the two families and their single upscalers are the module's fixtures
# (trained once for the evaluate tests above), so this adds one upscale launch.
def test_multi_level_ensemble_through_launch_upscale(two_families, singles, tmp_path):
  checkpoints = f"--config.checkpoint={two_families[0]},{two_families[1]}"
  lr, _ = _face()
  expected = (singles[0][0](lr) + singles[0][1](lr)) / 2
  data_lib.write_png(tmp_path / "in.png", lr)
  check_ok(
    run_launcher(
      "upscale",
      "--config=configs/upscale.py",
      checkpoints,
      *LEVEL_FLAGS,
      f"--config.input={tmp_path / 'in.png'}",
      f"--workdir={tmp_path / 'sr'}",
    )
  )
  sr = data_lib.read_image(tmp_path / "sr" / "sr" / "in_x2.png").astype(int)
  assert np.abs(sr - np.clip(np.round(expected * 255.0), 0, 255)).max() <= 1
