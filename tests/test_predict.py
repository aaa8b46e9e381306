"""`python -m fanet_jax.predict`: its class maps against the model's arg-max computed
apart (through the evaluation pipeline), its overlays and probabilities, the files it
skips, one compile per input size, going on with --skip-existing, and one line for
each bad input. The workdir is made without training (tests/runs.py).
"""
import functools
import os
import re

import jax
import numpy as np
import pytest
from PIL import Image

from fanet_jax import models, predict, pretrained, trainer
from fanet_jax.models import layers
from input_pipeline import interseg, segmentation_eval, zerowaste

import runs


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """(workdir, config, variables) of an untrained RGB run with a best checkpoint."""
  workdir = str(tmp_path_factory.mktemp('run'))
  config = runs.tiny_rgb_config(str(tmp_path_factory.mktemp('tfds')))
  return workdir, config, runs.make_run(workdir, config, 3)


def _save(path, array):
  Image.fromarray(array).save(path)
  return path


def _expected_scores(config, variables, image):
  """The logits at the image's size, by the evaluation pipeline and the model."""
  source = [{'image': image, 'label': np.zeros(image.shape[:2], np.uint8)}]
  batch = next(segmentation_eval.rgb_eval_batches(
      source, batch_size=1, num_classes=config.num_classes, img_scale=config.img_scale,
      size_divisor=config.size_divisor, mean=config.mean, std=config.std))
  return np.asarray(_logits(trainer.build_model(config), variables, batch['image'],
                            image.shape[:2]))[0]


@functools.partial(jax.jit, static_argnums=(0, 3))
def _logits(model, variables, images, size):
  return layers.resize_bilinear(model.apply(variables, images, train=False), size)


