"""Tests of the leaf layers: pixel shuffle ordering, the shape of every op, and values against numpy
references written from their definitions."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasr import ops
from nasr.core.errors import ConfigError


def _torch_pixel_shuffle_nchw(x: np.ndarray, r: int) -> np.ndarray:
  """Return PyTorch's PixelShuffle of an NCHW array, looped from its definition."""
  n, cr2, h, w = x.shape
  c = cr2 // (r * r)
  out = np.zeros((n, c, h * r, w * r), x.dtype)
  for ci in range(c):
    for i in range(r):
      for j in range(r):
        out[:, ci, i::r, j::r] = x[:, ci * r * r + i * r + j]
  return out


@pytest.mark.parametrize("r", [2, 3])
def test_pixel_shuffle_matches_pytorch_ordering(r):
  x = np.random.default_rng(0).normal(size=(2, 3 * r * r, 4, 5)).astype(np.float32)  # NCHW
  expected = _torch_pixel_shuffle_nchw(x, r).transpose(0, 2, 3, 1)
  got = np.asarray(ops.pixel_shuffle(jnp.asarray(x.transpose(0, 2, 3, 1)), r))
  np.testing.assert_array_equal(got, expected)


def test_pixel_shuffle_rejects_bad_channels():
  with pytest.raises(ValueError, match="divisible by 4"):
    ops.pixel_shuffle(jnp.zeros((1, 2, 2, 6)), 2)


def _apply(module, x):
  variables = module.init(jax.random.PRNGKey(0), x)
  return module.apply(variables, x), variables


X = np.random.default_rng(1).uniform(size=(2, 6, 7, 8)).astype(np.float32)


@pytest.mark.parametrize(
  "module, channels",
  [
    (ops.Conv(5), 5),
    (ops.Conv(5, kernel=5), 5),
    (ops.Conv(8, kernel=3, dilation=2), 8),
    (ops.Conv(4, kernel=3, groups=2, use_bias=False), 4),
    (ops.SepConv(6), 6),
    (ops.SepConv(6, kernel=5, dilation=2), 6),
    (ops.ResidualOp(ops.Conv(8)), 8),
    (ops.ChannelAttention(8), 8),
    (ops.RCAB(8), 8),
    (ops.ResBlock(8, res_scale=0.1), 8),
    (ops.MeanShift(-1.0), 8),
  ],
  ids=lambda v: type(v).__name__ if not isinstance(v, int) else str(v),
)
def test_same_size_ops_keep_spatial_shape(module, channels):
  if isinstance(module, ops.MeanShift):
    x = X[..., :3]
    channels = 3
  else:
    x = X
  y, _ = _apply(module, x)
  assert y.shape == (*x.shape[:3], channels)
  assert y.dtype == jnp.float32


def test_conv_param_shapes_and_groups():
  _, v = _apply(ops.Conv(4, kernel=3, groups=2), X)
  assert v["params"]["kernel"].shape == (3, 3, 4, 4)
  assert v["params"]["bias"].shape == (4,)
  with pytest.raises(ValueError, match="groups=3"):
    _apply(ops.Conv(6, groups=3), X)
  with pytest.raises(ValueError, match="shifted needs a depthwise conv"):
    _apply(ops.Conv(8, shifted=True), X)


def test_sepconv_is_depthwise_then_pointwise():
  _, v = _apply(ops.SepConv(6, kernel=5), X)
  assert v["params"]["depthwise"]["kernel"].shape == (5, 5, 1, 8)
  assert v["params"]["pointwise"]["kernel"].shape == (1, 1, 8, 6)


def test_sepconv_without_depthwise_bias_is_the_same_function_with_fewer_parameters():
  _, v = _apply(ops.SepConv(6, kernel=5), X)
  p = v["params"]
  _, v1 = _apply(ops.SepConv(6, kernel=5, depthwise_bias=False), X)
  assert "bias" not in v1["params"]["depthwise"] and v1["params"]["pointwise"]["bias"].shape == (6,)
  # The linear pointwise conv absorbs the depthwise bias: b_pw' = W_pw^T b_dw + b_pw.
  dwb = np.random.default_rng(2).normal(size=8).astype(np.float32)
  p = {**p, "depthwise": {**p["depthwise"], "bias": dwb}}
  folded = {
    "depthwise": {"kernel": p["depthwise"]["kernel"]},
    "pointwise": {
      "kernel": p["pointwise"]["kernel"],
      "bias": p["pointwise"]["bias"] + dwb @ np.asarray(p["pointwise"]["kernel"])[0, 0],
    },
  }
  want = ops.SepConv(6, kernel=5).apply({"params": p}, X)
  got = ops.SepConv(6, kernel=5, depthwise_bias=False).apply({"params": folded}, X)
  np.testing.assert_allclose(got, want, atol=1e-5)
  bare = ops.SepConvParams(5, 8, 6, depthwise_bias=False).init(jax.random.PRNGKey(0))["params"]
  assert jax.tree.map(np.shape, bare) == jax.tree.map(np.shape, v1["params"])


