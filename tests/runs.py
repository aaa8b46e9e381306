"""Workdirs of tiny untrained runs, made without training: the run's config.json and
a saved train state of a freshly initialised model (what the trainer's checkpoints
hold), for the tests of the commands that use a trained model."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from fanet_jax import config as config_lib
from fanet_jax import trainer


def tiny_rgb_config(data_dir: str) -> config_lib.Config:
  """FANet test widths on the tiny synthetic waste set, in a few seconds of compile."""
  return config_lib.Config(
      dataset='synthetic_waste', dataset_config='tiny', data_dir=data_dir,
      model='fanet_test_upernet', model_kwargs={'conv_impl': 'lax'}, img_scale=(96, 48),
      crop_size=(32, 32), worker_count=0, eval_batch_size=4)


def make_run(workdir: str, config: config_lib.Config, step: int) -> dict:
  """Writes `workdir/config.json` and `workdir/best/<step>/state`; returns the
  variables `{'params', 'batch_stats'}` (with the auxiliary head's)."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config_lib.to_json(config))
  model = trainer.build_model(config)
  channels = 1 if config.modality == 'depth' else 3
  variables = jax.jit(functools.partial(model.init, train=True))(
      {'params': jax.random.key(0), 'dropout': jax.random.key(1)},
      jnp.zeros((1, 64, 64, channels)))
  state = {'step': np.int32(step), 'params': variables['params'],
           'batch_stats': variables['batch_stats']}
  with ocp.StandardCheckpointer() as writer:
    writer.save(os.path.join(os.path.abspath(workdir), 'best', str(step), 'state'), state)
  return variables
