"""Models: exact parameter counts, ablation switches, shapes, heads, factory, numerics.

Full-size models are only traced (`jax.eval_shape`), never run. Variables for the
models that do run are filled from numpy: jitting `init` compiles one threefry
kernel per parameter shape, which is slow on XLA:CPU.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from fanet_jax import models
from fanet_jax.models import layers, upernet

RNGS = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}


def _variables_shape(model, shape=(1, 64, 64, 3), train=True):
  # train=True so that the auxiliary head (training only) gets its parameters.
  return jax.eval_shape(lambda: model.init(RNGS, jnp.zeros(shape), train=train))


def _random_variables(model, shape, seed=0):
  """Variables of `model` from numpy: kernels ~ N(0, 1/fan_in), BN stats (0, 1)."""
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == 'var':
      return jnp.ones(s.shape, s.dtype)
    if name == 'kernel':
      std = 1.0 / np.sqrt(np.prod(s.shape[:-1]))
    else:
      std = 0.1
    value = std * rng.standard_normal(s.shape) + (1.0 if name == 'scale' else 0.0)
    return jnp.asarray(value, s.dtype)
  return jax.tree_util.tree_map_with_path(fill, _variables_shape(model, shape))


def _block_params(width, k, scm=True, low=True, high=True):
  """Parameters of one FANetBlock, written out from docs/models.md section 1."""
  c = width // 2
  n = 4 * width                                  # layer_norm1, layer_norm2
  n += k * k * width + width + 2 * width         # dwconv, norm1
  n += width * c + c + 2 * c                     # proj1, norm2
  branches = 0
  if scm:                                        # ctx_conv 7x7 groups 4, norm
    n += 49 * (c // 4) * c + c + 2 * c
    branches += 1
  if low or high:                                # down, (lconv, norm) per branch, proj
    n += 10 * c + (low + high) * 12 * c + (low + high) * c * c + c
    branches += 1
  n += max(branches, 1) * c * width + width      # proj2
  n += width * 4 * width + 4 * width + 40 * width + 4 * width * width + width  # mlp
  return n


def _backbone_params(widths=(96, 192, 384, 768), depths=(2, 2, 8, 2),
                     kernel_sizes=(5, 5, 3, 3), **switches):
  n = 5 * 5 * 3 * widths[0] + widths[0]
  n += sum(9 * a * b + b for a, b in zip(widths[:-1], widths[1:]))
  return n + sum(d * _block_params(w, k, **switches)
                 for w, d, k in zip(widths, depths, kernel_sizes))


def test_reference_parameter_counts():
  assert _backbone_params() == 35_951_328
  classifier = _variables_shape(models.create('fanet_tiny_classifier'))
  assert models.count_params(classifier) == 36_721_864
  params = _variables_shape(models.create('fanet_tiny_upernet'))['params']
  assert models.count_params(params) == 46_061_290
  assert models.count_params(params['backbone']) == 35_951_328
  assert models.count_params(params['decode_head']) == 9_223_429
  assert models.count_params(params['auxiliary_head']) == 886_533
  no_aux = models.create('fanet_tiny_upernet', use_auxiliary_head=False)
  assert models.count_params(_variables_shape(no_aux)) == 45_174_757


@pytest.mark.parametrize('scm,low,high', [(True, True, True), (False, True, True),
                                          (True, False, True), (True, True, False),
                                          (False, False, False)])
def test_ablation_switches_remove_branches(scm, low, high):
  # All on is fanet_tiny itself: _backbone_params() == 35,951,328 is checked above.
  model = models.create('fanet_tiny', use_scm=scm, use_frm_low=low, use_frm_high=high)
  params = _variables_shape(model)['params']
  assert models.count_params(params) == _backbone_params(scm=scm, low=low, high=high)
  attn = params['stages_2_0']['attn']
  assert ('scm' in attn) == scm
  assert ('enhance' in attn) == (low or high)
  if low or high:
    expected = {'down', 'proj'} | ({'lconv', 'norm1'} if low else set())
    assert set(attn['enhance']) == expected | ({'hconv', 'norm2'} if high else set())
  # The fuse conv takes the concatenation of the enabled C/2-wide branches.
  assert attn['proj2']['kernel'].shape == (1, 1, 192 * max(scm + (low or high), 1), 384)


def test_parameter_names_for_the_converter():
  params = _variables_shape(models.create('fanet_test_upernet'))['params']
  backbone = params['backbone']
  assert {f'downsample_layers_{i}' for i in range(4)} <= set(backbone)
  block = backbone['stages_0_0']
  assert set(block) == {'layer_norm1', 'attn', 'layer_norm2', 'mlp'}
  assert set(block['attn']) == {'dwconv', 'norm1', 'proj1', 'norm2', 'scm', 'enhance',
                                'proj2'}
  assert set(block['attn']['scm']) == {'ctx_conv', 'norm'}
  assert block['attn']['scm']['ctx_conv']['kernel'].shape == (7, 7, 1, 4)
  assert set(block['mlp']) == {'fc1', 'pos', 'fc2'}
  assert block['mlp']['pos']['kernel'].shape == (3, 3, 1, 32)
  assert set(params['auxiliary_head']) == {'convs_0', 'conv_seg'}
  assert set(params['decode_head']['fpn_bottleneck']) == {'conv', 'bn'}
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))


@pytest.mark.parametrize('height,width', [(64, 64), (72, 88)])
def test_backbone_feature_shapes(height, width):
  model = models.create('fanet_test')
  variables = _variables_shape(model, (2, height, width, 3))
  features = jax.eval_shape(model.apply, variables, jnp.zeros((2, height, width, 3)))
  size = lambda n, k, s, p: (n + 2 * p - k) // s + 1
  h, w = size(height, 5, 4, 2), size(width, 5, 4, 2)
  for key, channels in zip(('s4', 's8', 's16', 's32'), (8, 16, 32, 64)):
    if key != 's4':
      h, w = size(h, 3, 2, 1), size(w, 3, 2, 1)
    assert features[key].shape == (2, h, w, channels), key


def test_segmentor_outputs_and_batch_stats():
  # XLA convolutions: compiled in half the time of the fast ones (equal numbers).
  model = models.create('fanet_test_upernet', num_classes=5, conv_impl='lax')
  images = jax.random.normal(jax.random.key(2), (2, 40, 56, 3))
  variables = _random_variables(model, images.shape)
  eval_logits = jax.eval_shape(model.apply, variables, images)
  assert eval_logits.shape == (2, 40, 56, 5) and eval_logits.dtype == jnp.float32
  apply = jax.jit(lambda v, x, rng: model.apply(
      v, x, train=True, rngs={'dropout': rng}, mutable=['batch_stats']))
  (logits, aux_logits), updates = apply(variables, images, jax.random.key(3))
  assert logits.shape == aux_logits.shape == (2, 40, 56, 5)
  assert np.all(np.isfinite(logits)) and np.all(np.isfinite(aux_logits))
  old, new = variables['batch_stats'], updates['batch_stats']
  assert jax.tree.structure(old) == jax.tree.structure(new)
  assert not np.allclose(old['decode_head']['fpn_bottleneck']['bn']['mean'],
                         new['decode_head']['fpn_bottleneck']['bn']['mean'])
  no_aux = models.create('fanet_test_upernet', use_auxiliary_head=False)
  out, _ = jax.eval_shape(lambda: no_aux.apply(
      variables, images, train=True, rngs={'dropout': jax.random.key(0)},
      mutable=['batch_stats']))
  assert out[1] is None


def test_classifier_and_bfloat16():
  classifier = models.create('fanet_test_classifier', num_classes=7)
  variables = _variables_shape(classifier, (2, 64, 64, 3))
  assert set(variables['params']) == {'backbone', 'norm', 'head'}
  logits = jax.eval_shape(classifier.apply, variables, jnp.zeros((2, 64, 64, 3)))
  assert logits.shape == (2, 7)
  model = models.create('fanet_test_upernet', dtype=jnp.bfloat16)
  variables = _variables_shape(model)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  logits = jax.eval_shape(model.apply, variables, jnp.zeros((1, 64, 64, 3)))
  assert logits.dtype == jnp.bfloat16


def test_factory_routes_overrides():
  model = models.create('fanet_test_upernet', num_classes=3, use_scm=False, channels=8)
  assert model.decode_head.num_classes == model.auxiliary_head.num_classes == 3
  assert model.decode_head.channels == model.auxiliary_head.channels == 8
  assert model.backbone.use_scm is False
  assert models.create('fanet_tiny_classifier', num_classes=10).num_classes == 10
  with pytest.raises(ValueError, match='num_clases'):
    models.create('fanet_test_upernet', num_clases=3)
  with pytest.raises(ValueError, match='num_classes'):   # no head on a bare backbone
    models.create('fanet_test', num_classes=3)
  with pytest.raises(ValueError, match='fanet_huge'):
    models.create('fanet_huge')
  assert {'fanet_tiny', 'fanet_tiny_classifier', 'fanet_tiny_upernet', 'fanet_micro',
          'fanet_micro_upernet', 'fanet_test',
          'fanet_test_upernet'} <= set(models.available())


def test_count_params_accepts_variables_or_params():
  variables = {'params': {'a': jnp.zeros((2, 3)), 'b': {'c': jnp.zeros(4)}},
               'batch_stats': {'m': jnp.zeros(100)}}
  assert models.count_params(variables) == models.count_params(variables['params']) == 10


def _torch_adaptive_avg_pool(x, out_h, out_w):
  """Direct loop over PyTorch's bins: [floor(i*H/s), ceil((i+1)*H/s))."""
  b, h, w, c = x.shape
  out = np.zeros((b, out_h, out_w, c), x.dtype)
  for i in range(out_h):
    h0, h1 = (i * h) // out_h, int(np.ceil((i + 1) * h / out_h))
    for j in range(out_w):
      w0, w1 = (j * w) // out_w, int(np.ceil((j + 1) * w / out_w))
      out[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
  return out


@pytest.mark.parametrize('size,out', [((16, 16), (6, 6)), ((7, 5), (3, 3)),
                                      ((11, 13), (2, 3)), ((16, 16), (1, 1))])
def test_adaptive_avg_pool_matches_pytorch_bins(size, out):
  x = np.random.default_rng(0).standard_normal((2, *size, 3)).astype(np.float32)
  pooled = jax.jit(upernet.adaptive_avg_pool, static_argnums=1)(x, out)
  np.testing.assert_allclose(pooled, _torch_adaptive_avg_pool(x, *out),
                             rtol=1e-5, atol=1e-6)


def test_gelu_is_exact_erf():
  x = np.linspace(-5, 5, 101, dtype=np.float32)
  expected = 0.5 * x * (1 + special.erf(x / np.sqrt(2)))
  np.testing.assert_allclose(layers.gelu(x), expected, rtol=1e-6, atol=1e-6)
  assert np.max(np.abs(layers.gelu(x) - nn.gelu(x))) > 1e-4  # not the tanh form


def _torch_bilinear(x, out_h, out_w):
  """PyTorch `interpolate(bilinear, align_corners=False)` on NHWC, written out."""
  def axis_weights(n_in, n_out):
    src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), i0), 1 - (src - i0))
    np.add.at(m, (np.arange(n_out), i1), src - i0)
    return m
  return np.einsum('ph,qw,bhwc->bpqc', axis_weights(x.shape[1], out_h),
                   axis_weights(x.shape[2], out_w), x)


@pytest.mark.parametrize('out', [(7, 9), (2, 3), (5, 5)])
def test_resize_bilinear_matches_pytorch(out):
  x = np.random.default_rng(0).standard_normal((1, 4, 6, 2)).astype(np.float32)
  np.testing.assert_allclose(layers.resize_bilinear(x, out), _torch_bilinear(x, *out),
                             rtol=1e-5, atol=1e-5)


def test_drop_path_per_sample():
  x = jnp.ones((64, 3, 3, 2))
  drop = layers.DropPath(0.25)
  assert drop.apply({}, x, deterministic=True) is x
  y = drop.apply({}, x, deterministic=False, rngs={'dropout': jax.random.key(0)})
  y = np.asarray(y)
  per_sample = y.reshape(64, -1)
  assert np.all(per_sample == per_sample[:, :1])          # whole samples kept or dropped
  assert np.all(np.isclose(per_sample, 0.0) | np.isclose(per_sample, 1.0 / 0.75))
  assert 0 < np.sum(per_sample[:, 0] == 0) < 64
