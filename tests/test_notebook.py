"""examples/quickstart.ipynb runs end to end (tiny sizes), as a Colab user would run it."""

import json

import nbformat
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
