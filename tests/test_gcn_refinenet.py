"""GCN (Large Kernel Matters) and RefineNet on ResNet-50 (docs/models.md section 10).

Full-size models are only traced (`jax.eval_shape`); the `_test` variants are traced
at two sizes not divisible by 32 and run once each. Each paper block is checked
against its formula written with `lax` / numpy on the block's own parameters, and
each decoder against its blocks chained by hand.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import runs
from fanet_jax import config as config_lib
from fanet_jax import export, models, pretrained, trainer
from fanet_jax.models import gcn, layers, refinenet
from fanet_jax.pytorch import convert

RNGS = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
CLASSES = 3
DN = ('NHWC', 'HWIO', 'NHWC')


def _conv(x, p, pad):
  """A stride-1 conv with `p`'s kernel (and bias, if any) and symmetric padding."""
  kh, kw = p['kernel'].shape[:2]
  y = jax.lax.conv_general_dilated(x, p['kernel'], (1, 1), ((pad * (kh > 1),) * 2,
                                                             (pad * (kw > 1),) * 2),
                                   dimension_numbers=DN, precision='highest')
  return y + p['bias'] if 'bias' in p else y


def _init(module, *inputs, seed=0):
  """The module's params, biases made random (flax starts them at zero)."""
  params = module.init(jax.random.key(seed), *inputs)['params']
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda path, v: jnp.asarray(rng.normal(size=v.shape), v.dtype)
      if path[-1].key == 'bias' else v, params)


def _normal(shape, seed=1):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


# ---- parameter counts written out from the layer shapes -------------------------

RESNET50_DEPTH = 23_508_032 - 2 * 64 * 49     # torchvision resnet50 less fc, 1-ch stem
LAYER_CHANNELS = (256, 512, 1024, 2048)       # res-2 .. res-5


def _gcn_params(k=9, c=CLASSES):
  # Per GCN module: k x 1 and 1 x k from cin to c, then 1 x k and k x 1 from c to c.
  gcns = sum(2 * (k * cin * c + c + k * c * c + c) for cin in LAYER_CHANNELS)
  brs = 9 * 2 * (9 * c * c + c)               # 4 on levels, 3 after sums, 2 on top
  deconvs = 5 * 4 * 4 * c * c                 # 3 onto the levels, 2 to full size, no bias
  return RESNET50_DEPTH + gcns + brs + deconvs


def _refinenet_params(widths=(256, 256, 256, 512), crp=2, c=CLASSES):
  rcu = lambda w: 9 * w * w + w + 9 * w * w    # conv_0 with bias, conv_1 without
  n = sum(9 * cin * w for cin, w in zip(LAYER_CHANNELS, widths))   # reduce_s
  for s in range(4):
    w = widths[s]
    n += 2 * rcu(w) + crp * 9 * w * w + rcu(w)  # adaptive RCUs, pooling, output RCU
    if s < 3:                                   # the coarser block's output path
      coarse = widths[s + 1]
      n += 2 * rcu(coarse) + 9 * coarse * w + 9 * w * w          # its RCUs, fusion
  n += 2 * rcu(widths[0]) + 9 * widths[0] * c + c                # final RCUs, conv_seg
  return RESNET50_DEPTH + n


@functools.cache
def _full_size(name):
  model = models.create(name)
  return jax.eval_shape(lambda: model.init(RNGS, jnp.zeros((1, 64, 64, 1))))


def test_full_size_parameter_counts():
  gcn_vars, rn_vars = _full_size('gcn_r50'), _full_size('refinenet_r50')
  assert models.count_params(gcn_vars) == _gcn_params() == 23_712_048
  assert models.count_params(rn_vars) == _refinenet_params() == 90_755_011
  # 4 GCNs 208,056, 9 BRs 1,512, 5 deconvs 720; RefineNet-4 is 18,875,904.
  assert _gcn_params() - RESNET50_DEPTH == 208_056 + 1_512 + 720
  assert models.count_params(rn_vars['params']['refinenet_4']) == 18_875_904
  assert gcn_vars['params']['gcn_4']['left_0']['kernel'].shape == (9, 1, 2048, 3)
  assert rn_vars['params']['reduce_4']['kernel'].shape == (3, 3, 2048, 512)


