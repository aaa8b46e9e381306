"""The fast depthwise / grouped conv formulations equal feature_group_count convs.

layers.DepthwiseConv ('shifted' vs 'lax') and layers.GroupedConv ('split' vs 'lax')
must own nn.Conv's parameters and give the same outputs and gradients, so one
checkpoint serves either; a whole backbone must not care which is used.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fanet_jax import models
from fanet_jax.models import layers


def _shapes(tree):
  return jax.tree.map(lambda a: a.shape, tree)


def _assert_same_shapes(variables, module, x):
  assert _shapes(variables) == _shapes(jax.eval_shape(module.init, jax.random.key(1), x))


def _random_variables(model, x, seed=0):
  """`model`'s variables from numpy: a jitted init compiles slowly (threefry)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  return jax.tree.map(lambda s: jnp.asarray(0.2 * rng.standard_normal(s.shape), s.dtype),
                      shapes)


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
def test_depthwise_shifted_equals_lax(kernel_size, strides):
  x = jax.random.normal(jax.random.key(0), (2, 13, 11, 6))
  make = lambda impl: layers.DepthwiseConv(6, kernel_size, strides=strides, impl=impl)
  variables = _random_variables(make('shifted'), x)
  reference = nn.Conv(6, (kernel_size,) * 2, strides=strides, feature_group_count=6,
                      padding=kernel_size // 2)
  _assert_same_shapes(variables, reference, x)
  _assert_same_shapes(variables, make('lax'), x)
  pad = kernel_size // 2
  expected = tuple((n + 2 * pad - kernel_size) // strides + 1 for n in (13, 11))
  assert jax.eval_shape(make('shifted').apply, variables, x).shape == (2, *expected, 6)
  _assert_same_outputs_and_grads(make('shifted'), make('lax'), x, variables)


def test_grouped_split_equals_lax():
  x = jax.random.normal(jax.random.key(0), (2, 13, 11, 16))
  make = lambda impl: layers.GroupedConv(16, 7, groups=4, impl=impl)
  variables = _random_variables(make('split'), x)
  reference = nn.Conv(16, (7, 7), feature_group_count=4, padding=3)
  _assert_same_shapes(variables, reference, x)
  _assert_same_shapes(variables, make('lax'), x)
  _assert_same_outputs_and_grads(make('split'), make('lax'), x, variables)
  # 'lax' is nn.Conv's own computation: same numbers from the same parameters.
  np.testing.assert_allclose(make('lax').apply(variables, x),
                             reference.apply(variables, x), rtol=1e-5, atol=1e-5)


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
