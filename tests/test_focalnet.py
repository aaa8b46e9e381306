"""FocalNet-T / -B (LRF), its UperNet segmentors and its converter (docs/models.md section 9).

Full-size models are only traced (`jax.eval_shape`): their parameter counts are the
release's, written out below from the layer shapes. The test width runs for real
against the independent PyTorch reference (fanet_jax/pytorch/focalnet_reference.py):
one jit of the classifier (3 focal levels, conv_impl 'lax') and one of the
segmentor (2 levels, 'fast', a size not divisible by 32), features and logits to
1e-4. Then conversion both ways, the release's {'model': ...} files on the command
line, and the classifier checkpoint as `init_from` of the segmentor.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model_shapes
from fanet_jax import config as config_lib
from fanet_jax import models, pretrained, trainer
from fanet_jax.models import focalnet
from fanet_jax.pytorch import convert, names, state_dict

if os.environ.get('CI'):
  import torch  # CI installs torch: a missing torch must fail there, not skip.
else:
  torch = pytest.importorskip(
      'torch', reason='needs the test extra: pip install -r requirements-test.txt')
from fanet_jax.pytorch import focalnet_reference as fref  # noqa: E402  (needs torch)
from fanet_jax.pytorch import reference as ref  # noqa: E402

TOL = 1e-4
# The torch reference at the test width (its other defaults are the LRF models').
TEST = {k: focalnet.TEST[k] for k in ('embed_dim', 'depths', 'focal_levels')}


# ---- parameter counts written out from the layer shapes -------------------------

def _block_params(c, levels, window, ratio=4):
  kernels = sum((window + 2 * k) ** 2 for k in range(levels))     # 3, 5, 7 / 9, 11, 13
  return (2 * c                                             # norm1
          + (c + 1) * (2 * c + levels + 1)                  # f: q, ctx, L + 1 gates
          + kernels * c                                     # depthwise, no bias
          + 2 * (c * c + c)                                 # h (1x1 conv), proj
          + 2 * c                                           # norm2
          + (c + 1) * ratio * c + (ratio * c + 1) * c)      # fc1, fc2


def focalnet_params(embed_dim, depths, window=3, classes=1000, out_norms=False):
  dims = [embed_dim * 2 ** i for i in range(4)]
  n = (3 * 16 + 1) * dims[0] + 2 * dims[0]                  # patch_embed: 4x4 conv, LN
  for i, depth in enumerate(depths):
    n += depth * _block_params(dims[i], 3, window)
    if i < 3:                                               # downsample: 2x2 conv, LN
      n += (dims[i] * 4 + 1) * dims[i + 1] + 2 * dims[i + 1]
  n += sum(2 * d for d in dims) if out_norms else 0         # norm0..3
  return n + (2 * dims[-1] + (dims[-1] + 1) * classes if classes else 0)  # norm, head


# conv_impl 'lax': the same parameters, and XLA convolutions trace faster than the
# shifted multiplies of the depthwise kernels.
LAX = {'conv_impl': 'lax'}


def _count(name):
  # The converter's table is `jax.eval_shape` of the model's init (cached, so the
  # name tests below trace nothing again); counts per top-level subtree.
  counts = {}
  for e in convert.reference_table(name, LAX).entries:
    if e.collection == 'params':
      counts[e.path[0]] = counts.get(e.path[0], 0) + int(np.prod(e.shape))
  return counts


def test_classifier_counts_are_the_releases():
  # Paper Table 1 and the release's README: 28.6 M and 88.7 M.
  tiny, base = focalnet_params(96, (2, 2, 6, 2)), focalnet_params(128, (2, 2, 18, 2))
  assert (tiny, base) == (28_647_928, 88_749_768)
  assert (round(tiny / 1e6, 1), round(base / 1e6, 1)) == (28.6, 88.7)
  assert sum(_count('focalnet_tiny_lrf').values()) == tiny
  assert sum(_count('focalnet_base_lrf').values()) == base


def test_segmentor_counts():
  # Backbones: focal window 9 and the output norms; UPerHead 512, FCNHead 256, 5 classes.
  counts = _count('focalnet_tiny_lrf_upernet')
  assert counts['backbone'] == focalnet_params(96, (2, 2, 6, 2), 9, 0, True) == 29_152_080
  assert counts == {'backbone': 29_152_080, 'decode_head': 31_422_981,
                    'auxiliary_head': 886_533}
  # At ADE20K's 150 classes (two conv_seg layers wider): the release's README
  # gives 61 M (tiny) and 126 M (base; backbone 91,191,776) for these models.
  assert sum(counts.values()) + 145 * (512 + 1 + 256 + 1) == 61_573_244
  base = focalnet_params(128, (2, 2, 18, 2), 9, 0, True)
  assert base == 91_191_776
  assert base + 33_241_605 + 1_181_445 + 145 * (512 + 1 + 256 + 1) == 125_726_476


def test_torch_reference_names_are_the_tables():
  count = lambda m: sum(p.numel() for p in m.parameters())
  classifier = fref.FocalNet(**fref.TINY_LRF, num_classes=1000)
  assert count(classifier) == 28_647_928
  segmentor = fref.EncoderDecoder(**TEST, focal_windows=(5,) * 4, channels=16,
                                  aux_channels=8)
  for name, module in [('focalnet_tiny_lrf', classifier),
                       ('focalnet_test_upernet', segmentor)]:
    table = convert.reference_table(name, LAX)
    reference = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert sorted(table.reference_names()) == sorted(reference), name
    assert {e.name: e.torch_shape for e in table.entries} == {
        k: v for k, v in reference.items() if not k.endswith('num_batches_tracked')}
  assert {(e.collection,) + e.path for e in table.entries} == set(
      model_shapes.flat(model_shapes.shapes('focalnet_test_upernet')))
  assert 'layers.2.blocks.5.modulation.focal_layers.2.0.weight' in (
      convert.reference_table('focalnet_tiny_lrf', LAX).reference_names())


# ---- parity with the PyTorch reference at the test width ------------------------

def _numpy(module):
  return {k: v.numpy() for k, v in module.state_dict().items()}


def _nhwc(x):
  return np.asarray(x.detach().numpy()).transpose(0, 2, 3, 1)


def _features_and_output(model, variables, images):
  is_backbone = lambda m, method: isinstance(m, focalnet.FocalNet) and method == '__call__'

  @jax.jit
  def forward(variables, images):
    out, state = model.apply(variables, images, capture_intermediates=is_backbone,
                             mutable=['intermediates'])
    return state['intermediates']['backbone']['__call__'][0], out
  return forward(variables, jnp.asarray(_nhwc(images)))


@pytest.fixture(scope='module')
def torch_classifier():
  torch.manual_seed(0)
  return ref.randomize_(fref.FocalNet(**{**TEST, 'focal_levels': (3,) * 4},
                                      num_classes=10), seed=1)


LRF_TEST = dict(focal_levels=(3, 3, 3, 3), num_classes=10)


def test_classifier_matches_the_reference(torch_classifier):
  images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
  with torch.no_grad():
    expected_features = torch_classifier.forward_features(images)
    expected = torch_classifier(images).numpy()
  variables = convert.from_torch_state_dict('focalnet_test_classifier',
                                            _numpy(torch_classifier), model_kwargs=LRF_TEST)
  model = models.create('focalnet_test_classifier', conv_impl='lax', **LRF_TEST)
  features, logits = _features_and_output(model, variables, images)
  diffs = {k: float(np.abs(np.asarray(features[k]) - v.numpy()).max())
           for k, v in zip(('s4', 's8', 's16', 's32'), expected_features)}
  diffs['logits'] = float(np.abs(np.asarray(logits) - expected).max())
  print(f'classifier max abs differences: {diffs}')
  assert max(diffs.values()) < TOL, diffs


@pytest.fixture(scope='module')
def torch_segmentor():
  torch.manual_seed(3)
  return ref.randomize_(fref.EncoderDecoder(**TEST, focal_windows=(5,) * 4, channels=16,
                                            aux_channels=8), seed=4)


def test_segmentor_matches_the_reference(torch_segmentor):
  # 36x44: the patch embeddings pad bottom / right (stride-4 map 9x11, then 5x6, 3x3).
  images = torch.randn(1, 3, 36, 44, generator=torch.Generator().manual_seed(5))
  with torch.no_grad():
    expected_features = torch_segmentor.backbone.forward_features(images)
    expected = torch_segmentor(images)
  variables = convert.from_torch_state_dict('focalnet_test_upernet',
                                            _numpy(torch_segmentor))
  features, logits = _features_and_output(models.create('focalnet_test_upernet'),
                                          variables, images)
  assert [features[k].shape[1:3] for k in ('s4', 's8', 's16', 's32')] == [
      (9, 11), (5, 6), (3, 3), (2, 2)]
  diffs = {k: float(np.abs(np.asarray(features[k]) - v.numpy()).max())
           for k, v in zip(('s4', 's8', 's16', 's32'), expected_features)}
  diffs['logits'] = float(np.abs(np.asarray(logits) - _nhwc(expected)).max())
  print(f'segmentor max abs differences: {diffs}')
  assert logits.shape == (1, 36, 44, 5)
  assert max(diffs.values()) < TOL, diffs


def test_round_trip_is_exact(torch_classifier, torch_segmentor):
  for name, module, kw in [('focalnet_test_classifier', torch_classifier, LRF_TEST),
                           ('focalnet_test_upernet', torch_segmentor, {})]:
    state = _numpy(module)
    variables = convert.from_torch_state_dict(name, state, model_kwargs=kw)
    back = convert.to_torch_state_dict(name, variables, kw)
    assert back.keys() == state.keys(), name
    for k, v in back.items():
      if not k.endswith('num_batches_tracked'):       # written as 0
        np.testing.assert_array_equal(v, state[k], err_msg=k)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()})


# ---- release checkpoints on the command line; init_from ---------------------------

def _run(*argv) -> int:
  return convert.main([str(a) for a in argv])


def test_release_checkpoint_round_trip_and_init_from(tmp_path, capsys):
  classifier = ref.randomize_(fref.FocalNet(**TEST, num_classes=1000), seed=6)
  state = _numpy(classifier)
  # The release's files: {'model': state dict, ...} (classification/utils.py).
  torch.save({'model': classifier.state_dict(), 'epoch': 299, 'max_accuracy': 82.3},
             tmp_path / 'focalnet_test.pth')
  assert _run('--model', 'focalnet_test_classifier', '--input',
              tmp_path / 'focalnet_test.pth', '--output', tmp_path / 'cls') == 0
  loaded = pretrained.load_variables(str(tmp_path / 'cls'))
  assert jax.tree.all(jax.tree.map(
      np.array_equal, loaded, convert.from_torch_state_dict('focalnet_test_classifier',
                                                            state)))
  assert _run('--model', 'focalnet_test_classifier', '--input', tmp_path / 'cls',
              '--output', tmp_path / 'back.pth', '--to', 'torch') == 0
  back = state_dict.load_state_dict_file(str(tmp_path / 'back.pth'))
  assert back.keys() == state.keys()
  assert all(np.array_equal(back[k], v) for k, v in state.items())

  # Into the segmentor's backbone, as the release's segmentation loader reads it.
  capsys.readouterr()
  assert _run('--model', 'focalnet_test_backbone', '--input',
              tmp_path / 'focalnet_test.pth', '--output', tmp_path / 'bb') == 0
  err = capsys.readouterr().err
  assert 'does not use 4 key(s)' in err and 'head.weight' in err
  assert '8 output norm key(s) at their init' in err and 'norm3.bias' in err
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                       model_shapes.shapes('focalnet_test_upernet'))
  merged, shared = pretrained.merge(zeros, pretrained.load_variables(str(tmp_path / 'bb')))
  assert shared == ['backbone']
  bb = merged['params']['backbone']
  np.testing.assert_array_equal(bb['norm2']['scale'], np.ones(32))
  kernel = bb['layers_1_blocks_0']['modulation']['focal_layers_1']['kernel']
  assert kernel.shape == (7, 7, 1, 16)                 # window 5 here, 3 in the checkpoint
  np.testing.assert_array_equal(kernel[1:6, 1:6], state[
      'layers.1.blocks.0.modulation.focal_layers.1.0.weight'].transpose(2, 3, 1, 0))
  assert not kernel[0].any() and not kernel[:, 6].any()
  # The classifier's own backbone lacks the output norms: merging it is refused.
  with pytest.raises(pretrained.PretrainedError, match='norm0'):
    pretrained.merge(zeros, loaded)


def test_padded_focal_kernel_computes_the_same():
  rng = np.random.default_rng(7)
  x = rng.standard_normal((1, 4, 9, 9)).astype(np.float32)
  small = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
  large = names.pad_focal_kernel(small, (4, 1, 9, 9))
  conv = lambda k: torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(k),
                                              padding=k.shape[-1] // 2, groups=4)
  np.testing.assert_array_equal(conv(large).numpy(), conv(small).numpy())
  assert names.pad_focal_kernel(small, (4, 1, 4, 4)).shape == small.shape   # odd gap


# ---- experiments ---------------------------------------------------------------

@pytest.mark.parametrize('name,model', [
    ('zerowaste_focalnet_tiny', 'focalnet_tiny_lrf_upernet'),
    ('zerowaste_focalnet_base', 'focalnet_base_lrf_upernet'),
    ('imagenet_focalnet_tiny', 'focalnet_tiny_lrf'),
])
def test_experiments_build_their_model(name, model):
  config = config_lib.load_experiment(name)
  assert config.model == model
  built = trainer.build_model(config)
  head = built if 'imagenet' in name else built.decode_head
  assert head.num_classes == config.num_classes