@pytest.mark.parametrize('name', ['gcn_r50', 'refinenet_r50'])
def test_torchvision_resnet50_conversion_fits_the_backbone(name):
  # `resnet50_torchvision` fills dense_attention_seg_r50's backbone; the same leaves.
  table = convert.reference_table('resnet50_torchvision')
  source = {(e.collection,) + e.path: np.zeros(e.shape, e.dtype) for e in table.entries}
  variables = _full_size(name)
  ours = {k: v.shape for c in ('params', 'batch_stats')
          for k, v in traverse_util.flatten_dict({c: dict(variables[c])}).items()
          if k[1] == 'backbone'}
  assert ours == {k: v.shape for k, v in source.items()}
  loaded = traverse_util.unflatten_dict(source)
  merged, shared = pretrained.merge(dict(variables), loaded)
  assert shared == ['backbone'] and not merged['params']['backbone']['conv1'][
      'kernel'].any()


# ---- the test variants: shapes traced, one run each -------------------------------



@pytest.mark.parametrize('name', ['gcn_test', 'refinenet_test'])
def test_logits_at_the_input_size(name):
  model = models.create(name)
  variables = jax.eval_shape(lambda: model.init(RNGS, jnp.zeros((1, 32, 32, 1))))
  for hw in ((40, 56), (48, 64)):    # stride 32: 2 x 2 at both; stride 16: 3 x 4 at both
    images = jax.ShapeDtypeStruct((2, *hw, 1), jnp.float32)
    logits = jax.eval_shape(model.apply, variables, images)
    (train_logits, aux), state = jax.eval_shape(functools.partial(
        model.apply, train=True, rngs=RNGS, mutable=['batch_stats']), variables, images)
    assert logits.shape == train_logits.shape == (2, *hw, CLASSES) and aux is None
    assert set(state) == {'batch_stats'}


def _run(name, hw=(40, 56)):
  """One jitted eval run of a test variant: (logits, params, intermediates, out)."""
  model = models.create(name)
  images = _normal((1, *hw, 1))
  variables = runs.random_variables(model, images.shape[-1])
  logits, state = jax.jit(functools.partial(
      model.apply, capture_intermediates=True, mutable=['intermediates']))(
          variables, images)
  assert logits.shape == (1, *hw, CLASSES) and np.all(np.isfinite(logits))
  out = lambda tree: tree['__call__'][0]
  return logits, variables['params'], state['intermediates'], out


def test_gcn_decoder_follows_fig2():
  # 40 x 56: levels 10 x 14, 5 x 7, 3 x 4, 2 x 2; two deconvolved maps miss their
  # level by a pixel (4 x 4 for 3 x 4, 6 x 8 for 5 x 7) and are resized to it.
  logits, params, inter, out = _run('gcn_test')

  @jax.jit                                       # one program: faster than op by op
  def decode(params, levels):
    apply = lambda module, name, x: module.apply({'params': params[name]}, x)
    x = levels[4]
    for s in (3, 2, 1):
      up = layers.resize_bilinear(apply(gcn.deconv(CLASSES), f'deconv_{s + 1}', x),
                                  levels[s].shape[1:3])
      x = apply(gcn.BoundaryRefinement(), f'fuse_br_{s}', up + levels[s])
    for i in (1, 2):
      x = apply(gcn.BoundaryRefinement(), f'up_br_{i}',
                apply(gcn.deconv(CLASSES), f'up_deconv_{i}', x))
    return x
  levels = {s: out(inter[f'br_{s}']) for s in range(1, 5)}
  np.testing.assert_allclose(logits, decode(params, levels), rtol=1e-4, atol=1e-4)


def test_refinenet_cascade():
  # RefineNet-4 on layer4 alone; RefineNet-s on [layer s, RefineNet-(s+1)].
  logits, params, inter, out = _run('refinenet_test')

  @jax.jit
  def decode(params, levels):
    x, blocks = None, {}
    for s in (4, 3, 2, 1):
      x = blocks[s] = refinenet.RefineNetBlock().apply(
          {'params': params[f'refinenet_{s}']}, [levels[s]] if x is None else [levels[s], x])
    for j in (0, 1):
      x = refinenet.RCU().apply({'params': params[f'final_{j}']}, x)
    return blocks, layers.resize_bilinear(_conv(x, params['conv_seg'], 1), (40, 56))
  blocks, expected = decode(params, {s: out(inter[f'reduce_{s}']) for s in range(1, 5)})
  for s in (4, 3, 2, 1):
    np.testing.assert_allclose(blocks[s], out(inter[f'refinenet_{s}']),
                               rtol=1e-4, atol=1e-4)
  assert blocks[1].shape[1:] == (10, 14, 8)
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_factory_and_experiments():
  assert {'gcn_r50', 'gcn_test', 'refinenet_r50', 'refinenet_test'} <= set(
      models.available())
  assert models.create('gcn_r50', kernel_size=15).kernel_size == 15
  assert models.create('refinenet_test').channels == (8, 8, 8, 16)
  for experiment, cls in (('interseg_gcn', gcn.GlobalConvNet),
                          ('interseg_refinenet', refinenet.RefineNet)):
    config = config_lib.load_experiment(experiment)
    model = trainer.build_model(config)
    assert isinstance(model, cls) and config.contour_steps == 0
    assert (model.num_classes, model.in_channels) == (3, 1)
    assert tuple(model.stage_sizes) == (3, 4, 6, 3)


