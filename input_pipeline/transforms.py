"""Per-example transforms of the segmentation pipelines (docs/data.md section 2).

Small named grain transforms over numpy dict examples
`{'image': uint8 (H, W, 3) RGB, 'label': uint8 (H, W), 'file_name': str}`, with
mmsegmentation semantics (`Resize`/`RandomResize` with keep_ratio, `RandomCrop` with
cat_max_ratio, `RandomFlip`, `PhotometricDistortion`, `Normalize`, `Pad`).

The resizing and HSV numerics (OpenCV's, which mmseg runs on) are in image_ops.py.
Transforms never modify their input dict or arrays (sources may cache examples).
"""
import dataclasses

import grain.python as grain
import numpy as np

from input_pipeline.errors import DataError
from input_pipeline.image_ops import (hsv_to_rgb, rescale_size, resize_bilinear,
                                      resize_nearest, rgb_to_hsv)

@dataclasses.dataclass(frozen=True)
class ValidateLabel(grain.MapTransform):
  """Rejects examples whose label map does not fit the image or the classes.

  The image must be `dtype` (H, W, `channels`): uint8 RGB here, uint16 depth in
  `depth_transforms.ValidateDepthLabel`; `image_name` names it in the messages.
  """
  num_classes: int
  ignore_index: int = 255
  channels: int = 3
  dtype: str = 'uint8'
  image_name: str = 'image'

  def map(self, element):
    image, label = element['image'], element['label']
    name = element.get('file_name', '<unnamed>')
    if image.ndim != 3 or image.shape[2] != self.channels or image.dtype != self.dtype:
      raise DataError(f'{name}: {self.image_name} must be {self.dtype} '
                      f'(H, W, {self.channels}), got {image.dtype} {image.shape}')
    if label.shape != image.shape[:2]:
      raise DataError(f'{name}: label size {label.shape} differs from {self.image_name} '
                      f'size {image.shape[:2]}')
    if label.size and label.max() >= self.num_classes:  # slow path only when needed
      bad = np.unique(label[(label >= self.num_classes) & (label != self.ignore_index)])
      if bad.size:
        raise DataError(f'{name}: label values {bad.tolist()} are >= num_classes '
                        f'{self.num_classes} and not ignore_index {self.ignore_index}')
    return element


@dataclasses.dataclass(frozen=True)
class RandomRescale(grain.RandomMapTransform):
  """mmseg `Resize(img_scale, ratio_range, keep_ratio=True)`: random keep-ratio scale.

  r ~ U(ratio_range); the target scale is (int(a * r), int(b * r)) (mmseg truncates),
  and the image is rescaled with `rescale_size`: bilinear image, nearest label.
  """
  img_scale: tuple[int, int] = (2048, 512)
  ratio_range: tuple[float, float] = (0.5, 2.0)

  def draw_size(self, height, width, rng):
    """Draws the ratio; returns the rescaled (height, width)."""
    ratio = rng.uniform(*self.ratio_range)
    scale = (int(self.img_scale[0] * ratio), int(self.img_scale[1] * ratio))
    return rescale_size(height, width, scale)

  def random_map(self, element, rng: np.random.Generator):
    size = self.draw_size(*element['image'].shape[:2], rng)
    return {**element, 'image': resize_bilinear(element['image'], size),
            'label': resize_nearest(element['label'], size)}


