"""End to end through the launchers: train (tiny) -> evaluate -> upscale, SIGKILL and SIGINT resume."""

import json
import signal

import chex
import jax
import numpy as np
import pytest

from nasr import data as data_lib
from nasr import experiment
from nasr.checkpoint import Checkpointer
from tests.launch_utils import check_ok, kill_after_checkpoint, run_launcher

TINY = "--config=configs/train.py:tiny"


def test_train_evaluate_upscale_tiny(tmp_path):
  w = tmp_path / "run"
  out = check_ok(run_launcher("train", TINY, f"--workdir={w}")).stdout
  assert "validation PSNR" in out
  trained = json.loads((w / "train_result.json").read_text())
  gain = trained["val"]["psnr"] - trained["val_bicubic"]["psnr"]
  assert 5 < trained["val_bicubic"]["psnr"] < 60
  assert f"(bicubic {trained['val_bicubic']['psnr']:.4f} dB, gain {gain:+.2f} dB)" in out
  assert (w / "checkpoints").is_dir() and (w / "config.json").is_file()
  records = [json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()]
  assert records[-1]["step"] == 6 and any("val_psnr" in r for r in records)

  check_ok(
    run_launcher(
      "evaluate",
      "--config=configs/evaluate.py:tiny",
      f"--config.checkpoint={w}",
      f"--workdir={tmp_path / 'eval'}",
    )
  )
  result = json.loads((tmp_path / "eval" / "eval.json").read_text())
  assert result["params"] > 0 and result["macs_per_lr_pixel"] > 0
  assert result["results"]["embedded_val"]["images"] >= 1
  assert 5 < result["results"]["embedded_val"]["psnr"] < 60

  img = np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)
  data_lib.write_png(tmp_path / "in.png", img)
  check_ok(
    run_launcher(
      "upscale",
      "--config=configs/upscale.py:tiny",
      f"--config.checkpoint={w}",
      f"--config.input={tmp_path / 'in.png'}",
      f"--workdir={tmp_path / 'sr'}",
    )
  )
  sr = data_lib.read_image(tmp_path / "sr" / "sr" / "in_x2.png")
  assert sr.shape == (74, 90, 3)


def test_sigkill_resume_matches_uninterrupted(tmp_path):
  args = [
    TINY,
    "--config.steps=300",
    "--config.checkpoint_every=10",
    "--config.log_every=10",
    "--config.eval_every=1000",
  ]
  # Uninterrupted reference run.
  check_ok(run_launcher("train", *args, f"--workdir={tmp_path / 'ref'}"))
  # Interrupted run: SIGKILL once a checkpoint exists, mid-run.
  killed = tmp_path / "killed"
  kill_after_checkpoint("train", args, killed, min_step=20)
  killed_at = Checkpointer(killed).latest_step()
  assert killed_at is not None and killed_at < 300
  # The same command resumes and finishes.
  resumed = check_ok(run_launcher("train", *args, f"--workdir={killed}"))
  assert "resumed from the checkpoint" in resumed.stderr
  _, params_ref, _ = experiment.load_trained(tmp_path / "ref")
  _, params_res, _ = experiment.load_trained(killed)
  chex.assert_trees_all_close(
    jax.device_get(params_ref), jax.device_get(params_res), atol=0, rtol=0
  )
  records = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
  loss_steps = [r["step"] for r in records if "loss" in r]
  assert loss_steps == list(range(10, 301, 10))  # each step logged once across the kill
  # Ctrl-C (SIGINT) saves the step it stopped at, exits 130, and the rerun resumes exactly.
  stopped = tmp_path / "stopped"
  code, err = kill_after_checkpoint("train", args, stopped, min_step=20, sig=signal.SIGINT)
  assert code == 130 and "Traceback" not in err, err[-2000:]
  last = err.strip().splitlines()[-1]
  saved_at = Checkpointer(stopped).latest_step()
  assert last.startswith(f"interrupted: SIGINT at step {saved_at} of 300: checkpoint saved"), last
  check_ok(run_launcher("train", *args, f"--workdir={stopped}"))
  _, params_stop, _ = experiment.load_trained(stopped)
  chex.assert_trees_all_close(
    jax.device_get(params_ref), jax.device_get(params_stop), atol=0, rtol=0
  )


def test_the_best_checkpoint_is_kept_beside_the_latest_and_evaluate_picks_either(tmp_path):
  config = experiment.load_config("train", "tiny", lock=False)
  # A step size that overshoots: validation PSNR peaks before the last step (step 5 of 6 here).
  config.optim.lr, config.eval_every = 0.1, 1
  result = experiment.train(config, tmp_path / "w")
  assert result["best_step"] < config.steps and result["best_psnr"] > result["val"]["psnr"]
  assert [p.name for p in (tmp_path / "w" / "best").iterdir()] == [str(result["best_step"])]
  for which, psnr in (("best", result["best_psnr"]), ("latest", result["val"]["psnr"])):
    ev = experiment.load_config("evaluate", lock=False)
    ev.checkpoint, ev.which = str(tmp_path / "w"), which
    upscale, _, _ = experiment.make_upscaler(ev)
    val = data_lib.load_train_val(config.data, config.scale, config.seed)[1]
    scored = experiment.scoring.score_images(
      upscale, zip(val.names, val.lr, val.hr, strict=True), config.scale
    )
    assert scored["psnr"] == psnr, which  # the very parameters validated at that step
  ev.which = "worst"
  with pytest.raises(experiment.ConfigError, match="config.which must be one of latest, best"):
    experiment.make_upscaler(ev)


def test_a_resume_into_a_run_of_another_length_says_so_in_one_line(tmp_path):
  w = tmp_path / "w"
  check_ok(run_launcher("train", TINY, f"--workdir={w}"))  # 6 steps
  longer = check_ok(run_launcher("train", TINY, "--config.steps=8", f"--workdir={w}")).stderr
  notices = [line for line in longer.splitlines() if "resuming " in line]
  assert len(notices) == 1, longer[-2000:]
  expected = f"resuming {w} at step 6 of a run now 8 steps long (was 6): it goes on to the new end"
  assert expected in notices[0]
  assert "train 8/8" in longer
  # Resumed at its own length: nothing to say. Shorter than done: nothing more is trained.
  same = check_ok(run_launcher("train", TINY, "--config.steps=8", f"--workdir={w}")).stderr
  assert "resuming " not in same
  shorter = check_ok(run_launcher("train", TINY, "--config.steps=4", f"--workdir={w}")).stderr
  assert "at step 8 of a run now 4 steps long (was 8): it is past its new end" in shorter


@pytest.mark.slow
def test_the_readme_first_command_beats_bicubic(tmp_path):
  # The README's first job (train:quick, then evaluate on the embedded photos) promises about
  # +1 dB over MATLAB bicubic: a constant or broken network would fall far below it.
  w = tmp_path / "edsr_x2"
  check_ok(run_launcher("train", "--config=configs/train.py:quick", f"--workdir={w}"))
  check_ok(
    run_launcher(
      "evaluate",
      "--config=configs/evaluate.py",
      f"--config.checkpoint={w}",
      f"--workdir={w / 'eval'}",
    )
  )
  results = json.loads((w / "eval" / "eval.json").read_text())["results"]
  assert results and all(r["gain_db"] > 0.5 for r in results.values()), results
