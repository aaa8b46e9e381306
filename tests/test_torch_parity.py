"""Weight conversion PyTorch <-> Flax against an independent PyTorch reference.

`fanet_jax/pytorch/reference.py` is written from docs/models.md alone; with random weights and
random BatchNorm statistics, the converted Flax models must reproduce its backbone
features, classifier logits and segmentor logits to 1e-4 (float32, eval mode) at
224x224 and at 200x264 (not divisible by 32). Full-size forward passes are few: one jit
of the segmentor per size gives the backbone features too (`capture_intermediates`),
and the classifier runs at 224 only. Name coverage only traces shapes. Also here: the
command line on `.pth` files. All of it needs torch (the test extra); the torch-free
conversion tests are in tests/test_convert.py.
"""
import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model_shapes

if os.environ.get('CI'):
  import torch  # CI installs torch: a missing torch must fail there, not skip.
else:
  torch = pytest.importorskip(
      'torch', reason='needs the test extra: pip install -r requirements-test.txt')

from fanet_jax.pytorch import reference as ref  # noqa: E402  (needs torch)
from fanet_jax import models, pretrained  # noqa: E402
from fanet_jax.pytorch import convert, state_dict  # noqa: E402
from fanet_jax.models import fanet  # noqa: E402

TOL = 1e-4
TEST = dict(widths=fanet.TEST['widths'], depths=fanet.TEST['depths'])


def _numpy(module) -> dict:
  return {k: v.numpy() for k, v in module.state_dict().items()}


def _nhwc(x):
  return np.asarray(x.detach().numpy()).transpose(0, 2, 3, 1)


@pytest.fixture(scope='module')
def torch_segmentor():
  torch.manual_seed(0)
  return ref.randomize_(ref.EncoderDecoder(), seed=1)


@pytest.fixture(scope='module')
def torch_classifier():
  torch.manual_seed(1)
  return ref.randomize_(ref.FANet(num_classes=1000), seed=2)


def test_every_reference_name_maps_to_one_leaf(torch_segmentor, torch_classifier):
  # The reference itself has the sizes of docs/models.md section 6.
  count = lambda m: sum(p.numel() for p in m.parameters())
  assert count(torch_segmentor.backbone) == 35_951_328
  assert count(torch_classifier) == 36_721_864
  assert count(torch_segmentor) == 46_061_290
  for name, module in [('fanet_tiny', torch_segmentor.backbone),
                       ('fanet_tiny_classifier', torch_classifier),
                       ('fanet_tiny_upernet', torch_segmentor)]:
    table = convert.reference_table(name)
    reference = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert sorted(table.reference_names()) == sorted(reference), name
    assert len({e.name for e in table.entries}) == len(table.entries)
    assert {(e.collection,) + e.path for e in table.entries} == set(
        model_shapes.flat(model_shapes.shapes(name)))
    assert {e.name: e.torch_shape for e in table.entries} == {
        k: v for k, v in reference.items() if not k.endswith('num_batches_tracked')}


@pytest.fixture(scope='module')
def segmentor_forward(torch_segmentor):
  """(jitted (variables, images) -> (logits, backbone features), converted variables)."""
  model = models.create('fanet_tiny_upernet')
  is_backbone = lambda m, method: isinstance(m, fanet.FANet) and method == '__call__'

  @jax.jit
  def forward(variables, images):
    logits, state = model.apply(variables, images, capture_intermediates=is_backbone,
                                mutable=['intermediates'])
    return logits, state['intermediates']['backbone']['__call__'][0]
  return forward, convert.from_torch_state_dict('fanet_tiny_upernet',
                                                _numpy(torch_segmentor))


