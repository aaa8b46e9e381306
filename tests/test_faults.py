"""What a killed or misconfigured run leaves behind is made good, or refused in one line.

Each test injects one fault (a best state saved before a kill, an unfinished save, a
corrupted newest checkpoint, a full disk during a save, a torn log line, an interval
of 0, an export folder around its own inputs, a pre-empted SLURM job) and checks what
must hold afterwards. Kills at random moments: tests/test_crash_consistency.py.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from fanet_jax import checkpoints, stopping
from fanet_jax import config as config_lib
from fanet_jax.progress import METRICS_FILE, MetricWriter, write_atomically
from input_pipeline.annotate import export, frames
from input_pipeline.errors import DataError


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _state(value):
  return {'step': jnp.asarray(value, jnp.int32), 'w': jnp.full((3,), float(value))}


def _checkpointer(workdir):
  return checkpoints.Checkpointer(str(workdir), save_every=1, keep=3)


def test_a_best_state_saved_before_a_kill_is_not_saved_again(tmp_path):
  ckpt = _checkpointer(tmp_path)
  assert ckpt.save_best(2, _state(2), {'mIoU': 0.5})
  ckpt.close()
  # The resumed run (from an older rolling checkpoint) evaluates step 2 again.
  ckpt = _checkpointer(tmp_path)
  assert ckpt.save_best(2, _state(2), {'mIoU': 0.5})
  assert ckpt.save_best(3, _state(3), {'mIoU': 0.7})
  ckpt.close()
  assert _checkpointer(tmp_path).best_step() == 3


def test_unfinished_saves_are_removed_on_start(tmp_path):
  leftovers = [tmp_path / 'checkpoints' / '4.orbax-checkpoint-tmp-1733390000',
               tmp_path / 'best' / '2.orbax-checkpoint-tmp-1733390001']
  for path in leftovers:
    (path / 'state').mkdir(parents=True)
    (path / 'state' / 'partial').write_bytes(b'\0' * 10)
  _checkpointer(tmp_path).close()
  assert not any(path.exists() for path in leftovers)


def _save_steps(workdir, steps):
  ckpt = _checkpointer(workdir)
  for step in steps:
    ckpt.save(step, _state(step), force=True)
  ckpt.close()


def _garble(step_dir):
  for root, _, files in os.walk(step_dir):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'not a checkpoint')


def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous(tmp_path, capsys):
  _save_steps(tmp_path, [1, 2])
  _garble(tmp_path / 'checkpoints' / '2')
  ckpt = _checkpointer(tmp_path)
  restored = ckpt.restore(checkpoints.abstract_like(_state(0)))
  assert int(restored['step']) == 1
  np.testing.assert_array_equal(restored['w'], np.ones(3))
  out = capsys.readouterr().out
  assert 'The checkpoint at step 2' in out and 'cannot be read' in out
  assert (tmp_path / 'checkpoints' / '2.unreadable').is_dir()
  assert ckpt.latest_step() == 1
  # Training on reaches step 2 again and saves it where the unreadable one was.
  assert ckpt.save(2, _state(2), force=True)
  ckpt.close()


def test_no_readable_checkpoint_is_one_clear_error(tmp_path):
  _save_steps(tmp_path, [1])
  _garble(tmp_path / 'checkpoints' / '1')
  ckpt = _checkpointer(tmp_path)
  with pytest.raises(checkpoints.CheckpointError, match='no checkpoint could be restored'):
    ckpt.restore(checkpoints.abstract_like(_state(0)))
  ckpt.close()


def test_a_torn_metrics_line_is_dropped_on_resume(tmp_path, capsys):
  path = tmp_path / METRICS_FILE
  path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
  writer = MetricWriter(str(tmp_path), resume_step=2)
  writer.write(3, {'loss': 1.25})
  writer.close()
  lines = [json.loads(line) for line in path.read_text().splitlines()]
  assert [(line['step'], line['loss']) for line in lines] == [(1, 2.0), (2, 1.5), (3, 1.25)]
  assert 'dropped a line cut short' in capsys.readouterr().out


def test_write_atomically_replaces_the_whole_file(tmp_path):
  path = str(tmp_path / 'results.json')
  write_atomically(path, '{"old": 1}')
  write_atomically(path, '{"new": 2}')
  assert json.loads(open(path).read()) == {'new': 2}
  assert os.listdir(tmp_path) == ['results.json']


@pytest.mark.parametrize('override', ['eval_every=0', 'log_every=0', 'keep_checkpoints=0',
                                      'checkpoint_every=-5', 'batch_size=0'])
def test_intervals_and_counts_below_one_are_refused_by_name(override):
  key = override.split('=')[0]
  with pytest.raises(config_lib.ConfigError, match=f'^{key} must be a whole number'):
    config_lib.apply_overrides(config_lib.load_experiment('demo'), [override])


def test_export_refuses_a_capture_inside_its_own_output(tmp_path):
  out = tmp_path / 'out'
  depth = out / 'train' / 'depth'
  depth.mkdir(parents=True)
  (depth / 'rec_0001.png').write_bytes(b'capture')
  review = tmp_path / 'review.txt'
  review.write_text('rec_0001 accept\n')
  with pytest.raises(DataError, match='lie inside'):
    export.export(str(out), str(depth), str(review),
                  re.compile(frames.RECORDING_REGEX), 0.1)
  assert (depth / 'rec_0001.png').read_bytes() == b'capture'


def test_sigterm_and_a_first_ctrl_c_only_ask_the_loop_to_stop():
  previous = signal.getsignal(signal.SIGINT)
  stop = stopping.StopRequest()
  try:
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.agreed(1) and stop.signal_name == 'SIGTERM'
  finally:
    stop.close()
  assert signal.getsignal(signal.SIGINT) is previous
  stop = stopping.StopRequest()
  try:
    os.kill(os.getpid(), signal.SIGINT)
    assert stop.signal_name == 'SIGINT'
    with pytest.raises(KeyboardInterrupt):  # the second Ctrl-C: quit without saving
      os.kill(os.getpid(), signal.SIGINT)
  finally:
    stop.close()


# Saves a small state, then one too large for the disk; checks what is left, inside
# the child (a full tmpfs exists only in the child's mount namespace).
_FULL_DISK_CHILD = """
import json, resource, signal, sys
import jax, numpy as np
from fanet_jax import checkpoints
if int(sys.argv[2]):  # a file-size limit: the write fails (EFBIG) instead of SIGXFSZ
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]),) * 2)
small = {'w': np.arange(1000, dtype=np.float32)}
ck = checkpoints.Checkpointer(sys.argv[1], save_every=1, keep=3)
ck.save(1, small)
ck.wait()
try:
  ck.save(2, {'w': np.random.default_rng(0).normal(size=2**20).astype(np.float32)})
  ck.wait()
  error = None
