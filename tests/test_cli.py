"""The `nasr` command: config listing and help, the typo message, the search method listing."""

import re
import subprocess
import textwrap

from launch import cli
from nasr import experiment
from tests.launch_utils import REPO, launch_cmd, launch_env, run_launcher, run_nasr


def test_config_list_names_every_shipped_config_with_its_presets(tmp_path):
  r = run_nasr("config", "--list", cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:]}
  assert set(rows) == {
    "bench",
    "bench_darts",
    "bench_eval",
    "bench_one_shot",
    "darts_sr",
    "deconas",
    "diagnose",
    "evaluate",
    "export",
    "latency",
    "gpnas",
    "hnas",
    "train",
    "upscale",
  }
  assert "tiny | default | paper | final" in rows["deconas"]
  assert "tiny | default " in rows["bench_eval"]
  assert "search method darts" in rows["darts_sr"] and "search method" not in rows["train"]


def test_config_shows_every_key_with_its_value_and_help(tmp_path):
  r = run_nasr("config", "deconas:tiny", cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  lines = {line.split(" = ")[0]: line for line in r.stdout.splitlines()[1:]}
  config = experiment.load_config("deconas", "tiny")
  assert set(lines) == {key for key, _ in cli._flatten(config)}
  assert lines["data.patch_size"].startswith("data.patch_size = 12 ")  # the tiny preset's value
  assert lines["data.patch_size"].endswith("# LR patch side")  # help from common.py
  assert "# children per controller step" in lines["controller_batch"]


def test_key_help_reads_trailing_comments_and_the_block_above(tmp_path):
  f = tmp_path / "c.py"
  f.write_text(
    textwrap.dedent(
      """
      def get_config():
        c = object()
        c.lr = 1.0  # the step size
        # How many steps,
        # in all.
        c.steps = 3
        c.bare = 1

        c.data.patch = 4  # LR side
        r = c.strategy.reinforce = object()
        r.hidden = 8  # LSTM width
      """
    )
  )
  helps = cli.key_help([f])
  assert helps == {
    "lr": "the step size",
    "steps": "How many steps, in all.",
    "data.patch": "LR side",
    "strategy.reinforce.hidden": "LSTM width",  # `r` names the section it was bound to
  }
  assert cli._help_for("x.data.patch", helps) == "LR side" and cli._help_for("bare", helps) == ""


def test_a_mistyped_key_is_one_line_with_a_suggestion(tmp_path):
  r = run_launcher("train", "--config=train:tiny", "--config.optim.lrr=1", f"--workdir={tmp_path}")
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1] == (
    "error: unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"
  )


def test_search_without_a_config_lists_the_methods_and_their_configs(tmp_path):
  r = run_nasr("search", f"--workdir={tmp_path}", cwd=tmp_path)
  assert r.returncode == 2
  listing = r.stderr.split("the configs that use them:\n", 1)[1].split("\ne.g.", 1)[0]
  methods = {line.split()[0]: line for line in listing.splitlines()}
  assert set(methods) == {"one_shot", "darts", "gp"}
  assert "deconas" in methods["one_shot"] and "hnas" in methods["one_shot"]
  assert "darts_sr" in methods["darts"] and "gpnas" in methods["gp"]


def test_names_and_paths_both_load_and_an_unknown_name_lists_the_configs():
  by_name = experiment.load_config("hnas:tiny")
  assert by_name == experiment.load_config(REPO / "configs" / "hnas.py", "tiny")
  assert experiment.config_path("configs/train.py:tiny") == "configs/train.py:tiny"
  try:
    experiment.config_path("trian")
  except experiment.ConfigError as e:
    assert "'trian'" in str(e) and "train" in str(e)
  else:
    raise AssertionError("an unknown config name was accepted")


def test_an_unknown_command_is_one_line(tmp_path):
  r = run_nasr("trian", cwd=tmp_path)
  assert r.returncode == 2 and r.stderr.strip().startswith("error: unknown command 'trian'")


def test_no_line_about_a_missing_tpu_on_a_host_without_one(tmp_path):
  env = {k: v for k, v in launch_env().items() if k != "JAX_PLATFORMS"}  # let JAX probe for a TPU
  r = subprocess.run(
    launch_cmd("train", "--config=train:tiny", f"--workdir={tmp_path}"),
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode == 0, r.stderr[-2000:]
  assert "libtpu" not in r.stderr and "backend 'tpu'" not in r.stderr


def test_help_names_the_configs_and_the_name_preset_form(tmp_path):
  r = run_nasr("train", "--help", cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  assert "--config=train:tiny" in r.stdout and "deconas: tiny | default | paper | final" in r.stdout
  r = run_nasr("search", f"--workdir={tmp_path}", cwd=tmp_path)
  assert r.returncode == 2
  assert "--config is required, e.g. --config=deconas:tiny" in r.stderr


def test_the_console_shows_time_and_message_and_the_workdir_log_keeps_absls_prefix(tmp_path):
  w = tmp_path / "w"
  r = run_nasr("train", "--config=train:tiny", f"--workdir={w}", cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  lines = [line for line in r.stderr.splitlines() if "network: EDSR" in line]
  assert lines and all(re.fullmatch(r"\d\d:\d\d:\d\d network: EDSR.*", line) for line in lines)
  assert "warning: the tiny preset only checks that the pipeline runs" in r.stderr
  log = (w / "log.txt").read_text()
  assert re.search(r"^I\d{4} [\d:.]+ +\d+ \w+\.py:\d+\] network: EDSR", log, re.MULTILINE)


def test_nasr_config_shows_the_comment_of_the_value_the_preset_runs():
  def help_of(spec, key):
    line = next(x for x in cli.show_config(spec).splitlines() if x.startswith(f"{key} = "))
    return line.split("#", 1)[1].strip()

  assert help_of("deconas:tiny", "optim.decay_every") == "0 = no decay"
  assert help_of("deconas:paper", "optim.decay_every") == "halve every 50 epochs"
  assert help_of("deconas:final", "optim.decay_every") == "halve every 200 epochs"
  assert help_of("deconas:tiny", "strategy.reinforce.learning_rate") == "Adam"
  assert "10x the step size" in help_of("deconas:default", "strategy.reinforce.learning_rate")
