"""`python -m fanet_jax.evaluate` on a run's workdir: the split's confusion matrix against
a count by hand of the model's predictions, the per-image table against each image's
own count, the slide mode, and one line for each bad input.

The workdir is made without training (tests/runs.py).
"""
import csv
import functools
import json
import os
import re

import jax
import numpy as np
import pytest

from fanet_jax import config as config_lib
from fanet_jax import evaluate, pretrained, sharding, tasks, trainer
from fanet_jax.models import layers

import runs

STEP = 7


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """(workdir, config, variables) of an untrained run with a best checkpoint."""
  workdir = str(tmp_path_factory.mktemp('run'))
  config = runs.tiny_rgb_config(str(tmp_path_factory.mktemp('tfds')))
  return workdir, config, runs.make_run(workdir, config, STEP)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _logits(model, variables, images, size):
  return layers.resize_bilinear(model.apply(variables, images, train=False), size)


def _hand_count(config, variables, split, flip_tta=False):
  """Per-image confusion matrices from the model's arg-max (with `flip_tta`: of the
  mean softmax of the image and its mirror image), counted with numpy."""
  task = tasks.create(config)
  source = task.load_sources((split,))[split]
  mesh = sharding.create_mesh(jax.devices()[:1])
  model = trainer.build_model(config)
  counts = []
  for batch in task.eval_batches(source, mesh):
    infer = lambda image: _logits(model, variables, image, batch['label'].shape[1:3])
    scores = infer(batch['image'])
    if flip_tta:
      mirrored = infer(batch['image'][:, :, ::-1])[:, :, ::-1]
      scores = (jax.nn.softmax(scores) + jax.nn.softmax(mirrored)) / 2
    for label, prediction in zip(batch['label'], np.argmax(scores, -1)):
      kept = label != config.ignore_index
      if not kept.any():  # a padding example
        continue
      confusion = np.zeros((config.num_classes,) * 2, np.int64)
      np.add.at(confusion, (label[kept], prediction[kept]), 1)
      counts.append(confusion)
  return counts


def test_the_split_metrics_come_from_the_summed_confusion(run, tmp_path, capsys):
  workdir, config, variables = run
  table = str(tmp_path / 'per_image.csv')
  assert evaluate.main(['--workdir', workdir, '--split', 'val', '--per-image', table]) == 0
  assert f'val split, {workdir}, checkpoint best (step 7), whole inference' in (
      capsys.readouterr().out)
  with open(os.path.join(workdir, 'eval', 'val-whole.json')) as f:
    written = json.load(f)
  counts = _hand_count(config, variables, 'val')
  assert written['confusion'] == sum(counts).tolist()
  assert written['step'] == STEP and written['split'] == 'val'
  # One row per image, each its own IoU (empty: the class is in neither).
  with open(table) as f:
    rows = list(csv.reader(f))
  assert rows[0][1:] == written['class_names'] and len(rows) == 1 + len(counts)
  for row, confusion in zip(rows[1:], counts):
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    expected = ['' if u == 0 else f'{h / u:.6f}' for h, u in zip(np.diag(confusion), union)]
    assert row[1:] == expected
  # Without the table: the same split metrics from batches of 4 on every device.
  assert evaluate.main(['--workdir', workdir, '--split', 'val']) == 0
  with open(os.path.join(workdir, 'eval', 'val-whole.json')) as f:
    assert json.load(f)['confusion'] == written['confusion']


def test_slide_mode_is_written_beside_whole(run, capsys):
  workdir, _, _ = run
  assert evaluate.main(['--workdir', workdir, '--split', 'val', '--checkpoint', '7',
                        '--mode', 'slide', '--crop', '32', '32', '--stride', '16', '16']) == 0
  with open(os.path.join(workdir, 'eval', 'val-slide.json')) as f:
    written = json.load(f)
  assert written['mode'] == 'slide' and written['crop'] == [32, 32]
  assert sum(map(sum, written['confusion'])) > 0
  assert 'slide inference' in capsys.readouterr().out


@pytest.mark.parametrize('args,message', [
    (['--workdir', '{tmp}/nothing'], 'no such folder'),
    (['--workdir', '{tmp}'], 'config.json: missing'),
    (['--workdir', '{run}', '--checkpoint', 'latest'], "no checkpoint 'latest'"),
    (['--workdir', '{run}', '--checkpoint', '3'], r"no checkpoint '3' \(steps in "
     r"checkpoints/: none, in best/: \[7\]\)"),
    (['--workdir', '{run}', '--mode', 'slide'], "eval_mode 'slide' needs eval_crop"),
    (['--workdir', '{classifier}'], 'a classification model; this command takes '
     'segmentation models'),
    (['--workdir', '{run}', '--weights', '{run}'], 'give either --workdir'),
    (['--weights', '{run}'], '--experiment and --weights go together'),
    (['--experiment', 'demo', '--weights', '{tmp}/nothing'], 'pretrained directory does '
     'not exist'),
    (['--experiment', 'nothing', '--weights', '{run}'], "unknown experiment 'nothing'"),
    (['--experiment', 'demo', '--weights', '{backbone}', '--set',
      "model=fanet_test_upernet"], r"the weights do not fit model 'fanet_test_upernet': "
     r'\d+ variables missing, e.g. params/decode_head'),
])
def test_bad_input_is_one_line(run, tmp_path, capsys, args, message):
  backbone = tmp_path / 'backbone'  # a converted ImageNet backbone: no decoder
  pretrained.save_variables(str(backbone), {k: {'backbone': v['backbone']}
                                            for k, v in run[2].items() if 'backbone' in v})
  classifier = tmp_path / 'classifier'
  classifier.mkdir()
  (classifier / 'config.json').write_text(
      config_lib.to_json(config_lib.load_experiment('imagenet_smoke')))
  args = [a.format(tmp=tmp_path, run=run[0], classifier=classifier, backbone=backbone)
          for a in args]
  assert evaluate.main(args) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1
  assert re.search(message, err), err


def test_flip_tta_is_the_mean_softmax_of_the_image_and_its_mirror(run, capsys):
  workdir, config, variables = run
  assert evaluate.main(['--workdir', workdir, '--split', 'val', '--tta-scales', '1']) == 0
  assert 'with test-time augmentation at 1.0 (each flipped and not)' in (
      capsys.readouterr().out)
  with open(os.path.join(workdir, 'eval', 'val-whole-tta.json')) as f:
    written = json.load(f)
  assert written['tta_scales'] == [1.0]
  assert written['confusion'] == sum(_hand_count(config, variables, 'val', True)).tolist()


def test_converted_weights_are_scored_with_an_experiment_config(run, tmp_path, capsys):
  """--experiment and --weights (what python -m fanet_jax.pytorch.convert writes): the
  same confusion matrix as the run whose variables they are."""
  workdir, config, variables = run
  weights = str(tmp_path / 'converted')
  pretrained.save_variables(weights, variables)
  settings = [f'{key}={value if isinstance(value, str) else repr(value)}' for key, value in (
      ('dataset', config.dataset), ('dataset_config', config.dataset_config),
      ('data_dir', config.data_dir), ('model', config.model),
      ('model_kwargs', config.model_kwargs), ('img_scale', config.img_scale))]
  assert evaluate.main(['--experiment', 'demo', '--weights', weights, '--split', 'val',
                        '--set', *settings]) == 0
  assert f'val split, {weights}, whole inference' in capsys.readouterr().out
  with open(weights + '-eval/val-whole.json') as f:
    written = json.load(f)
  assert written['confusion'] == sum(_hand_count(config, variables, 'val')).tolist()
  assert written['step'] is None and written['weights'] == weights
