"""Tests of input_pipeline/transforms.py: each transform's defining property (docs/data.md section 2).

The cv2 reference values below were produced with cv2.resize / cv2.cvtColor
(opencv-python-headless 5.0), which is not a dependency of this project.
"""
import numpy as np
import pytest

from input_pipeline import image_ops
from input_pipeline import transforms as T
from input_pipeline.errors import DataError


def _example(h, w, seed=0, num_classes=5):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
          'label': rng.integers(0, num_classes, (h, w), dtype=np.uint8),
          'file_name': f'frame_{seed}.PNG'}


def _direct_bilinear(image, oh, ow):
  """Half-pixel bilinear, edge replicated, one output pixel at a time, in float64."""
  h, w = image.shape[:2]
  out = np.zeros((oh, ow) + image.shape[2:])
  for i in range(oh):
    for j in range(ow):
      y = min(max((i + 0.5) * h / oh - 0.5, 0), h - 1)
      x = min(max((j + 0.5) * w / ow - 0.5, 0), w - 1)
      y0, x0 = int(y), int(x)
      y1, x1, fy, fx = min(y0 + 1, h - 1), min(x0 + 1, w - 1), y - y0, x - x0
      out[i, j] = ((1 - fy) * ((1 - fx) * image[y0, x0] + fx * image[y0, x1])
                   + fy * ((1 - fx) * image[y1, x0] + fx * image[y1, x1]))
  return out


@pytest.mark.parametrize('h,w,r', [(1080, 1920, 0.5), (1080, 1920, 1.37), (1080, 1920, 2.0),
                                   (1920, 1080, 0.8), (300, 400, 1.0), (512, 512, 1.9)])
def test_random_rescale_keeps_ratio(h, w, r):
  example = {'image': np.zeros((h, w, 3), np.uint8), 'label': np.zeros((h, w), np.uint8)}
  out = T.RandomRescale((2048, 512), (r, r)).random_map(example, np.random.default_rng(0))
  long_t, short_t = int(2048 * r), int(512 * r)  # mmseg truncates the scaled target
  factor = min(long_t / max(h, w), short_t / min(h, w))
  expected = (int(h * factor + 0.5), int(w * factor + 0.5))
  assert out['image'].shape == expected + (3,)
  assert out['label'].shape == expected
  assert max(expected) <= long_t + 1 and min(expected) <= short_t + 1


@pytest.mark.parametrize('size', [(13, 11), (3, 4), (6, 9), (1, 1), (20, 2)])
def test_bilinear_matches_direct_half_pixel_computation(size):
  image = np.random.default_rng(1).integers(0, 256, (6, 9, 3), dtype=np.uint8)
  out = image_ops.resize_bilinear(image, size)
  direct = _direct_bilinear(image.astype(np.float64), *size)
  # cv2's fixed point truncates a little; it stays within one level of exact.
  assert out.dtype == np.uint8 and out.shape == size + (3,)
  assert np.abs(out - direct).max() <= 1.0


def test_bilinear_is_cv2_inter_linear_bit_for_bit():
  image = np.array([[139, 74, 229, 241, 169, 65], [6, 160, 149, 106, 38, 175],
                    [188, 205, 175, 229, 98, 249], [10, 148, 95, 86, 147, 198]], np.uint8)
  up = np.array([[139, 106, 100, 203, 235, 229, 181, 117, 65],
                 [91, 98, 120, 184, 197, 181, 134, 113, 104],
                 [15, 85, 154, 154, 135, 104, 59, 107, 167],
                 [97, 140, 179, 165, 165, 151, 84, 140, 212],
                 [175, 188, 195, 174, 194, 199, 121, 173, 245],
                 [73, 121, 161, 131, 130, 136, 131, 173, 216],
                 [10, 79, 139, 104, 90, 96, 137, 172, 198]])
  down = np.array([[110, 184, 201, 99], [118, 167, 143, 176], [69, 120, 117, 189]])
  np.testing.assert_array_equal(image_ops.resize_bilinear(image[..., None], (7, 9))[..., 0], up)
  np.testing.assert_array_equal(image_ops.resize_bilinear(image[..., None], (3, 4))[..., 0], down)


def test_bilinear_identity_at_same_size():
  image = _example(17, 23)['image']
  np.testing.assert_array_equal(image_ops.resize_bilinear(image, (17, 23)), image)


