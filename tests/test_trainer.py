"""End to end on the tiny synthetic data set: train, evaluate, checkpoint, report.

A finished run must not train again, a resumed one must not change its model, and a
diverged one must stop with finite checkpoints. Interrupted runs resuming to the same
bits as an uninterrupted one: tests/test_crash_consistency.py.
"""
import dataclasses
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import launch
from fanet_jax import sharding, trainer
from fanet_jax.config import Config, ConfigError
from fanet_jax.nonfinite import NonFiniteError

NUM_STEPS = 4


def _train(config, workdir):
  # Two of the eight fake devices: the batch is still split and BatchNorm reduced
  # across devices, and a checkpoint copies each replicated array from two devices,
  # not eight (Orbax slices every copy: most of a save's time here).
  return trainer.train_and_evaluate(config, workdir, devices=jax.devices()[:2])


@pytest.fixture(scope='module')
def config(tmp_path_factory):
  return Config(
      dataset='synthetic_waste', dataset_config='tiny',
      data_dir=str(tmp_path_factory.mktemp('tfds')), model='fanet_test_upernet',
      img_scale=(96, 48), crop_size=(32, 32), worker_count=0, batch_size=8,
      num_steps=NUM_STEPS, learning_rate=1e-3, warmup_steps=2, eval_every=2,
      eval_batch_size=8, checkpoint_every=2, keep_checkpoints=3, log_every=1,
      # XLA:CPU compiles lax convolutions in half the time of the fast formulations
      # (tests/test_conv_formulation.py shows they are equal).
      model_kwargs={'conv_impl': 'lax'})


def _final_state(workdir):
  """The newest checkpoint's state, read back as plain arrays (test-only shortcut)."""
  step = max(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')))
  with ocp.StandardCheckpointer() as reader:
    return reader.restore(os.path.join(workdir, 'checkpoints', str(step), 'state'))


def test_a_run_trains_then_reports_itself_finished_and_refuses_a_changed_config(
    config, tmp_path, capsys):
  # Interrupted runs (SIGKILL, SIGTERM, Ctrl-C) resuming to the same bits:
  # tests/test_crash_consistency.py.
  straight = str(tmp_path / 'straight')
  results = _train(config, straight)
  assert set(os.listdir(os.path.join(straight, 'checkpoints'))) >= {'2', '4'}
  assert 0.0 <= results['mIoU'] <= 1.0
  with open(os.path.join(straight, 'results.json')) as f:
    assert json.load(f)['mIoU'] == results['mIoU']
  with open(os.path.join(straight, 'metrics.jsonl')) as f:
    lines = [json.loads(line) for line in f]
  assert [l['step'] for l in lines if 'loss' in l] == [1, 2, 3, 4]
  assert any('val/mIoU' in l for l in lines) and any('test/mIoU' in l for l in lines)
  assert int(_final_state(straight)['step']) == NUM_STEPS
  capsys.readouterr()

  # A second run reports the finished run instead of training again.
  _train(config, straight)
  assert 'already finished' in capsys.readouterr().out
  # Resuming with another number of classes is refused, naming the change.
  with pytest.raises(ConfigError, match=r'config differs from the run in .*num_classes 5 -> 3'):
    _train(dataclasses.replace(config, num_classes=3), straight)

  # Evaluation only, from the first run's workdir: the same test confusion matrix.
  evaluated = _train(
      dataclasses.replace(config, num_steps=0, init_from=straight), str(tmp_path / 'eval'))
  assert 'Initialised auxiliary_head, backbone, decode_head' in capsys.readouterr().out
  assert evaluated['confusion'] == results['confusion']


def test_launch_reports_bad_input_without_a_traceback(config, tmp_path, capsys):
  assert launch.main(['--experiment', 'nope']) == 2
  assert "unknown experiment 'nope'" in capsys.readouterr().err
  assert launch.main(['--experiment', 'demo', '--set', 'num_step=3']) == 2
  assert "unknown config key 'num_step'" in capsys.readouterr().err
  missing = str(tmp_path / 'no-such-dir')
  code = launch.main(['--experiment', 'zerowaste_fanet_tiny', '--workdir',
                      str(tmp_path / 'w'), '--set', f'manual_dir={missing}',
                      f'data_dir={tmp_path / "tfds"}', 'batch_size=8'])
  assert code == 2
  assert missing in capsys.readouterr().err
  # The recipe's batch of 2 does not split over the 8 test devices: said in one line.
  assert launch.main(['--experiment', 'zerowaste_fanet_tiny', '--workdir',
                      str(tmp_path / 'w')]) == 2
  assert 'must be a multiple of grad_accum_steps x devices = 1 x 8' in capsys.readouterr().err


@pytest.mark.parametrize('experiment,flags,reported', [
    ('demo', [], True), ('demo', ['--no-report'], False),
    ('imagenet_smoke', [], False)])  # a classifier has no report
def test_launch_ends_a_segmentation_run_with_its_report(monkeypatch, tmp_path, capsys,
                                                        experiment, flags, reported):
  from fanet_jax.report import __main__ as report_main
  written = []
  monkeypatch.setattr(trainer, 'train_and_evaluate', lambda config, workdir: {})
  monkeypatch.setattr(report_main, 'main', lambda argv: written.append(argv) or 0)
  workdir = str(tmp_path / 'w')
  assert launch.main(['--experiment', experiment, '--workdir', workdir, *flags]) == 0
  assert written == ([[workdir]] if reported else [])
  monkeypatch.setattr(report_main, 'main', lambda argv: 2)  # a report that failed
  if reported:
    assert launch.main(['--experiment', experiment, '--workdir', workdir]) == 0
    assert 'warning: the report of' in capsys.readouterr().err


def test_a_diverged_run_stops_with_finite_checkpoints_and_no_best(config, tmp_path,
                                                                  monkeypatch, capsys):
  # Every batch after the first is poisoned (train and evaluation batches alike), so
  # step 1 trains, steps 2, 3, 4 are skipped, and the model's logits on the
  # validation split at step 2 are not finite.
  config = dataclasses.replace(config, max_nonfinite_steps=3)
  calls = {'n': 0}
  original = sharding.shard_batch

  def poisoned_shard_batch(batch, mesh):
    calls['n'] += 1
    if calls['n'] > 1:
      batch = {**batch, 'image': np.full_like(batch['image'], np.nan)}
    return original(batch, mesh)

  monkeypatch.setattr(sharding, 'shard_batch', poisoned_shard_batch)
  workdir = str(tmp_path / 'run')
  with pytest.raises(NonFiniteError, match=r'not finite in steps 2-4 \(3 in a row'):
    _train(config, workdir)
  assert 'val mIoU is not finite at step 2: not a candidate for best/' in (
      capsys.readouterr().out)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    lines = [json.loads(line) for line in f]
  train = [line for line in lines if 'loss' in line]
  assert [line['step'] for line in train] == [1, 2, 3]  # step 4 stopped the run
  assert [line['skipped_steps'] for line in train] == [0, 1, 2]
  val = [line for line in lines if 'val/mIoU' in line]
  assert [line['step'] for line in val] == [2] and np.isnan(val[0]['val/mIoU'])
  # The newest checkpoint, step 2's, holds step 1's parameters; nothing reached best/.
  saved = _final_state(workdir)
  assert int(saved['step']) == 2
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(saved))
  assert not os.listdir(os.path.join(workdir, 'best'))