# Sizes that are not multiples of 32 (padding, odd resizes); the classifier test below
# runs at 224x224. Each size is a compile of the full FANet-tiny segmentor.
@pytest.mark.parametrize('height,width', [(200, 264)])
def test_segmentor_and_backbone_match_the_reference(torch_segmentor, segmentor_forward,
                                                    height, width):
  images = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(3))
  captured = {}
  hook = torch_segmentor.backbone.register_forward_hook(
      lambda module, inputs, outputs: captured.update(features=outputs))
  with torch.no_grad():
    expected = torch_segmentor(images)
  hook.remove()
  forward, variables = segmentor_forward
  logits, features = forward(variables, jnp.asarray(_nhwc(images)))
  diffs = {key: float(np.abs(np.asarray(features[key]) - _nhwc(value)).max())
           for key, value in zip(('s4', 's8', 's16', 's32'), captured['features'])}
  diffs['logits'] = float(np.abs(np.asarray(logits) - _nhwc(expected)).max())
  print(f'{height}x{width} max abs differences: {diffs}')
  assert logits.shape == (1, height, width, 5)
  assert max(diffs.values()) < TOL, diffs


def test_classifier_matches_the_reference(torch_classifier):
  images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
  with torch.no_grad():
    expected = torch_classifier(images).numpy()
  model = models.create('fanet_tiny_classifier')
  variables = convert.from_torch_state_dict('fanet_tiny_classifier',
                                            _numpy(torch_classifier))
  logits = np.asarray(jax.jit(model.apply)(variables, jnp.asarray(_nhwc(images))))
  diff = float(np.abs(logits - expected).max())
  print(f'classifier max abs difference: {diff}')
  assert diff < TOL


@pytest.fixture(scope='module')
def small_segmentor():
  torch.manual_seed(2)
  return ref.randomize_(ref.EncoderDecoder(**TEST, channels=16), seed=3)


def test_errors_list_every_offending_key(small_segmentor):
  state = _numpy(small_segmentor)
  for key in ('backbone.stages.0.0.mlp.fc1.bias', 'decode_head.conv_seg.weight'):
    del state[key]
  state['backbone.downsample_layers.0.weight'] = np.zeros((8, 3, 3, 3), np.float32)
  state['decode_head.bottleneck.bn.running_var'] = np.ones(3, np.float32)
  state['decode_head.extra.weight'] = np.zeros(2)
  with pytest.raises(convert.ConvertError) as error:
    convert.from_torch_state_dict('fanet_test_upernet', state)
  for text in ('2 missing key(s)', 'backbone.stages.0.0.mlp.fc1.bias',
               'decode_head.conv_seg.weight', '2 shape mismatch(es)',
               'backbone.downsample_layers.0.weight: model (8, 3, 5, 5), checkpoint '
               '(8, 3, 3, 3)', 'decode_head.bottleneck.bn.running_var'):
    assert text in str(error.value)
  with pytest.warns(convert.ConvertWarning) as record:
    partial = convert.from_torch_state_dict('fanet_test_upernet', {
        k: v for k, v in _numpy(small_segmentor).items() if 'conv_seg' not in k},
        strict=False)
  assert 'auxiliary_head.conv_seg.bias' in str(record[0].message)
  assert 'conv_seg' not in partial['params']['decode_head']
  with pytest.raises(convert.ConvertError, match='not in the model'):
    convert.to_torch_state_dict('fanet_test_upernet', {'params': {
        **partial['params'], 'extra': {'kernel': np.zeros(1)}}})


def test_backbone_from_a_classifier_checkpoint_warns_about_its_head():
  classifier = ref.FANet(**TEST, num_classes=10)
  with pytest.warns(convert.ConvertWarning) as record:
    variables = convert.from_torch_state_dict('fanet_test', _numpy(classifier))
  message = str(record[0].message)
  assert '4 key(s)' in message
  assert all(k in message for k in ('norm.weight', 'norm.bias', 'head.weight',
                                    'head.bias'))
  assert 'downsample_layers_0' in variables['params']
  variables = convert.from_torch_state_dict('fanet_test_classifier', _numpy(classifier),
                                            model_kwargs={'num_classes': 10})
  assert variables['params']['head']['kernel'].shape == (64, 10)


def _run(*argv) -> int:
  return convert.main([str(a) for a in argv])