def test_a_folder_is_segmented_and_bad_files_are_skipped(run, tmp_path, capsys):
  workdir, config, variables = run
  rng = np.random.default_rng(0)
  frames = tmp_path / 'frames'
  frames.mkdir()
  images = {f'frame{i}': rng.integers(0, 256, (54, 96, 3), np.uint8) for i in range(3)}
  for stem, image in images.items():
    _save(frames / f'{stem}.png', image)
  grey = rng.integers(0, 256, (40, 30), np.uint8)  # taken as RGB
  images['grey'] = np.repeat(grey[..., None], 3, -1)
  _save(frames / 'grey.png', grey)
  (frames / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n truncated')
  _save(frames / 'depth.png', rng.integers(0, 2**16, (40, 30), np.uint16))
  (frames / 'notes.txt').write_text('not an image, not listed')
  output = tmp_path / 'out'

  assert predict.main(['--workdir', workdir, '--input', str(frames), '--output',
                       str(output), '--batch', '2', '--probs']) == 1
  out = capsys.readouterr().out
  # Three frames of one size in batches of 2 (the last one padded), the grey one alone:
  # two input sizes, each compiled once.
  assert re.search(r'segmented 4 frames .* 2 input sizes compiled', out), out
  assert f'skipped 2:\n  {frames}/broken.png: not a readable image' in out
  assert (f'{frames}/depth.png: a 16-bit grey image; the model reads 8-bit RGB images'
          in out)
  assert sorted(os.listdir(output / 'pred')) == sorted(f'{s}.png' for s in images)

  for stem, image in images.items():
    scores = _expected_scores(config, variables, image)
    top2 = np.sort(scores, -1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 1e-4  # batches of 2 round differently
    pred = Image.open(output / 'pred' / f'{stem}.png')
    assert pred.mode == 'P' and pred.size == image.shape[1::-1]
    assert pred.getpalette()[:15] == [v for colour in zerowaste.PALETTE for v in colour]
    classes = np.asarray(pred)
    np.testing.assert_array_equal(classes[clear], scores.argmax(-1)[clear])
    probs = np.load(output / 'probs' / f'{stem}.npz')['probs']
    assert probs.dtype == np.float16 and probs.shape == image.shape[:2] + (5,)
    np.testing.assert_allclose(probs, jax.nn.softmax(scores, -1), atol=2e-3)
    # The overlay: the image and the class colours half and half, a legend below.
    vis = np.asarray(Image.open(output / 'vis' / f'{stem}.png').convert('RGB'))
    assert vis.shape[1] == image.shape[1] and vis.shape[0] > image.shape[0]
    blend = 0.5 * image + 0.5 * np.asarray(zerowaste.PALETTE, np.float64)[classes]
    np.testing.assert_allclose(vis[:image.shape[0]], blend, atol=0.51)

  # Going on: only what is missing is done.
  os.remove(output / 'pred' / 'frame1.png')
  assert predict.main(['--workdir', workdir, '--input', str(frames / 'frame0.png'),
                       str(frames / 'frame1.png'), '--output', str(output),
                       '--skip-existing', '--no-vis']) == 0
  out = capsys.readouterr().out
  assert 'segmented 1 frames' in out and '1 done before, left out' in out
  assert np.array_equal(np.asarray(Image.open(output / 'pred' / 'frame1.png')),
                        _expected_scores(config, variables, images['frame1']).argmax(-1))


def _depth_weights(tmp_path):
  """Seeded variables of the test-width DeepLabv3+ (depth) as converted weights."""
  path = str(tmp_path / 'depth_weights')
  pretrained.save_variables(
      path, runs.random_variables(models.create('deeplabv3plus_test'), channels=1))
  return path


def test_depth_maps_are_segmented_and_rgb_images_refused(tmp_path, capsys):
  weights = _depth_weights(tmp_path)
  rng = np.random.default_rng(1)
  depth = rng.integers(0, 1000, (48, 64), np.uint16)
  depth[:4] = 0  # missing
  _save(tmp_path / 'hands.png', depth)
  rgb = _save(tmp_path / 'colour.png', rng.integers(0, 256, (48, 64, 3), np.uint8))
  model = ['--experiment', 'demo_depth', '--weights', weights,
           '--set', 'model=deeplabv3plus_test', 'model_kwargs={}']

  assert predict.main([*model, '--input', str(rgb), '--output', str(tmp_path / 'o')]) == 2
  err = capsys.readouterr().err
  assert err == (f'error: the model of {weights} reads 16-bit single-channel PNG depth '
                 'maps in mm, and the inputs are 1 8-bit RGB: none of them can be '
                 'segmented\n')

  assert predict.main([*model, '--input', str(tmp_path / 'hands.png'), '--output',
                       str(tmp_path / 'o')]) == 0
  pred = np.asarray(Image.open(tmp_path / 'o' / 'pred' / 'hands.png'))
  vis = np.asarray(Image.open(tmp_path / 'o' / 'vis' / 'hands.png').convert('RGB'))
  assert pred.shape == depth.shape and set(np.unique(pred)) <= {0, 1, 2}
  assert vis.shape[1] == 64
  # Missing depth is black under the mask: the overlay there is half the class colour.
  np.testing.assert_allclose(
      vis[:4], 0.5 * np.asarray(interseg.PALETTE, np.float64)[pred[:4]], atol=0.51)


@pytest.mark.parametrize('args,message', [
    (['--workdir', '{tmp}/none', '--input', '{frame}'], 'no such folder'),
    (['--workdir', '{run}', '--input', '{tmp}/none.png'], r'none.png: no such file'),
    (['--workdir', '{run}', '--input', '{empty}'], 'no .png/.jpg/.jpeg images in'),
    (['--workdir', '{run}', '--input', '{frame}', '{empty}/../a/frame.png'],
     'would both be written as frame.png'),
    (['--workdir', '{run}', '--checkpoint', '9', '--input', '{frame}'],
     "no checkpoint '9'"),
    (['--workdir', '{run}', '--input', '{depth}'], 'the model of .* reads 8-bit RGB '
     'images .* and the inputs are 1 16-bit grey'),
])
def test_bad_input_is_one_line(run, tmp_path, capsys, args, message):
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'a').mkdir()
  frame = _save(tmp_path / 'frame.png', np.zeros((8, 8, 3), np.uint8))
  _save(tmp_path / 'a' / 'frame.png', np.zeros((8, 8, 3), np.uint8))
  depth = _save(tmp_path / 'depth.png', np.zeros((8, 8), np.uint16))
  args = [a.format(tmp=tmp_path, run=run[0], frame=frame, empty=tmp_path / 'empty',
                   depth=depth) for a in args]
  assert predict.main(args + ['--output', str(tmp_path / 'out')]) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1
  assert re.search(message, err), err
