"""examples/quickstart.ipynb runs end to end (tiny sizes), as a Colab user would run it."""

import importlib.util
import json
import subprocess
import sys
from unittest import mock

import nbformat
import pytest
from nbclient import NotebookClient

from tests.launch_utils import REPO, launch_env

NOTEBOOK = REPO / "examples" / "quickstart.ipynb"


def test_the_quickstart_notebook_runs_end_to_end(tmp_path, monkeypatch):
  for key, value in launch_env().items():
    monkeypatch.setenv(key, value)  # the kernel inherits them: CPU, the test XLA cache
  monkeypatch.setenv("NASR_NOTEBOOK_PRESET", "tiny")
  monkeypatch.setenv("NASR_NOTEBOOK_WORKDIR", str(tmp_path))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(
    notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
  ).execute()
  outputs = {
    i: "".join(
      o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream"
    )
    for i, cell in enumerate(notebook.cells)
    if cell.cell_type == "code"
  }
  text = "\n".join(outputs.values())
  assert "train 6/6 |" in text and "steps/s" in text  # training in Python shows its progress
  assert "bicubic" in text and "gain" in text  # the evaluation table
  assert (tmp_path / "edsr" / "eval" / "eval.json").is_file()
  assert (tmp_path / "chelsea_sr.png").is_file() and (tmp_path / "deconas" / "best.json").is_file()
  images = [
    o
    for cell in notebook.cells
    for o in cell.get("outputs", [])
    if "image/png" in o.get("data", {})
  ]
  assert len(images) == 2  # the side-by-side figure and the search's candidates.png
  assert json.loads((tmp_path / "deconas" / "best.json").read_text())["space"] == "deconas"


def _run_install_cell(cwd, monkeypatch):
  """Run the notebook's install cell in `cwd` as if nasr were not installed; return pip's argv."""
  cell = nbformat.read(NOTEBOOK, as_version=4).cells[2].source
  assert "pip" in cell and "NASR_SOURCE" in cell
  monkeypatch.chdir(cwd)
  find_spec = importlib.util.find_spec
  missing = lambda name, *a: None if name == "nasr" else find_spec(name, *a)  # noqa: E731
  with (
    mock.patch.object(importlib.util, "find_spec", missing),
    mock.patch.object(subprocess, "check_call") as pip,
  ):
    exec(compile(cell, "install cell", "exec"), {})
  return pip.call_args.args[0]


def test_the_install_cell_installs_the_checkout_it_sits_in_or_nasr_source(tmp_path, monkeypatch):
  monkeypatch.delenv("NASR_SOURCE", raising=False)
  argv = _run_install_cell(REPO / "examples", monkeypatch)
  assert argv == [sys.executable, "-m", "pip", "install", "-q", str(REPO)]
  monkeypatch.setenv("NASR_SOURCE", "git+https://example.org/me/nasr.git")
  assert _run_install_cell(tmp_path, monkeypatch)[-1] == "git+https://example.org/me/nasr.git"
  # Outside a checkout and without NASR_SOURCE it says what to set, instead of asking PyPI.
  monkeypatch.delenv("NASR_SOURCE")
  with pytest.raises(RuntimeError, match="set NASR_SOURCE"):
    _run_install_cell(tmp_path, monkeypatch)