def test_residual_op_adds_input():
  y, v = _apply(ops.ResidualOp(ops.Conv(8)), X)
  conv_y = ops.Conv(8).apply({"params": v["params"]["op"]}, X)
  np.testing.assert_allclose(y, conv_y + X, atol=1e-6)


def test_channel_attention_rescales_channels_within_zero_and_x():
  y, _ = _apply(ops.ChannelAttention(8, reduction=4), X)
  ratio = np.asarray(y) / X  # one sigmoid weight per (image, channel), the same at every pixel
  assert np.all((ratio > 0) & (ratio < 1))
  np.testing.assert_allclose(ratio, ratio[:, :1, :1, :] * np.ones_like(ratio), rtol=1e-5)


def test_bf16_compute_keeps_float32_params():
  y, v = _apply(ops.ResBlock(8, dtype=jnp.bfloat16), X)
  assert y.dtype == jnp.bfloat16
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_subpixel_upsampler_shapes(scale):
  y, v = _apply(ops.SubPixelUpsampler(8, scale), X)
  assert y.shape == (2, 6 * scale, 7 * scale, 8)
  assert len(v["params"]) == (2 if scale == 4 else 1)


@pytest.mark.parametrize("scale", [5, 1, 2.0, "2"])
def test_subpixel_upsampler_rejects_other_scales(scale):
  with pytest.raises(ConfigError, match="scale must be one of"):
    ops.SubPixelUpsampler(8, scale)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_deconv_shapes(scale):
  y, _ = _apply(ops.Deconv(5, scale), X)
  assert y.shape == (2, 6 * scale, 7 * scale, 5)


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (3, 3), (1, 1), (5, 2)])
def test_conv_tap_grad_matches_autodiff_in_and_out_of_a_scan(kernel, dilation):
  from nasr.ops.cpu_kernels import conv_tap_grad

  rng = np.random.default_rng(kernel + dilation)
  x = jnp.asarray(rng.normal(size=(2, 9, 11, 4)), jnp.float32)
  ks = jnp.asarray(rng.normal(size=(3, kernel, kernel, 4, 4)) * 0.3, jnp.float32)

  def plain(x, k):
    return jax.lax.conv_general_dilated(
      x,
      k,
      (1, 1),
      "SAME",
      rhs_dilation=(dilation, dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )

  def loss(conv, x, ks):
    y, _ = jax.lax.scan(lambda h, k: (jnp.tanh(conv(h, k)), None), x, ks)
    return jnp.sum(y * y)

  want = jax.grad(functools.partial(loss, plain), argnums=(0, 1))(x, ks)
  tap = lambda h, k: conv_tap_grad(h, k, dilation)  # noqa: E731
  got = jax.jit(jax.grad(functools.partial(loss, tap), argnums=(0, 1)))(x, ks)
  np.testing.assert_allclose(tap(x, ks[0]), plain(x, ks[0]), rtol=1e-5, atol=1e-5)
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_interpolate_equals_jax_image_resize_without_counted_multiply_adds(method, factor):
  from nasr.estimation import cost
  from nasr.ops import interpolate

  x = jnp.asarray(np.random.default_rng(factor).uniform(size=(2, 5, 7, 3)), jnp.float32)
  want = jax.image.resize(x, (2, 5 * factor, 7 * factor, 3), method)
  np.testing.assert_allclose(interpolate(x, factor, method), want, atol=1e-6)
  jaxpr = jax.make_jaxpr(lambda v: interpolate(v, factor, method))(x).jaxpr
  assert cost.jaxpr_macs(jaxpr) == 0


@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_interpolate_of_any_size_exports_and_equals_the_fixed_size_form(method, factor):
  """An export for any image size (symbolic height and width) has no per-pixel edge constants."""
  from nasr.ops import interpolate

  fn = jax.jit(lambda v: interpolate(v, factor, method))
  b, h, w = jax.export.symbolic_shape("b, h, w")
  exported = jax.export.export(fn)(jax.ShapeDtypeStruct((b, h, w, 3), jnp.float32))
  for shape in [(1, 1, 2, 3), (2, 5, 7, 3), (1, 9, 4, 3)]:
    x = jnp.asarray(np.random.default_rng(factor).uniform(size=shape), jnp.float32)
    np.testing.assert_allclose(exported.call(x), fn(x), atol=1e-6)


@pytest.mark.parametrize("stride,kernel,pad", [(2, 6, 2), (3, 7, 2), (4, 8, 2), (2, 4, 1)])
def test_cpu_forms_of_strided_and_transposed_convs_are_the_same_functions(stride, kernel, pad):
  from nasr.ops.cpu_kernels import strided_conv, transposed_conv

  rng = np.random.default_rng(stride)
  dn = ("NHWC", "HWIO", "NHWC")
  x = jnp.asarray(rng.standard_normal((2, 5, 7, 3)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((kernel, kernel, 3, 4)), jnp.float32)
  q = kernel - 1 - pad
  want = jax.lax.conv_general_dilated(x, w, (1, 1), ((q, q), (q, q)), (stride, stride), None, dn)
  np.testing.assert_allclose(transposed_conv(x, w, stride, q), want, atol=1e-4)
  hr = jnp.asarray(rng.standard_normal((2, 5 * stride, 7 * stride, 4)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((kernel, kernel, 4, 3)), jnp.float32)
  pads = ((pad, pad), (pad, pad))
  want = jax.lax.conv_general_dilated(hr, w, (stride, stride), pads, None, None, dn)
  np.testing.assert_allclose(strided_conv(hr, w, stride, pad), want, atol=1e-4)
  # Their gradients with tap_grad (the supernet's rolled loop) are the plain forms' gradients.
  wt = jnp.asarray(rng.standard_normal((kernel, kernel, 3, 4)), jnp.float32)
  for fn, arg, kern in ((transposed_conv, q, wt), (strided_conv, pad, w)):
    inp = x if fn is transposed_conv else hr

    def loss(v, k, tap, fn=fn, arg=arg):
      return jnp.sum(jnp.sin(fn(v, k, stride, arg, tap)))

    want = jax.grad(loss, (0, 1))(inp, kern, False)
    got = jax.jit(jax.grad(loss, (0, 1)), static_argnums=2)(inp, kern, True)
    for g, ref in zip(got, want, strict=True):
      np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("padding", [((2, 1), (0, 3)), ((-1, 2), (1, -1)), ((0, 0), (0, 0))])
def test_conv_tap_grad_with_explicit_padding_matches_autodiff(padding):
  from nasr.ops.cpu_kernels import conv_tap_grad

  rng = np.random.default_rng(len(str(padding)))
  x = jnp.asarray(rng.normal(size=(2, 9, 8, 3)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(4, 3, 3, 5)), jnp.float32)  # an even side too

  def loss(conv, x, k):
    return jnp.sum(jnp.sin(conv(x, k)))

  def plain(x, k):
    return jax.lax.conv_general_dilated(
      x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )

  tap = lambda x, k: conv_tap_grad(x, k, 1, padding)  # noqa: E731
  np.testing.assert_allclose(tap(x, k), plain(x, k), rtol=1e-5, atol=1e-5)
  want = jax.grad(functools.partial(loss, plain), (0, 1))(x, k)
  got = jax.grad(functools.partial(loss, tap), (0, 1))(x, k)
  for g, ref in zip(got, want, strict=True):
    np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-4)


_DN = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize(
  "kernel, options, form",
  [
    (3, {}, "xla"),
    (1, {"matmul_1x1": True}, "matmul"),
    (3, {"matmul_1x1": True}, "xla"),
    (3, {"tap_grad": True}, "tap"),
    (3, {"tap_grad": True, "groups": 2}, "xla"),  # tap gradients are dense convs' only
    (6, {"stride": 2, "padding": ((2, 2), (2, 2)), "stride_one": True}, "stride-1"),
    (6, {"stride": 2, "padding": ((2, 2), (2, 2))}, "xla"),
    (6, {"stride": 2, "padding": ((2, 1), (2, 1)), "stride_one": True}, "xla"),  # asymmetric
    (6, {"lhs_dilation": 2, "padding": ((3, 3), (3, 3)), "stride_one": True}, "stride-1"),
    (6, {"lhs_dilation": 2, "padding": ((2, 3), (2, 3)), "stride_one": True}, "xla"),  # not 2H
  ],
)
def test_functional_conv_forms_compute_xlas_conv(kernel, options, form):
  from nasr.ops import functional

  rng = np.random.default_rng(kernel)
  groups, stride = options.get("groups", 1), options.get("stride", 1)
  lhs, padding = options.get("lhs_dilation", 1), options.get("padding", "SAME")
  x = jnp.asarray(rng.normal(size=(2, 6, 7, 4)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(kernel, kernel, 4 // groups, 4)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(4,)), jnp.float32)
  want = jax.lax.conv_general_dilated(
    x, k, (stride, stride), padding, (lhs, lhs), None, _DN, feature_group_count=groups
  )
  got = functional.conv(x, k, b, **options)
  np.testing.assert_allclose(got, want + b, rtol=1e-5, atol=1e-4)
  eqns = jax.make_jaxpr(lambda x, k: functional.conv(x, k, **options))(x, k).jaxpr.eqns
  names = [e.primitive.name for e in eqns]
  convs = [e.params for e in eqns if e.primitive.name == "conv_general_dilated"]
  if form == "xla":
    assert len(convs) == 1 and convs[0]["window_strides"] == (stride, stride)
    assert convs[0]["lhs_dilation"] == (lhs, lhs)
  elif form == "stride-1":
    assert len(convs) == 1 and convs[0]["window_strides"] == convs[0]["lhs_dilation"] == (1, 1)
  elif form == "matmul":
    assert "dot_general" in names and not convs
  else:
    assert any("custom_vjp" in n for n in names) and not convs


# ------------------------------------------------------------------------------------------------
# Values against references written from the papers' definitions in numpy (float64).


def _np_conv(x, kernel, bias=None, dilation=1, depthwise=False):
  """Return the 'SAME' stride-1 convolution of NHWC x with an HWIO kernel, tap by tap."""
  k = kernel.shape[0]
  pad = dilation * (k - 1) // 2
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  h, w = x.shape[1:3]
  out = 0.0
  for i in range(k):
    for j in range(k):
      patch = xp[:, i * dilation : i * dilation + h, j * dilation : j * dilation + w]
      out = out + (patch * kernel[i, j, 0] if depthwise else patch @ kernel[i, j])
  return out if bias is None else out + bias


def _np(v):
  return {k: _np(x) for k, x in v.items()} if isinstance(v, dict) else np.asarray(v, np.float64)


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def _random_variables(module, x, seed=0):
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), jnp.float32), shapes
  )


def test_mean_shift_subtracts_then_adds_the_div2k_mean():
  x = X[..., :3]
  mean = np.array([0.4488, 0.4371, 0.4040])
  np.testing.assert_allclose(ops.MeanShift(-1.0).apply({}, x), x - mean, atol=1e-6)
  np.testing.assert_allclose(ops.MeanShift(1.0).apply({}, x), x + mean, atol=1e-6)


def test_convs_blocks_and_attention_equal_their_definitions():
  x = X
  xd = x.astype(np.float64)
  relu = lambda a: np.maximum(a, 0.0)  # noqa: E731

  def check(module, reference):
    v = _random_variables(module, x)
    np.testing.assert_allclose(module.apply(v, x), reference(_np(v["params"])), atol=2e-5)

  check(ops.Conv(5, dilation=2), lambda p: _np_conv(xd, p["kernel"], p["bias"], dilation=2))
  check(
    ops.SepConv(6),
    lambda p: _np_conv(
      _np_conv(xd, p["depthwise"]["kernel"], p["depthwise"]["bias"], depthwise=True),
      p["pointwise"]["kernel"],
      p["pointwise"]["bias"],
    ),
  )

  def branch(p):
    return _np_conv(relu(_np_conv(xd, **p["conv1"])), **p["conv2"])

  check(ops.ResBlock(8, res_scale=0.1), lambda p: xd + 0.1 * branch(p))

  def attend(y, p):
    s = y.mean(axis=(1, 2), keepdims=True)
    s = relu(_np_conv(s, **p["squeeze"]))
    return y * _sigmoid(_np_conv(s, **p["excite"]))

  check(ops.ChannelAttention(8), lambda p: attend(xd, p))
  check(ops.RCAB(8), lambda p: xd + attend(branch(p), p["attention"]))
