"""torchvision ImageNet ResNet-50 -> the depth models' encoder; ResNet-101 -> the RGB one.

torchvision is not needed: the state dict is built from torchvision's architecture
(bottleneck widths 64/128/256/512, expansion 4, blocks 3/4/6/3) with random arrays.
"""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from fanet_jax import models, pretrained
from fanet_jax.pytorch import convert

BLOCKS = (3, 4, 6, 3)
WIDTHS = (64, 128, 256, 512)
EXPANSION = 4


def _bn(prefix: str, channels: int) -> dict:
  return {f'{prefix}.weight': (channels,), f'{prefix}.bias': (channels,),
          f'{prefix}.running_mean': (channels,), f'{prefix}.running_var': (channels,),
          f'{prefix}.num_batches_tracked': ()}


def torchvision_resnet50_shapes(stage_blocks: tuple = BLOCKS) -> dict:
  """Name -> shape of torchvision's `resnet50().state_dict()` (`resnet101()`'s with
  blocks 3/4/23/3)."""
  shapes = {'conv1.weight': (64, 3, 7, 7), **_bn('bn1', 64)}
  inplanes = 64
  for s, (blocks, width) in enumerate(zip(stage_blocks, WIDTHS)):
    for b in range(blocks):
      p = f'layer{s + 1}.{b}'
      shapes[f'{p}.conv1.weight'] = (width, inplanes, 1, 1)
      shapes.update(_bn(f'{p}.bn1', width))
      shapes[f'{p}.conv2.weight'] = (width, width, 3, 3)
      shapes.update(_bn(f'{p}.bn2', width))
      shapes[f'{p}.conv3.weight'] = (width * EXPANSION, width, 1, 1)
      shapes.update(_bn(f'{p}.bn3', width * EXPANSION))
      if b == 0:
        shapes[f'{p}.downsample.0.weight'] = (width * EXPANSION, inplanes, 1, 1)
        shapes.update(_bn(f'{p}.downsample.1', width * EXPANSION))
      inplanes = width * EXPANSION
  shapes['fc.weight'] = (1000, 2048)
  shapes['fc.bias'] = (1000,)
  return shapes


def _random_state_dict(shapes: dict) -> dict:
  rng = np.random.default_rng(0)
  return {k: (np.array(7, np.int64) if k.endswith('num_batches_tracked') else
              rng.standard_normal(s).astype(np.float32)) for k, s in shapes.items()}


@pytest.fixture(scope='module')
def state_dict():
  return _random_state_dict(torchvision_resnet50_shapes())


@pytest.fixture(scope='module')
def converted(state_dict):
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always', convert.ConvertWarning)
    variables = convert.from_torch_state_dict('resnet50_torchvision', state_dict)
  return variables, [str(w.message) for w in caught
                     if issubclass(w.category, convert.ConvertWarning)]


def test_every_key_maps_and_only_fc_is_unused(state_dict, converted):
  variables, messages = converted
  assert len(messages) == 1 and '2 key(s)' in messages[0]
  assert 'fc.weight' in messages[0] and 'fc.bias' in messages[0]
  table = convert.reference_table('resnet50_torchvision')
  assert set(table.reference_names()) == set(state_dict) - {'fc.weight', 'fc.bias'}
  assert set(variables['params']) == {'backbone'}
  assert set(variables['batch_stats']) == {'backbone'}
  n = sum(np.size(v) for k, v in state_dict.items()
          if k.endswith(('weight', 'bias')) and not k.startswith('fc.'))
  # ResNet-50 without fc: 23,508,032 parameters, less 2 * 64 * 49 for the 1-ch stem.
  assert models.count_params(variables) == n - 2 * 64 * 49 == 23_501_760


