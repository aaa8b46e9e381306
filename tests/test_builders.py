"""Tests of the data set builders and `load_source` (docs/data.md sections 1, 6).

The synthetic set is checked for determinism, split sizes, dtypes and value ranges,
class balance, and that colour alone does not decide the class; ZeroWaste-f on a
small fixture in the official layout: a round trip and one test per bad-input case.
"""
import os
import pickle
import re

import numpy as np
from PIL import Image
import pytest

from input_pipeline import datasets
from input_pipeline import synthetic_waste
from input_pipeline import waste_renderer
from input_pipeline import zerowaste
from input_pipeline.errors import DataError

TINY_SIZES = {'train': 24, 'val': 8, 'test': 8}


def _load_all(data_dir, name='synthetic_waste', config='tiny', manual_dir=None):
  return {split: datasets.load_source(name, split, data_dir=str(data_dir),
                                      manual_dir=manual_dir, builder_config=config)
          for split in datasets.SPLITS}


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  return _load_all(tmp_path_factory.mktemp('tfds'))


def test_synthetic_splits_sizes_and_dtypes(tiny):
  for split, source in tiny.items():
    assert len(source) == TINY_SIZES[split]
    for index in range(len(source)):
      example = source[index]
      assert example['image'].shape == (48, 48, 3) and example['image'].dtype == np.uint8
      assert example['label'].shape == (48, 48) and example['label'].dtype == np.uint8
      assert example['label'].max() <= 4
      assert example['file_name'] == f'{split}_{index:05d}.png'
  labels = np.stack([tiny['train'][i]['label'] for i in range(len(tiny['train']))])
  assert set(np.unique(labels)) == {0, 1, 2, 3, 4}


def test_demo_config_is_the_documented_one():
  demo = synthetic_waste.SyntheticWaste.builder_configs['demo']
  assert (demo.image_size, demo.num_train, demo.num_val, demo.num_test) == (96, 1200, 100, 200)


def test_synthetic_build_is_deterministic(tiny, tmp_path):
  again = _load_all(tmp_path)
  for split in datasets.SPLITS:
    for index in range(len(tiny[split])):
      first, second = tiny[split][index], again[split][index]
      np.testing.assert_array_equal(first['image'], second['image'])
      np.testing.assert_array_equal(first['label'], second['label'])
  # Each example comes from its own seed (seed, split id, index) alone.
  image, label = waste_renderer.render_example(np.random.default_rng((0, 2, 3)), 48)
  np.testing.assert_array_equal(tiny['test'][3]['image'], image)
  np.testing.assert_array_equal(tiny['test'][3]['label'], label)


def test_source_pickles_for_grain_workers(tiny):
  restored = pickle.loads(pickle.dumps(tiny['val']))
  np.testing.assert_array_equal(restored[5]['image'], tiny['val'][5]['image'])


def _stack(source):
  examples = [source[i] for i in range(len(source))]
  pixels = np.concatenate([e['image'].reshape(-1, 3) for e in examples])
  return pixels.astype(np.float64), np.concatenate([e['label'].ravel() for e in examples])


def test_colour_alone_does_not_decide_the_class(tiny):
  # A per-pixel nearest-class-mean RGB classifier, fitted on train, scored on test.
  pixels, labels = _stack(tiny['train'])
  means = np.stack([pixels[labels == c].mean(0) for c in range(5)])
  pixels, labels = _stack(tiny['test'])
  predictions = np.argmin(((pixels[:, None] - means[None]) ** 2).sum(-1), axis=1)
  ious = [np.sum((predictions == c) & (labels == c))
          / np.sum((predictions == c) | (labels == c)) for c in range(5)]
  print('colour classifier IoUs', np.round(ious, 3))
  assert np.mean(ious) < 0.35


def test_class_pixel_shares_at_demo_size():
  counts = np.zeros(5)
  for index in range(60):
    _, label = waste_renderer.render_example(np.random.default_rng((0, 0, index)), 96)
    counts += np.bincount(label.ravel(), minlength=5)
  shares = counts / counts.sum()
  print('class pixel shares',
        {c: round(float(s), 3) for c, s in zip(zerowaste.CLASSES, shares)})
  assert shares[0] < 0.62 and shares[1:].min() > 0.06


@pytest.mark.parametrize('kwargs, message', [
    (dict(name='cityscapes'), 'synthetic_waste'),
    (dict(split='validation'), "'val'"),
    (dict(builder_config='huge'), 'tiny'),
])
def test_unknown_name_split_or_config(tmp_path, kwargs, message):
  args = {'name': 'synthetic_waste', 'split': 'train', 'builder_config': 'tiny', **kwargs}
  with pytest.raises(DataError, match=message):
    datasets.load_source(args.pop('name'), args.pop('split'), data_dir=str(tmp_path),
                         **args)


