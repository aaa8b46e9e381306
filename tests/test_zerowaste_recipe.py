"""The ZeroWaste-f recipe end to end on a folder in the release layout.

Builder, the recipe's train pipeline (1920x1080 frames, rescale ratio 0.5-2, 512x512
crops padded with zeros) and a few steps from scratch with the recipe's optimiser,
then the whole-image evaluation of both held-out splits. The model is the narrow
test variant (the full-width one is checked on the same padding in
test_padding_gradients.py); with the reference's zero stem bias it overflowed on
the first batch at full width and had gradient norms of about 1e23 here.
"""
import dataclasses
import json
import os

import jax
import numpy as np
import pytest

import release_layout
from fanet_jax import config as config_lib
from fanet_jax import sharding, tasks, trainer


@pytest.fixture(scope='module')
def recipe(tmp_path_factory):
  root = tmp_path_factory.mktemp('zerowaste-f')
  release_layout.write(str(root))
  config = config_lib.apply_overrides(config_lib.load_experiment('zerowaste_fanet_tiny'), [
      f'manual_dir={root}', f'data_dir={tmp_path_factory.mktemp("tfds")}',
      'model=fanet_test_upernet', 'num_steps=3', 'warmup_steps=1', 'eval_every=3',
      'checkpoint_every=3', 'log_every=1', 'worker_count=0'])
  # Lax convolutions compile in half the time (docs/performance.md, Test-suite
  # compile settings); the recipe's pipeline, loss and optimiser are unchanged.
  return dataclasses.replace(config, model_kwargs={**config.model_kwargs,
                                                   'conv_impl': 'lax'})


def test_the_first_batches_have_large_padded_areas(recipe):
  mesh = sharding.create_mesh(jax.devices()[:1])
  task = tasks.create(recipe)
  source = task.load_sources(('train',))['train']
  loader = iter(task.train_loader(source, mesh))
  padded = []
  for _ in range(recipe.num_steps):
    batch = next(loader)
    assert batch['image'].shape == (2, 512, 512, 3)
    pad = (batch['label'] == 255) & np.all(batch['image'] == 0, axis=-1)
    padded.extend(pad.mean(axis=(1, 2)))
  assert max(padded) > 0.4, padded  # the crops the test below trains on


def test_the_recipe_trains_from_scratch_with_finite_losses(recipe, tmp_path):
  workdir = str(tmp_path / 'run')
  results = trainer.train_and_evaluate(recipe, workdir, devices=jax.devices()[:1])
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    lines = [json.loads(line) for line in f]
  steps = [line for line in lines if 'loss' in line]
  assert [line['step'] for line in steps] == [1, 2, 3]
  for line in steps:
    assert np.isfinite(line['loss']) and line['skipped_steps'] == 0, line
    assert line['grad_norm'] < 100.0, line
  assert np.isfinite(results['mIoU']) and 'nonfinite_pixels' not in results
  assert results['split'] == 'test' and results['step'] == 3


@pytest.mark.parametrize('experiment,model,first_lr', [
    # FANet's Table 1 baseline: SGD + poly, batch 8, no warm-up (a first step at the
    # full learning rate), narrow RGB DeepLabv3+ at output stride 8.
    ('zerowaste_deeplabv3plus_r50', 'deeplabv3plus_test_rgb', 1e-2),
    # Tables 1 and 3: FocalNet (LayerNorms, zero-padded patch embedding) on FANet's
    # recipe, its warm-up starting at 1e-6 of the rate.
    ('zerowaste_focalnet_tiny', 'focalnet_test_upernet', 9e-11)])
def test_the_comparison_recipes_train_on_the_release_layout(recipe, tmp_path, experiment,
                                                            model, first_lr):
  config = config_lib.apply_overrides(config_lib.load_experiment(experiment), [
      f'manual_dir={recipe.manual_dir}', f'data_dir={recipe.data_dir}', f'model={model}',
      'num_steps=2', 'eval_every=2', 'checkpoint_every=2', 'log_every=1',
      'worker_count=0'])
  if model.startswith('focalnet'):
    config = dataclasses.replace(config, model_kwargs={'conv_impl': 'lax'})
  workdir = str(tmp_path / 'run')
  results = trainer.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    steps = [line for line in map(json.loads, f) if 'loss' in line]
  assert [line['step'] for line in steps] == [1, 2]
  assert steps[0]['lr'] == pytest.approx(first_lr, rel=1e-3)
  for line in steps:
    assert np.isfinite(line['loss']) and line['skipped_steps'] == 0, line
    assert line['grad_norm'] < 100.0, line
  assert np.isfinite(results['mIoU']) and results['split'] == 'test'
