"""Test-time modes (fanet_jax/inference.py) against independent computations.

The window grid against counts worked by hand from mmsegmentation's formula; slide
inference against a numpy loop over the windows on a function whose output depends
on the window it sees (so averaging mistakes show); one window that covers the image
against whole-image inference; flip augmentation of a flip-equivariant function
against no augmentation; the evaluation step in slide mode against the confusion
matrix of those logits.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fanet_jax import config as config_lib
from fanet_jax import inference, metrics, sharding
from fanet_jax.config import ConfigError
from fanet_jax.tasks import segmentation

RNG = np.random.default_rng(0)
WEIGHTS = RNG.normal(size=(3, 4)).astype(np.float32)


def _window_dependent(x):
  """Logits that depend on the window: a per-pixel map plus the window's mean."""
  return x @ WEIGHTS + x.mean(axis=(1, 2), keepdims=True) @ WEIGHTS[:, ::-1]


def test_window_starts_by_hand():
  # ZeroWaste-f frames (1920x1080), 512 crops, stride 341: (1920-512+340)//341+1 = 6
  # windows across, the last shifted back to end at 1920; (1080-512+340)//341+1 = 3 down.
  assert inference.window_starts(1920, 512, 341) == [0, 341, 682, 1023, 1364, 1408]
  assert inference.window_starts(1080, 512, 341) == [0, 341, 568]
  assert inference.window_starts(512, 512, 341) == [0]
  assert inference.slide_windows(300, 700, (512, 512), (341, 341)) == [
      (0, 300, 0, 512), (0, 300, 188, 700)]  # smaller than the crop: one row, 300 high
  with pytest.raises(ValueError, match='at least 1'):
    inference.window_starts(10, 4, 0)


def test_slide_equals_a_numpy_loop_over_the_windows():
  images = RNG.normal(size=(2, 13, 17, 3)).astype(np.float32)
  crop, stride = (5, 6), (3, 4)
  total = np.zeros((2, 13, 17, 4))
  count = np.zeros((13, 17))
  rows = max(13 - 5 + 3 - 1, 0) // 3 + 1
  cols = max(17 - 6 + 4 - 1, 0) // 4 + 1
  for i in range(rows):
    for j in range(cols):
      bottom, right = min(i * 3 + 5, 13), min(j * 4 + 6, 17)
      top, left = max(bottom - 5, 0), max(right - 6, 0)
      total[:, top:bottom, left:right] += _window_dependent(images[:, top:bottom, left:right])
      count[top:bottom, left:right] += 1
  expected = total / count[None, :, :, None]
  got = jax.jit(lambda x: inference.logits(_window_dependent, x, 'slide', crop, stride))(
      images)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
  assert not np.allclose(expected, _window_dependent(images), atol=1e-3)  # it matters


def test_one_window_that_covers_the_image_is_whole_image_inference():
  images = RNG.normal(size=(1, 9, 11, 3)).astype(np.float32)
  whole = inference.logits(_window_dependent, images, 'whole')
  slide = inference.logits(_window_dependent, images, 'slide', crop=(16, 16),
                           stride=(8, 8))
  np.testing.assert_allclose(np.asarray(slide), np.asarray(whole), rtol=1e-6, atol=1e-6)


def test_flip_views_of_a_flip_equivariant_function_change_nothing():
  per_pixel = lambda x: x @ WEIGHTS  # commutes with a left-right flip
  images = jnp.asarray(RNG.normal(size=(2, 8, 10, 3)).astype(np.float32))
  np.testing.assert_allclose(
      np.asarray(inference.tta_probabilities(per_pixel, images, (8, 10), scales=(1.0,))),
      np.asarray(jax.nn.softmax(per_pixel(images), axis=-1)), rtol=1e-6, atol=1e-6)


def test_unknown_mode_and_missing_windows_are_refused():
  images = np.zeros((1, 4, 4, 3), np.float32)
  with pytest.raises(ValueError, match="mode must be one of"):
    inference.logits(_window_dependent, images, 'sliding')
  with pytest.raises(ValueError, match="needs crop"):
    inference.logits(_window_dependent, images, 'slide')


class _WindowDependent(nn.Module):
  """A segmentor whose logits depend on the window it sees (per-pixel map plus the
  window's mean), with `apply(variables, images, train=False)` as the real ones."""

  @nn.compact
  def __call__(self, images, train=False):
    del train
    return _window_dependent(images) + self.param('bias', nn.initializers.ones, (4,))


def test_the_evaluation_step_scores_the_slide_logits():
  model, mesh = _WindowDependent(), sharding.create_mesh(jax.devices()[:1])
  variables = model.init(jax.random.key(0), np.zeros((1, 4, 4, 3), np.float32))
  images = RNG.normal(size=(2, 13, 17, 3)).astype(np.float32)
  labels = RNG.integers(0, 4, (2, 13, 17)).astype(np.int32)
  labels[0, :3] = 255
  crop, stride = (5, 6), (3, 4)
  expected_logits = inference.logits(lambda x: model.apply(variables, x), images,
                                     'slide', crop, stride)
  expected = metrics.confusion_matrix(labels, np.argmax(expected_logits, -1), 4, 255)
  batches = [{'image': images, 'label': labels}]
  result = segmentation.evaluate(model, variables, batches, mesh=mesh, num_classes=4,
                                 ignore_index=255, mode='slide', crop=crop, stride=stride)
  assert result['confusion'] == np.asarray(expected).tolist()
  whole = segmentation.evaluate(model, variables, batches, mesh=mesh, num_classes=4,
                                ignore_index=255)
  assert whole['confusion'] != result['confusion']  # the mode reached the step
  assert sum(map(sum, whole['confusion'])) == 2 * 13 * 17 - 3 * 17


@pytest.mark.parametrize('override,message', [
    ('eval_mode=sliding', "eval_mode must be 'whole' or 'slide'"),
    ('eval_mode=slide', r"eval_mode 'slide' needs eval_crop=\(H,W\)"),
    ('eval_tta_scales=(0.5,-1.0)', 'eval_tta_scales must be positive ratios'),
])
def test_evaluation_mode_settings_are_checked(override, message):
  with pytest.raises(ConfigError, match=message):
    config_lib.apply_overrides(config_lib.load_experiment('demo'), [override])


def test_tta_averages_the_softmax_of_every_scale_and_flip():
  per_pixel = lambda x: jnp.tanh(x) @ WEIGHTS
  images = jnp.asarray(RNG.normal(size=(2, 8, 10, 3)).astype(np.float32))
  got = inference.tta_probabilities(per_pixel, images, (8, 10), scales=(1.0, 2.0))
  # Independently: jax.image.resize (half-pixel bilinear, no antialiasing) and flips.
  resize = lambda x, h, w: jax.image.resize(x, (x.shape[0], h, w, x.shape[3]),
                                            'bilinear', antialias=False)
  flip = lambda x: x[:, :, ::-1]
  views = [per_pixel(images), flip(per_pixel(flip(images))),
           resize(per_pixel(resize(images, 16, 20)), 8, 10),
           flip(resize(per_pixel(resize(flip(images), 16, 20)), 8, 10))]
  expected = sum(jax.nn.softmax(v, axis=-1) for v in views) / 4
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-6)