def test_nearest_keeps_only_existing_label_values():
  label = np.random.default_rng(2).choice(np.array([0, 3, 255], np.uint8), (37, 53))
  for size in [(80, 11), (9, 120), (37, 53)]:
    out = image_ops.resize_nearest(label, size)
    assert out.shape == size and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 3, 255}
    rows = np.minimum(np.arange(size[0]) * 37 // size[0], 36)
    cols = np.minimum(np.arange(size[1]) * 53 // size[1], 52)
    np.testing.assert_array_equal(out, label[rows][:, cols])


@pytest.mark.parametrize('h,w', [(1080, 1920), (1920, 1080), (480, 640), (333, 500)])
def test_rescale_to_multiples_of_32_fits_img_scale(h, w):
  example = _example(h, w)
  transform = T.Rescale((2048, 512), size_divisor=32)
  out = transform.map(example)
  fit = image_ops.rescale_size(h, w, (2048, 512))
  oh, ow = out['image'].shape[:2]
  assert (oh, ow) == transform.output_size(h, w)
  assert oh % 32 == 0 and ow % 32 == 0
  assert fit[0] <= oh < fit[0] + 32 and fit[1] <= ow < fit[1] + 32
  assert max(fit) <= 2048 and min(fit) <= 512 and (max(fit) >= 2047 or min(fit) >= 511)
  assert out['label'] is example['label']  # test time: the label keeps its size


def test_rescale_1080p_zerowaste_size():
  assert T.Rescale((2048, 512), 32).output_size(1080, 1920) == (512, 928)


def _balance_ok(label, ratio=0.75):
  counts = np.bincount(label.ravel(), minlength=256)[:255]
  counts = counts[counts > 0]
  return len(counts) > 1 and counts.max() / counts.sum() < ratio


def test_random_crop_respects_cat_max_ratio():
  # Left half class 0, right half class 1, a 255 stripe: about 45% of the crops pass.
  label = np.zeros((40, 64), np.uint8)
  label[:, 32:] = 1
  label[:4] = 255
  rows, cols = np.mgrid[:40, :64]
  example = {'image': np.stack([rows, cols, rows], -1).astype(np.uint8), 'label': label}
  passed = {0.75: 0, 1.0: 0}
  for ratio in passed:
    crop = T.RandomCrop((32, 32), cat_max_ratio=ratio)
    for seed in range(200):
      out = crop.random_map(example, np.random.default_rng(seed))
      assert out['image'].shape == (32, 32, 3) and out['label'].shape == (32, 32)
      top, left = out['image'][0, 0, 0], out['image'][0, 0, 1]
      np.testing.assert_array_equal(out['label'], label[top:top + 32, left:left + 32])
      passed[ratio] += _balance_ok(out['label'])
  assert passed[1.0] < 0.7 * 200  # plain random crops often fail the ratio
  assert passed[0.75] >= 0.97 * 200  # 1 - 0.55**10 of them pass with retries


def test_random_crop_single_class_and_small_image():
  example = {'image': np.zeros((20, 30, 3), np.uint8), 'label': np.ones((20, 30), np.uint8)}
  out = T.RandomCrop((16, 16)).random_map(example, np.random.default_rng(0))
  assert out['label'].shape == (16, 16)  # no valid crop: keeps the last one drawn
  out = T.RandomCrop((64, 64)).random_map(example, np.random.default_rng(0))
  assert out['label'].shape == (20, 30)  # smaller than the crop: unchanged (Pad follows)


def test_random_flip():
  example = _example(8, 12)
  out = T.RandomFlip(0.0).random_map(example, np.random.default_rng(0))
  np.testing.assert_array_equal(out['image'], example['image'])
  out = T.RandomFlip(1.0).random_map(example, np.random.default_rng(0))
  np.testing.assert_array_equal(out['image'], example['image'][:, ::-1])
  np.testing.assert_array_equal(out['label'], example['label'][:, ::-1])
  flips = 0
  for seed in range(40):
    out = T.RandomFlip(0.5).random_map(example, np.random.default_rng(seed))
    flipped = np.array_equal(out['label'], example['label'][:, ::-1])
    np.testing.assert_array_equal(
        out['image'], example['image'][:, ::-1] if flipped else example['image'])
    flips += flipped
  assert 5 < flips < 35


def test_rgb_to_hsv_is_cv2_uint8_hsv():
  rgb = np.array([[255, 0, 0], [10, 200, 30], [0, 0, 0], [128, 128, 128], [250, 20, 200],
                  [3, 60, 61], [200, 180, 10], [1, 2, 3]], np.uint8)
  expected = [[0, 255, 255], [63, 242, 200], [0, 0, 0], [0, 0, 128], [157, 235, 250],
              [91, 242, 61], [27, 242, 200], [105, 170, 3]]
  np.testing.assert_array_equal(image_ops.rgb_to_hsv(rgb), expected)


def test_hsv_round_trip():
  rgb = np.random.default_rng(3).integers(0, 256, (256, 256, 3), dtype=np.uint8)
  hsv = image_ops.rgb_to_hsv(rgb)
  assert hsv[..., 0].max() < 180
  err = np.abs(image_ops.hsv_to_rgb(hsv).astype(int) - rgb).max(-1)
  chroma = rgb.max(-1).astype(int) - rgb.min(-1)
  # Identity within 1 level unless uint8 hue (2-degree steps) cannot hold the colour:
  # the hue rounding costs up to chroma / 60 levels on the middle channel.
  assert err[chroma <= 60].max() <= 1
  assert np.all(err <= 1 + np.ceil(chroma / 60))


def test_photometric_distortion_range_and_identity():
  example = _example(32, 48)
  identity = T.PhotometricDistortion(0, (1, 1), (1, 1), 0)
  default = T.PhotometricDistortion()
  changed = 0
  for seed in range(10):
    out = identity.random_map(example, np.random.default_rng(seed))
    np.testing.assert_array_equal(out['image'], example['image'])
    out = default.random_map(example, np.random.default_rng(seed))
    assert out['image'].dtype == np.uint8 and out['image'].shape == (32, 48, 3)
    assert out['label'] is example['label']
    changed += not np.array_equal(out['image'], example['image'])
  assert changed >= 8


def test_normalize_exact():
  image = np.array([[[0, 128, 255], [124, 116, 104]]], np.uint8)
  out = T.Normalize().map({'image': image})['image']
  assert out.dtype == np.float32
  mean = np.float32([123.675, 116.28, 103.53])
  inv_std = np.float32(1 / np.array([58.395, 57.12, 57.375]))
  np.testing.assert_array_equal(out, (image.astype(np.float32) - mean) * inv_std)
  np.testing.assert_allclose(out, (image - mean.astype(np.float64))
                             / np.array([58.395, 57.12, 57.375]), rtol=1e-6, atol=1e-6)


def test_pad_top_left():
  example = {'image': np.ones((3, 5, 3), np.float32), 'label': np.full((3, 5), 2, np.uint8)}
  out = T.Pad((4, 7)).map(example)
  assert out['image'].shape == (4, 7, 3) and out['label'].shape == (4, 7)
  assert np.all(out['image'][:3, :5] == 1) and out['image'][3:].sum() == 0
  assert out['image'][:, 5:].sum() == 0
  assert np.all(out['label'][:3, :5] == 2) and np.all(out['label'][3:] == 255)
  assert np.all(out['label'][:, 5:] == 255)
  assert T.Pad((3, 5)).map(example) is example


def test_validate_label():
  validate = T.ValidateLabel(num_classes=5)
  example = _example(6, 7, seed=4)
  example['label'][0, 0] = 255
  assert validate.map(example) is example
  with pytest.raises(DataError, match='frame_4.PNG.*label size'):
    validate.map({**example, 'label': example['label'][:5]})
  bad = example['label'].copy()
  bad[1, 1] = 7
  with pytest.raises(DataError, match=r'frame_4.PNG.*\[7\]'):
    validate.map({**example, 'label': bad})


def test_to_training_example():
  out = T.ToTrainingExample().map(_example(4, 5))
  assert set(out) == {'image', 'label'}
  assert out['image'].dtype == np.float32 and out['label'].dtype == np.int32


def test_bilinear_window_equals_crop_of_full_resize():
  image = np.random.default_rng(5).integers(0, 256, (30, 50, 3), dtype=np.uint8)
  for size in [(70, 90), (12, 17), (30, 50)]:
    full = image_ops.resize_bilinear(image, size)
    for window in [(slice(0, 8), slice(3, 11)), (slice(5, 40), slice(9, 100))]:
      np.testing.assert_array_equal(image_ops.resize_bilinear(image, size, window), full[window])


def test_random_rescale_crop_equals_rescale_then_crop():
  rescale, crop = T.RandomRescale((80, 40), (0.5, 2.0)), T.RandomCrop((24, 24))
  fused = T.RandomRescaleCrop(rescale, crop)
  for seed in range(20):
    example = _example(45, 70, seed=seed)
    rng = np.random.default_rng(seed)
    want = crop.random_map(rescale.random_map(example, rng), rng)
    got = fused.random_map(example, np.random.default_rng(seed))
    np.testing.assert_array_equal(got['image'], want['image'])
    np.testing.assert_array_equal(got['label'], want['label'])
