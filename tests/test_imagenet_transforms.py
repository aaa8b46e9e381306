"""Tests of input_pipeline/imagenet_transforms.py: each transform's defining property.

The ImageNet recipe of docs/data.md section 4 (timm 'rand-m9-mstd0.5-inc1', random erasing
0.25, bicubic 224 crops, eval resize 256 + centre crop 224). Probabilities are checked
against binomial bounds of 5 standard deviations, so a fixed seed never sits near one.
"""
import math

import grain.python as grain
import numpy as np
import pytest
from PIL import Image

from input_pipeline import imagenet_transforms as T
from input_pipeline.errors import DataError

_GEOMETRIC = ('Rotate', 'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel')


def _example(h, w, seed=0):
  image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
  return {'image': image, 'label': np.int64(7), 'file_name': f'n0144_{seed}.JPEG'}


def _apply(transforms, element, rng):
  for t in transforms:
    random = isinstance(t, grain.RandomMapTransform)
    element = t.random_map(element, rng) if random else t.map(element)
  return element


def _rounding_allows(h, w, n, area_range, ratio_range):
  """Whether round() of some exact (X, Y) with X*Y/n in area_range and X/Y in
  ratio_range gives the integer box sides (h, w)."""
  lo_area, hi_area = (h - 0.5) * (w - 0.5) / n, (h + 0.5) * (w + 0.5) / n
  lo_ratio, hi_ratio = (h - 0.5) / (w + 0.5), (h + 0.5) / max(w - 0.5, 1e-9)
  return (lo_area <= area_range[1] and hi_area >= area_range[0]
          and lo_ratio <= ratio_range[1] and hi_ratio >= ratio_range[0])


def _binomial_ok(hits, n, p):
  return abs(hits - n * p) <= 5 * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize('image,label', [
    (np.zeros((8, 8, 3), np.float32), 1), (np.zeros((8, 8), np.uint8), 1),
    (np.zeros((8, 8, 4), np.uint8), 1), (np.zeros((8, 8, 3), np.uint8), 1.5),
    (np.zeros((8, 8, 3), np.uint8), np.array([1, 2])), (np.zeros((8, 8, 3), np.uint8), -1)])
def test_validate_names_the_file(image, label):
  with pytest.raises(DataError, match='n0144_bad.JPEG'):
    T.ValidateClassExample().map({'image': image, 'label': label, 'file_name': b'n0144_bad.JPEG'})


@pytest.mark.parametrize('h,w', [(375, 500), (500, 333), (224, 224), (7, 9)])
def test_random_resized_crop_size_and_box(h, w):
  crop, rng = T.RandomResizedCrop(), np.random.default_rng(0)
  for _ in range(300):
    top, left, bh, bw = crop.draw_box(h, w, rng)
    assert 0 <= top and top + bh <= h and 0 <= left and left + bw <= w
    assert _rounding_allows(bw, bh, h * w, (0.08, 1.0), (3 / 4, 4 / 3)), (bh, bw)
  assert crop.random_map(_example(h, w), rng)['image'].shape == (224, 224, 3)


def test_random_resized_crop_spans_the_ranges():
  crop, rng = T.RandomResizedCrop(), np.random.default_rng(1)
  boxes = np.array([crop.draw_box(1000, 1000, rng)[2:] for _ in range(3000)])
  area, aspect = boxes[:, 0] * boxes[:, 1] / 1e6, boxes[:, 1] / boxes[:, 0]
  assert area.min() < 0.1 and area.max() > 0.9
  assert aspect.min() < 0.77 and aspect.max() > 1.3


def test_random_resized_crop_falls_back_to_clamped_centre():
  # No box of >= 8% of a 10x1000 strip has aspect <= 4/3: the centre crop is taken.
  assert T.RandomResizedCrop().draw_box(10, 1000, np.random.default_rng(0)) == (0, 493, 10, 13)
  assert T.RandomResizedCrop().draw_box(1000, 10, np.random.default_rng(0)) == (493, 0, 13, 10)


def test_random_resized_crop_resizes_the_drawn_box_bicubic():
  crop, element = T.RandomResizedCrop(size=32), _example(90, 120)
  out = crop.random_map(element, np.random.default_rng(5))
  top, left, h, w = crop.draw_box(90, 120, np.random.default_rng(5))
  region = np.ascontiguousarray(element['image'][top:top + h, left:left + w])
  expected = Image.fromarray(region).resize((32, 32), Image.Resampling.BICUBIC)
  np.testing.assert_array_equal(out['image'], np.array(expected))


