"""`python -m fanet_jax.report`: a page whose every reference is a local file that
exists, tables equal to the evaluation JSON, examples chosen by a numpy count of each
image's mIoU, two runs side by side with their FANet switches, curves only for a
run without a checkpoint, one line for each bad input, and the page in a real browser
(headless Chromium: every image decodes, nothing on the console; tests/browser.py).
The workdirs are made without training (tests/runs.py), with a metrics.jsonl
written here.
"""
import dataclasses
import contextlib
import functools
import html.parser
import io
import json
import os
import re
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

from fanet_jax import config as config_lib
from fanet_jax import metrics, sharding, tasks, trainer
from fanet_jax.report import __main__ as report
from fanet_jax.report import examples, panels
from fanet_jax.models import layers

import browser
import runs

STEP = 3


def _write_history(workdir, steps=STEP, offset=0.0):
  """A metrics.jsonl as training writes it: a line per step, validation at 2 and 3."""
  lines = []
  for step in range(1, steps + 1):
    lines.append({'step': step, 'time': 100.0 + 2 * step, 'loss': 2.0 - 0.1 * step,
                  'decode_loss': 1.5 - 0.1 * step, 'aux_loss': 1.0, 'lr': 1e-3 * step,
                  'grad_norm': 1.0 + offset, 'pixel_acc': 0.3 + 0.1 * step})
    if step >= 2:
      lines.append({'step': step, 'time': 101.0 + 2 * step, 'val/mIoU': 0.1 * step + offset,
                    'val/aAcc': 0.5, 'val/mAcc': 0.2, 'val/fwIoU': 0.3})
  lines.append('{"step": 4, "time": 1')  # cut short by a run writing now
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.write('\n'.join(line if isinstance(line, str) else json.dumps(line)
                      for line in lines))


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """(workdir, config, variables) of an untrained RGB run with a best checkpoint, a
  log and an evaluation JSON of that checkpoint."""
  # Named run0 and ablated0 (the page shows the folder names) whatever other test
  # files of this worker made with mktemp.
  workdir = str(tmp_path_factory.mktemp('report-runs') / 'run0')
  config = runs.tiny_rgb_config(str(tmp_path_factory.mktemp('tfds')))
  variables = runs.make_run(workdir, config, STEP)
  _write_history(workdir)
  rng = np.random.default_rng(0)
  scores = metrics.metrics_from_confusion(rng.integers(0, 1000, (5, 5)),
                                          ('a', 'b', 'c', 'd', 'e'))
  scores['confusion'] = rng.integers(0, 1000, (5, 5)).tolist()
  scores.update(step=STEP, split='test')
  os.makedirs(os.path.join(workdir, 'eval'))
  with open(os.path.join(workdir, 'eval', 'test-whole.json'), 'w') as f:
    json.dump(scores, f)
  return workdir, config, variables


@pytest.fixture(scope='module')
def ablated(run, tmp_path_factory):
  """The workdir of a run like `run` with SCM and the low-frequency FRM switched off,
  without an evaluation JSON."""
  workdir = os.path.join(os.path.dirname(run[0]), 'ablated0')
  runs.make_run(workdir, dataclasses.replace(run[1], model_kwargs={
      'conv_impl': 'lax', 'use_scm': False, 'use_frm_low': False}), 5)
  _write_history(workdir, offset=0.05)
  return workdir


@pytest.fixture(scope='module')
def page(run, ablated, tmp_path_factory):
  """(output folder, index.html's text, stdout) of the report of both runs."""
  output = str(tmp_path_factory.mktemp('report'))
  capture = io.StringIO()
  with contextlib.redirect_stdout(capture):
    assert report.main([run[0], ablated, '--output', output, '--images', '4',
                        '--seed', '1']) == 0
  with open(os.path.join(output, 'index.html'), encoding='utf-8') as f:
    return output, f.read(), capture.getvalue()


