"""`python -m fanet_jax.visualize`: the figures of a FANet and a DenseAttentionSeg run,
maps that are the modules' own values (a captured FRM input through a standalone FRM
gives the captured Q and output; R = F - Q and S = F * Q exactly; a captured level
through its SqueezeUnit gives the captured attention map), the contour maps against
the contour loss, and one line for each bad input. Workdirs from tests/runs.py.
"""
import dataclasses
import re

import jax
import numpy as np
import pytest
from PIL import Image

from fanet_jax import config as config_lib
from fanet_jax import contour_loss, predict, visualize
from fanet_jax.models import dense_attention, fanet
from fanet_jax.report import internals

import runs

DEPTH = config_lib.Config(model='dense_attention_seg_test', modality='depth',
                          num_classes=3, dataset='synthetic_hands')


def _save(path, array):
  Image.fromarray(array).save(path)
  return str(path)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  """Workdirs (rgb: FANet, depth: DenseAttentionSeg) and 64x64 images and labels."""
  root = tmp_path_factory.mktemp('visualize')
  rng = np.random.default_rng(0)
  rgb = runs.tiny_rgb_config(str(root / 'tfds'))
  label = np.zeros((64, 64), np.uint8)
  label[16:40, 8:30], label[40:60, 30:60], label[:2] = 1, 2, 255
  found = {'rgb_run': str(root / 'rgb'), 'depth_run': str(root / 'depth'),
           'rgb': _save(root / 'frame.png', rng.integers(0, 256, (64, 64, 3), np.uint8)),
           'depth': _save(root / 'hands.png', rng.integers(200, 800, (64, 64), np.uint16)),
           'label': _save(root / 'label.png', label),
           'small': _save(root / 'small.png', np.full((8, 12), 500, np.uint16)),
           'wide': _save(root / 'wide.png', np.zeros((64, 48), np.uint8)),
           'bad': _save(root / 'bad.png', np.full((64, 64), 7, np.uint8))}
  runs.make_run(found['rgb_run'], rgb, 3)
  runs.make_run(found['depth_run'], DEPTH, 3)
  return found


@pytest.fixture
def captures(monkeypatch):
  """The `internals.Capture`s that visualize makes, kept to capture again."""
  made = []

  class Kept(internals.Capture):
    def __init__(self, run):
      super().__init__(run)
      made.append(self)
  monkeypatch.setattr(internals, 'Capture', Kept)
  return made


def _maps(capture, image, label):
  """The maps `capture` (compiled already) takes of `image` with its label."""
  config = capture.run.config
  model_input = predict.preprocess(predict.read_image(image, config.modality), config)
  return capture(model_input[None], np.asarray(Image.open(label))[None])


def test_fanet_figures_and_frm_maps_are_the_modules(files, tmp_path, capsys, captures):
  output = tmp_path / 'out'
  assert visualize.main([files['rgb_run'], '--image', files['rgb'], '--label',
                         files['label'], '--output', str(output)]) == 0
  assert capsys.readouterr().out.split() == [str(output / 'frm.png'),
                                             str(output / 'contours.png')]
  for name in ('frm.png', 'contours.png'):
    assert Image.open(output / name).size[0] > 500
  run, maps = captures[0].run, _maps(captures[0], files['rgb'], files['label'])
  assert sorted(maps['frm']) == [(0, 0), (1, 0), (2, 0), (3, 0)]
  for frm in maps['frm'].values():
    assert set(frm) == {'F', 'Q', 'R', 'S', 'output'}
    np.testing.assert_array_equal(frm['R'], frm['F'] - frm['Q'])
    np.testing.assert_array_equal(frm['S'], frm['F'] * frm['Q'])
  frm = maps['frm'][(3, 0)]
  params = run.variables['params']['backbone']['stages_3_0']['attn']['enhance']
  out, state = jax.jit(lambda p, f: fanet.FRM(conv_impl='lax').apply(
      {'params': p}, f, mutable=['intermediates']))(params, frm['F'])
  np.testing.assert_allclose(out, frm['output'], atol=1e-5)
  np.testing.assert_allclose(state['intermediates']['Q'][0], frm['Q'], atol=1e-6)
  # Contour maps: their squared difference is the contour loss of the probabilities.
  label = np.asarray(Image.open(files['label']))[None]
  valid = label != 255
  loss = contour_loss.contour_loss_from_probs(
      maps['probs'], jax.nn.one_hot(np.where(valid, label, 0), 5), valid)
  err = (maps['contour_label'] - maps['contour_pred']) ** 2
  np.testing.assert_allclose(err[valid].mean(), loss, rtol=1e-5)