@dataclasses.dataclass(frozen=True)
class Rescale(grain.MapTransform):
  """Test-time resize: keep-ratio fit into img_scale, then sides up to size_divisor.

  mmseg `Resize(keep_ratio=True)` followed by `ResizeToMultiple` (two resizes, as
  mmseg does). Only the image is resized: predictions are resized back to the label.
  """
  img_scale: tuple[int, int] = (2048, 512)
  size_divisor: int | None = None

  def output_size(self, height, width):
    """Returns the final (height, width) of an image of the given size."""
    size = rescale_size(height, width, self.img_scale)
    if self.size_divisor:
      size = tuple(-(-s // self.size_divisor) * self.size_divisor for s in size)
    return size

  def map(self, element):
    image = element['image']
    image = resize_bilinear(image, rescale_size(*image.shape[:2], self.img_scale))
    image = resize_bilinear(image, self.output_size(*element['image'].shape[:2]))
    return {**element, 'image': image}


@dataclasses.dataclass(frozen=True)
class RandomCrop(grain.RandomMapTransform):
  """mmseg `RandomCrop(crop_size, cat_max_ratio)`; crop_size is (height, width).

  Up to 10 checks for a crop whose largest non-ignored class covers less than
  cat_max_ratio of the non-ignored pixels (with more than one class present); as in
  mmseg, each failed check draws a new crop and the last one drawn is kept.
  """
  crop_size: tuple[int, int] = (512, 512)
  cat_max_ratio: float = 0.75
  ignore_index: int = 255

  def draw_box(self, label, rng):
    """Draws the crop from the label map; returns (row_slice, col_slice)."""
    (h, w), (ch, cw) = label.shape, self.crop_size

    def draw():
      top = int(rng.integers(0, max(h - ch, 0) + 1))
      left = int(rng.integers(0, max(w - cw, 0) + 1))
      return slice(top, top + ch), slice(left, left + cw)

    box = draw()
    if self.cat_max_ratio < 1:
      for _ in range(10):
        counts = np.bincount(label[box].ravel(), minlength=256)
        counts[self.ignore_index] = 0
        counts = counts[counts > 0]
        if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
          break
        box = draw()
    return box

  def random_map(self, element, rng: np.random.Generator):
    box = self.draw_box(element['label'], rng)
    return {**element, 'image': element['image'][box], 'label': element['label'][box]}


@dataclasses.dataclass(frozen=True)
class RandomRescaleCrop(grain.RandomMapTransform):
  """`RandomRescale` then `RandomCrop`, resizing only the image inside the crop.

  Same draws and same output as the two in sequence (the crop is chosen on the
  rescaled label, as in mmseg), but a 1080p frame costs a 512x512 resize instead of
  up to 1820x1024.
  """
  rescale: RandomRescale
  crop: RandomCrop

  def random_map(self, element, rng: np.random.Generator):
    size = self.rescale.draw_size(*element['image'].shape[:2], rng)
    label = resize_nearest(element['label'], size)
    box = self.crop.draw_box(label, rng)
    return {**element, 'image': resize_bilinear(element['image'], size, window=box),
            'label': label[box]}


@dataclasses.dataclass(frozen=True)
class RandomFlip(grain.RandomMapTransform):
  """mmseg `RandomFlip(prob, direction='horizontal')` of image and label together."""
  prob: float = 0.5

  def random_map(self, element, rng: np.random.Generator):
    if rng.random() < self.prob:
      return {**element, 'image': element['image'][:, ::-1],
              'label': element['label'][:, ::-1]}
    return element


def _convert(x, alpha=1.0, beta=0.0):
  # mmseg `convert`: float32 affine, clip to 0..255, truncate to uint8.
  return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class PhotometricDistortion(grain.RandomMapTransform):
  """mmseg `PhotometricDistortion`, same order, draws and uint8 rounding.

  brightness; contrast first if mode == 1; saturation (HSV); hue (HSV); contrast last
  if mode == 0. Each step happens with p=0.5. The hue shift is drawn from
  [-hue_delta, hue_delta) (numpy randint excludes the upper bound, as in mmseg).
  Deviation: a step configured as a no-op (delta 0, range (1, 1)) is skipped, so it
  does not add the quantisation of an HSV round trip.
  """
  brightness_delta: int = 32
  contrast_range: tuple[float, float] = (0.5, 1.5)
  saturation_range: tuple[float, float] = (0.5, 1.5)
  hue_delta: int = 18

  def random_map(self, element, rng: np.random.Generator):
    img = element['image']
    if rng.integers(2) and self.brightness_delta:
      img = _convert(img, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
    mode = rng.integers(2)
    if mode == 1:
      img = self._contrast(img, rng)
    if rng.integers(2) and tuple(self.saturation_range) != (1, 1):
      hsv = rgb_to_hsv(img)
      hsv[..., 1] = _convert(hsv[..., 1], alpha=rng.uniform(*self.saturation_range))
      img = hsv_to_rgb(hsv)
    if rng.integers(2) and self.hue_delta:
      hsv = rgb_to_hsv(img)
      shift = rng.integers(-self.hue_delta, self.hue_delta)
      hsv[..., 0] = (hsv[..., 0].astype(np.int32) + shift) % 180
      img = hsv_to_rgb(hsv)
    if mode == 0:
      img = self._contrast(img, rng)
    return {**element, 'image': img}

  def _contrast(self, img, rng):
    if rng.integers(2) and tuple(self.contrast_range) != (1, 1):
      return _convert(img, alpha=rng.uniform(*self.contrast_range))
    return img


@dataclasses.dataclass(frozen=True)
class Normalize(grain.MapTransform):
  """mmcv `imnormalize` on RGB: (image - mean) * (1 / std) in float32."""
  mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
  std: tuple[float, float, float] = (58.395, 57.12, 57.375)

  def map(self, element):
    image = element['image'].astype(np.float32)
    image -= np.asarray(self.mean, np.float32)
    image *= np.asarray(1 / np.asarray(self.std, np.float64), np.float32)
    return {**element, 'image': image}


@dataclasses.dataclass(frozen=True)
class Pad(grain.MapTransform):
  """mmseg `Pad(size)`: bottom/right padding of image (pad_val) and label (seg_pad_val)."""
  size: tuple[int, int] = (512, 512)
  pad_val: float = 0
  seg_pad_val: int = 255

  def map(self, element):
    image, label = element['image'], element['label']
    h, w = label.shape
    if (h, w) == tuple(self.size):
      return element
    if h > self.size[0] or w > self.size[1]:
      raise ValueError(f'Pad: {(h, w)} is larger than the pad size {self.size}')
    out_image = np.full((*self.size, image.shape[2]), self.pad_val, image.dtype)
    out_image[:h, :w] = image
    out_label = np.full(self.size, self.seg_pad_val, label.dtype)
    out_label[:h, :w] = label
    return {**element, 'image': out_image, 'label': out_label}


@dataclasses.dataclass(frozen=True)
class ToTrainingExample(grain.MapTransform):
  """Final format: {'image': float32 (H, W, 3), 'label': int32 (H, W)}; drops the rest."""

  def map(self, element):
    return {'image': np.asarray(element['image'], np.float32),
            'label': np.asarray(element['label'], np.int32)}
