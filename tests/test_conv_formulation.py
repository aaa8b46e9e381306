"""The fast conv formulations equal the plain XLA ones (docs/performance.md, section 3).

layers.DepthwiseConv ('shifted' vs 'lax'), layers.GroupedConv ('matmul' vs 'lax'),
the dense convs of `fast_conv_general_dilated` (1x1 as matmuls with a written-out
kernel gradient, 3x3 by Winograd F(4x4, 3x3)), the conv of an upsampled map at the
map's resolution, the custom-VJP GELU and LayerNorm and the integer-factor bilinear
upsampling must own the same parameters and give the same outputs and gradients to
float32 round-off (1e-4 relative), so one checkpoint serves either; a whole backbone
and a whole segmentor must not care which is used.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

from fanet_jax import models
from fanet_jax.models import fanet, layers, upernet
from fanet_jax.models.ops import fast_ops, upsampling, winograd


def _shapes(tree):
  return jax.tree.map(lambda a: a.shape, tree)


def _assert_same_shapes(variables, module, x):
  assert _shapes(variables) == _shapes(jax.eval_shape(module.init, jax.random.key(1), x))


def _random_variables(model, x, seed=0, **kwargs):
  """`model`'s variables from numpy: a jitted init compiles slowly (threefry).

  BatchNorm variances are drawn positive; `kwargs` go to `init` (e.g. train=True).
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: model.init(
      {'params': jax.random.key(0), 'dropout': jax.random.key(1)}, x, **kwargs))

  def fill(path, s):
    value = 0.2 * rng.standard_normal(s.shape)
    if path[-1].key == 'var':
      value = 1.0 + np.abs(value)
    return jnp.asarray(value, s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _assert_same_outputs_and_grads(module_a, module_b, x, variables):
  """Same variables through both modules: same outputs, input and param gradients."""
  def outputs_and_grads(v, inp):
    results = []
    for module in (module_a, module_b):
      loss = lambda v, inp: jnp.sum(jnp.sin(module.apply(v, inp)))
      results.append((module.apply(v, inp), jax.grad(loss, argnums=(0, 1))(v, inp)))
    return results
  (out_a, grads_a), (out_b, grads_b) = jax.jit(outputs_and_grads)(variables, x)
  np.testing.assert_allclose(out_a, out_b, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize('kernel_size,strides', [(3, 1), (3, 2), (5, 1), (5, 2)])
@pytest.mark.parametrize('height', [13, 16])  # 16: kernel gradient by blocks of 8 rows
def test_depthwise_shifted_equals_lax(kernel_size, strides, height):
  x = jax.random.normal(jax.random.key(0), (2, height, 11, 6))
  make = lambda impl: layers.DepthwiseConv(6, kernel_size, strides=strides, impl=impl)
  variables = _random_variables(make('shifted'), x)
  reference = nn.Conv(6, (kernel_size,) * 2, strides=strides, feature_group_count=6,
                      padding=kernel_size // 2)
  _assert_same_shapes(variables, reference, x)
  _assert_same_shapes(variables, make('lax'), x)
  pad = kernel_size // 2
  expected = tuple((n + 2 * pad - kernel_size) // strides + 1 for n in (height, 11))
  assert jax.eval_shape(make('shifted').apply, variables, x).shape == (2, *expected, 6)
  _assert_same_outputs_and_grads(make('shifted'), make('lax'), x, variables)


@pytest.mark.parametrize('strides,padding', [(1, None), (2, None), (1, 1)])
def test_grouped_matmul_equals_lax(strides, padding):
  # Stride 1 keeping the size is fast_ops.grouped_conv; the others split per group.
  x = jax.random.normal(jax.random.key(0), (2, 13, 11, 16))
  make = lambda impl: layers.GroupedConv(16, 7, groups=4, strides=strides,
                                         padding=padding, impl=impl)
  variables = _random_variables(make('matmul'), x)
  pad = 3 if padding is None else padding
  reference = nn.Conv(16, (7, 7), strides=strides, feature_group_count=4, padding=pad)
  _assert_same_shapes(variables, reference, x)
  _assert_same_shapes(variables, make('lax'), x)
  _assert_same_outputs_and_grads(make('matmul'), make('lax'), x, variables)
  # 'lax' is nn.Conv's own computation: same numbers from the same parameters.
  np.testing.assert_allclose(make('lax').apply(variables, x),
                             reference.apply(variables, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kernel_size,groups,out', [(7, 4, 8), (3, 2, 6), (5, 1, 3)])
def test_grouped_conv_equals_feature_group_count(kernel_size, groups, out):
  x = jax.random.normal(jax.random.key(0), (2, 9, 12, 4 * groups))
  kernel = jax.random.normal(jax.random.key(1), (kernel_size, kernel_size, 4, out * groups))
  pad = kernel_size // 2
  _assert_close_with_grads(
      lambda x, k: fast_ops.grouped_conv(x, k, groups),
      lambda x, k: lax.conv_general_dilated(
          x, k, (1, 1), ((pad, pad), (pad, pad)),
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups),
      x, kernel)
  with pytest.raises(ValueError, match='square odd kernel'):
    fast_ops.grouped_conv(x, kernel[:2, :2], groups)


def test_unknown_impl_raises():
  x = jnp.zeros((1, 5, 5, 4))
  with pytest.raises(ValueError, match='impl'):
    jax.eval_shape(layers.DepthwiseConv(4, 3, impl='fft').init, jax.random.key(0), x)
  with pytest.raises(ValueError, match='conv_impl'):
    jax.eval_shape(models.create('fanet_test', conv_impl='fft').init, jax.random.key(0),
                   jnp.zeros((1, 32, 32, 3)))


def test_backbone_fast_equals_lax():
  x = jax.random.normal(jax.random.key(0), (2, 40, 56, 3))
  fast = models.create('fanet_test', conv_impl='fast')
  lax_model = models.create('fanet_test', conv_impl='lax')
  variables = _random_variables(fast, x)
  _assert_same_shapes(variables, lax_model, x)
  a, b = jax.jit(lambda v, x: (fast.apply(v, x), lax_model.apply(v, x)))(variables, x)
  for key in ('s4', 's8', 's16', 's32'):
    np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-4)


def _conv(x, kernel, padding):
  return lax.conv_general_dilated(x, kernel, (1, 1), padding,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _assert_close_with_grads(f, g, *args, tol=1e-4):
  """f and g agree on values and on the gradients of a random projection (relative)."""
  argnums = tuple(range(len(args)))

  @jax.jit
  def both(*args):
    out_f, out_g = f(*args), g(*args)
    cot = jax.random.normal(jax.random.key(9), out_g.shape)
    grads = [jax.grad(lambda *a: jnp.vdot(h(*a), cot), argnums)(*args) for h in (f, g)]
    return out_f, out_g, grads
  out_f, out_g, (grads_f, grads_g) = both(*args)
  scale = float(jnp.max(jnp.abs(out_g)))
  np.testing.assert_allclose(out_f, out_g, rtol=0, atol=tol * scale)
  for a, b in zip(grads_f, grads_g):
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize('tile', [2, 4])
@pytest.mark.parametrize('shape', [(2, 13, 11, 6, 5), (1, 8, 8, 16, 7)])
def test_winograd_equals_lax(tile, shape):
  b, h, w, c, o = shape
  x = jax.random.normal(jax.random.key(0), (b, h, w, c))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, c, o))
  _assert_close_with_grads(lambda x, k: winograd.conv3x3(x, k, tile),
                           lambda x, k: _conv(x, k, ((1, 1), (1, 1))), x, kernel)


def test_winograd_rejects_bad_arguments():
  with pytest.raises(ValueError, match='tile'):
    winograd.conv3x3(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 2)), tile=3)
  with pytest.raises(ValueError, match='kernel'):
    winograd.conv3x3(jnp.zeros((1, 4, 4, 2)), jnp.zeros((5, 5, 2, 2)))


@pytest.mark.parametrize('kernel_size,padding', [
    (1, ((0, 0), (0, 0))), (1, 'SAME'), (3, ((1, 1), (1, 1))), (3, 'SAME'),
    (3, ((0, 0), (0, 0))), (5, ((2, 2), (2, 2)))])
def test_fast_conv_general_dilated_equals_lax(kernel_size, padding):
  # 32x32 maps: large enough for the Winograd path (fast_ops.WINOGRAD_MIN_PIXELS).
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 6))
  kernel = jax.random.normal(jax.random.key(1), (kernel_size, kernel_size, 6, 5))
  _assert_close_with_grads(
      lambda x, k: fast_ops.fast_conv_general_dilated(
          x, k, (1, 1), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC')),
      lambda x, k: _conv(x, k, padding), x, kernel)


def test_fast_conv_module_owns_nn_conv_parameters():
  x = jax.random.normal(jax.random.key(0), (1, 32, 32, 4))
  make = lambda impl: layers.ConvBNReLU(8, 3, conv_impl=impl)
  variables = make('lax').init(jax.random.key(0), x)
  _assert_same_shapes(variables, make('fast'), x)
  np.testing.assert_allclose(make('fast').apply(variables, x),
                             make('lax').apply(variables, x), rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match='conv_impl'):
    make('fft').init(jax.random.key(0), x)


@pytest.mark.parametrize('shape', [(7, 5), (2, 6, 4, 5)])
def test_channel_matmul_matches_autodiff(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  w = jax.random.normal(jax.random.key(1), (shape[-1], 3))
  _assert_close_with_grads(fast_ops.channel_matmul, lambda x, w: x @ w, x, w, tol=1e-5)


def _upsampled(x, factors):
  b, h, w, c = x.shape
  return jax.image.resize(x, (b, h * factors[0], w * factors[1], c), 'linear',
                          antialias=False)


@pytest.mark.parametrize('kernel_size,factors,size', [
    (3, (2, 2), (5, 3)), (3, (4, 8), (5, 3)), (1, (4, 4), (5, 3)), (5, (3, 1), (5, 3)),
    (3, (8, 4), (1, 2))])  # a one-pixel axis: both edges of the upsampling at once
def test_conv_upsampled_equals_conv_after_upsampling(kernel_size, factors, size):
  x = jax.random.normal(jax.random.key(0), (2, *size, 6))
  kernel = jax.random.normal(jax.random.key(1), (kernel_size, kernel_size, 6, 4))
  pad = kernel_size // 2
  _assert_close_with_grads(
      lambda x, k: upsampling.conv_upsampled(x, k, factors, pad),
      lambda x, k: _conv(_upsampled(x, factors), k, ((pad, pad), (pad, pad))), x, kernel)
  with pytest.raises(ValueError, match='pad'):
    upsampling.conv_upsampled(x, kernel, factors, pad + 1)


@pytest.mark.parametrize('impl', ['fast', 'lax'])
def test_conv_bn_relu_of_several_maps_is_the_conv_of_their_concatenation(impl):
  # UperNet's fpn_bottleneck: maps at the first one's size and upsampled 2x (resized
  # and concatenated), 4x and 8x (conv_upsampled for 'fast'); one is not an integer
  # factor away (resized).
  maps = [jax.random.normal(jax.random.key(i), (2, 16 // f, 24 // f, c))
          for i, (f, c) in enumerate([(1, 4), (2, 3), (4, 5), (8, 2)])]
  maps.append(jax.random.normal(jax.random.key(7), (2, 5, 7, 3)))
  concat = lambda maps: jnp.concatenate(
      [jax.image.resize(m, (2, 16, 24, m.shape[-1]), 'linear', antialias=False)
       for m in maps], axis=-1)
  plain = layers.ConvBNReLU(8, 3, conv_impl='lax')
  variables = plain.init(jax.random.key(0), concat(maps))
  module = layers.ConvBNReLU(8, 3, conv_impl=impl)
  _assert_same_shapes(variables, module, maps)
  with_kernel = lambda k: {**variables,
                           'params': {**variables['params'], 'conv': {'kernel': k}}}
  _assert_close_with_grads(lambda k, *maps: module.apply(with_kernel(k), list(maps)),
                           lambda k, *maps: plain.apply(with_kernel(k), concat(maps)),
                           variables['params']['conv']['kernel'], *maps)


def test_gelu_and_layer_norm_match_autodiff():
  x = 2.0 * jax.random.normal(jax.random.key(0), (2, 5, 7, 16)) + 0.5
  _assert_close_with_grads(fast_ops.gelu, lambda x: jax.nn.gelu(x, approximate=False), x,
                           tol=1e-6)
  scale = 1.0 + 0.2 * jax.random.normal(jax.random.key(1), (16,))
  bias = 0.2 * jax.random.normal(jax.random.key(2), (16,))
  flax_ln = lambda x, s, b: nn.LayerNorm(epsilon=1e-6).apply(
      {'params': {'scale': s, 'bias': b}}, x)
  _assert_close_with_grads(lambda x, s, b: fast_ops.layer_norm(x, s, b, 1e-6), flax_ln,
                           x, scale, bias, tol=1e-5)
  _assert_same_shapes(nn.LayerNorm().init(jax.random.key(0), x), layers.LayerNorm(), x)


@pytest.mark.parametrize('shape,size', [((2, 5, 7, 3), (10, 14)), ((1, 3, 4, 2), (24, 8)),
                                        ((1, 1, 1, 2), (16, 16))])
def test_integer_upsampling_equals_jax_image_resize(shape, size):
  x = jax.random.normal(jax.random.key(0), shape)
  plain = lambda x: jax.image.resize(x, (shape[0], *size, shape[3]), 'linear',
                                     antialias=False)
  _assert_close_with_grads(lambda x: layers.resize_bilinear(x, size), plain, x, tol=1e-6)


def _jit_both(fn, fast, plain, *args):
  """fn(model, *args) for both models in one jitted call; arrays are arguments, not
  constants that XLA would fold with its own (differently rounding) evaluator."""
  return jax.jit(lambda *a: (fn(fast, *a), fn(plain, *a)))(*args)


def test_segmentor_fast_equals_lax(monkeypatch):
  # Every dense 3x3 conv takes the Winograd path (not only those on maps of 32x32
  # and more, which would need a larger input and a slower test). Train mode runs
  # the auxiliary head, BatchNorm on batch statistics and the same dropout masks.
  monkeypatch.setattr(fast_ops, 'WINOGRAD_MIN_PIXELS', 1)
  x = jax.random.normal(jax.random.key(0), (2, 64, 96, 3))
  fast = models.create('fanet_test_upernet', conv_impl='fast')
  plain = models.create('fanet_test_upernet', conv_impl='lax')
  variables = _random_variables(fast, x, train=True)

  def run(model, variables, x):
    (logits, aux), _ = model.apply(variables, x, train=True, mutable=['batch_stats'],
                                   rngs={'dropout': jax.random.key(3)})
    return model.apply(variables, x), logits, aux

  outs_a, outs_b = _jit_both(run, fast, plain, variables, x)
  for a, b in zip(outs_a, outs_b):  # eval logits, train logits, auxiliary logits
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize('part', ['block', 'decode_head'])
def test_gradients_fast_equal_lax(part, monkeypatch):
  # The backward passes of a whole FANet block (depthwise, grouped, 1x1 convs, GELU,
  # LayerNorm, resize) and of the UperNet head (1x1 and Winograd 3x3 convs, resizes).
  monkeypatch.setattr(fast_ops, 'WINOGRAD_MIN_PIXELS', 1)
  if part == 'block':
    x = jax.random.normal(jax.random.key(0), (2, 16, 12, 16))
    make = lambda impl: fanet.FANetBlock(kernel_size=5, conv_impl=impl)
  else:
    x = {f's{4 * 2 ** i}': jax.random.normal(jax.random.key(i), (2, 16 >> i, 12 >> i, c))
         for i, c in enumerate((8, 16, 32, 64))}
    make = lambda impl: upernet.UPerHead(channels=16, conv_impl=impl)
  fast, plain = make('fast'), make('lax')
  variables = _random_variables(fast, x)

  def grads(model, variables, x):
    def loss(params, x):
      return jnp.mean(jnp.sin(model.apply({**variables, 'params': params}, x)))
    return jax.grad(loss, argnums=(0, 1))(variables['params'], x)

  grads_a, grads_b = _jit_both(grads, fast, plain, variables, x)
  for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * float(jnp.max(jnp.abs(b))))