except checkpoints.CheckpointError as e:
  error = str(e)
ck = checkpoints.Checkpointer(sys.argv[1], save_every=1, keep=3)
restored = ck.restore(jax.tree.map(np.zeros_like, small))
print(json.dumps({'error': error, 'steps': ck.latest_step(),
                  'files': sorted(__import__('os').listdir(sys.argv[1] + '/checkpoints')),
                  'restored': bool(np.array_equal(restored['w'], small['w']))}))
"""


def _run_on_a_full_disk(tmp_path):
  """Runs the child on a 2 MiB tmpfs (a real ENOSPC) where a user and mount namespace
  can be made (`unshare -rm`); otherwise under a 1 MiB file-size limit (a real EFBIG
  from the kernel on the same write)."""
  env = {**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu'}
  mount = str(tmp_path / 'disk')
  os.makedirs(mount)
  probe = ['unshare', '-rm', 'mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mount]
  if shutil.which('unshare') and subprocess.run(probe, capture_output=True).returncode == 0:
    command = ['unshare', '-rm', 'sh', '-c', f'mount -t tmpfs -o size=2m tmpfs {mount} '
               f'&& exec {sys.executable} -c "$0" {mount}/run 0', _FULL_DISK_CHILD]
    reason = 'No space left on device'
  else:
    command = [sys.executable, '-c', _FULL_DISK_CHILD, str(tmp_path / 'run'), str(2**20)]
    reason = 'File too large'
  done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1]), reason


def test_a_full_disk_during_a_save_is_one_clear_error(tmp_path):
  report, reason = _run_on_a_full_disk(tmp_path)
  assert re.fullmatch(
      rf'saving the checkpoint of step 2 in \S+ failed \({reason}; \d+ MiB free there\); '
      'its partial files were removed and the newest complete checkpoint is step 1. '
      'Make room, then run the same command again', report['error']), report['error']
  # The partial step-2 folder is gone, and step 1 restores intact.
  assert report['files'] == ['1'] and report['steps'] == 1 and report['restored']


@pytest.mark.parametrize('srun_status,requeued', [(75, True), (0, False), (1, False),
                                                  (143, False)])
def test_the_slurm_script_requeues_a_job_stopped_by_sigterm_only(tmp_path, srun_status,
                                                                 requeued):
  # srun and scontrol stand-ins that record their arguments.
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for name, status in (('srun', srun_status), ('scontrol', 0)):
    stub = bin_dir / name
    stub.write_text(f'#!/bin/sh\necho "{name} $*" >> {tmp_path}/calls\nexit {status}\n')
    stub.chmod(0o755)
  env = {**os.environ, 'PATH': f'{bin_dir}:{os.environ["PATH"]}', 'SLURM_JOB_ID': '4242'}
  done = subprocess.run(['bash', 'scripts/slurm_imagenet.sh'], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=60)
  assert done.returncode == srun_status, done.stderr
  calls = (tmp_path / 'calls').read_text().splitlines()
  assert calls[0].startswith('srun --kill-on-bad-exit=0 python launch.py --experiment '
                             'imagenet_fanet_tiny')
  assert calls[1:] == (['scontrol requeue 4242'] if requeued else [])


def test_a_full_disk_while_writing_a_log_is_one_line(monkeypatch, capsys):
  import launch
  from fanet_jax import trainer

  def full(config, workdir):
    raise OSError(28, 'No space left on device', f'{workdir}/metrics.jsonl')

  monkeypatch.setattr(trainer, 'train_and_evaluate', full)
  assert launch.main(['--workdir', 'w', '--set', 'num_steps=1']) == 1
  assert capsys.readouterr().err == (
      'error: writing w/metrics.jsonl failed (No space left on device); make room, then '
      'run the same command again to resume\n')