def test_flip_is_exact_mirror_and_respects_prob():
  element = _example(5, 7)
  out = T.RandomHorizontalFlip(1.0).random_map(element, np.random.default_rng(0))
  np.testing.assert_array_equal(out['image'], element['image'][:, ::-1])
  assert T.RandomHorizontalFlip(0.0).random_map(element, np.random.default_rng(0)) is element
  rng, flip = np.random.default_rng(0), T.RandomHorizontalFlip(0.5)
  hits = sum(flip.random_map(element, rng) is not element for _ in range(2000))
  assert _binomial_ok(hits, 2000, 0.5)


def test_randaugment_op_list_and_draws():
  ra, rng = T.RandAugment(), np.random.default_rng(0)
  assert len(T.RAND_INCREASING_OPS) == 15 and len(set(ra.ops)) == 15
  draws = [ra.draw_ops(rng) for _ in range(500)]
  assert all(len(d) == 2 and set(d) <= set(ra.ops) for d in draws)
  assert any(d[0] == d[1] for d in draws)  # with replacement, as timm
  assert len(T.RandAugment(num_ops=3).draw_ops(rng)) == 3
  mags = np.array([ra.draw_magnitude(rng) for _ in range(4000)])
  assert mags.min() >= 0 and mags.max() <= 10 and (mags == 10).any()
  assert abs(mags.mean() - 9) < 0.05 and abs(mags[mags < 10].std() - 0.47) < 0.03


def test_randaugment_is_deterministic_per_rng_and_leaves_input():
  element, ra = _example(40, 50), T.RandAugment(prob=1.0)
  before = element['image'].copy()
  a = ra.random_map(element, np.random.default_rng(3))['image']
  b = ra.random_map(element, np.random.default_rng(3))['image']
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(element['image'], before)
  assert a.dtype == np.uint8 and a.shape == (40, 50, 3)
  same = T.RandAugment(prob=0.0).random_map(element, np.random.default_rng(3))['image']
  np.testing.assert_array_equal(same, before)


@pytest.mark.parametrize('name', T.RAND_INCREASING_OPS)
def test_every_op_runs_at_high_magnitude(name):
  image = _example(20, 30)['image']
  out = T.RandAugment().apply_op(image, name, 10.0, np.random.default_rng(0))
  assert out.dtype == np.uint8 and out.shape == (20, 30, 3)


@pytest.mark.parametrize('interpolation', ['bilinear', 'bicubic', 'random'])
@pytest.mark.parametrize('name', _GEOMETRIC)
def test_geometric_ops_at_magnitude_zero_are_identity(name, interpolation):
  image = _example(20, 30)['image']
  ra = T.RandAugment(interpolation=interpolation)
  out = ra.apply_op(image, name, 0.0, np.random.default_rng(0))
  np.testing.assert_array_equal(out, image)


def test_translate_moves_by_pct_and_fills_with_mean():
  image, ra = _example(20, 40)['image'], T.RandAugment(interpolation='bicubic')
  out = ra.apply_op(image, 'TranslateXRel', 10.0, np.random.default_rng(0))
  shift = 18  # 0.45 * 40 at magnitude 10
  left = np.array_equal(out[:, :-shift], image[:, shift:]) and (out[:, -shift:] == ra.fill).all()
  right = np.array_equal(out[:, shift:], image[:, :-shift]) and (out[:, :shift] == ra.fill).all()
  assert left or right


def test_pixel_ops():
  ra, rng = T.RandAugment(), np.random.default_rng(0)
  image = np.broadcast_to(np.arange(256, dtype=np.uint8).reshape(16, 16, 1), (16, 16, 3)).copy()
  np.testing.assert_array_equal(ra.apply_op(image, 'Invert', 9.0, rng), 255 - image)
  # Solarize: threshold 256 - int(m / 10 * 256); pixels at or above it are inverted.
  np.testing.assert_array_equal(ra.apply_op(image, 'SolarizeIncreasing', 5.0, rng),
                                np.where(image >= 128, 255 - image, image))
  np.testing.assert_array_equal(ra.apply_op(image, 'SolarizeIncreasing', 0.0, rng), image)
  add = int(9.0 / 10 * 110)
  added = np.where(image < 128, np.minimum(image.astype(int) + add, 255), image)
  np.testing.assert_array_equal(ra.apply_op(image, 'SolarizeAdd', 9.0, rng), added)
  # Posterize keeps 4 - int(m / 10 * 4) high bits: 1 bit at m9, none at m10.
  np.testing.assert_array_equal(ra.apply_op(image, 'PosterizeIncreasing', 9.0, rng), image & 0x80)
  assert not ra.apply_op(image, 'PosterizeIncreasing', 10.0, rng).any()
  np.testing.assert_array_equal(ra.apply_op(image, 'BrightnessIncreasing', 0.0, rng), image)