class _Page(html.parser.HTMLParser):
  """The references and the tables (by id: rows of cell texts) of a page."""

  def __init__(self, text):
    super().__init__()
    self.references, self.tables, self._table, self._cell = [], {}, None, None
    self.feed(text)

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    for key in ('src', 'href'):
      if key in attrs:
        self.references.append(attrs[key])
    if tag == 'table':
      self._table = self.tables.setdefault(attrs.get('id') or attrs.get('class'), [])
    elif tag == 'tr' and self._table is not None:
      self._table.append([])
    elif tag in ('td', 'th') and self._table is not None:
      self._cell = []

  def handle_endtag(self, tag):
    if tag in ('td', 'th') and self._cell is not None:
      self._table[-1].append(' '.join(' '.join(self._cell).split()))
      self._cell = None
    elif tag == 'table':
      self._table = None

  def handle_data(self, data):
    if self._cell is not None:
      self._cell.append(data)


def test_every_reference_is_a_local_file_that_exists(page):
  output, text, _ = page
  parsed = _Page(text)
  assert len(parsed.references) > 10
  for reference in parsed.references:
    assert not re.match(r'\w+:|//', reference), reference  # no http(s)://, data:, ...
    assert os.path.isfile(os.path.join(output, reference)), reference
  assert not re.search(r'https?://', text) and '<script' not in text
  assert {'curves.png', 'class_iou.png', 'confusion-run0.png', 'per_image.csv',
          'examples/01-image.png', 'examples/04-run0-error.png'} <= set(parsed.references)
  # A FANet's FRM maps of the worst and the best example (report/internals.py).
  assert '<h2>4. Inside the model</h2>' in text
  assert {'internals/01-frm.png', 'internals/02-frm.png'} <= set(parsed.references)


def test_the_page_loads_in_a_real_browser(page, tmp_path):
  """Every image decodes and nothing reaches the console, in headless Chromium."""
  chromium = browser.find()
  if chromium is None:
    pytest.skip('no chromium on PATH (.ci/run installs Debian\'s: apt-get install chromium)')
  output, text, _ = page
  images, console = browser.load(chromium, os.path.join(output, 'index.html'))
  assert len(images) == text.count('<img ') > 10
  assert [src for src, loaded in images if not loaded] == []
  assert console == []
  shot = str(tmp_path / 'report.png')
  browser.screenshot(chromium, os.path.join(output, 'index.html'), shot)
  with Image.open(shot) as image:
    assert image.size == (1280, 1400)


def test_the_tables_are_the_evaluation_json(run, page):
  with open(os.path.join(run[0], 'eval', 'test-whole.json')) as f:
    scores = json.load(f)
  tables = _Page(page[1]).tables
  header, row, _ = tables['runs']
  assert header == ['run', 'model', 'SCM', 'FRM-high', 'FRM-low', 'mIoU (%)', 'aAcc (%)',
                    'mAcc (%)', 'fwIoU (%)', 'step', 'scores from']
  assert row[:5] == ['run0', 'fanet_test_upernet', '✓', '✓', '✓']
  assert row[5:9] == [f'{100 * scores[k]:.2f}' for k in ('mIoU', 'aAcc', 'mAcc', 'fwIoU')]
  assert row[9] == str(STEP) and row[10].startswith(f'{run[0]}/eval/test-whole.json')
  classes = tables['classes'][2:]
  assert [r[0] for r in classes] == ['background', 'rigid_plastic', 'cardboard', 'metal',
                                     'soft_plastic']
  assert [r[1:3] for r in classes] == [[f'{100 * i:.2f}', f'{100 * a:.2f}']
                                      for i, a in zip(scores['IoU'], scores['Acc'])]


@functools.partial(jax.jit, static_argnums=(0, 3))
def _logits(model, variables, images, size):
  return layers.resize_bilinear(model.apply(variables, images, train=False), size)