def test_cli_torch_to_flax_and_back(small_segmentor, tmp_path, capsys):
  state = _numpy(small_segmentor)
  # A training checkpoint as mmseg writes it, from a DataParallel model.
  torch.save({'meta': {'iter': 40000, 'CLASSES': ('a', 'b')},
              'state_dict': {f'module.{k}': v for k, v in
                             small_segmentor.state_dict().items()}},
             tmp_path / 'seg.pth')
  assert _run('--model', 'fanet_test_upernet', '--input', tmp_path / 'seg.pth',
              '--output', tmp_path / 'flax') == 0
  assert 'fanet_test_upernet' in capsys.readouterr().out
  loaded = pretrained.load_variables(str(tmp_path / 'flax'))
  expected = convert.from_torch_state_dict('fanet_test_upernet', state)
  assert jax.tree.all(jax.tree.map(np.array_equal, loaded, expected))
  for ext in ('.pth', '.safetensors', '.npz'):
    out = tmp_path / f'back{ext}'
    assert _run('--model', 'fanet_test_upernet', '--input', tmp_path / 'flax',
                '--output', out, '--to', 'torch') == 0
    back = state_dict.load_state_dict_file(str(out))
    assert back.keys() == state.keys(), ext
    for k, v in back.items():
      if k.endswith('num_batches_tracked'):
        assert v == 0 and v.dtype == np.int64
      else:
        assert np.array_equal(v, state[k]) and v.dtype == state[k].dtype, (ext, k)
  # What we write loads into the reference.
  fresh = ref.EncoderDecoder(**TEST, channels=16)
  fresh.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)


@pytest.mark.parametrize('ext', ['.npz', '.safetensors'])
def test_cli_backbone_from_arrays_merges_into_a_segmentor(ext, tmp_path, capsys):
  classifier = ref.randomize_(ref.FANet(**TEST, num_classes=10), seed=4)
  state = _numpy(classifier)
  path = str(tmp_path / f'classifier{ext}')
  if ext == '.npz':
    np.savez(path, **state)
  else:
    from safetensors.numpy import save_file
    save_file(state, path)
  assert _run('--model', 'fanet_test', '--input', path, '--output', tmp_path / 'bb') == 0
  assert 'warning: fanet_test does not use 4 key(s)' in capsys.readouterr().err
  shapes = model_shapes.shapes('fanet_test_upernet')
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  merged, loaded = pretrained.merge(zeros, pretrained.load_variables(str(tmp_path / 'bb')))
  assert loaded == ['backbone']
  np.testing.assert_array_equal(
      merged['params']['backbone']['stages_3_0']['attn']['scm']['ctx_conv']['kernel'],
      state['stages.3.0.attn.ctx_conv.weight'].transpose(2, 3, 1, 0))


def test_converted_imagenet_backbone_fits_the_full_segmentor(torch_classifier):
  variables = convert.from_torch_state_dict(
      'fanet_tiny', {k: v for k, v in _numpy(torch_classifier).items()
                     if not k.startswith(('norm.', 'head.'))})
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                       model_shapes.shapes('fanet_tiny_upernet'))
  merged, loaded = pretrained.merge(zeros, variables)
  assert loaded == ['backbone']
  np.testing.assert_array_equal(merged['params']['backbone']['stages_2_7']['mlp']['fc1'][
      'bias'], torch_classifier.state_dict()['stages.2.7.mlp.fc1.bias'].numpy())


def test_torch_files_with_python_objects_need_trust_pickle(tmp_path):
  # Torch files that hold more than tensors need an explicit --trust-pickle.
  torch.save({'args': argparse.Namespace(lr=0.1), 'state_dict': {'w': torch.ones(1)}},
             tmp_path / 'args.pth.tar')
  with pytest.raises(convert.ConvertError, match='--trust-pickle'):
    state_dict.load_state_dict_file(str(tmp_path / 'args.pth.tar'))
  assert state_dict.load_state_dict_file(str(tmp_path / 'args.pth.tar'),
                                         trust_pickle=True)['w'] == 1
