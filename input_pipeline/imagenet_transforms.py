"""Per-example ImageNet-1K augmentations of the backbone pretraining (docs/data.md section 4).

The Swin/VAN recipe the paper follows is timm's `create_transform(224,
is_training=True, auto_augment='rand-m9-mstd0.5-inc1', interpolation='bicubic',
re_prob=0.25, re_mode='pixel', re_count=1)`, i.e. in order:
RandomResizedCrop (bicubic) -> horizontal flip -> RandAugment on uint8 -> Normalize ->
RandomErasing on the normalised image. Evaluation is Resize(256, bicubic) of the
shorter side -> CenterCrop(224) -> Normalize (timm crop_pct 0.875). Mixup/CutMix act on
batches and live elsewhere.

Small named grain transforms over numpy dict examples
`{'image': uint8 (H, W, 3) RGB, 'label': int, 'file_name': str}`; geometric and
colour ops go through PIL, as in timm (RandAugment is in randaugment.py).
Transforms never modify their input arrays.
"""
import dataclasses
import math

import grain.python as grain
import numpy as np
from PIL import Image

from input_pipeline.errors import DataError
from input_pipeline.randaugment import RAND_INCREASING_OPS, RandAugment  # noqa: F401
from input_pipeline.transforms import Normalize

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
_RESAMPLE = {'bilinear': Image.Resampling.BILINEAR, 'bicubic': Image.Resampling.BICUBIC}


def _name(element):
  name = element.get('file_name', '<unnamed>')
  return name.decode('utf-8', 'replace') if isinstance(name, bytes) else name


@dataclasses.dataclass(frozen=True)
class ValidateClassExample(grain.MapTransform):
  """Rejects examples that are not a uint8 (H, W, 3) RGB image with a class index."""

  def map(self, element):
    image, label = element['image'], np.asarray(element['label'])
    if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3
        or image.shape[2] != 3 or 0 in image.shape):
      raise DataError(f'{_name(element)}: image must be uint8 (H, W, 3), got '
                      f'{getattr(image, "dtype", type(image).__name__)} {np.shape(image)}')
    if label.ndim or not np.issubdtype(label.dtype, np.integer) or label < 0:
      raise DataError(f'{_name(element)}: label must be a non-negative integer, got {label!r}')
    return element


@dataclasses.dataclass(frozen=True)
class RandomResizedCrop(grain.RandomMapTransform):
  """timm `RandomResizedCropAndInterpolation` (torchvision semantics) to size x size.

  10 attempts at a box of area fraction ~U(scale) and log-uniform aspect w/h in ratio
  that fits in the image; otherwise the centre crop with the aspect clamped to ratio.
  The box is cropped first, then resized (PIL, antialiased when shrinking).
  """
  size: int = 224
  scale: tuple[float, float] = (0.08, 1.0)
  ratio: tuple[float, float] = (3 / 4, 4 / 3)
  interpolation: str = 'bicubic'

  def draw_box(self, height, width, rng):
    """Returns the crop as (top, left, box_height, box_width)."""
    log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
    for _ in range(10):
      area = rng.uniform(*self.scale) * height * width
      aspect = math.exp(rng.uniform(*log_ratio))
      w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
      if 0 < w <= width and 0 < h <= height:
        return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    if width / height < min(self.ratio):
      h, w = round(width / min(self.ratio)), width
    elif width / height > max(self.ratio):
      h, w = height, round(height * max(self.ratio))
    else:
      h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w

  def random_map(self, element, rng: np.random.Generator):
    top, left, h, w = self.draw_box(*element['image'].shape[:2], rng)
    crop = Image.fromarray(np.ascontiguousarray(element['image'][top:top + h, left:left + w]))
    crop = crop.resize((self.size, self.size), _RESAMPLE[self.interpolation])
    return {**element, 'image': np.array(crop)}


@dataclasses.dataclass(frozen=True)
class RandomHorizontalFlip(grain.RandomMapTransform):
  """Mirrors the image left-right with probability prob."""
  prob: float = 0.5

  def random_map(self, element, rng: np.random.Generator):
    if rng.random() < self.prob:
      return {**element, 'image': element['image'][:, ::-1]}
    return element


