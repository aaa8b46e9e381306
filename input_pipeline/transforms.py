"""Per-example transforms of the segmentation pipelines (SPEC section 4).

Small named grain transforms over numpy dict examples
`{'image': uint8 (H, W, 3) RGB, 'label': uint8 (H, W), 'file_name': str}`, with
mmsegmentation semantics (`Resize`/`RandomResize` with keep_ratio, `RandomCrop` with
cat_max_ratio, `RandomFlip`, `PhotometricDistortion`, `Normalize`, `Pad`).

mmseg runs these on OpenCV, which is not a dependency here; its numerics are
written in vectorised numpy:
- `resize_bilinear`: cv2.INTER_LINEAR for uint8 bit for bit (half-pixel centres, no
  antialiasing, edge pixels replicated, cv2's 11-bit fixed-point weights and its
  rounding), `resize_nearest`: cv2.INTER_NEAREST (src = floor(dst * in / out)).
- `rgb_to_hsv` / `hsv_to_rgb`: cv2's uint8 HSV (hue in [0, 180)). RGB->HSV is cv2's
  integer algorithm exactly. HSV->RGB is cv2's float32 algorithm, rounded as cv2's
  scalar code does; cv2 4.x/5.x SIMD builds (what mmseg ran) truncate instead, which
  darkens a third of the values by 1 level per round trip (mean -0.34). Rounding
  keeps the round trip unbiased; it is the one deliberate difference from mmseg.
Transforms never modify their input dict or arrays (sources may cache examples).
"""
import dataclasses

import grain.python as grain
import numpy as np

from input_pipeline.errors import DataError

_COEF_BITS = 11  # cv2 INTER_RESIZE_COEF_BITS
_HSV_SHIFT = 12  # cv2 hsv_shift
_LEVELS = np.arange(256, dtype=np.float64)
# cv2's HSV division tables: saturate_cast<int> rounds to nearest; entry 0 is 0.
_SDIV = np.rint((255 << _HSV_SHIFT) / np.maximum(_LEVELS, 1)).astype(np.int32) * (_LEVELS > 0)
_HDIV = np.rint((180 << _HSV_SHIFT) / (6 * np.maximum(_LEVELS, 1))).astype(np.int32) * (_LEVELS > 0)
# Per hue sector, which of (v, p, q, t) becomes (r, g, b) (cv2's table lists (b, g, r)),
# as bit shifts, indexed [channel][sector].
_SECTOR_SHIFTS = 8 * np.array([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0],
                               [0, 1, 2]], np.uint32).T.copy()


def rescale_size(height, width, scale):
  """mmcv `rescale_size`: the largest keep-ratio size fitting a (long, short) scale.

  Args:
    height: input height.
    width: input width.
    scale: (a, b); the long side is fitted to max(a, b), the short side to min(a, b).

  Returns:
    (new_height, new_width) = int(side * factor + 0.5), factor = min(long_target /
    long_side, short_target / short_side).
  """
  factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
  return int(height * factor + 0.5), int(width * factor + 0.5)


