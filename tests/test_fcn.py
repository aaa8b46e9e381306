"""FCN-32s / -16s / -8s on VGG-16 and the torchvision VGG-16 converter (docs/models.md section 8).

Full-size models are only traced (`jax.eval_shape`); `fcn8s_test` runs for real on
small odd inputs. The torchvision state dict is random numpy arrays with
torchvision's names (no torch): at full size for the name table, at the test
widths for the values.
"""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fanet_jax import config as config_lib
from fanet_jax import models, trainer
from fanet_jax.models import fcn, layers
from fanet_jax.pytorch import convert

RNGS = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
CLASSES = 3


def _shapes(model, shape=(1, 32, 32, 1)):
  return jax.eval_shape(lambda: model.init(RNGS, jnp.zeros(shape)))


# ---- parameter counts written out from the layer shapes -------------------------

def _vgg16_features_params(in_channels, widths=(64, 128, 256, 512, 512),
                           depths=(2, 2, 3, 3, 3)):
  n, cin = 0, in_channels
  for width, depth in zip(widths, depths):
    for _ in range(depth):
      n += 9 * cin * width + width                     # 3x3 conv with bias
      cin = width
  return n


FC6 = 512 * 7 * 7 * 4096 + 4096                        # 102,764,544
FC7 = 4096 * 4096 + 4096                               # 16,781,312
SCORE_FR = 4096 * CLASSES + CLASSES                    # 12,291
SCORE_POOL4 = 512 * CLASSES + CLASSES                  # 1,539
SCORE_POOL3 = 256 * CLASSES + CLASSES                  # 771


def test_vgg16_arithmetic_matches_torchvision():
  # torchvision vgg16: 138,357,544 parameters; classifier.6 is 4096 * 1000 + 1000.
  assert _vgg16_features_params(3) == 14_714_688
  assert _vgg16_features_params(1) == 14_714_688 - 2 * 64 * 9
  assert 14_714_688 + FC6 + FC7 + 4096 * 1000 + 1000 == 138_357_544


@pytest.mark.parametrize('name,skips', [
    ('fcn32s_vgg16', 0),
    ('fcn16s_vgg16', SCORE_POOL4),
    ('fcn8s_vgg16', SCORE_POOL4 + SCORE_POOL3),
])
def test_full_size_parameter_counts(name, skips):
  expected = _vgg16_features_params(1) + FC6 + FC7 + SCORE_FR + skips
  shapes = _shapes(models.create(name))
  assert models.count_params(shapes) == expected
  assert 'batch_stats' not in shapes                   # VGG-16 has no BatchNorm
  assert expected == {'fcn32s_vgg16': 134_271_683, 'fcn16s_vgg16': 134_273_222,
                      'fcn8s_vgg16': 134_273_993}[name]
  params = shapes['params']
  assert params['backbone']['fc6']['kernel'].shape == (7, 7, 512, 4096)
  assert params['backbone']['features_0']['kernel'].shape == (3, 3, 1, 64)
  assert set(params['backbone']) == {'fc6', 'fc7'} | {
      f'features_{i}' for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}


# ---- the tiny model, run -------------------------------------------------------

def _random_variables(model, shape, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: jnp.asarray(rng.standard_normal(s.shape) / np.sqrt(
          np.prod(s.shape[:-1]) if len(s.shape) > 1 else 10), s.dtype),
      _shapes(model, shape))


@pytest.mark.parametrize('hw', [(48, 64), (50, 70)])
def test_logits_at_the_input_size(hw):
  model = models.create('fcn8s_test')
  shape = (2, *hw, 1)
  variables = _random_variables(model, shape)
  images = jnp.asarray(np.random.default_rng(1).standard_normal(shape), jnp.float32)
  logits = model.apply(variables, images)
  assert logits.shape == (2, *hw, CLASSES)
  train_logits, aux = model.apply(variables, images, train=True, rngs=RNGS)
  assert aux is None and train_logits.shape == logits.shape
  # Dropout 0.5 after fc6 and fc7 acts in training only.
  assert not np.allclose(train_logits, logits)


def test_skips_fuse_pool4_then_pool3():
  # FCN-8s = R_in(R_pool3(R_pool4(score_fr) + score_pool4) + score_pool3), each
  # score a 1x1 conv of its level, R a bilinear resize to that level's size.
  shape = (2, 48, 64, 1)
  model = models.create('fcn8s_test')
  variables = _random_variables(model, shape)
  images = jnp.asarray(np.random.default_rng(2).standard_normal(shape), jnp.float32)
  logits, state = model.apply(variables, images, capture_intermediates=True,
                              mutable=['intermediates'])
  inter, params = state['intermediates'], variables['params']
  levels = inter['backbone']['__call__'][0]

  def score(name, x):                                  # a 1x1 conv as a matmul
    return x @ params[name]['kernel'][0, 0] + params[name]['bias']

  for name, level in (('score_fr', 'fc7'), ('score_pool4', 'pool4'),
                      ('score_pool3', 'pool3')):
    np.testing.assert_allclose(inter[name]['__call__'][0], score(name, levels[level]),
                               rtol=1e-5, atol=1e-5)
  assert levels['pool3'].shape[1:3] == (6, 8) and levels['fc7'].shape[1:3] == (1, 2)
  x = inter['score_fr']['__call__'][0]
  for name in ('score_pool4', 'score_pool3'):
    skip = inter[name]['__call__'][0]
    x = layers.resize_bilinear(x, skip.shape[1:3]) + skip
  np.testing.assert_allclose(logits, layers.resize_bilinear(x, (48, 64)),
                             rtol=1e-5, atol=1e-5)
  # FCN-16s and FCN-32s share the tree less the skip score layers.
  for stride, dropped in ((16, {'score_pool3'}), (32, {'score_pool3', 'score_pool4'})):
    other = models.create('fcn8s_test', prediction_stride=stride)
    assert set(_shapes(other, shape)['params']) == set(params) - dropped