@dataclasses.dataclass(frozen=True)
class RandomErasing(grain.RandomMapTransform):
  """timm `RandomErasing` on the normalised float image (Zhong et al. 2017).

  With probability prob, erases `count` rectangles, each from up to 10 attempts at an
  area fraction ~U(min_area, max_area) / count and log-uniform aspect h/w in
  [min_aspect, max_aspect] that fits strictly inside the image (timm's `<`). mode
  'pixel' fills with per-pixel, per-channel N(0, 1); 'rand' one N(0, 1) per channel;
  'const' zeros.
  """
  prob: float = 0.25
  mode: str = 'pixel'
  min_area: float = 0.02
  max_area: float = 1 / 3
  min_aspect: float = 0.3
  max_aspect: float | None = None
  count: int = 1

  def draw_box(self, height, width, rng):
    """Returns one rectangle as (top, left, box_height, box_width), or None."""
    max_aspect = self.max_aspect or 1 / self.min_aspect
    log_aspect = (math.log(self.min_aspect), math.log(max_aspect))
    for _ in range(10):
      area = rng.uniform(self.min_area, self.max_area) * height * width / self.count
      aspect = math.exp(rng.uniform(*log_aspect))
      h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
      if 0 < h < height and 0 < w < width:
        return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    return None

  def random_map(self, element, rng: np.random.Generator):
    if rng.random() >= self.prob:
      return element
    image = np.array(element['image'], np.float32)  # a copy: the input stays untouched
    for _ in range(self.count):
      box = self.draw_box(*image.shape[:2], rng)
      if box is None:
        continue
      top, left, h, w = box
      shape = {'pixel': (h, w, image.shape[2]), 'rand': (1, 1, image.shape[2]),
               'const': None}[self.mode]
      image[top:top + h, left:left + w] = (
          rng.standard_normal(shape, np.float32) if shape else 0.0)
    return {**element, 'image': image}


@dataclasses.dataclass(frozen=True)
class ResizeShorter(grain.MapTransform):
  """torchvision `Resize(size)`: shorter side to size, longer side truncated to int."""
  size: int = 256
  interpolation: str = 'bicubic'

  def output_size(self, height, width):
    """Returns the resized (height, width)."""
    if height <= width:
      return self.size, int(self.size * width / height)
    return int(self.size * height / width), self.size

  def map(self, element):
    image = element['image']
    size = self.output_size(*image.shape[:2])
    if size == image.shape[:2]:
      return element
    resized = Image.fromarray(image).resize(size[::-1], _RESAMPLE[self.interpolation])
    return {**element, 'image': np.array(resized)}


@dataclasses.dataclass(frozen=True)
class CenterCrop(grain.MapTransform):
  """torchvision `CenterCrop(size)`: offsets round((H - size) / 2), half to even."""
  size: int = 224

  def map(self, element):
    image = element['image']
    h, w = image.shape[:2]
    if h < self.size or w < self.size:
      raise ValueError(f'CenterCrop: image {(h, w)} is smaller than {self.size}')
    top, left = round((h - self.size) / 2), round((w - self.size) / 2)
    return {**element, 'image': image[top:top + self.size, left:left + self.size]}


@dataclasses.dataclass(frozen=True)
class ToClassificationExample(grain.MapTransform):
  """Final format: {'image': float32 (H, W, 3), 'label': int32 scalar}; drops the rest."""

  def map(self, element):
    return {'image': np.asarray(element['image'], np.float32),
            'label': np.int32(element['label'])}


def train_transforms(*, crop_size=224, flip_prob=0.5, randaug_num_ops=2,
                     randaug_magnitude=9.0, randaug_mstd=0.5,
                     randaug_interpolation='bicubic', random_erase_prob=0.25,
                     mean=IMAGENET_MEAN, std=IMAGENET_STD):
  """The ImageNet training augmentations, in timm's order.

  Args:
    crop_size: side of the square RandomResizedCrop output.
    flip_prob: probability of a horizontal flip.
    randaug_num_ops: RandAugment ops per image; 0 disables RandAugment.
    randaug_magnitude: RandAugment magnitude out of 10 (m9).
    randaug_mstd: standard deviation of the per-op magnitude (mstd0.5).
    randaug_interpolation: resampling of the geometric ops. Swin passes
      interpolation='bicubic' to timm, which hands it to RandAugment too; 'random'
      is timm's own default (bilinear or bicubic per op).
    random_erase_prob: RandomErasing probability; 0 disables it.
    mean: per-channel mean on the 0..255 scale; also sets the RandAugment fill.
    std: per-channel standard deviation on the 0..255 scale.

  Returns:
    The list of grain transforms, from validation to the final example format.
  """
  out = [ValidateClassExample(), RandomResizedCrop(size=crop_size)]
  if flip_prob:
    out.append(RandomHorizontalFlip(flip_prob))
  if randaug_num_ops:
    out.append(RandAugment(
        num_ops=randaug_num_ops, magnitude=randaug_magnitude, magnitude_std=randaug_mstd,
        fill=tuple(min(255, round(m)) for m in mean), interpolation=randaug_interpolation))
  out.append(Normalize(mean=tuple(mean), std=tuple(std)))
  if random_erase_prob:
    out.append(RandomErasing(prob=random_erase_prob))
  return out + [ToClassificationExample()]


def eval_transforms(*, resize_size=256, crop_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD):
  """The ImageNet evaluation transforms: shorter side resize, centre crop, normalise.

  Args:
    resize_size: shorter side after the bicubic resize (crop_size / crop_pct 0.875).
    crop_size: side of the centre crop.
    mean: per-channel mean on the 0..255 scale.
    std: per-channel standard deviation on the 0..255 scale.

  Returns:
    The list of grain transforms, from validation to the final example format.
  """
  return [ValidateClassExample(), ResizeShorter(resize_size), CenterCrop(crop_size),
          Normalize(mean=tuple(mean), std=tuple(std)), ToClassificationExample()]
