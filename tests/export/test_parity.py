"""Every family nasr trains, exported at x2/x3/x4 (tiny widths), equals its Flax network on a real
photograph to 1e-4: StableHLO reloaded by JAX, and ONNX run by onnxruntime in a process that
imports nothing but onnxruntime and numpy (the ONNX tests need the `export` extra)."""

import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import data as skdata

from nasr import export, spaces
from nasr.configs.common import TINY_SPACES
from nasr.core.errors import ConfigError, ExportError
from nasr.export import formats

ATOL = 1e-4
SCALES = (2, 3, 4)
FAMILIES = ("EDSR", "DRNNet", "RCANNet", "DeCoNASNet", "HNASNet", "DartsSRNet", "BenchNet")
CASES = [(f, s) for f in FAMILIES for s in SCALES]
_SPACE = {
  "DRNNet": ("drn", "drn"),
  "RCANNet": ("drn", "rcan"),
  "DeCoNASNet": ("deconas", None),
  "HNASNet": ("hnas", None),
  "DartsSRNet": ("darts_sr", None),
}


def _network(family: str, scale: int):
  """Return a tiny network of `family` at `scale` (the tiny presets' sizes)."""
  if family == "EDSR":
    return spaces.build_model("edsr", scale=scale, blocks=2, channels=8)
  if family == "BenchNet":  # separable, dilated and RCAB edges; the bicubic image skip
    space = spaces.get("bench", **TINY_SPACES["bench"], skip="bicubic")
    return space.build(space.decode([3, 4, 5]), scale)
  name, kind = _SPACE[family]
  kwargs = dict(TINY_SPACES[name])
  if name == "hnas" and scale == 3:  # the released deconvolution cannot upsample x3
    kwargs["deconv_kernel"] = "2s"
  space = spaces.get(name, **kwargs)
  for tokens in space.token_spec().sample(np.random.default_rng(1), 200):
    arch = space.decode(tokens)
    if kind is None or arch.family == kind:
      return space.build(arch, scale)
  raise AssertionError(f"no {family} architecture sampled")


def _photo() -> np.ndarray:
  """Return a real photograph as a 1x19x27x3 LR batch in [0, 1] (odd sides on purpose)."""
  return (skdata.astronaut()[90:109, 190:217].astype(np.float32) / 255.0)[None]


