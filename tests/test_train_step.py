"""The jitted train step: 8 fake devices give the single-device results (global-batch
BatchNorm, same dropout draws)."""
import functools

import jax
import numpy as np

import runs
from fanet_jax import losses, models, optim, sharding
from fanet_jax import train_step as train_step_lib


def _model_and_optimiser():
  # XLA:CPU compiles the lax formulation in about half the time of the fast one;
  # tests/test_conv_formulation.py shows the two compute the same numbers.
  model = models.create('fanet_test_upernet', num_classes=5, conv_impl='lax')
  tx = optim.adamw(lambda step: 9e-5,  # the recipe's learning rate
                   betas=(0.9, 0.999), weight_decay=1e-3)
  return model, tx


def _initial_state():
  """The initial train state, on the host: one for both meshes, seeded with numpy."""
  return runs.random_state(*_model_and_optimiser())


def _run(mesh, batch, num_steps, initial_state):
  model, tx = _model_and_optimiser()
  replicated = sharding.replicated(mesh)
  state = jax.device_put(initial_state, replicated)
  loss_fn = losses.make_loss_fn(aux_weight=0.5, ignore_index=255)
  step = jax.jit(train_step_lib.make_train_step(model, tx, loss_fn),
                 in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
                 out_shardings=(replicated, replicated), donate_argnums=0)
  step_losses = []
  for _ in range(num_steps):
    state, metrics = step(state, sharding.shard_batch(batch, mesh), jax.random.key(1))
    step_losses.append(float(metrics['loss']))
  return step_losses, jax.device_get(state)


def _batch(seed=0, size=8):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 5, size=(size, 32, 32)).astype(np.int32)
  labels[:, :4] = 255
  images = rng.normal(size=(size, 32, 32, 3)).astype(np.float32)
  images += labels[..., None].clip(0, 4) * 0.5  # something learnable
  return {'image': images, 'label': labels}


def test_sharded_step_equals_single_device_step():
  assert len(jax.devices()) == 8
  batch, initial_state = _batch(), _initial_state()
  losses_1, state_1 = _run(sharding.create_mesh(jax.devices()[:1]), batch, 2, initial_state)
  losses_8, state_8 = _run(sharding.create_mesh(), batch, 2, initial_state)
  np.testing.assert_allclose(losses_8, losses_1, atol=1e-5, rtol=1e-5)
  assert int(state_1.step) == int(state_8.step) == 2
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
               (state_8.params, state_8.batch_stats), (state_1.params, state_1.batch_stats))


def test_state_shapes_are_those_of_init_state():
  # The restore target of a resumed run, built without tracing the model twice.
  for name, channels in (('fanet_test_upernet', 3), ('deeplabv3plus_test', 1)):
    model = models.create(name, num_classes=5)
    tx = optim.adamw(lambda step: 1e-3, betas=(0.9, 0.999), weight_decay=1e-2)
    image = np.zeros((1, 64, 64, channels), np.float32)
    variables = jax.eval_shape(functools.partial(model.init, train=True),
                               {'params': jax.random.key(0), 'dropout': jax.random.key(0)},
                               image)
    expected = jax.eval_shape(functools.partial(
        train_step_lib.init_state, model, tx, image_shape=image.shape), jax.random.key(0))
    shapes = train_step_lib.state_shapes(tx, variables)
    assert jax.tree.structure(shapes) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(shapes), jax.tree.leaves(expected)):
      assert (a.shape, a.dtype) == (b.shape, b.dtype)