def _linear_taps(n_in, n_out, reset_border):
  """Source indices and fixed-point weights of cv2 INTER_LINEAR along one axis."""
  scale = 1.0 / (n_out / n_in)  # cv2 computes the ratio this way, in double
  pos = ((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32)  # cv2: float
  idx = np.floor(pos)
  frac = (pos - idx).astype(np.float32)
  idx = idx.astype(np.intp)
  if reset_border:  # cv2 resets the weight at the left/right border, not top/bottom
    frac[(idx < 0) | (idx >= n_in - 1)] = 0
    idx = np.clip(idx, 0, n_in - 1)
  # Both weights are rounded separately (they may not sum to 2048), as in cv2.
  one = np.float32(1 << _COEF_BITS)
  w0 = np.rint((np.float32(1) - frac) * one).astype(np.int32)
  w1 = np.rint(frac * one).astype(np.int32)
  return np.clip(idx, 0, n_in - 1), np.clip(idx + 1, 0, n_in - 1), w0, w1


def resize_bilinear(image, size, window=None):
  """Resizes a uint8 (H, W, C) image like cv2.resize(INTER_LINEAR), bit for bit.

  Separable: a horizontal pass on the needed source rows, then a vertical pass, in
  cv2's fixed point (11-bit weights; vertical sums are shifted as cv2's SIMD code
  does, which truncates slightly more than exact rounding would).

  Args:
    image: uint8 array (H, W, C).
    size: (out_height, out_width).
    window: optional (row_slice, col_slice) of the output: only that part is
      computed, equal to `resize_bilinear(image, size)[window]` at a fraction of
      the cost (used to resize just the random crop).

  Returns:
    uint8 array (out_height, out_width, C), or the window of it.
  """
  (h, w, c), (oh, ow) = image.shape, size
  window = window or (slice(None), slice(None))
  if (oh, ow) == (h, w):
    return image[window].copy()
  y0, y1, wy0, wy1 = (a[window[0]] for a in _linear_taps(h, oh, reset_border=False))
  x0, x1, wx0, wx1 = (a[window[1]] for a in _linear_taps(w, ow, reset_border=True))
  # Gather along the flattened (W * C) axis: much faster than image[:, x0].
  channels = np.arange(c)
  i0 = (x0[:, None] * c + channels).ravel()
  i1 = (x1[:, None] * c + channels).ravel()
  a0, a1 = np.repeat(wx0, c), np.repeat(wx1, c)

  def horizontal(rows):
    rows = rows.reshape(rows.shape[0], w * c)
    out = np.take(rows, i0, axis=1) * a0  # uint8 * int32 weights -> int32
    out += np.take(rows, i1, axis=1) * a1
    out >>= 4  # cv2's SIMD vertical pass drops these 4 bits first
    return out

  top, bottom = y0[0], y1[-1] + 1  # the source rows read (taps increase)
  if 2 * len(y0) < bottom - top:  # strong downscale: only the rows that are read
    r0, r1 = horizontal(image[y0]), horizontal(image[y1])
  else:
    rows = horizontal(image[top:bottom])
    r0, r1 = rows[y0 - top], rows[y1 - top]
  for rows, weights in ((r0, wy0), (r1, wy1)):
    rows *= weights[:, None]
    rows >>= 16
  out = (r0 + r1 + 2) >> 2
  return out.astype(np.uint8).reshape(len(y0), len(x0), c)


def resize_nearest(label, size):
  """Resizes a 2-D label map like cv2.resize(INTER_NEAREST): src = floor(dst*in/out).

  Args:
    label: array (H, W).
    size: (out_height, out_width).

  Returns:
    array (out_height, out_width) holding only values of `label`.
  """
  def index(n_in, n_out):
    src = np.floor(np.arange(n_out) * (1.0 / (n_out / n_in))).astype(np.intp)
    return np.minimum(src, n_in - 1)
  return label[index(label.shape[0], size[0])][:, index(label.shape[1], size[1])]


def rgb_to_hsv(image):
  """cv2 RGB2HSV for uint8, exactly: H in [0, 180), S and V in [0, 255].

  Args:
    image: uint8 (..., 3) RGB.

  Returns:
    uint8 (..., 3) HSV.
  """
  r, g, b = (image[..., c].astype(np.int32) for c in range(3))
  v = np.maximum(np.maximum(r, g), b)
  diff = v - np.minimum(np.minimum(r, g), b)
  h = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
  h = (h * _HDIV[diff] + (1 << (_HSV_SHIFT - 1))) >> _HSV_SHIFT
  h += (h < 0) * 180
  hsv = np.empty(image.shape, np.uint8)
  hsv[..., 0] = h
  hsv[..., 1] = (diff * _SDIV[v] + (1 << (_HSV_SHIFT - 1))) >> _HSV_SHIFT
  hsv[..., 2] = v
  return hsv


def hsv_to_rgb(hsv):
  """cv2 HSV2RGB for uint8 (H in [0, 180)), in float32 as cv2, rounded (see top).

  Args:
    hsv: uint8 (..., 3) HSV.

  Returns:
    uint8 (..., 3) RGB.
  """
  h = hsv[..., 0].astype(np.float32) * np.float32(6 / 180)
  h = np.where(h >= 6, h - np.float32(6), h)  # cv2's fmod(h, 6): exact for h < 12
  s = hsv[..., 1].astype(np.float32) * np.float32(1 / 255)
  v = hsv[..., 2].astype(np.float32) * np.float32(1 / 255)
  sector = np.floor(h)
  frac = h - sector
  # The 4 candidate values (v, p, q, t) as bytes of one uint32; each output channel
  # shifts out the byte its sector picks (4x faster than a fancy-indexed gather).
  packed = np.zeros(h.shape, np.uint32)
  for k, value in enumerate([v, v * (1 - s), v * (1 - s * frac), v * (1 - s * (1 - frac))]):
    value *= np.float32(255)
    packed |= np.rint(value).astype(np.uint32) << np.uint32(8 * k)
  sector = sector.astype(np.intp)
  rgb = np.empty(hsv.shape, np.uint8)
  for c in range(3):
    rgb[..., c] = packed >> _SECTOR_SHIFTS[c][sector]  # keeps the low byte
  return rgb


@dataclasses.dataclass(frozen=True)
class ValidateLabel(grain.MapTransform):
  """Rejects examples whose label map does not fit the image or the classes."""
  num_classes: int
  ignore_index: int = 255

  def map(self, element):
    image, label = element['image'], element['label']
    name = element.get('file_name', '<unnamed>')
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
      raise DataError(f'{name}: image must be uint8 (H, W, 3), got {image.dtype} {image.shape}')
    if label.shape != image.shape[:2]:
      raise DataError(f'{name}: label size {label.shape} differs from image size {image.shape[:2]}')
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
