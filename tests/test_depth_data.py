"""Tests of the depth data (docs/data.md sections 3, 6): InterSegHands, synthetic hands, the
depth transforms and the depth loaders.

InterSegHands runs on a small fixture in its layout (24x32 frames whose depth holds
0, 1, 32768 and 65535, so 16-bit values must round-trip exactly), with one test per
bad-input case; the synthetic set is checked for determinism, formats, the capture's
depth band and class shares; each transform for its defining property.
"""
import itertools
import os
import pickle
import re

import numpy as np
from PIL import Image
import pytest

from input_pipeline import datasets
from input_pipeline import depth_transforms as D
from input_pipeline import hand_renderer
from input_pipeline import interseg
from input_pipeline import segmentation_eval, segmentation_training
from input_pipeline import synthetic_hands
from input_pipeline import transforms as T
from input_pipeline.errors import DataError

# InterSegHands: a fixture in its layout.
FIXTURE = {'train': 3, 'val': 2, 'test': 2}
EXTREMES = np.array([0, 1, 32767, 32768, 65535], np.uint16)


def _save(path, array):
  Image.fromarray(array).save(path, format='PNG')


def _write_interseg(root, splits=FIXTURE):
  """Writes 24x32 frames with random depth (incl. EXTREMES) and masks (incl. 255)."""
  rng = np.random.default_rng(0)
  written = {}
  for split, count in splits.items():
    os.makedirs(root / split / 'depth')
    os.makedirs(root / split / 'mask')
    written[split] = []
    for index in range(count):
      name = f'{split}_{index:03d}.png'
      depth = rng.integers(0, 65536, (24, 32), dtype=np.uint16)
      depth.ravel()[:len(EXTREMES)] = EXTREMES
      mask = rng.choice(np.array([0, 1, 2, 255], np.uint8), (24, 32))
      _save(root / split / 'depth' / name, depth)
      if split == 'train' and index == 1:  # A palette mask: its pixels are indices.
        palette = Image.frombytes('P', (32, 24), mask.tobytes())
        palette.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
        palette.save(root / split / 'mask' / name)
      else:
        _save(root / split / 'mask' / name, mask)
      written[split].append((name, depth, mask))
  return written


def _load(data_dir, split, manual_dir=None, name='inter_seg_hands'):
  return datasets.load_source(name, split, data_dir=str(data_dir),
                              manual_dir=None if manual_dir is None else str(manual_dir))


def test_interseg_round_trip_is_exact_in_16_bits(tmp_path):
  written = _write_interseg(tmp_path / 'hands')
  for split, examples in written.items():
    source = _load(tmp_path / 'tfds', split, tmp_path / 'hands')
    assert len(source) == len(examples)
    for index, (name, depth, mask) in enumerate(examples):
      example = source[index]
      assert example['file_name'] == name
      assert example['image'].dtype == np.uint16 and example['image'].shape == (24, 32, 1)
      assert example['label'].dtype == np.uint8 and example['label'].shape == (24, 32)
      np.testing.assert_array_equal(example['image'][..., 0], depth)
      np.testing.assert_array_equal(example['label'], mask)
      assert set(EXTREMES) <= set(np.unique(example['image']))
  # Pickleable for grain workers, and readable once prepared without the folder.
  source = pickle.loads(pickle.dumps(_load(tmp_path / 'tfds', 'val')))
  np.testing.assert_array_equal(source[1]['image'][..., 0], written['val'][1][1])


def test_interseg_val_and_test_are_optional(tmp_path):
  _write_interseg(tmp_path / 'hands', {'train': 2})
  assert len(_load(tmp_path / 'tfds', 'train', tmp_path / 'hands')) == 2
  with pytest.raises(DataError, match=r"no split 'val'.*\['train'\]"):
    _load(tmp_path / 'tfds', 'val')