def _image_mious(config, variables):
  """Each test image's (file name, mIoU) from the model's arg-max, counted with numpy."""
  task = tasks.create(dataclasses.replace(config, eval_batch_size=1))
  source = task.load_sources(('test',))['test']
  model = trainer.build_model(config)
  found = []
  for index, batch in enumerate(task.eval_batches(
      source, sharding.create_mesh(jax.devices()[:1]))):
    label = batch['label'][0]
    prediction = np.argmax(_logits(model, variables, batch['image'], label.shape), -1)[0]
    kept = label != config.ignore_index
    confusion = np.zeros((config.num_classes,) * 2, np.int64)
    np.add.at(confusion, (label[kept], prediction[kept]), 1)
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    iou = np.diag(confusion)[union > 0] / union[union > 0]
    found.append((source[index]['file_name'], iou.mean() if iou.size else np.nan))
  return found


def test_the_examples_are_the_worst_and_the_best(run, page):
  output, text, _ = page
  _, config, variables = run
  mious = dict(_image_mious(config, variables))
  shown = []
  for row in _Page(text).tables['examples'][1:]:
    why, name = row[0].rsplit(' ', 1)
    shown.append((why, name, float(row[3].split()[1])))  # 'mIoU 12.34 %'
  assert [why for why, _, _ in shown] == ['worst 1', 'best 1', 'random', 'random']
  ranked = sorted(v for v in mious.values() if not np.isnan(v))
  assert mious[shown[0][1]] == ranked[0] and mious[shown[1][1]] == ranked[-1]
  # The random ones: the first two of the seed's permutation that are not shown
  # already, in the split's order.
  names = list(mious)  # the split's order
  drawn = [i for i in np.random.default_rng(1).permutation(len(names))
           if names[i] not in (shown[0][1], shown[1][1])][:2]
  assert [name for _, name, _ in shown[2:]] == [names[i] for i in sorted(drawn)]
  for _, name, caption in shown:
    assert caption == pytest.approx(100 * mious[name], abs=0.006)
  with open(os.path.join(output, 'per_image.csv')) as f:
    rows = [line.split(',') for line in f.read().split()[1:]]
  assert sorted(name for name, _ in rows) == sorted(mious)
  for name, value in rows:
    assert float(value or 'nan') == pytest.approx(mious[name], abs=1e-6, nan_ok=True)


def _reference_choice(mious, count, seed):
  """docs/report.md's rule, on the whole list at once."""
  mious = np.asarray(mious, np.float64)
  scored = [int(i) for i in np.argsort(mious, kind='stable') if not np.isnan(mious[i])]
  count = min(count, len(mious))
  extreme = min(max(1, round(count / 3)), count) if count else 0
  worst = scored[:extreme]
  best = [i for i in scored[::-1] if i not in worst][:min(extreme, count - len(worst))]
  drawn = [int(i) for i in np.random.default_rng(seed).permutation(len(mious))
           if i not in worst + best][:count - len(worst) - len(best)]
  return ([(i, f'worst {k + 1}') for k, i in enumerate(worst)]
          + [(i, f'best {k + 1}') for k, i in enumerate(best)]
          + [(i, 'random') for i in sorted(drawn)])


def test_the_bounded_choice_is_the_rule_over_the_whole_list():
  rng = np.random.default_rng(0)
  for case in range(300):
    size = int(rng.integers(0, 40))
    mious = (rng.choice([0.0, 0.25, 0.5, 1.0, np.nan], size) if case % 2  # ties
             else np.where(rng.random(size) < 0.1, np.nan, rng.random(size)))
    count, seed = int(rng.integers(0, 15)), int(rng.integers(0, 1000))
    assert (examples.choose_images(mious, count, seed)
            == _reference_choice(mious, count, seed)), (mious, count, seed)


def test_choose_images_takes_the_extremes_then_draws_the_rest():
  mious = np.array([0.5, np.nan, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8])
  order = [i for i in np.argsort(mious) if not np.isnan(mious[i])]
  chosen = examples.choose_images(mious, 6, seed=3)
  assert [why for _, why in chosen] == ['worst 1', 'worst 2', 'best 1', 'best 2',
                                        'random', 'random']
  assert [i for i, _ in chosen[:4]] == order[:2] + order[::-1][:2]
  assert len({i for i, _ in chosen}) == 6
  assert examples.choose_images(mious, 6, seed=3) == chosen  # seeded
  assert len(examples.choose_images(mious, 20, seed=0)) == len(mious)
  assert examples.choose_images(mious, 1, seed=0) == [(order[0], 'worst 1')]
  assert examples.choose_images(mious, 0, seed=0) == []


