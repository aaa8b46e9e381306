"""Synthetic "ImageNet": a tiny generated stand-in for ILSVRC 2012 classification.

A TFDS builder (`synthetic_imagenet`, array_record) with the features and split
names of TFDS `imagenet2012` ('image' JPEG, 'label' ClassLabel, 'file_name' Text;
'train' and 'validation'), so that backbone pretraining runs end to end, and in
tests, without the licensed data. Images vary in size and aspect like ImageNet's.

Each class is one shape (disc, square, triangle, ring, cross) with one texture
(plain or striped) and its own hue; the object is drawn at a random position,
scale and angle over a noisy background with a few small distractor blobs of
random colour. The classes are easy on purpose (a smoke test, not a benchmark):
hue alone nearly separates them (nearest class mean of saturated-hue histograms:
99% on the demo validation split), and shape and texture separate them too.

Example i of a split has label i mod the number of classes (every class present,
balanced) and comes from its own `np.random.default_rng((seed, split_id, i))`, so a
rebuild is byte-identical and examples do not depend on one another.
"""
import colorsys
import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import image_files

SHAPES = ('disc', 'square', 'triangle', 'ring', 'cross')
TEXTURES = ('plain', 'stripes')
# Class c is SHAPES[c % 5] with TEXTURES[c // 5]; every combination once at most.
CLASS_NAMES = tuple(f'{shape}_{texture}' for texture in TEXTURES for shape in SHAPES)
OBJECT_SCALE = (0.25, 0.45)  # Object half-size / shorter image side.
HUE_JITTER = 0.03  # Around the class's own hue c / num_classes.
SATURATION = (0.55, 0.95)
VALUE = (0.6, 1.0)
STRIPE_PERIOD = (0.25, 0.45)  # Stripe period / object half-size.
NUM_DISTRACTORS = (0, 3)  # Inclusive range of small random-colour blobs.
BACKGROUND_NOISE = (0.02, 0.08)  # Std of per-pixel noise on the [0, 1] scale.
JPEG_QUALITY = 90
SPLIT_IDS = {'train': 0, 'validation': 1}


def _box_sd(u, v, half_u, half_v):
  """Signed distance (px, negative inside) to an axis-aligned rectangle."""
  qu, qv = np.abs(u) - half_u, np.abs(v) - half_v
  outside = np.hypot(np.maximum(qu, 0), np.maximum(qv, 0))
  return outside + np.minimum(np.maximum(qu, qv), 0)


def shape_sd(shape: str, u: np.ndarray, v: np.ndarray, a: float) -> np.ndarray:
  """Signed distance to one of `SHAPES` of half-size `a`, centred at u = v = 0."""
  r = np.hypot(u, v)
  if shape == 'disc':
    return r - a
  if shape == 'square':
    return _box_sd(u, v, 0.8 * a, 0.8 * a)
  if shape == 'triangle':  # Equilateral: the farthest of its three edge lines.
    angles = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
    return np.max([np.cos(t) * u + np.sin(t) * v - 0.5 * a for t in angles], axis=0)
  if shape == 'ring':
    return np.abs(r - 0.7 * a) - 0.3 * a
  if shape == 'cross':
    return np.minimum(_box_sd(u, v, a, 0.3 * a), _box_sd(u, v, 0.3 * a, a))
  raise ValueError(f'Unknown shape {shape!r}; valid: {SHAPES}.')


def _hsv(hue: float, saturation: float, value: float) -> np.ndarray:
  return np.asarray(colorsys.hsv_to_rgb(hue % 1.0, saturation, value), np.float32)