def _exported(family: str, scale: int):
  """Return (fn, Flax output on the photograph) of a network with random non-zero weights."""
  network = _network(family, scale)
  assert export.family(network) == family
  shapes = jax.eval_shape(network.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  rng = np.random.default_rng(scale)
  params = jax.tree.map(
    lambda s: jnp.asarray(0.1 * rng.standard_normal(s.shape), s.dtype), shapes["params"]
  )
  fn = lambda x: network.apply({"params": params}, x)  # noqa: E731
  return fn, np.asarray(jax.jit(fn)(_photo()))


@pytest.mark.parametrize("family,scale", CASES)
def test_stablehlo_reloaded_equals_the_flax_network(family, scale, tmp_path):
  fn, want = _exported(family, scale)
  blob = export.to_stablehlo(fn, export.input_spec(), ("cpu", "cuda"), family)
  path = tmp_path / f"{family}_x{scale}.stablehlo"
  path.write_bytes(blob)
  upscale = export.load_stablehlo(path)
  got = np.asarray(upscale(_photo()))
  assert got.shape == (1, 19 * scale, 27 * scale, 3)
  diff = float(np.max(np.abs(got - want)))
  print(f"stablehlo {family} x{scale}: max abs diff {diff:.3g}")
  assert diff <= ATOL
  # Any size and any batch: the height and width are symbolic.
  two = np.concatenate([_photo()[:, :11, :14], _photo()[:, 8:, 13:][:, :11, :14]])
  np.testing.assert_allclose(upscale(two), jax.jit(fn)(two), atol=ATOL)


# Run in a fresh interpreter: the ONNX files alone, with onnxruntime and numpy, as a deployment.
_RUN_ALONE = """
import json, sys
import numpy as np
import onnxruntime as ort
cases = json.loads(sys.argv[1])
options = ort.SessionOptions()
options.log_severity_level = 3
for model, lr, out in cases:
  session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
  np.save(out, session.run(["sr"], {"lr": np.load(lr)})[0])
banned = sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "flax", "nasr"))
print(json.dumps(banned))
"""


def test_onnx_in_onnxruntime_alone_equals_the_flax_network(tmp_path):
  pytest.importorskip("jax2onnx", reason="ONNX export needs the export extra (README, Deploy)")
  pytest.importorskip("onnxruntime", reason="ONNX export needs the export extra (README, Deploy)")
  if formats.onnx_status() is not None:
    pytest.skip(formats.onnx_status())
  np.save(tmp_path / "photo.npy", _photo())
  cases, wants = [], {}
  for family, scale in CASES:
    fn, wants[family, scale] = _exported(family, scale)
    model = tmp_path / f"{family}_x{scale}.onnx"
    model.write_bytes(export.to_onnx(fn, export.input_spec(), family, model.stem))
    cases.append([str(model), str(tmp_path / "photo.npy"), str(tmp_path / f"{model.stem}.npy")])
  r = subprocess.run(
    [sys.executable, "-c", textwrap.dedent(_RUN_ALONE), json.dumps(cases)],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert json.loads(r.stdout.splitlines()[-1]) == []  # onnxruntime and numpy only
  diffs = {}
  for family, scale in CASES:
    got = np.load(tmp_path / f"{family}_x{scale}.npy")
    assert got.shape == wants[family, scale].shape, (family, scale)
    diffs[family, scale] = float(np.max(np.abs(got - wants[family, scale])))
    print(f"onnx {family} x{scale}: max abs diff {diffs[family, scale]:.3g}")
  assert max(diffs.values()) <= ATOL, {k: v for k, v in diffs.items() if v > ATOL}


def test_onnx_of_one_fixed_size_equals_the_flax_network(tmp_path):
  # --config.height/width: a fixed LR size with a free batch (HNAS's resizes once failed to
  # convert so: jax2onnx's lax.pad needs every dimension concrete).
  pytest.importorskip("jax2onnx", reason="ONNX export needs the export extra (README, Deploy)")
  pytest.importorskip("onnxruntime", reason="ONNX export needs the export extra (README, Deploy)")
  if formats.onnx_status() is not None:
    pytest.skip(formats.onnx_status())
  lr = _photo()
  for family in FAMILIES:
    fn, want = _exported(family, 2)
    model = export.to_onnx(fn, export.input_spec(*lr.shape[1:3]), family, family)
    got = export.run_onnx(model, np.concatenate([lr, lr[:, ::-1]]))  # a batch of two
    assert float(np.max(np.abs(got[:1] - want))) <= ATOL, family


def test_an_op_the_onnx_exporter_lacks_is_named_with_the_network():
  pytest.importorskip("jax2onnx", reason="ONNX export needs the export extra (README, Deploy)")
  if formats.onnx_status() is not None:
    pytest.skip(formats.onnx_status())
  from jax.extend.core import Primitive

  odd = Primitive("nasr_test_op")
  odd.def_impl(lambda x: x)
  odd.def_abstract_eval(lambda x: x)
  with pytest.raises(ExportError, match=r"cannot export OddNet to ONNX: .*op 'nasr_test_op'"):
    export.to_onnx(odd.bind, export.input_spec(), "OddNet", "odd")


def test_onnx_without_the_extra_says_what_to_install(monkeypatch):
  monkeypatch.setattr(formats, "_version", lambda name: None if name == "jax2onnx" else "1.0")
  with pytest.raises(ConfigError, match=r"config.format=onnx: .*jax2onnx.*pip install"):
    export.to_onnx(lambda x: x, export.input_spec(), "EDSR", "edsr")


def test_a_function_of_one_size_names_the_network_in_one_line():
  fn = lambda x: x[:, :16] if x.shape[1] > 16 else x  # noqa: E731 - a Python test of the size
  with pytest.raises(ExportError, match=r"^cannot export SizedNet to StableHLO: \w+") as e:
    export.to_stablehlo(fn, export.input_spec(), ("cpu",), "SizedNet")
  assert "\n" not in str(e.value)
  assert export.to_stablehlo(fn, export.input_spec(19, 27), ("cpu",), "SizedNet")
