"""ImageNet pretraining at test size (issue: scaling out), end to end through the trainer.

The same run on 1 device and as 2 local processes x 4 devices (`jax.distributed` on
127.0.0.1, started through launch.py, stopped by a SIGTERM to one of them and
started again) gives the same losses and final parameters; a state saved by those 8
devices restores on 1 device (resuming needs as many processes: each saved its data
position); the pretrained backbone moves into a segmentor exactly. Every
augmentation of the recipe is on (RandAugment, random erasing, Mixup / CutMix, label
smoothing, stochastic depth): the data order and all random draws are device- and
process-count independent.
"""
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import runs
from fanet_jax import config as config_lib
from fanet_jax import models, pretrained, trainer
from fanet_jax.checkpoints import CheckpointError

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
def one(config, tmp_path_factory):
  """The workdir of the run on one device."""
  workdir = str(tmp_path_factory.mktemp('runs') / 'one')
  trainer.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  return workdir


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


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def two_processes(config, tmp_path_factory):
  """The run as 2 processes x 4 devices, stopped by a real SIGTERM sent to process 1
  alone once process 0 has logged step 1, then started again with the same command.

  Returns:
    (workdir, the step both stopped after, each launch's outputs, exit codes).
  """
  root = tmp_path_factory.mktemp('two_processes')
  workdir = str(root / 'workdir')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'JAX_DISABLE_MOST_OPTIMIZATIONS': 'true',
         'XLA_FLAGS': '--xla_force_host_platform_device_count=4',
         # The second pair of processes loads what the first compiled.
         'JAX_COMPILATION_CACHE_DIR': str(root / 'xla-cache'),
         'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
         'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'}
  overrides = [f'{k}={v}' for k, v in {**OVERRIDES, 'data_dir': config.data_dir}.items()]

  def start():
    address = f'127.0.0.1:{_free_port()}'
    return [subprocess.Popen(
        [sys.executable, 'launch.py', '--experiment', 'imagenet_smoke', '--workdir',
         workdir, '--coordinator_address', address, '--num_processes', '2',
         '--process_id', str(i), '--set', *overrides], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]

  procs = start()
  metrics = os.path.join(workdir, 'metrics.jsonl')
  deadline = time.time() + 300
  while not (os.path.exists(metrics) and os.path.getsize(metrics)):
    assert time.time() < deadline and procs[0].poll() is None, 'no step logged'
    time.sleep(0.02)
  procs[1].send_signal(signal.SIGTERM)
  stopped = [p.communicate(timeout=400)[0] for p in procs]
  stopped_codes = [p.returncode for p in procs]
  procs = start()
  resumed = [p.communicate(timeout=400)[0] for p in procs]
  return workdir, stopped, stopped_codes, resumed, [p.returncode for p in procs]


def test_two_processes_stop_together_on_sigterm_and_resume_to_one_device(one,
                                                                        two_processes):
  workdir, stopped, stopped_codes, resumed, resumed_codes = two_processes
  # Both stop after the same step, save it together and exit 75 (requeue me), the
  # process that got no signal too.
  assert stopped_codes == [75, 75], stopped[1][-3000:]
  steps = [re.findall(r'Stopped by SIGTERM at step (\d+); checkpoint saved', out)
           for out in stopped]
  assert steps[0] == steps[1] and len(steps[0]) == 1, stopped
  # The same command resumes on both and ends as the one-device run ends.
  assert resumed_codes == [0, 0], resumed[0][-3000:]
  assert f'Resuming from the checkpoint at step {steps[0][0]}' in resumed[0]
  assert 'top-1' in resumed[0] and 'top-1' not in resumed[1]  # only process 0 prints
  np.testing.assert_allclose(_losses(workdir), _losses(one), rtol=1e-5, atol=1e-5)
  state = _state(one)
  _assert_same(_state(workdir, like=state)['params'], state['params'])


def test_the_state_of_eight_devices_restores_on_one(one, two_processes):
  # The arrays are resharded onto one device; the data position is per process.
  step_2 = _state(one, step=2)
  _assert_same(_state(two_processes[0], step=2, like=step_2), step_2)


def test_resuming_with_another_process_count_is_refused(config, two_processes, tmp_path):
  resumed = str(tmp_path / 'resumed')
  os.makedirs(os.path.join(resumed, 'checkpoints'))
  shutil.copytree(os.path.join(two_processes[0], 'checkpoints', '2'),
                  os.path.join(resumed, 'checkpoints', '2'))
  with pytest.raises(CheckpointError, match=r'the checkpoint at step 2 in \S+ was '
                     'written by 2 processes and this run has 1: resume it with as many'):
    trainer.train_and_evaluate(config, resumed, devices=jax.devices()[:1])
  assert os.listdir(os.path.join(resumed, 'checkpoints')) == ['2']  # not set aside


def test_backbone_moves_into_the_segmentor_exactly(one):
  segmentor = models.create('fanet_test_upernet', num_classes=5)
  fresh = runs.random_variables(segmentor, channels=3)   # no init compiled
  merged, loaded = pretrained.merge(fresh, pretrained.load_variables(one))
  assert loaded == ['backbone']
  classifier_params = _state(one)['params']
  _assert_exact = lambda a, b: jax.tree.map(np.testing.assert_array_equal, a, b)
  _assert_exact(merged['params']['backbone'], classifier_params['backbone'])
  for head in ('decode_head', 'auxiliary_head'):  # heads stay freshly initialised
    _assert_exact(merged['params'][head], fresh['params'][head])