def render_example(rng: np.random.Generator, label: int, num_classes: int,
                   size_range: tuple[int, int]) -> np.ndarray:
  """Draws one image of class `label`.

  Args:
    rng: the example's own generator (all randomness comes from it).
    label: class index, below `num_classes`.
    num_classes: number of classes (sets the hue spacing).
    size_range: inclusive range of the height and of the width, drawn apart.

  Returns:
    uint8 (H, W, 3) RGB image.
  """
  height, width = rng.integers(size_range[0], size_range[1] + 1, 2)
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
  # Background: a dull random colour with a linear shading across the image.
  image = _hsv(rng.uniform(), rng.uniform(0, 0.4), rng.uniform(0.2, 0.7))
  tilt = rng.uniform(-0.3, 0.3, 2)
  shade = 1 + tilt[0] * (yy / height - 0.5) + tilt[1] * (xx / width - 0.5)
  image = image * shade[..., None]
  side = min(height, width)
  for _ in range(rng.integers(NUM_DISTRACTORS[0], NUM_DISTRACTORS[1] + 1)):
    centre = rng.uniform(0, 1, 2) * (height, width)
    radius = rng.uniform(0.05, 0.12) * side
    blob = np.clip(radius - np.hypot(yy - centre[0], xx - centre[1]), 0, 1)[..., None]
    colour = _hsv(rng.uniform(), rng.uniform(0, 1), rng.uniform(0.3, 1))
    image = image * (1 - blob) + colour * blob
  # The object: the class's shape, texture and hue at a random pose.
  a = rng.uniform(*OBJECT_SCALE) * side
  cy = rng.uniform(0.6 * a, height - 0.6 * a)
  cx = rng.uniform(0.6 * a, width - 0.6 * a)
  t = rng.uniform(0, 2 * np.pi)
  u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
  v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
  hue = label / num_classes + rng.uniform(-HUE_JITTER, HUE_JITTER)
  colour = _hsv(hue, rng.uniform(*SATURATION), rng.uniform(*VALUE))
  texture = 1 + 0.15 * v / a  # Matte shading, lit from one side.
  if TEXTURES[label // len(SHAPES)] == 'stripes':
    period = rng.uniform(*STRIPE_PERIOD) * a
    texture = texture * np.where(np.sin(2 * np.pi * u / period) > 0, 1.0, 0.35)
  coverage = np.clip(0.5 - shape_sd(SHAPES[label % len(SHAPES)], u, v, a), 0, 1)
  coverage = coverage[..., None]  # Anti-aliased edge, one pixel wide.
  image = image * (1 - coverage) + colour * texture[..., None] * coverage
  image = image + rng.normal(0, rng.uniform(*BACKGROUND_NOISE), image.shape)
  return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


@dataclasses.dataclass(eq=False)
class SyntheticImagenetConfig(tfds.core.BuilderConfig):
  """Classes, examples per class and split, image side range and the seed."""
  num_classes: int = 10
  train_per_class: int = 40
  validation_per_class: int = 10
  size_range: tuple[int, int] = (48, 96)
  seed: int = 0


class SyntheticImagenet(tfds.core.GeneratorBasedBuilder):
  """Synthetic shapes in the format of TFDS imagenet2012 (train / validation)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release: 5 shapes x 2 textures, JPEG, 48-96 px.'}
  BUILDER_CONFIGS = [
      SyntheticImagenetConfig(
          name='demo', description='10 classes, 400 / 100 images of 48-96 px.'),
      SyntheticImagenetConfig(
          name='tiny', description='10 classes, 30 / 10 images of 32-48 px, for tests.',
          train_per_class=3, validation_per_class=1, size_range=(32, 48)),
  ]
  DEFAULT_CONFIG_NAME = 'demo'

  def _info(self) -> tfds.core.DatasetInfo:
    num_classes = self.builder_config.num_classes
    if not 1 <= num_classes <= len(CLASS_NAMES):
      raise ValueError(f'num_classes={num_classes}: must be 1..{len(CLASS_NAMES)}.')
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            # As imagenet2012: JPEG of any size, 3 channels, decoded to uint8.
            'image': tfds.features.Image(encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(names=CLASS_NAMES[:num_classes]),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        # Keep generation order: example i of a split is index i, as its seed says.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    return {
        'train': self._generate_examples('train', config.train_per_class),
        'validation': self._generate_examples('validation', config.validation_per_class),
    }

  def _generate_examples(self, split: str, per_class: int):
    config = self.builder_config
    for index in range(per_class * config.num_classes):
      label = index % config.num_classes
      rng = np.random.default_rng((config.seed, SPLIT_IDS[split], index))
      image = render_example(rng, label, config.num_classes, config.size_range)
      # Named like ImageNet's files: '<synset>_<n>.JPEG', 'ILSVRC2012_val_<n>.JPEG'.
      if split == 'train':
        file_name = f'{CLASS_NAMES[label]}_{index:05d}.JPEG'
      else:
        file_name = f'synthetic_val_{index:05d}.JPEG'
      yield file_name, {'image': image_files.jpeg_bytes(image, JPEG_QUALITY),
                        'label': label, 'file_name': file_name}