def _break(root, what):
  """Damages the fixture in one way; returns a regex the error must match."""
  train = root / 'train'
  if what == 'missing_dir':
    return re.escape(str(root / 'nowhere')) + '.*depth/\\*.png'
  if what == 'missing_train':
    os.rename(train, root / 'training')
    return re.escape(str(train)) + ': folder missing; expected the layout .*mask/'
  if what == 'missing_depth':
    os.rename(root / 'val' / 'depth', root / 'val' / 'depths')
    return re.escape(str(root / 'val' / 'depth')) + ': folder missing'
  if what == 'missing_mask':
    os.rename(root / 'test' / 'mask', root / 'test' / 'masks')
    return re.escape(str(root / 'test' / 'mask')) + ': folder missing'
  if what == 'empty_split':
    for folder in ('depth', 'mask'):
      for name in os.listdir(root / 'test' / folder):
        os.remove(root / 'test' / folder / name)
    return re.escape(str(root / 'test')) + ': no PNG files'
  if what == 'unpaired':
    os.remove(train / 'mask' / 'train_001.png')
    os.remove(root / 'val' / 'depth' / 'val_000.png')
    return (r'2 unpaired(.|\n)*train_001\.png \(no mask'
            r'(.|\n)*val_000\.png \(no depth map')
  if what == 'corrupt':
    data = (train / 'depth' / 'train_002.png').read_bytes()
    (train / 'depth' / 'train_002.png').write_bytes(data[:len(data) // 2])
    return 'train_002.png: not a readable PNG'
  if what == 'depth_8bit':
    _save(train / 'depth' / 'train_001.png', np.zeros((24, 32), np.uint8))
    return r"depth/train_001.png: depth PNG is 8-bit \(PIL mode 'L'\); expected .*16-bit"
  if what == 'depth_rgb':
    _save(train / 'depth' / 'train_001.png', np.zeros((24, 32, 3), np.uint8))
    return r"depth/train_001.png: depth PNG is 3-channel"
  if what == 'size':
    _save(train / 'mask' / 'train_001.png', np.zeros((20, 32), np.uint8))
    return 'mask/train_001.png: mask is 32x20 but its depth map .*train_001.png is 32x24'
  if what == 'value':
    _save(train / 'mask' / 'train_000.png', np.full((24, 32), 3, np.uint8))
    return r'mask/train_000.png: mask values \[3\]'
  if what == 'mask_16bit':
    _save(train / 'mask' / 'train_000.png', np.zeros((24, 32), np.uint16))
    return "mask/train_000.png: mask PNG has mode 'I;16'"
  raise ValueError(what)


@pytest.mark.parametrize('what', ['missing_dir', 'missing_train', 'missing_depth',
                                  'missing_mask', 'empty_split', 'unpaired', 'corrupt', 'depth_8bit',
                                  'depth_rgb', 'size', 'value', 'mask_16bit'])
def test_interseg_bad_input(tmp_path, what):
  root = tmp_path / 'hands'
  _write_interseg(root)
  message = _break(root, what)
  manual_dir = root / 'nowhere' if what == 'missing_dir' else root
  with pytest.raises(DataError, match=message):
    _load(tmp_path / 'tfds', 'train', manual_dir)
  # Nothing half-prepared is left behind to be mistaken for a finished data set.
  assert not datasets.make_builder('inter_seg_hands',
                                   data_dir=str(tmp_path / 'tfds')).is_prepared()


def test_interseg_without_manual_dir(tmp_path):
  with pytest.raises(DataError, match='no manual directory'):
    _load(tmp_path / 'tfds', 'train')


# Synthetic hands.
TINY_SIZES = {'train': 16, 'val': 4, 'test': 4}


def _tiny(data_dir):
  return {split: datasets.load_source('synthetic_hands', split, data_dir=str(data_dir),
                                      builder_config='tiny')
          for split in datasets.SPLITS}


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  return _tiny(tmp_path_factory.mktemp('tfds'))


def test_synthetic_formats_ranges_and_depth_band(tiny):
  for split, source in tiny.items():
    assert len(source) == TINY_SIZES[split]
    for index in range(len(source)):
      example = source[index]
      depth, label = example['image'], example['label']
      assert depth.shape == (48, 64, 1) and depth.dtype == np.uint16
      assert label.shape == (48, 64) and label.dtype == np.uint8
      assert example['file_name'] == f'{split}_{index:05d}.png'
      assert 1 <= label.max() <= 2  # (an object may hide entirely behind the hand)
      valid = depth[..., 0][depth[..., 0] > 0]
      # The nearest surface is 20-60 cm away (less a little sensor noise) and
      # nothing valid lies more than 16 cm behind it.
      assert 190 <= valid.min() <= 610
      assert valid.max() - valid.min() <= hand_renderer.BAND_MM
      # Removed depth is background; holes (depth 0 on hand / object) are few.
      missing = depth[..., 0] == 0
      assert np.mean(label[missing] > 0) < 0.05
    labels = np.stack([source[i]['label'] for i in range(len(source))])
    assert set(np.unique(labels)) == {0, 1, 2}


def test_synthetic_build_is_deterministic(tiny, tmp_path):
  again = _tiny(tmp_path)
  for split in datasets.SPLITS:
    for index in range(len(tiny[split])):
      np.testing.assert_array_equal(tiny[split][index]['image'], again[split][index]['image'])
      np.testing.assert_array_equal(tiny[split][index]['label'], again[split][index]['label'])
  # Each example comes from its own seed (seed, split id, index) alone.
  depth, label = hand_renderer.render_example(np.random.default_rng((0, 1, 2)), 48, 64)
  np.testing.assert_array_equal(tiny['val'][2]['image'][..., 0], depth)
  np.testing.assert_array_equal(tiny['val'][2]['label'], label)


def test_synthetic_demo_config_and_class_shares():
  demo = synthetic_hands.SyntheticHands.builder_configs['demo']
  assert (demo.height, demo.width, demo.num_train, demo.num_val, demo.num_test) == (
      96, 128, 1200, 100, 200)
  counts, holes = np.zeros(3), 0
  for index in range(60):
    depth, label = hand_renderer.render_example(np.random.default_rng((0, 0, index)),
                                                  96, 128)
    counts += np.bincount(label.ravel(), minlength=3)
    holes += np.sum((depth == 0) & (label > 0))
  shares = counts / counts.sum()
  print('class pixel shares',
        {c: round(float(s), 3) for c, s in zip(interseg.CLASSES, shares)},
        'holes / (hand + object)', round(holes / counts[1:].sum(), 3))
  assert shares[1] > 0.025 and shares[2] > 0.025
  assert 0.005 < holes / counts[1:].sum() < 0.1


# Depth transforms.
def _example(h=6, w=8, seed=0):
  rng = np.random.default_rng(seed)
  depth = rng.integers(200, 900, (h, w, 1)).astype(np.uint16)
  depth[rng.uniform(size=(h, w)) < 0.3] = 0
  return {'image': depth, 'label': rng.integers(0, 3, (h, w)).astype(np.uint8),
          'file_name': f'frame_{seed}.png'}


def test_validate_depth_label():
  validate = D.ValidateDepthLabel(num_classes=3, ignore_index=255)
  example = _example()
  example['label'][0, 0] = 255
  assert validate.map(example) is example
  with pytest.raises(DataError, match=r'frame_0.png: label size \(5, 8\) differs'):
    validate.map({**example, 'label': example['label'][:5]})
  bad = example['label'].copy()
  bad[1, 1] = 3
  with pytest.raises(DataError, match=r'frame_0.png: label values \[3\]'):
    validate.map({**example, 'label': bad})
  with pytest.raises(DataError, match='frame_0.png: depth must be uint16'):
    validate.map({**example, 'image': example['image'].astype(np.uint8)})


def test_random_flip_handles_a_depth_channel():
  example = _example()
  out = T.RandomFlip(prob=1.0).random_map(example, np.random.default_rng(0))
  assert out['image'].shape == (6, 8, 1)
  np.testing.assert_array_equal(out['image'], example['image'][:, ::-1])
  np.testing.assert_array_equal(out['label'], example['label'][:, ::-1])


def test_rotate_quarter_turn_is_rot90_and_outside_is_removed():
  square = _example(6, 6)
  for degrees, turns in ((90, 1), (-90, -1), (180, 2)):
    for key in ('image', 'label'):
      np.testing.assert_array_equal(D.rotate_nearest(square[key], degrees, 0),
                                    np.rot90(square[key], turns))
  example = _example(24, 32, seed=1)
  example['label'][:] = 1
  rotate = D.RandomRotate(max_degrees=30, prob=1.0)
  out = rotate.random_map(example, np.random.default_rng(3))
  # Nearest sampling: no new depth values; corners come from outside: removed.
  assert set(np.unique(out['image'])) <= set(np.unique(example['image'])) | {0}
  assert out['image'][0, 0, 0] == 0 and out['label'][0, 0] == 0
  outside = out['label'] == 0
  assert outside.any() and np.all(out['image'][outside] == 0)
  assert D.RandomRotate(30, prob=0.0).random_map(example, np.random.default_rng(3)) is example


def test_depth_noise_touches_valid_depth_only():
  example = _example(64, 64)
  out = D.DepthNoise(sigma_mm=5.0).random_map(example, np.random.default_rng(0))
  depth = example['image'].astype(np.float32)
  valid = depth > 0
  assert out['image'].dtype == np.float32 and out['image'].shape == depth.shape
  assert np.all(out['image'][~valid] == 0) and np.all(out['image'][valid] > 0)
  assert abs(np.std(out['image'][valid] - depth[valid]) - 5.0) < 0.5
  assert example['image'].dtype == np.uint16  # The input is left as it was.


def test_normalize_depth_keeps_missing_apart():
  depth = np.array([0, 1, 100, 200, 500, 800, 65535], np.uint16).reshape(1, 7, 1)
  out = D.NormalizeDepth(min_mm=200, max_mm=800).map({'image': depth})['image']
  assert out.dtype == np.float32 and out.shape == (1, 7, 1)
  np.testing.assert_allclose(out.ravel(), [-1, 0, 0, 0, 0.5, 1, 1], atol=1e-6)
  noisy = D.NormalizeDepth().map({'image': np.array([[[0.0], [350.5]]], np.float32)})
  np.testing.assert_allclose(noisy['image'].ravel(), [-1, 150.5 / 600], atol=1e-6)


# Depth loaders.
_NORM = {'min_mm': 200, 'max_mm': 800}


def _depth_source(n, h=24, w=32):
  return [_example(h, w, seed=i) for i in range(n)]


def _indexed_source(n, h=6, w=8):
  """Example i has depth 200 + i mm everywhere: i = 600 * normalised depth."""
  return [{'image': np.full((h, w, 1), 200 + i, np.uint16),
           'label': np.zeros((h, w), np.uint8), 'file_name': f'{i}.png'} for i in range(n)]


def _train(source, **overrides):
  kwargs = dict(batch_size=2, rotate_degrees=15, noise_sigma_mm=3.0, seed=0, **_NORM)
  kwargs.update(overrides)
  return segmentation_training.depth_train_loader(source, **kwargs)


def _ids(batches):
  return [int(round(600 * i)) for b in batches for i in b['image'][:, 0, 0, 0]]


def test_depth_train_shapes_dtypes_and_determinism():
  source = _depth_source(6)
  first = list(itertools.islice(_train(source, seed=3), 3))
  again = list(itertools.islice(_train(source, seed=3), 3))
  other = list(itertools.islice(_train(source, seed=4), 3))
  for batch in first:
    assert batch['image'].shape == (2, 24, 32, 1) and batch['image'].dtype == np.float32
    assert batch['label'].shape == (2, 24, 32) and batch['label'].dtype == np.int32
    assert set(np.unique(batch['label'])) <= {0, 1, 2}
    assert batch['image'].min() >= -1 and batch['image'].max() <= 1
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  assert any(not np.array_equal(a['image'], c['image']) for a, c in zip(first, other))


def test_depth_train_shards_disjoint_and_covering():
  source = _indexed_source(10)
  shards = [_ids(_train(source, shard_index=i, shard_count=2, num_epochs=1, batch_size=1,
                        rotate_degrees=0, noise_sigma_mm=0))
            for i in range(2)]
  assert len(shards[0]) == len(shards[1]) == 5
  assert sorted(shards[0] + shards[1]) == list(range(10))


def test_depth_eval_batches_pad_and_stay_in_step():
  source = _indexed_source(5)
  batches = list(segmentation_eval.depth_eval_batches(source, batch_size=2, **_NORM))
  assert len(batches) == 3
  for batch in batches:
    assert batch['image'].shape == (2, 6, 8, 1) and batch['image'].dtype == np.float32
    assert batch['label'].shape == (2, 6, 8) and batch['label'].dtype == np.int32
  assert _ids(batches[:2]) == [0, 1, 2, 3] and np.all(batches[2]['label'][1] == 255)
  shards = [list(segmentation_eval.depth_eval_batches(source, batch_size=2, shard_index=i,
                                             shard_count=2, **_NORM)) for i in range(2)]
  assert [len(s) for s in shards] == [2, 2]  # shard 0 has 2 examples, shard 1 has 3
  assert shards[0][1]['image'].shape == (2, 6, 8, 1) and np.all(shards[0][1]['label'] == 255)
  real = [int(round(600 * b['image'][j, 0, 0, 0])) for s in shards for b in s
          for j in range(2) if not np.all(b['label'][j] == 255)]
  assert real == [0, 1, 2, 3, 4]