def test_two_runs_side_by_side(page, ablated):
  output, text, out = page
  assert 'run0: evaluating the test split (8 images)' in out
  assert 'ablated0: evaluating the test split (8 images)' in out
  assert out.endswith(f'report: {output}/index.html\n')
  tables = _Page(text).tables
  rows = tables['runs'][1:]
  assert [row[:5] for row in rows] == [['run0', 'fanet_test_upernet', '✓', '✓', '✓'],
                                       ['ablated0', 'fanet_test_upernet', '✗', '✓', '✗']]
  assert rows[1][-2:] == ['5', f'computed now from {ablated}, checkpoint best (step 5)']
  assert tables['examples'][0] == ['', 'image', 'ground truth', 'run0: prediction',
                                   'errors', 'ablated0: prediction', 'errors']
  assert len(tables['examples']) == 5  # the same 4 images for both runs
  for name in ('examples/01-ablated0-pred.png', 'examples/04-run0-error.png',
               'confusion-ablated0.png'):
    assert os.path.exists(os.path.join(output, name)), name


def test_a_run_without_a_checkpoint_gets_its_curves_and_a_note(run, tmp_path, capsys):
  workdir = str(tmp_path / 'young')
  os.makedirs(workdir)
  shutil.copy(os.path.join(run[0], 'config.json'), workdir)
  _write_history(workdir, steps=2)
  assert report.main([workdir]) == 0  # into workdir/report/
  assert capsys.readouterr().out.endswith(f'report: {workdir}/report/index.html\n')
  with open(os.path.join(workdir, 'report', 'index.html'), encoding='utf-8') as f:
    text = f.read()
  assert 'src="curves.png"' in text and '<table' not in text
  assert re.search(r'young: No checkpoint in .*young yet \(the run saves every \d+ steps; '
                   r'its log reaches step 2\): only the training curves', text)


@pytest.mark.parametrize('case,message', [
    ('missing', 'no such folder'),
    ('file', 'not a folder'),
    ('empty', r'config.json: missing; is .* the workdir of a training run'),
    ('config only', 'neither a metrics.jsonl with records nor a checkpoint: nothing to '
     'report'),
    ('classifier', 'a classification run; this report is for segmentation runs'),
    ('other data', r'is a run on synthetic_hands \(3 classes\), .* on synthetic_waste '
     r'\(5\): the runs of one report must share a data set'),
])
def test_bad_input_is_one_line(run, tmp_path, capsys, case, message):
  workdir = str(tmp_path / 'w')
  changed = {'config only': {}, 'classifier': {'task': 'classification'},
             'other data': {'dataset': 'synthetic_hands', 'num_classes': 3}}
  if case == 'file':
    open(workdir, 'w').close()
  elif case != 'missing':
    os.makedirs(workdir)
  if case in changed:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config_lib.to_json(dataclasses.replace(run[1], **changed[case])))
  if case == 'other data':
    _write_history(workdir)
  argv = [run[0], workdir] if case == 'other data' else [workdir]
  assert report.main(argv + ['--output', str(tmp_path / 'out')]) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1, err
  assert re.search(message, err), err
  assert not os.path.exists(tmp_path / 'out')


def test_depth_is_shown_grey_as_predict_shows_it():
  config = config_lib.Config(dataset='synthetic_hands', modality='depth', num_classes=3,
                             depth_range_mm=(200.0, 800.0))
  depth = np.array([[0, 200, 500], [800, 1000, 350]], np.uint16)[..., None]
  grey = np.array([[0, 255, 127], [0, 0, 191]], np.uint8)  # near white, missing black
  np.testing.assert_array_equal(panels.shown_image(depth, config),
                                np.repeat(grey[..., None], 3, -1))
  rgb = np.zeros((2, 3, 3), np.uint8)
  assert panels.shown_image(rgb, config) is rgb