def test_stem_is_the_channel_sum_and_kernels_are_hwio(state_dict, converted):
  params = converted[0]['params']['backbone']
  stem = params['conv1']['kernel']
  assert stem.shape == (7, 7, 1, 64)
  np.testing.assert_allclose(
      stem, state_dict['conv1.weight'].sum(axis=1, keepdims=True).transpose(2, 3, 1, 0),
      rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(params['layer3_4']['conv2']['kernel'],
                                state_dict['layer3.4.conv2.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params['layer2_0']['downsample_0']['kernel'],
                                state_dict['layer2.0.downsample.0.weight'].transpose(
                                    2, 3, 1, 0))
  np.testing.assert_array_equal(params['layer4_2']['bn3']['scale'],
                                state_dict['layer4.2.bn3.weight'])
  np.testing.assert_array_equal(params['bn1']['bias'], state_dict['bn1.bias'])


def test_bn_statistics_land_in_batch_stats(state_dict, converted):
  stats = converted[0]['batch_stats']['backbone']
  np.testing.assert_array_equal(stats['bn1']['mean'], state_dict['bn1.running_mean'])
  np.testing.assert_array_equal(stats['layer1_0']['downsample_1']['var'],
                                state_dict['layer1.0.downsample.1.running_var'])
  flat = traverse_util.flatten_dict(stats)
  assert {k[-1] for k in flat} == {'mean', 'var'}


@pytest.mark.parametrize('target', ['dense_attention_seg_r50', 'deeplabv3plus_r50'])
def test_merge_copies_exactly_the_backbone(converted, target):
  model = models.create(target)
  shapes = jax.eval_shape(lambda: model.init(
      {'params': jax.random.key(0), 'dropout': jax.random.key(1)},
      jnp.zeros((1, 64, 64, 1)), train=False))
  rng = np.random.default_rng(1)
  fresh = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype),
                       {c: dict(shapes[c]) for c in pretrained.COLLECTIONS})
  merged, shared = pretrained.merge(fresh, converted[0])
  assert shared == ['backbone']
  for c in pretrained.COLLECTIONS:
    assert set(merged[c]) == set(fresh[c])
    for name in fresh[c]:
      source = converted[0][c]['backbone'] if name == 'backbone' else fresh[c][name]
      jax.tree.map(np.testing.assert_array_equal, merged[c][name], source)


def test_stem_response_of_a_grey_depth_map_is_the_rgb_one(state_dict, converted):
  # A depth map d seen as the grey image (d, d, d): same first-layer response.
  depth = np.random.default_rng(2).standard_normal((1, 32, 32, 1)).astype(np.float32)
  kernel = converted[0]['params']['backbone']['conv1']['kernel']
  conv = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
      x, k, (2, 2), ((3, 3), (3, 3)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      precision='highest')
  ours = conv(jnp.asarray(depth), kernel)
  rgb = conv(jnp.asarray(np.repeat(depth, 3, axis=-1)),
             state_dict['conv1.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_allclose(ours, rgb, rtol=1e-4, atol=1e-4)


def test_errors_list_every_key(state_dict):
  broken = dict(state_dict)
  del broken['layer1.0.conv1.weight'], broken['layer4.2.bn3.running_var']
  broken['layer2.1.conv2.weight'] = np.zeros((128, 128, 1, 1), np.float32)
  with pytest.raises(convert.ConvertError) as info:
    convert.from_torch_state_dict('resnet50', broken)
  message = str(info.value)
  assert '2 missing key(s)' in message and '1 shape mismatch(es)' in message
  for key in ('layer1.0.conv1.weight', 'layer4.2.bn3.running_var',
              'layer2.1.conv2.weight'):
    assert key in message


def test_cli(state_dict, tmp_path, capsys):
  path = tmp_path / 'resnet50.npz'
  np.savez(path, **state_dict)
  out = tmp_path / 'encoder'
  assert convert.main(['--model', 'resnet50_torchvision', '--input', str(path),
                       '--output', str(out)]) == 0
  captured = capsys.readouterr()
  assert 'Wrote 23,501,760 parameters of resnet50_torchvision' in captured.out
  assert 'fc.weight' in captured.err
  loaded = pretrained.load_variables(str(out))
  np.testing.assert_array_equal(
      loaded['params']['backbone']['layer3_2']['conv1']['kernel'],
      state_dict['layer3.2.conv1.weight'].transpose(2, 3, 1, 0))


def test_resnet101_fills_the_rgb_deeplab_backbone_unchanged():
  state_dict = _random_state_dict(torchvision_resnet50_shapes((3, 4, 23, 3)))
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', convert.ConvertWarning)   # fc, as for ResNet-50
    variables = convert.from_torch_state_dict('resnet101_torchvision_rgb', state_dict)
  params = variables['params']['backbone']
  # torchvision resnet101 without fc: 44,549,160 - 2,049,000; the stem stays RGB.
  assert models.count_params(variables) == 42_500_160
  np.testing.assert_array_equal(params['conv1']['kernel'],
                                state_dict['conv1.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params['layer3_22']['conv3']['kernel'],
                                state_dict['layer3.22.conv3.weight'].transpose(2, 3, 1, 0))
  model = models.create('deeplabv3plus_r101_rgb', num_classes=5)
  shapes = jax.eval_shape(lambda: model.init(
      {'params': jax.random.key(0), 'dropout': jax.random.key(1)},
      jnp.zeros((1, 64, 64, 3)), train=False))
  fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                       {c: dict(shapes[c]) for c in pretrained.COLLECTIONS})
  merged, shared = pretrained.merge(fresh, variables)
  assert shared == ['backbone']
  jax.tree.map(np.testing.assert_array_equal, merged['params']['backbone'], params)
