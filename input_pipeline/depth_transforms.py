"""Per-example transforms of the depth pipelines (DenseAttentionSeg, docs/data.md section 3).

Small named grain transforms over numpy dict examples
`{'image': uint16 (H, W, 1) depth in mm (0 = missing), 'label': uint8 (H, W),
'file_name': str}`: the paper's augmentation (random flip, random rotation, Gaussian
noise on depth) and the normalisation into the model's one input channel.
`transforms.RandomFlip` and `transforms.ToTrainingExample` work on (H, W, 1) images
as they are and are reused. Missing depth (0) must never blend into valid depth:
rotation samples the nearest pixel, noise touches valid pixels only, and the
normalisation keeps missing depth apart from every valid depth.
Transforms never modify their input dict or arrays (sources may cache examples).
"""
import dataclasses

import grain.python as grain
import numpy as np

from input_pipeline import transforms

MISSING_VALUE = -1.0  # What `NormalizeDepth` maps missing depth to.


@dataclasses.dataclass(frozen=True)
class ValidateDepthLabel(transforms.ValidateLabel):
  """Rejects examples whose depth map (uint16 (H, W, 1)) or label map is malformed or
  does not fit."""
  num_classes: int = 3
  ignore_index: int = 255
  channels: int = 1
  dtype: str = 'uint16'
  image_name: str = 'depth'


def rotate_nearest(array, degrees, fill):
  """Rotates a (H, W, ...) array about its centre, sampling the nearest pixel.

  Args:
    array: (H, W) or (H, W, C).
    degrees: angle, counter-clockwise as displayed (rows pointing down).
    fill: value of the pixels that come from outside the array.

  Returns:
    array of the same shape and dtype holding only values of `array` and `fill`.
  """
  h, w = array.shape[:2]
  theta = np.deg2rad(degrees)
  # For every output pixel centre, the input point that lands there (inverse map).
  y, x = np.mgrid[0:h, 0:w] + 0.5
  y, x = y - h / 2, x - w / 2
  src_x = np.cos(theta) * x - np.sin(theta) * y + w / 2
  src_y = np.sin(theta) * x + np.cos(theta) * y + h / 2
  col, row = np.floor(src_x).astype(np.intp), np.floor(src_y).astype(np.intp)
  inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
  out = np.full(array.shape, fill, array.dtype)
  out[inside] = array[row[inside], col[inside]]
  return out


@dataclasses.dataclass(frozen=True)
class RandomRotate(grain.RandomMapTransform):
  """Rotation by an angle ~ U(-max_degrees, max_degrees) with probability `prob`.

  Depth and label take the nearest source pixel (no interpolation: a missing 0
  never averages into a valid depth, no label is invented). Pixels rotated in from
  outside the frame get depth 0 and label 0: in the paper's frames everything that
  is not hand or object is removed depth labelled background.
  """
  max_degrees: float = 10.0
  prob: float = 1.0
  depth_fill: int = 0
  label_fill: int = 0

  def random_map(self, element, rng: np.random.Generator):
    if not self.max_degrees or rng.random() >= self.prob:
      return element
    degrees = rng.uniform(-self.max_degrees, self.max_degrees)
    return {**element,
            'image': rotate_nearest(element['image'], degrees, self.depth_fill),
            'label': rotate_nearest(element['label'], degrees, self.label_fill)}


@dataclasses.dataclass(frozen=True)
class DepthNoise(grain.RandomMapTransform):
  """Gaussian noise N(0, sigma_mm^2) on valid (non-zero) depth, with probability `prob`.

  Returns float32 depth in mm (noise finer than the uint16 millimetre steps is
  kept); missing depth stays exactly 0 and valid depth stays valid (at least
  `min_valid_mm`).
  """
  sigma_mm: float = 2.0
  prob: float = 1.0
  min_valid_mm: float = 1.0

  def random_map(self, element, rng: np.random.Generator):
    if not self.sigma_mm or rng.random() >= self.prob:
      return element
    depth = element['image'].astype(np.float32)
    valid = depth > 0
    noisy = depth + rng.normal(0.0, self.sigma_mm, depth.shape).astype(np.float32)
    noisy = np.where(valid, np.maximum(noisy, np.float32(self.min_valid_mm)), 0)
    return {**element, 'image': noisy.astype(np.float32)}


@dataclasses.dataclass(frozen=True)
class NormalizeDepth(grain.MapTransform):
  """Depth in mm -> the model's one float32 input channel (H, W, 1).

  Valid depth d maps linearly to clip((d - min_mm) / (max_mm - min_mm), 0, 1);
  missing depth (0) maps to -1, a whole valid range away from the nearest valid
  value, so one threshold separates them and no valid depth (however near or far)
  reads as missing. One channel, because the model has one input channel.
  """
  min_mm: float = 200.0
  max_mm: float = 800.0

  def map(self, element):
    depth = np.asarray(element['image'], np.float32)
    scaled = (depth - np.float32(self.min_mm)) * np.float32(1 / (self.max_mm - self.min_mm))
    image = np.where(depth > 0, np.clip(scaled, 0, 1), np.float32(MISSING_VALUE))
    return {**element, 'image': image.astype(np.float32)}
