"""What a killed or misconfigured run leaves behind is made good, or refused in one line.

Each test injects one fault (a best state saved before a kill, an unfinished save, a
corrupted newest checkpoint, a torn log line, an interval of 0, an export folder
around its own inputs) and checks what must hold afterwards.
"""
import json
import os
import re
import signal

import jax.numpy as jnp
import numpy as np
import pytest

from fanet_jax import checkpoints, stopping
from fanet_jax import config as config_lib
from fanet_jax.progress import METRICS_FILE, MetricWriter, write_atomically
from input_pipeline.annotate import export, frames
from input_pipeline.errors import DataError


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