def test_normalize_numerics():
  element = {**_example(3, 4), 'image': np.array([[[0, 128, 255]]], np.uint8)}
  out = T.Normalize(T.IMAGENET_MEAN, T.IMAGENET_STD).map(element)['image']
  expected = (np.array([0, 128, 255]) - np.array(T.IMAGENET_MEAN)) / np.array(T.IMAGENET_STD)
  assert out.dtype == np.float32
  np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)


def test_random_erasing_erases_one_rectangle_in_range():
  erase = T.RandomErasing(prob=1.0)
  image = np.random.default_rng(0).standard_normal((224, 224, 3)).astype(np.float32)
  erased = []
  for seed in range(120):
    out = erase.random_map({'image': image, 'label': 0}, np.random.default_rng(seed))['image']
    changed = (out != image).any(axis=-1)
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    box = changed[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    assert box.all() and changed.sum() == box.size  # one filled rectangle, rest identical
    np.testing.assert_array_equal(out[~changed], image[~changed])
    assert _rounding_allows(box.shape[0], box.shape[1], 224 * 224, (0.02, 1 / 3), (0.3, 1 / 0.3))
    erased.append(out[changed])
  values = np.concatenate(erased)
  assert abs(values.mean()) < 0.01 and abs(values.std() - 1) < 0.01  # mode 'pixel'


def test_random_erasing_prob():
  element = {'image': np.zeros((32, 32, 3), np.float32), 'label': 0}
  rng = np.random.default_rng(0)
  assert all(T.RandomErasing(prob=0.0).random_map(element, rng) is element for _ in range(100))
  erase = T.RandomErasing(prob=0.25)
  hits = sum(erase.random_map(element, rng)['image'].any() for _ in range(2000))
  assert _binomial_ok(hits, 2000, 0.25)


@pytest.mark.parametrize('h,w,expected', [(300, 500, (256, 426)), (500, 300, (426, 256)),
                                          (256, 400, (256, 400)), (1000, 1000, (256, 256))])
def test_eval_resizes_shorter_side_then_crops_centre(h, w, expected):
  element = _example(h, w)
  resized = T.ResizeShorter(256).map(element)
  assert resized['image'].shape == expected + (3,)
  cropped = T.CenterCrop(224).map(resized)['image']
  top, left = round((expected[0] - 224) / 2), round((expected[1] - 224) / 2)
  np.testing.assert_array_equal(cropped, resized['image'][top:top + 224, left:left + 224])
  out = _apply(T.eval_transforms(), element, None)
  assert set(out) == {'image', 'label'} and out['image'].shape == (224, 224, 3)
  assert out['image'].dtype == np.float32 and out['label'].dtype == np.int32 and out['label'] == 7


def test_train_transforms_end_to_end():
  names = [type(t).__name__ for t in T.train_transforms()]
  assert names == ['ValidateClassExample', 'RandomResizedCrop', 'RandomHorizontalFlip',
                   'RandAugment', 'Normalize', 'RandomErasing', 'ToClassificationExample']
  assert T.train_transforms()[3].fill == (124, 116, 104)  # timm's img_mean
  bare = [type(t).__name__ for t in T.train_transforms(randaug_num_ops=0, random_erase_prob=0)]
  assert 'RandAugment' not in bare and 'RandomErasing' not in bare
  rng = np.random.default_rng(0)
  for seed, (h, w) in enumerate([(375, 500), (600, 400), (100, 80)]):
    out = _apply(T.train_transforms(), _example(h, w, seed), rng)
    assert set(out) == {'image', 'label'} and out['image'].shape == (224, 224, 3)
    assert out['image'].dtype == np.float32 and out['label'].dtype == np.int32
    assert np.isfinite(out['image']).all()