# ---- the paper blocks against their formulas ---------------------------------------

def test_gcn_module_is_two_separable_branches():
  x = _normal((2, 11, 13, 6))
  module = gcn.GCN(features=4, kernel_size=5)
  p = _init(module, x)
  left = _conv(_conv(x, p['left_0'], 2), p['left_1'], 2)
  right = _conv(_conv(x, p['right_0'], 2), p['right_1'], 2)
  np.testing.assert_allclose(module.apply({'params': p}, x), left + right,
                             rtol=1e-5, atol=1e-5)
  # Without biases it is one 5 x 5 conv whose kernel is a sum of separable ones.
  p = {k: dict(v, bias=jnp.zeros_like(v['bias'])) for k, v in p.items()}
  kernel = (jnp.einsum('aim,bmo->abio', p['left_0']['kernel'][:, 0],
                       p['left_1']['kernel'][0]) +
            jnp.einsum('bim,amo->abio', p['right_0']['kernel'][0],
                       p['right_1']['kernel'][:, 0]))
  np.testing.assert_allclose(module.apply({'params': p}, x),
                             _conv(x, {'kernel': kernel}, 2), rtol=1e-5, atol=1e-5)


def test_boundary_refinement_is_a_residual():
  x = _normal((2, 7, 9, 3))
  module = gcn.BoundaryRefinement()
  p = _init(module, x)
  expected = x + _conv(jax.nn.relu(_conv(x, p['conv_0'], 1)), p['conv_1'], 1)
  np.testing.assert_allclose(module.apply({'params': p}, x), expected,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('impl', ['parity', 'lax'])
def test_bilinear_deconv_is_a_x2_resize_inside_the_border(impl):
  x = _normal((1, 5, 6, 3))
  module = gcn.deconv(3, impl)
  y = module.apply(module.init(jax.random.key(0), x), x)
  assert y.shape == (1, 10, 12, 3)
  np.testing.assert_allclose(y[:, 1:-1, 1:-1], layers.resize_bilinear(x, (10, 12))[
      :, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)


def test_rcu_and_chained_residual_pooling():
  x = _normal((2, 9, 7, 4))
  rcu = refinenet.RCU()
  p = _init(rcu, x)
  assert 'bias' not in p['conv_1']
  expected = x + _conv(jax.nn.relu(_conv(jax.nn.relu(x), p['conv_0'], 1)),
                       p['conv_1'], 1)
  np.testing.assert_allclose(rcu.apply({'params': p}, x), expected, rtol=1e-5, atol=1e-5)

  crp = refinenet.ChainedResidualPooling(blocks=3)
  p = jax.tree.map(lambda v: v * 50, _init(crp, x))          # make the sum visible

  def pool(a):                                               # 5x5, stride 1, -inf pad
    a = np.pad(np.asarray(a), ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(a, (5, 5), axis=(1, 2))
    return windows.max(axis=(-2, -1))

  total = top = np.maximum(np.asarray(x), 0)
  for i in range(3):
    top = np.asarray(_conv(jnp.asarray(pool(top)), p[f'convs_{i}'], 1))
    total = total + top
  np.testing.assert_allclose(crp.apply({'params': p}, x), total, rtol=1e-5, atol=1e-4)
  # The ONNX export's max pool (edge-repeating slices) handles the stride-1 pool.
  np.testing.assert_array_equal(
      export._max_pool(x, (1, 5, 5, 1), (1,) * 4, ((0, 0), (2, 2), (2, 2), (0, 0)),
                       (1,) * 4, (1,) * 4), refinenet.max_pool_5x5(x))


def test_multi_resolution_fusion():
  fine, coarse = _normal((2, 8, 10, 4), 2), _normal((2, 4, 5, 6), 3)
  fusion = refinenet.MultiResolutionFusion()
  p = fusion.init(jax.random.key(0), [fine, coarse])['params']
  up = jax.image.resize(_conv(coarse, p['convs_1'], 1), (2, 8, 10, 4), 'linear',
                        antialias=False)
  np.testing.assert_allclose(fusion.apply({'params': p}, [fine, coarse]),
                             _conv(fine, p['convs_0'], 1) + up, rtol=1e-5, atol=1e-5)
  assert fusion.apply({}, [fine]) is fine                    # one input: unchanged
