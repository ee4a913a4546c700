"""End to end through the launchers: train (tiny) -> evaluate -> export to StableHLO and ONNX ->
the files compute what `nasr upscale` computes on a real photograph."""

import json

import numpy as np
from skimage import data as skdata

from nasr import data as data_lib
from nasr import experiment, export
from nasr.export import formats
from tests.launch_utils import check_ok, run_launcher

ATOL = 1e-4


def test_train_export_and_the_files_match_nasr_upscale(tmp_path):
  w = tmp_path / "run"
  check_ok(run_launcher("train", "--config=configs/train.py:tiny", f"--workdir={w}"))
  check_ok(
    run_launcher(
      "evaluate",
      "--config=configs/evaluate.py:tiny",
      f"--config.checkpoint={w}",
      f"--workdir={w / 'eval'}",
    )
  )
  with_onnx = formats.onnx_status() is None
  fmts = ["stablehlo", "onnx"] if with_onnx else ["stablehlo"]
  out = tmp_path / "export"
  printed = check_ok(
    run_launcher(
      "export",
      "--config=configs/export.py",
      f"--config.checkpoint={w}",
      f"--config.format={','.join(fmts)}",
      f"--workdir={out}",
    )
  ).stdout.split()
  files = {fmt: out / f"edsr_x2{formats.SUFFIXES[fmt]}" for fmt in fmts}
  assert printed == [str(files[fmt]) for fmt in fmts]

  trained = json.loads((w / "train_result.json").read_text())
  for fmt, path in files.items():
    card = json.loads(path.with_name(path.name + export.CARD_SUFFIX).read_text())
    assert card["format"] == fmt and card["file"] == path.name
    assert card["family"] == "EDSR" and card["arch"]["model"] == "edsr" and card["scale"] == 2
    assert card["compute_dtype"] == "float32"
    assert card["checkpoint"] == {"workdir": str(w), "which": "latest", "step": 6}
    assert card["params"] == trained["params"] > 0 and card["macs_per_lr_pixel"] > 0
    assert card["input"]["shape"] == ["batch", "height", "width", 3]
    assert card["output"]["shape"] == ["batch", "2*height", "2*width", 3]
    assert card["scores"]["train_result.json"]["val"] == trained["val"]
    assert card["scores"]["eval/eval.json"]["results"]["embedded_val"]["images"] >= 1
    assert card["parity"]["max_abs_diff"] <= ATOL
    assert card["versions"]["jax"] and (fmt == "stablehlo" or card["versions"]["jax2onnx"])

  # nasr upscale of a real photograph, whole (no tiles), and its floats before the PNG.
  photo = np.ascontiguousarray(skdata.astronaut()[180:221, 200:257])  # 41x57, odd sides
  data_lib.write_png(tmp_path / "photo.png", photo)
  check_ok(
    run_launcher(
      "upscale",
      "--config=configs/upscale.py:tiny",
      f"--config.checkpoint={w}",
      "--config.tile=0",
      f"--config.input={tmp_path / 'photo.png'}",
      f"--workdir={tmp_path / 'sr'}",
    )
  )
  png = data_lib.read_image(tmp_path / "sr" / "sr" / "photo_x2.png").astype(np.int32)
  config = experiment.load_config("upscale", "tiny", lock=False)
  config.checkpoint, config.tile = str(w), 0
  want = experiment.make_upscaler(config)[0](photo)
  lr = (photo.astype(np.float32) / 255.0)[None]
  outputs = {"stablehlo": np.asarray(export.load_stablehlo(files["stablehlo"])(lr))[0]}
  if with_onnx:
    outputs["onnx"] = formats.run_onnx(files["onnx"], lr)[0]
  for fmt, sr in outputs.items():
    sr = np.clip(sr, 0.0, 1.0)
    assert sr.shape == want.shape == (82, 114, 3)
    assert float(np.max(np.abs(sr - want))) <= ATOL, fmt
    # The 8-bit PNG: the same pixels, but where a value sits on a rounding boundary.
    levels = np.abs(np.round(sr * 255.0).astype(np.int32) - png)
    assert levels.max() <= 1 and np.mean(levels) < 1e-3, fmt

  # A model ensemble (here one network twice) is one file: the mean of the members' outputs.
  check_ok(
    run_launcher(
      "export",
      "--config=configs/export.py",
      f"--config.checkpoint={w},{w}",
      f"--workdir={out}",
    )
  )
  both = out / "ensemble2_x2.stablehlo"
  card = json.loads(both.with_name(both.name + export.CARD_SUFFIX).read_text())
  assert card["family"] == "ensemble" and [m["family"] for m in card["members"]] == ["EDSR"] * 2
  assert card["params"] == 2 * trained["params"]
  mean = np.asarray(export.load_stablehlo(both)(lr))[0]
  np.testing.assert_allclose(mean, outputs["stablehlo"], atol=ATOL)

  # The files may compute in another dtype than the run trained in (parameters stay float32);
  # onnxruntime's CPU kernels take no bfloat16: refused in one line, and no ONNX file is left.
  half = tmp_path / "bf16"
  r = run_launcher(
    "export",
    "--config=configs/export.py",
    f"--config.checkpoint={w}",
    "--config.compute_dtype=bfloat16",
    f"--config.format={','.join(fmts)}",
    f"--workdir={half}",
  )
  if with_onnx:
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot export EDSR to ONNX: onnxruntime")
    assert last.endswith("export it with --config.compute_dtype=float32")
    assert not list(half.glob("*.onnx*"))
  else:
    check_ok(r)
  card = json.loads((half / f"edsr_x2.stablehlo{export.CARD_SUFFIX}").read_text())
  assert card["compute_dtype"] == "bfloat16" and card["parity"]["max_abs_diff"] <= ATOL


def test_export_refuses_a_bad_format_and_a_folder_without_training_in_one_line(tmp_path):
  r = run_launcher(
    "export",
    "--config=configs/export.py",
    f"--config.checkpoint={tmp_path}",
    "--config.format=tflite",
    f"--workdir={tmp_path / 'out'}",
  )
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1] == (
    "error: config.format must be one or more of stablehlo, onnx (comma-separated), got 'tflite'"
  )
  r = run_launcher(
    "export",
    "--config=configs/export.py",
    f"--config.checkpoint={tmp_path}",
    f"--workdir={tmp_path / 'out'}",
  )
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1] == (
    f"error: {tmp_path} is not a training workdir: config.json is missing"
  )