def test_feature_indices_are_torchvision_vgg16s():
  assert fcn.feature_indices((2, 2, 3, 3, 3)) == [
      [0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]


# ---- torchvision vgg16 -> the FCN encoder ---------------------------------------

def torchvision_vgg16_shapes(widths=(64, 128, 256, 512, 512), fc=4096) -> dict:
  """Name -> shape of torchvision's `vgg16().state_dict()` (at other widths)."""
  shapes, cin = {}, 3
  for width, indices in zip(widths, fcn.feature_indices((2, 2, 3, 3, 3))):
    for i in indices:
      shapes[f'features.{i}.weight'] = (width, cin, 3, 3)
      shapes[f'features.{i}.bias'] = (width,)
      cin = width
  shapes.update({'classifier.0.weight': (fc, cin * 7 * 7), 'classifier.0.bias': (fc,),
                 'classifier.3.weight': (fc, fc), 'classifier.3.bias': (fc,),
                 'classifier.6.weight': (1000, fc), 'classifier.6.bias': (1000,)})
  return shapes


def test_full_size_table_is_torchvisions():
  table = convert.reference_table('vgg16_torchvision')
  expected = torchvision_vgg16_shapes()
  del expected['classifier.6.weight'], expected['classifier.6.bias']
  # Our kernels in torch layout: the 1-channel stem, fc6 / fc7 as OIHW convs.
  expected.update({'features.0.weight': (64, 1, 3, 3),
                   'classifier.0.weight': (4096, 512, 7, 7),
                   'classifier.3.weight': (4096, 4096, 1, 1)})
  assert {e.name: e.torch_shape for e in table.entries} == expected


SMALL = dict(widths=fcn.TEST['widths'], fc_channels=fcn.TEST['fc_channels'])


@pytest.fixture(scope='module')
def small():
  rng = np.random.default_rng(0)
  state = {k: rng.standard_normal(s).astype(np.float32) for k, s in
           torchvision_vgg16_shapes(SMALL['widths'], SMALL['fc_channels']).items()}
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always', convert.ConvertWarning)
    variables = convert.from_torch_state_dict('vgg16_torchvision', state,
                                              model_kwargs=SMALL)
  messages = [str(w.message) for w in caught
              if issubclass(w.category, convert.ConvertWarning)]
  return state, variables, messages


def test_conversion_lands_every_leaf(small):
  state, variables, messages = small
  assert len(messages) == 1 and '2 key(s)' in messages[0]
  assert 'classifier.6.weight' in messages[0]
  assert set(variables['params']) == {'backbone'} and variables['batch_stats'] == {}
  vgg = variables['params']['backbone']
  np.testing.assert_allclose(
      vgg['features_0']['kernel'],
      state['features.0.weight'].sum(axis=1, keepdims=True).transpose(2, 3, 1, 0),
      rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(vgg['features_19']['kernel'],
                                state['features.19.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(vgg['features_28']['bias'], state['features.28.bias'])
  np.testing.assert_array_equal(vgg['fc7']['kernel'][0, 0],
                                state['classifier.3.weight'].T)
  np.testing.assert_array_equal(vgg['fc6']['bias'], state['classifier.0.bias'])


def test_fc6_conv_on_a_7x7_map_is_the_linear_layer(small):
  # torchvision: flatten pool5 (N, C, 7, 7) -> x @ W.T + b. Ours: a 7x7 conv, NHWC.
  state, variables, _ = small
  fc6 = variables['params']['backbone']['fc6']
  c = SMALL['widths'][-1]
  pool5 = np.random.default_rng(3).standard_normal((2, c, 7, 7)).astype(np.float32)
  linear = pool5.reshape(2, -1) @ state['classifier.0.weight'].T + state[
      'classifier.0.bias']
  conv = jax.lax.conv_general_dilated(
      jnp.asarray(pool5.transpose(0, 2, 3, 1)), fc6['kernel'], (1, 1), 'VALID',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision='highest') + fc6['bias']
  assert conv.shape == (2, 1, 1, SMALL['fc_channels'])
  np.testing.assert_allclose(conv[:, 0, 0], linear, rtol=1e-4, atol=1e-4)


def test_back_to_torchvision_layout(small):
  state, variables, _ = small
  back = convert.to_torch_state_dict('vgg16_torchvision', variables, SMALL)
  for name in ('classifier.0.weight', 'classifier.3.weight', 'features.7.weight'):
    np.testing.assert_array_equal(back[name], state[name])
  assert back['features.0.weight'].shape == (SMALL['widths'][0], 1, 3, 3)


def test_cli_accepts_vgg16_and_lists_missing_keys(tmp_path, capsys):
  path = tmp_path / 'partial.npz'
  np.savez(path, **{'features.0.bias': np.zeros(64, np.float32)})
  assert convert.main(['--model', 'vgg16_torchvision', '--input', str(path),
                       '--output', str(tmp_path / 'out')]) == 2
  err = capsys.readouterr().err
  assert '29 missing key(s)' in err and 'classifier.0.weight' in err


# ---- the experiment ------------------------------------------------------------

@pytest.mark.parametrize('n', [32, 16, 8])
def test_interseg_experiments_build_their_model(n):
  config = config_lib.load_experiment(f'interseg_fcn{n}s')
  assert config.model == f'fcn{n}s_vgg16' and config.contour_steps == 0
  model = trainer.build_model(config)
  assert isinstance(model, fcn.FCN) and model.prediction_stride == n
  assert model.num_classes == 3 and model.in_channels == 1
