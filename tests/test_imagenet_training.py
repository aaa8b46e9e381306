"""ImageNet pretraining at test size (issue: scaling out), end to end through the trainer.

The same run on 1 device, on 8 fake devices and as 2 local processes x 4 devices
(`jax.distributed` on 127.0.0.1, started through launch.py) gives the same losses and
final parameters; a checkpoint written on 8 devices resumes on 1 device to the same
end state; the pretrained backbone moves into a segmentor exactly. Every augmentation
of the recipe is on (RandAugment, random erasing, Mixup / CutMix, label smoothing,
stochastic depth): the data order and all random draws are device- and
process-count independent.
"""
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from fanet_jax import config as config_lib
from fanet_jax import models, pretrained, trainer

NUM_STEPS = 3
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = {'dataset_config': 'tiny', 'model': 'fanet_test_classifier',
             'crop_size': (32, 32), 'eval_resize': 37, 'batch_size': 16,
             'num_steps': NUM_STEPS, 'warmup_steps': 1, 'eval_every': NUM_STEPS,
             'eval_batch_size': 10, 'checkpoint_every': 1, 'keep_checkpoints': 3,
             'log_every': 1, 'worker_count': 0,
             # XLA:CPU compiles lax convolutions in half the time of the fast
             # formulations (tests/test_conv_formulation.py shows they are equal).
             'model_kwargs': {'conv_impl': 'lax'}}


@pytest.fixture(scope='module')
def config(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  return dataclasses.replace(config_lib.load_experiment('imagenet_smoke'),
                             data_dir=data_dir, **OVERRIDES)


@pytest.fixture(scope='module')
def runs(config, tmp_path_factory):
  """workdirs of the 1-device and the 8-device run."""
  root = tmp_path_factory.mktemp('runs')
  one, eight = str(root / 'one'), str(root / 'eight')
  trainer.train_and_evaluate(config, one, devices=jax.devices()[:1])
  trainer.train_and_evaluate(config, eight)
  return one, eight


def _losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [line['loss'] for line in map(json.loads, f) if 'loss' in line]


def _state(workdir, step=NUM_STEPS, like=None):
  """A checkpointed state as host arrays, restored into the tree of `like`'s shapes
  (on one device, whatever devices wrote it)."""
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.StandardCheckpointer() as reader:
    target = None if like is None else jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), like)
    return jax.device_get(reader.restore(path, target))


def _assert_same(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5), a, b)


def test_one_device_equals_eight_devices(runs):
  one, eight = runs
  assert len(_losses(one)) == NUM_STEPS
  np.testing.assert_allclose(_losses(eight), _losses(one), rtol=1e-5, atol=1e-5)
  state = _state(one)
  _assert_same(_state(eight, like=state)['params'], state['params'])


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_of_four_devices_equal_one_device(config, runs, tmp_path):
  workdir = str(tmp_path / 'two_processes')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'JAX_DISABLE_MOST_OPTIMIZATIONS': 'true',
         'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}
  overrides = [f'{k}={v}' for k, v in {**OVERRIDES, 'data_dir': config.data_dir}.items()]
  address = f'127.0.0.1:{_free_port()}'
  procs = [subprocess.Popen(
      [sys.executable, 'launch.py', '--experiment', 'imagenet_smoke', '--workdir', workdir,
       '--coordinator_address', address, '--num_processes', '2', '--process_id', str(i),
       '--set', *overrides], cwd=REPO, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=400)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  assert 'top-1' in outputs[0] and 'top-1' not in outputs[1]  # only process 0 prints
  one = runs[0]
  np.testing.assert_allclose(_losses(workdir), _losses(one), rtol=1e-5, atol=1e-5)
  state = _state(one)
  _assert_same(_state(workdir, like=state)['params'], state['params'])


def test_checkpoint_of_eight_devices_resumes_on_one(config, runs, tmp_path):
  one, eight = runs
  resumed = str(tmp_path / 'resumed')
  os.makedirs(os.path.join(resumed, 'checkpoints'))
  shutil.copytree(os.path.join(eight, 'checkpoints', '2'),
                  os.path.join(resumed, 'checkpoints', '2'))
  trainer.train_and_evaluate(config, resumed, devices=jax.devices()[:1])
  state = _state(one)
  _assert_same(_state(resumed, like=state), state)
  assert _losses(resumed)[-1] == pytest.approx(_losses(one)[-1], rel=1e-5, abs=1e-5)


def test_backbone_moves_into_the_segmentor_exactly(runs, tmp_path):
  one = runs[0]
  segmentor = models.create('fanet_test_upernet', num_classes=5)
  fresh = jax.jit(segmentor.init, static_argnames='train')(
      jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32), train=True)
  merged, loaded = pretrained.merge(jax.device_get(fresh), pretrained.load_variables(one))
  assert loaded == ['backbone']
  classifier_params = _state(one)['params']
  _assert_exact = lambda a, b: jax.tree.map(np.testing.assert_array_equal, a, b)
  _assert_exact(merged['params']['backbone'], classifier_params['backbone'])
  for head in ('decode_head', 'auxiliary_head'):  # heads stay freshly initialised
    _assert_exact(merged['params'][head], jax.device_get(fresh['params'][head]))
