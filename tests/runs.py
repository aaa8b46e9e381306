"""Workdirs of tiny untrained runs, made without training or compiling: the run's
config.json and a saved train state of seeded variables (what the trainer's
checkpoints hold), for the tests of the commands that use a trained model."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from fanet_jax import config as config_lib
from fanet_jax import train_step as train_step_lib
from fanet_jax import trainer


def tiny_rgb_config(data_dir: str) -> config_lib.Config:
  """FANet test widths on the tiny synthetic waste set, in a few seconds of compile."""
  return config_lib.Config(
      dataset='synthetic_waste', dataset_config='tiny', data_dir=data_dir,
      model='fanet_test_upernet', model_kwargs={'conv_impl': 'lax'}, img_scale=(96, 48),
      crop_size=(32, 32), worker_count=0, eval_batch_size=4)


def random_variables(model, channels: int, seed: int = 0) -> dict:
  """Seeded variables of `model` (with the auxiliary head's), made with numpy from
  `jax.eval_shape` of its init, so no init is compiled: kernels N(0, 1/fan_in),
  scales 1, biases 0, BatchNorm statistics near but not at mean 0 and variance 1 (so
  that folding them, as the ONNX export does, is exercised)."""
  shapes = jax.eval_shape(lambda: model.init(
      {'params': jax.random.key(0), 'dropout': jax.random.key(1)},
      jnp.zeros((1, 64, 64, channels)), train=True))
  rng = np.random.default_rng(seed)

  def value(path, leaf):
    name = path[-1].key
    if name in ('mean', 'var'):
      jitter = 0.1 * rng.standard_normal(leaf.shape)
      return (jitter if name == 'mean' else 1 + np.abs(jitter)).astype(leaf.dtype)
    if name == 'scale':
      return np.ones(leaf.shape, leaf.dtype)
    if name == 'bias' or len(leaf.shape) < 2:
      return np.zeros(leaf.shape, leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)
  return jax.tree_util.tree_map_with_path(value, dict(shapes))


def random_state(model, tx, channels: int = 3) -> train_step_lib.TrainState:
  """A step-0 TrainState on the host from `random_variables` (no init compiled): the
  optimiser state is zeros, which is what `tx.init` gives for AdamW."""
  variables = random_variables(model, channels)
  params = variables['params']
  opt_state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                           jax.eval_shape(tx.init, params))
  return train_step_lib.TrainState(step=np.zeros((), np.int32), params=params,
                                   batch_stats=variables.get('batch_stats', {}),
                                   opt_state=opt_state)


def make_run(workdir: str, config: config_lib.Config, step: int) -> dict:
  """Writes `workdir/config.json` and `workdir/best/<step>/state`; returns the
  variables `{'params', 'batch_stats'}` (`random_variables` of the config's model)."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config_lib.to_json(config))
  variables = random_variables(trainer.build_model(config),
                               config.image_channels)
  state = {'step': np.int32(step), 'params': variables['params'],
           'batch_stats': variables['batch_stats']}
  with ocp.StandardCheckpointer() as writer:
    writer.save(os.path.join(os.path.abspath(workdir), 'best', str(step), 'state'), state)
  return variables
