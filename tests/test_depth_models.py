"""DenseAttentionSeg, the DeepLabv3+ baseline and their ResNet encoder (docs/models.md sections 3-4).

Full-size models are only traced (`jax.eval_shape`), never compiled; the `_test`
variants run for real, with variables filled from numpy.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import runs
from fanet_jax import models
from fanet_jax.models import dense_attention as da
from fanet_jax.models import resnet

RNGS = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}


def _variables_shape(model, shape):
  return jax.eval_shape(lambda: model.init(RNGS, jnp.zeros(shape)))




# ---- parameter counts written out from the architecture -------------------------

def _resnet_params(in_channels, stage_sizes=(3, 4, 6, 3), width=64):
  n = 49 * in_channels * width + 2 * width                # conv1, bn1
  cin = width
  for s, blocks in enumerate(stage_sizes):
    p = width * 2**s
    for b in range(blocks):
      n += cin * p + 9 * p * p + 4 * p * p + 2 * (p + p + 4 * p)
      if b == 0:                                           # downsample conv + BN
        n += cin * 4 * p + 8 * p
      cin = 4 * p
  return n


def _aspp_params(cin, c=256):
  # 1x1, three 3x3, pooling 1x1; project 5c -> c; six BNs.
  return cin * c * (1 + 27 + 1) + 5 * c * c + 6 * 2 * c


def _dense_attention_params(k=64, channels=(256, 256, 128, 64, 64, 32), classes=3):
  n = _resnet_params(1) + _aspp_params(2048)
  for cin in (64, 256, 512, 1024, 2048, 256):               # squeeze units
    n += cin * k + 2 * k + 9 * k * k + 2 * k
  cin = k
  for i, (c, ksize) in enumerate(zip(channels, (3, 3, 4, 4, 4, 4))):
    n += ksize * ksize * cin * c + 2 * c
    cin = c + k if i < 5 else c                              # concat the skip
  return n + cin * classes + classes


def _deeplab_params(classes=3):
  head = 256 * 48 + 96 + 9 * (256 + 48) * 256 + 512 + 9 * 256 * 256 + 512
  return _resnet_params(1) + _aspp_params(2048) + head + 256 * classes + classes


def test_resnet50_parameter_count():
  # torchvision resnet50: 25,557,032 parameters, of which fc is 2048 * 1000 + 1000.
  assert 25_557_032 - (2048 * 1000 + 1000) == 23_508_032 == _resnet_params(3)
  rgb = _variables_shape(resnet.ResNet(in_channels=3), (1, 64, 64, 3))
  assert models.count_params(rgb) == 23_508_032
  depth = _variables_shape(resnet.ResNet(in_channels=1), (1, 64, 64, 1))
  assert models.count_params(depth) == 23_508_032 - 2 * 64 * 49
  params = depth['params']
  blocks = {f'layer{s + 1}_{b}' for s, n in enumerate((3, 4, 6, 3)) for b in range(n)}
  assert set(params) == {'conv1', 'bn1'} | blocks
  assert set(params['layer4_0']) == {'conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3',
                                     'downsample_0', 'downsample_1'}
  assert 'downsample_0' not in params['layer4_1']
  assert params['conv1']['kernel'].shape == (7, 7, 1, 64)
  assert set(depth['batch_stats']['bn1']) == {'mean', 'var'}


def _conv3x3_plan(model, shape):
  """(stride, dilation) of every 3x3 conv in trace order, read off the jaxpr."""
  variables = _variables_shape(model, shape)
  jaxpr = jax.make_jaxpr(model.apply)(variables, jnp.zeros(shape))
  found = []

  def walk(jx):
    for eqn in jx.eqns:
      if eqn.primitive.name == 'conv_general_dilated':
        if eqn.invars[1].aval.shape[:2] == (3, 3):
          found.append((eqn.params['window_strides'][0], eqn.params['rhs_dilation'][0]))
      for v in eqn.params.values():
        for sub in (v if isinstance(v, (tuple, list)) else (v,)):
          inner = getattr(sub, 'jaxpr', sub)
          if hasattr(inner, 'eqns'):
            walk(inner)
  walk(jaxpr.jaxpr)
  return found


@pytest.mark.parametrize('output_stride,plan', [
    # layer1_0, layer2_0, layer3_0, layer3_1, layer4_0, layer4_1. torchvision's
    # dilate=True: the first block of a dilated stage keeps the previous dilation.
    (16, [(1, 1), (2, 1), (2, 1), (1, 1), (1, 1), (1, 2)]),
    (8, [(1, 1), (2, 1), (1, 1), (1, 2), (1, 2), (1, 4)]),
    (32, [(1, 1), (2, 1), (2, 1), (1, 1), (2, 1), (1, 1)]),
])
def test_resnet_strides_and_dilations_follow_torchvision(output_stride, plan):
  model = resnet.ResNet(stage_sizes=(1, 1, 2, 2), base_width=4,
                        output_stride=output_stride)
  assert _conv3x3_plan(model, (1, 64, 64, 1)) == plan


@functools.cache
def _full_size(name):
  model = models.create(name)
  variables = _variables_shape(model, (1, 480, 640, 1))
  logits, state = jax.eval_shape(lambda v: model.apply(
      v, jnp.zeros((1, 480, 640, 1)), mutable=['intermediates']), variables)
  return variables, logits, state


def test_levels_and_outputs_at_480x640():
  variables, logits, state = _full_size('dense_attention_seg_r50')
  assert logits.shape == (1, 480, 640, 3) and logits.dtype == jnp.float32
  levels = state['intermediates']['levels'][0]
  assert [lv.shape[1:] for lv in levels] == [
      (240, 320, 64), (120, 160, 256), (60, 80, 512), (30, 40, 1024),
      (30, 40, 2048), (30, 40, 256)]
  assert [a.shape[1:] for a in state['intermediates']['attention_maps'][0]] == [
      lv.shape[1:3] + (64,) for lv in levels]
  _, logits, _ = _full_size('deeplabv3plus_r50')
  assert logits.shape == (1, 480, 640, 3)


def test_full_size_parameter_counts():
  params = _full_size('dense_attention_seg_r50')[0]['params']
  assert models.count_params(params) == _dense_attention_params() == 41_460_835
  assert models.count_params(params['backbone']) == _resnet_params(1)
  assert models.count_params(params['aspp']) == _aspp_params(2048) == 15_535_104
  assert set(params) == {'backbone', 'aspp', 'decoder'} | {
      f'squeeze_{i}' for i in range(1, 7)}
  assert set(params['decoder']) == {f'deconv_{i}' for i in range(1, 7)} | {'conv_seg'}
  assert params['decoder']['deconv_3']['conv']['kernel'].shape == (4, 4, 320, 128)
  params = _full_size('deeplabv3plus_r50')[0]['params']
  assert models.count_params(params) == _deeplab_params() == 40_341_283


@pytest.mark.parametrize('name,stage_sizes,count', [
    # torchvision resnet101: 44,549,160 parameters, fc 2,049,000 of them.
    # r50: the depth model's 40,341,283 + 2 * 64 * 49 (RGB stem) + 2 * 257 (5 classes).
    ('deeplabv3plus_r50_rgb', (3, 4, 6, 3), 40_348_069),
    ('deeplabv3plus_r101_rgb', (3, 4, 23, 3), 59_340_197)])
def test_rgb_variants_for_zerowaste(name, stage_sizes, count):
  # RGB stem, 5 classes, output stride 8 (layer3 and layer4 dilated, mmseg's d8).
  model = models.create(name, num_classes=5)
  variables = _variables_shape(model, (1, 64, 64, 3))
  head = _deeplab_params(classes=5) - _resnet_params(1)
  assert models.count_params(variables) == _resnet_params(3, stage_sizes) + head == count
  assert _resnet_params(3, (3, 4, 23, 3)) == 44_549_160 - 2_049_000
  assert (model.output_stride, tuple(model.atrous_rates)) == (8, (12, 24, 36))
  logits = jax.eval_shape(model.apply, variables, jnp.zeros((1, 64, 64, 3)))
  assert logits.shape == (1, 64, 64, 5)


@pytest.mark.parametrize('name', ['dense_attention_seg_test', 'deeplabv3plus_test'])
@pytest.mark.parametrize('size', [(37, 45), (100, 130)])   # not multiples of 16
def test_output_size_at_any_input_size(name, size):
  model = models.create(name)
  shape = (2,) + size + (1,)
  variables = _variables_shape(model, shape)
  logits = jax.eval_shape(model.apply, variables, jnp.zeros(shape))
  assert logits.shape == shape[:3] + (3,)
  logits, aux = jax.eval_shape(lambda v: model.apply(
      v, jnp.zeros(shape), train=True, rngs=RNGS, mutable=['batch_stats']), variables)[0]
  assert logits.shape == shape[:3] + (3,) and aux is None


def _np_resize(x, out_h, out_w):
  """Bilinear, half-pixel centres, no antialias, edge-clamped; explicit loops."""
  def source(i, n_in, n_out):
    s = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1.0)
    i0 = int(np.floor(s))
    return i0, min(i0 + 1, n_in - 1), s - i0
  out = np.zeros((x.shape[0], out_h, out_w, x.shape[3]))
  for i in range(out_h):
    y0, y1, fy = source(i, x.shape[1], out_h)
    for j in range(out_w):
      x0, x1, fx = source(j, x.shape[2], out_w)
      out[:, i, j] = ((1 - fy) * ((1 - fx) * x[:, y0, x0] + fx * x[:, y0, x1])
                      + fy * ((1 - fx) * x[:, y1, x0] + fx * x[:, y1, x1]))
  return out


@pytest.mark.parametrize('mode', ['residual', 'multiplicative', 'none'])
def test_dense_attention_matches_numpy(mode):
  rng = np.random.default_rng(0)
  sizes = [(12, 16), (7, 9), (4, 5), (2, 3), (2, 3), (2, 3)]
  s = [rng.uniform(0, 2, (2, h, w, 3)).astype(np.float32) for h, w in sizes]
  a = [rng.uniform(0, 1, (2, h, w, 3)).astype(np.float32) for h, w in sizes]
  got = da.dense_attention(s, a if mode != 'none' else None, mode)
  for i, (si, (h, w)) in enumerate(zip(s, sizes)):
    fine, coarse = np.ones_like(si), np.ones_like(si)
    for j in range(i):
      fine = fine * _np_resize(a[j], h, w)
    for j in range(i + 1, len(a)):
      coarse = coarse * _np_resize(a[j], h, w)
    expected = {'residual': si * (1 + fine * coarse),
                'multiplicative': si * fine * coarse, 'none': si}[mode]
    np.testing.assert_allclose(got[i], expected, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='attention'):
    da.dense_attention(s, a, 'additive')


def _np_torch_conv_transpose(x, weight, stride, padding=1):
  """PyTorch ConvTranspose2d as a scatter: out[s*i - p + a] += x[i] * weight[a]."""
  b, h, w, _ = x.shape
  k = weight.shape[0]
  full = np.zeros((b, (h - 1) * stride + k, (w - 1) * stride + k, weight.shape[3]))
  for i in range(h):
    for j in range(w):
      full[:, stride * i:stride * i + k, stride * j:stride * j + k] += np.einsum(
          'bc,hwcd->bhwd', x[:, i, j], weight)
  ho, wo = (h - 1) * stride - 2 * padding + k, (w - 1) * stride - 2 * padding + k
  return full[:, padding:padding + ho, padding:padding + wo]


@pytest.mark.parametrize('kernel_size,stride', [(4, 2), (3, 1)])
def test_transposed_conv_impls_match_pytorch(kernel_size, stride):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
  weight = rng.normal(size=(kernel_size, kernel_size, 3, 4)).astype(np.float32)
  # Our kernel is PyTorch's (in HWIO order) flipped spatially.
  variables = {'params': {'kernel': jnp.asarray(weight[::-1, ::-1])}}
  expected = _np_torch_conv_transpose(x, weight, stride)
  assert expected.shape == (2, 5 * stride, 7 * stride, 4)
  for impl in ('parity', 'lax'):
    conv = da.ConvTranspose(4, kernel_size, stride, impl)
    assert jax.tree.map(jnp.shape, conv.init(RNGS, x)) == jax.tree.map(jnp.shape,
                                                                      variables)
    np.testing.assert_allclose(conv.apply(variables, x), expected, rtol=1e-4,
                               atol=1e-4)


def test_squeeze_unit_outputs():
  unit = da.SqueezeUnit(4)
  x = np.random.default_rng(0).normal(size=(2, 5, 6, 3)).astype(np.float32)
  variables = unit.init(RNGS, x)
  s, a = unit.apply(variables, x)
  assert s.shape == a.shape == (2, 5, 6, 4)
  assert np.all((a > 0) & (a < 1)) and np.min(a) < 0.5
  np.testing.assert_allclose(s, np.maximum(np.log(a / (1 - a)), 0), atol=1e-4)
  s2, none = da.SqueezeUnit(4, with_attention=False).apply(variables, x)
  assert none is None and np.array_equal(s, s2)


def test_tiny_models_run_and_the_ablation_removes_attention():
  shape = (2, 32, 48, 1)
  images = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
  reference = models.create('dense_attention_seg_test')
  variables = runs.random_variables(reference, shape[-1])
  outputs = {}
  for mode in ('residual', 'multiplicative', 'none'):
    model = models.create('dense_attention_seg_test', attention=mode)
    assert model.attention == mode
    # No parameter is attention-only: the modes share one parameter tree.
    tree = _variables_shape(model, shape)
    assert jax.tree.structure(tree) == jax.tree.structure(variables)
    assert jax.tree.map(lambda t: t.shape, tree) == jax.tree.map(jnp.shape, variables)
    if mode != 'multiplicative':   # its arithmetic is checked against numpy above
      outputs[mode] = np.asarray(jax.jit(model.apply)(variables, images))
      assert outputs[mode].shape == shape[:3] + (3,)
      assert np.all(np.isfinite(outputs[mode]))
  assert np.max(np.abs(outputs['residual'] - outputs['none'])) > 1e-3
  # Training mode: (logits, None) and updated batch statistics.
  (logits, aux), updates = jax.jit(lambda v, x: reference.apply(
      v, x, train=True, rngs=RNGS, mutable=['batch_stats']))(variables, images)
  assert logits.shape == shape[:3] + (3,) and aux is None
  assert not np.allclose(updates['batch_stats']['squeeze_1']['bn']['mean'],
                         variables['batch_stats']['squeeze_1']['bn']['mean'])


def test_tiny_deeplab_runs():
  shape = (2, 32, 48, 1)
  model = models.create('deeplabv3plus_test')
  variables = runs.random_variables(model, shape[-1])
  images = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
  logits = jax.jit(model.apply)(variables, images)
  assert logits.shape == shape[:3] + (3,) and np.all(np.isfinite(logits))


def test_factory_and_dtype():
  assert {'deeplabv3plus_r50', 'deeplabv3plus_micro', 'deeplabv3plus_test',
          'dense_attention_seg_r50', 'dense_attention_seg_micro',
          'dense_attention_seg_test'} <= set(models.available())
  model = models.create('dense_attention_seg_r50', attention='none', num_classes=4)
  assert (model.attention, model.num_classes, model.in_channels) == ('none', 4, 1)
  assert models.create('dense_attention_seg_micro').squeeze_channels == 32
  assert models.create('deeplabv3plus_r50').output_stride == 16
  with pytest.raises(ValueError, match='attention'):
    models.create('deeplabv3plus_r50', attention='none')
  with pytest.raises(ValueError, match='attention'):
    _variables_shape(models.create('dense_attention_seg_test', attention='bogus'),
                     (1, 32, 32, 1))
  with pytest.raises(ValueError, match='input channels'):
    _variables_shape(models.create('dense_attention_seg_test'), (1, 32, 32, 3))
  for name in ('dense_attention_seg_test', 'deeplabv3plus_test'):
    model = models.create(name, dtype=jnp.bfloat16)
    variables = _variables_shape(model, (1, 32, 32, 1))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    assert jax.eval_shape(model.apply, variables,
                          jnp.zeros((1, 32, 32, 1))).dtype == jnp.bfloat16
