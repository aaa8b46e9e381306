"""Tests of the RGB segmentation loaders (segmentation_training.py, segmentation_eval.py)."""
import itertools
import time

import numpy as np
import pytest

from input_pipeline import segmentation_eval, segmentation_training
from input_pipeline.errors import DataError

_ZEROWASTE_NORM = {'mean': (123.675, 116.28, 103.53), 'std': (58.395, 57.12, 57.375)}


def _random_source(n, h=48, w=64, num_classes=5, prefix='frame'):
  rng = np.random.default_rng(0)
  return [{'image': rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
           'label': rng.integers(0, num_classes, (h, w), dtype=np.uint8),
           'file_name': f'{prefix}_{i}.PNG'} for i in range(n)]


def _indexed_source(n, h=6, w=8):
  """Example i is an image filled with i: recoverable through an identity pipeline."""
  return [{'image': np.full((h, w, 3), i, np.uint8), 'label': np.zeros((h, w), np.uint8),
           'file_name': f'{i}.PNG'} for i in range(n)]


def _train(source, **overrides):
  kwargs = dict(batch_size=2, num_classes=5, crop_size=(32, 32), img_scale=(64, 48),
                ratio_range=(0.5, 2.0), seed=0, **_ZEROWASTE_NORM)
  kwargs.update(overrides)
  return segmentation_training.rgb_train_loader(source, **kwargs)


def _identity_train(source, **overrides):
  """Rescale by 1, full-image crop, no photometric, mean 0 / std 1: image = index."""
  return _train(source, crop_size=(6, 8), img_scale=(8, 6), ratio_range=(1.0, 1.0),
                cat_max_ratio=1.0, photometric=False, mean=(0, 0, 0), std=(1, 1, 1),
                batch_size=1, **overrides)


def _ids(batches):
  return [int(i) for b in batches for i in b['image'][:, 0, 0, 0]]


def test_train_shapes_and_dtypes():
  batches = list(itertools.islice(_train(_random_source(6)), 3))
  for batch in batches:
    assert batch['image'].shape == (2, 32, 32, 3) and batch['image'].dtype == np.float32
    assert batch['label'].shape == (2, 32, 32) and batch['label'].dtype == np.int32
    assert set(np.unique(batch['label'])) <= {0, 1, 2, 3, 4, 255}


def test_train_deterministic_by_seed():
  source = _random_source(6)
  first = list(itertools.islice(_train(source, seed=3), 3))
  again = list(itertools.islice(_train(source, seed=3), 3))
  other = list(itertools.islice(_train(source, seed=4), 3))
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  assert any(not np.array_equal(a['image'], c['image']) for a, c in zip(first, other))


def test_global_batches_do_not_depend_on_the_process_count():
  source = _random_source(10)
  one = list(itertools.islice(_train(source, batch_size=4, seed=5), 5))
  two = [list(itertools.islice(_train(source, batch_size=2, seed=5, shard_index=i,
                                      shard_count=2), 5)) for i in range(2)]
  for k, want in enumerate(one):  # process 0's rows, then process 1's, augmentation too
    for key in ('image', 'label'):
      np.testing.assert_array_equal(
          np.concatenate([two[0][k][key], two[1][k][key]]), want[key])


def test_train_reads_each_example_once_per_epoch_reshuffled():
  ids = _ids(_identity_train(_indexed_source(10), num_epochs=2))
  assert sorted(ids[:10]) == sorted(ids[10:]) == list(range(10))
  assert ids[:10] != ids[10:]


def _depth_train(seed):
  rng = np.random.default_rng(0)
  source = [{'image': rng.integers(200, 800, (24, 32, 1), dtype=np.uint16),
             'label': rng.integers(0, 3, (24, 32), dtype=np.uint8),
             'file_name': f'{i}.png'} for i in range(5)]
  return segmentation_training.depth_train_loader(
      source, batch_size=2, rotate_degrees=15, noise_sigma_mm=3.0, seed=seed,
      min_mm=200, max_mm=800)


@pytest.mark.parametrize('make_loader', [
    lambda seed: _train(_random_source(5), seed=seed), _depth_train], ids=['rgb', 'depth'])
def test_train_iterator_state_resumes_exactly(make_loader):
  iterator = iter(make_loader(7))
  for _ in range(3):
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(2)]
  resumed = iter(make_loader(7))  # a fresh loader, as after a restart
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    np.testing.assert_array_equal(got['image'], want['image'])
    np.testing.assert_array_equal(got['label'], want['label'])


def test_train_with_a_worker_process_matches_in_process():
  source = _random_source(4)
  start = time.perf_counter()
  with_worker = list(itertools.islice(_train(source, worker_count=1), 2))
  assert time.perf_counter() - start < 60
  in_process = list(itertools.islice(_train(source), 2))
  for a, b in zip(with_worker, in_process):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


def _eval(source, **overrides):
  kwargs = dict(batch_size=2, num_classes=5, img_scale=(128, 32), size_divisor=32,
                **_ZEROWASTE_NORM)
  kwargs.update(overrides)
  return list(segmentation_eval.rgb_eval_batches(source, **kwargs))


def test_eval_pads_the_last_batch_with_ignored_examples():
  source = _random_source(5, h=40, w=70)
  batches = _eval(source)
  assert len(batches) == 3
  for batch in batches:
    assert batch['image'].shape == (2, 32, 64, 3) and batch['image'].dtype == np.float32
    assert batch['label'].shape == (2, 40, 70) and batch['label'].dtype == np.int32
  np.testing.assert_array_equal(batches[1]['label'][1], source[3]['label'])
  assert np.all(batches[2]['label'][1] == 255) and np.all(batches[2]['image'][1] == 0)


def test_eval_batches_only_equal_sizes_together():
  source = _random_source(2, h=40, w=70) + _random_source(3, h=64, w=64)
  shapes = [(b['image'].shape, b['label'].shape) for b in _eval(source)]
  assert shapes == [((2, 32, 64, 3), (2, 40, 70))] + [((2, 32, 32, 3), (2, 64, 64))] * 2


def test_eval_shards_stay_in_step():
  source = _indexed_source(5, h=32, w=32)
  norm = dict(mean=(0, 0, 0), std=(1, 1, 1), img_scale=(32, 32))
  shards = [_eval(source, shard_index=i, shard_count=2, **norm) for i in range(2)]
  assert [len(s) for s in shards] == [2, 2]  # shard 0 has 2 examples, shard 1 has 3
  assert np.all(shards[0][1]['label'] == 255)  # an all-padding batch keeps shard 0 in step
  real = [int(b['image'][j, 0, 0, 0]) for s in shards for b in s for j in range(2)
          if not np.all(b['label'][j] == 255)]
  assert real == [0, 1, 2, 3, 4]
  assert len(_eval(source, shard_index=1, shard_count=9, **norm)) == 1  # empty shard


def test_eval_multi_shard_rejects_mixed_sizes():
  source = _random_source(2, h=40, w=70) + _random_source(2, h=64, w=64, prefix='square')
  with pytest.raises(DataError, match='square_0.PNG.*one size'):
    _eval(source, shard_index=1, shard_count=2)