def test_dense_attention_figures_and_maps_are_the_modules(files, tmp_path, capsys,
                                                          captures):
  output = tmp_path / 'out'
  assert visualize.main([files['depth_run'], '--image', files['depth'], '--label',
                         files['label'], '--output', str(output)]) == 0
  assert capsys.readouterr().out.split() == [str(output / 'attention.png'),
                                             str(output / 'contours.png')]
  maps = _maps(captures[0], files['depth'], files['label'])
  variables = captures[0].run.variables
  assert len(maps['attention']) == len(maps['levels']) == 6
  for j in (5,):  # the ASPP output's
    name = f'squeeze_{j + 1}'
    _, a = jax.jit(lambda v, x: dense_attention.SqueezeUnit(4).apply(v, x))(
        {'params': variables['params'][name],
         'batch_stats': variables['batch_stats'][name]}, maps['levels'][j])
    np.testing.assert_allclose(a, maps['attention'][j], atol=1e-6)
  # Level 2's weight: the product of the other five maps resized to its size.
  size = maps['attention'][1].shape
  others = [jax.image.resize(a, size, 'linear', antialias=False)
            for j, a in enumerate(maps['attention']) if j != 1]
  np.testing.assert_allclose(maps['weight'][1], np.prod(others, axis=0), rtol=1e-5)


@pytest.mark.parametrize('args,message', [
    (['{tmp}/none', '--image', '{rgb}'], 'no such folder'),
    (['{rgb_run}', '--checkpoint', '9', '--image', '{rgb}'], "no checkpoint '9'"),
    (['{depth_run}', '--image', '{rgb}'], 'reads 16-bit single-channel PNG depth maps'),
    (['{depth_run}', '--image', '{small}'], r'small.png: 12x8 \(WxH\) after the test '
     r'pipeline; the model needs at least 16 pixels a side'),
    (['{rgb_run}', '--image', '{rgb}', '--label', '{wide}'],
     r'wide.png: 48x64 \(WxH\), the image 64x64: a label must have the size'),
    (['{depth_run}', '--image', '{depth}', '--label', '{bad}'],
     r'values 7 are not classes \(0 to 2, or 255 ignored\)'),
    (['{rgb_run}', '--image', '{rgb}', '--stage', '4'],
     '--stage 4 is out of range: the model has stages 0 to 3'),
    (['{rgb_run}', '--image', '{rgb}', '--stage', '1', '--block', '1'],
     '--block 1 is out of range: stage 1 has blocks 0 to 0'),
    (['{deeplab_run}', '--image', '{depth}'], "model 'deeplabv3plus_test' has no "
     'internal maps to draw'),
])
def test_bad_input_is_one_line(files, tmp_path, capsys, args, message):
  if '{deeplab_run}' in args:
    runs.make_run(str(tmp_path / 'deeplab'), dataclasses.replace(
        DEPTH, model='deeplabv3plus_test'), 3)
  args = [a.format(tmp=tmp_path, deeplab_run=tmp_path / 'deeplab', **files)
          for a in args]
  assert visualize.main(args + ['--output', str(tmp_path / 'out')]) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1, err
  assert re.search(message, err), err
  assert not (tmp_path / 'out').exists()
