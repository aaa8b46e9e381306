"""Gradient accumulation and bf16 mixed precision of the train step (ImageNet recipe).

k micro-batches whose gradients are averaged, sharded over 8 devices, give the step on
the whole batch on one device (the classifier has no BatchNorm and stochastic depth is
off here, so the two are the same computation up to float32 round-off).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import runs
from fanet_jax import models, sharding
from fanet_jax.tasks import classification
from fanet_jax import train_step as train_step_lib

BATCH = 16


def _batch():
  rng = np.random.default_rng(0)
  return {'image': rng.normal(size=(BATCH, 32, 32, 3)).astype(np.float32),
          'label': rng.integers(0, 10, BATCH).astype(np.int32)}


def _model(dtype):
  # conv_impl='lax' compiles in half the time; the formulations are tested equal.
  return models.create('fanet_test_classifier', num_classes=10, drop_path_rate=0.0,
                       dtype=dtype, conv_impl='lax')


@functools.lru_cache(maxsize=None)
def _initial_state(tx, dtype):
  """The initial state on the host, seeded with numpy once for every mesh."""
  return runs.random_state(_model(dtype), tx)


def _steps(accum_steps, mesh, tx, dtype=jnp.float32, num_steps=2):
  model = _model(dtype)
  replicated = sharding.replicated(mesh)
  state = jax.device_put(_initial_state(tx, dtype), replicated)
  prepare = classification.make_prepare_batch(
      num_classes=10, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5,
      label_smoothing=0.1)
  step = jax.jit(train_step_lib.make_train_step(model, tx, classification.loss_fn,
                                                accum_steps=accum_steps,
                                                prepare_batch=prepare),
                 in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
                 donate_argnums=0)
  losses = []
  for _ in range(num_steps):
    state, metrics = step(state, sharding.shard_batch(_batch(), mesh), jax.random.key(1))
    losses.append(float(metrics['loss']))
  return losses, jax.device_get(state.params)


def test_micro_batches_interleave_the_examples():
  cut = train_step_lib.micro_batches({'x': jnp.arange(8)}, 4)['x']
  np.testing.assert_array_equal(cut, [[0, 4], [1, 5], [2, 6], [3, 7]])


def test_accumulated_step_equals_the_full_batch_step():
  tx = optax.sgd(0.5)
  full_losses, full = _steps(1, sharding.create_mesh(jax.devices()[:1]), tx)
  # Sharded over 8 devices, 2 micro-batches of 8 (one example per device each).
  accum_losses, accum = _steps(2, sharding.create_mesh(), tx)
  np.testing.assert_allclose(accum_losses, full_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               accum, full)


def test_bf16_compute_keeps_float32_master_weights():
  tx = optax.sgd(0.5)
  one = sharding.create_mesh(jax.devices()[:1])
  f32_losses, _ = _steps(1, one, tx, num_steps=1)
  bf16_losses, params = _steps(1, one, tx, dtype=jnp.bfloat16, num_steps=1)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
  np.testing.assert_allclose(bf16_losses, f32_losses, rtol=2e-2)
  model = models.create('fanet_test_classifier', num_classes=10, dtype=jnp.bfloat16,
                        conv_impl='lax')
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  hlo = jax.jit(model.apply).lower(variables, jnp.zeros((2, 32, 32, 3))).as_text()
  assert 'bf16' in hlo and 'convolution' in hlo