# ZeroWaste-f: a small fixture in the official layout.
FIXTURE = {'train': 3, 'val': 2, 'test': 2}


def _save(path, array):
  Image.fromarray(array).save(path, format='PNG')


def _write_zerowaste(root):
  """Writes 40x24 frames with random labels (incl. 255); returns what was written."""
  rng = np.random.default_rng(0)
  written = {}
  for split, count in FIXTURE.items():
    os.makedirs(root / split / 'data')
    os.makedirs(root / split / 'sem_seg')
    written[split] = []
    for index in range(count):
      name = f'{split}_frame_{index:03d}' + ('.PNG' if index % 2 == 0 else '.png')
      image = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
      label = rng.choice(np.array([0, 1, 2, 3, 4, 255], np.uint8), (24, 40))
      _save(root / split / 'data' / name, image)
      _save(root / split / 'sem_seg' / name, label)
      written[split].append((name, image, label))
  return written


def test_zerowaste_round_trip(tmp_path):
  written = _write_zerowaste(tmp_path / 'zerowaste')
  sources = _load_all(tmp_path / 'tfds', 'zero_waste_f', config=None,
                      manual_dir=str(tmp_path / 'zerowaste'))
  for split, examples in written.items():
    assert len(sources[split]) == len(examples)
    for index, (name, image, label) in enumerate(examples):
      example = sources[split][index]
      assert example['file_name'] == name
      np.testing.assert_array_equal(example['image'], image)
      np.testing.assert_array_equal(example['label'], label)
  # Once prepared, the manual directory is no longer needed.
  again = datasets.load_source('zero_waste_f', 'val', data_dir=str(tmp_path / 'tfds'))
  assert again[1]['file_name'] == written['val'][1][0]


def _break(root, what):
  """Damages the fixture in one way; returns a string the error must contain."""
  train = root / 'train'
  if what == 'missing_dir':
    return re.escape(str(root / 'nowhere'))
  if what == 'missing_split':
    os.rename(root / 'val', root / 'validation')
    return re.escape(str(root / 'val' / 'data'))
  if what == 'unpaired':
    os.remove(train / 'sem_seg' / 'train_frame_001.png')
    os.remove(root / 'test' / 'data' / 'test_frame_000.PNG')
    # Both are listed, not just the first.
    return (r'2 unpaired(.|\n)*train_frame_001\.png \(no label'
            r'(.|\n)*test_frame_000\.PNG \(no image')
  if what == 'corrupt':
    data = (train / 'data' / 'train_frame_002.PNG').read_bytes()
    (train / 'data' / 'train_frame_002.PNG').write_bytes(data[:len(data) // 2])
    return 'train_frame_002.PNG: not a readable PNG'
  if what == 'size':
    _save(train / 'sem_seg' / 'train_frame_001.png', np.zeros((20, 40), np.uint8))
    return 'train_frame_001.png: label is 40x20'
  if what == 'value':
    _save(train / 'sem_seg' / 'train_frame_000.PNG', np.full((24, 40), 7, np.uint8))
    return r'train_frame_000.PNG: label values \[7\]'
  if what == 'rgb_label':
    _save(train / 'sem_seg' / 'train_frame_000.PNG', np.zeros((24, 40, 3), np.uint8))
    return "train_frame_000.PNG: label PNG has mode 'RGB'"
  if what == 'label_16bit':
    label = Image.fromarray(np.zeros((24, 40), np.uint16))
    label.save(train / 'sem_seg' / 'train_frame_000.PNG')
    return 'train_frame_000.PNG: label PNG has mode'
  raise ValueError(what)


@pytest.mark.parametrize('what', ['missing_dir', 'missing_split', 'unpaired', 'corrupt',
                                  'size', 'value', 'rgb_label', 'label_16bit'])
def test_zerowaste_bad_input(tmp_path, what):
  root = tmp_path / 'zerowaste'
  _write_zerowaste(root)
  message = _break(root, what)
  manual_dir = str(root / 'nowhere') if what == 'missing_dir' else str(root)
  with pytest.raises(DataError, match=message):
    datasets.load_source('zero_waste_f', 'train', data_dir=str(tmp_path / 'tfds'),
                         manual_dir=manual_dir)
  # Nothing half-prepared is left behind to be mistaken for a finished data set.
  builder = datasets.make_builder('zero_waste_f', data_dir=str(tmp_path / 'tfds'))
  assert not builder.is_prepared()
