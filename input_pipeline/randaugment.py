"""RandAugment as timm's `rand_augment_transform('rand-m9-mstd0.5-inc1')` (docs/data.md section 4).

The ImageNet recipe's colour and geometry augmentation on uint8 RGB through PIL:
`num_ops` ops drawn with replacement from timm's "increasing" list (every op gets
stronger as the magnitude grows), each applied with probability 0.5, the magnitude
drawn per op from N(9, 0.5) and clipped to [0, 10], signed ops negated with
probability 0.5, geometric ops filling with the ImageNet mean colour.
"""
import dataclasses

import grain.python as grain
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

# timm's _RAND_INCREASING_TRANSFORMS: every op gets stronger as the magnitude grows.
RAND_INCREASING_OPS = (
    'AutoContrast', 'Equalize', 'Invert', 'Rotate', 'PosterizeIncreasing',
    'SolarizeIncreasing', 'SolarizeAdd', 'ColorIncreasing', 'ContrastIncreasing',
    'BrightnessIncreasing', 'SharpnessIncreasing', 'ShearX', 'ShearY',
    'TranslateXRel', 'TranslateYRel')
_RESAMPLE = {'bilinear': Image.Resampling.BILINEAR, 'bicubic': Image.Resampling.BICUBIC}
_ENHANCE = {'ColorIncreasing': ImageEnhance.Color, 'ContrastIncreasing': ImageEnhance.Contrast,
            'BrightnessIncreasing': ImageEnhance.Brightness,
            'SharpnessIncreasing': ImageEnhance.Sharpness}
_SIGNED = {'Rotate', 'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel', *_ENHANCE}


@dataclasses.dataclass(frozen=True)
class RandAugment(grain.RandomMapTransform):
  """timm `rand_augment_transform('rand-m9-mstd0.5-inc1')` on uint8 RGB via PIL.

  num_ops ops drawn uniformly with replacement from `ops`; each is applied with
  probability prob at a magnitude ~N(magnitude, magnitude_std) clipped to
  [0, magnitude_max] (out of 10) and, for signed ops, a random sign. Geometric ops fill
  with `fill` (timm: the mean in 0..255) and resample with `interpolation`, or a
  random one of bilinear/bicubic per op if 'random'.
  """
  num_ops: int = 2
  magnitude: float = 9.0
  magnitude_std: float = 0.5
  magnitude_max: float = 10.0
  prob: float = 0.5
  fill: tuple[int, int, int] = (124, 116, 104)
  translate_pct: float = 0.45
  interpolation: str = 'random'
  ops: tuple[str, ...] = RAND_INCREASING_OPS

  def draw_ops(self, rng):
    """Returns the num_ops op names to try on one image (repeats allowed, as timm)."""
    return [self.ops[i] for i in rng.integers(0, len(self.ops), self.num_ops)]

  def draw_magnitude(self, rng):
    """Returns one op's magnitude, on timm's 0..10 scale."""
    if self.magnitude_std == float('inf'):
      magnitude = rng.uniform(0, self.magnitude)
    elif self.magnitude_std > 0:
      magnitude = rng.normal(self.magnitude, self.magnitude_std)
    else:
      magnitude = self.magnitude
    return float(np.clip(magnitude, 0.0, self.magnitude_max))

  def apply_op(self, image, name, magnitude, rng):
    """Applies one named op at a given magnitude to a uint8 (H, W, 3) array."""
    return np.array(self._apply(Image.fromarray(image), name, magnitude, rng))

  def _apply(self, img, name, magnitude, rng):
    level = magnitude / 10.0  # timm's _LEVEL_DENOM
    sign = (-1.0 if rng.random() < 0.5 else 1.0) if name in _SIGNED else 1.0
    if name == 'AutoContrast':
      return ImageOps.autocontrast(img)
    if name == 'Equalize':
      return ImageOps.equalize(img)
    if name == 'Invert':
      return ImageOps.invert(img)
    if name == 'PosterizeIncreasing':
      # Keep 4 down to 0 bits; a LUT because PIL >= 10 refuses posterize(img, 0).
      mask = (0xFF << (8 - (4 - int(level * 4)))) & 0xFF
      return img.point([i & mask for i in range(256)] * 3)
    if name == 'SolarizeIncreasing':
      return ImageOps.solarize(img, 256 - int(level * 256))  # inverts pixels >= threshold
    if name == 'SolarizeAdd':
      add = int(level * 110)
      return img.point([min(255, i + add) if i < 128 else i for i in range(256)] * 3)
    if name in _ENHANCE:
      return _ENHANCE[name](img).enhance(max(0.1, 1.0 + sign * level * 0.9))
    if self.interpolation == 'random':
      resample = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)[rng.integers(2)]
    else:
      resample = _RESAMPLE[self.interpolation]
    if name == 'Rotate':
      return img.rotate(sign * level * 30.0, resample=resample, fillcolor=self.fill)
    matrix = {'ShearX': (1, sign * level * 0.3, 0, 0, 1, 0),
              'ShearY': (1, 0, 0, sign * level * 0.3, 1, 0),
              'TranslateXRel': (1, 0, sign * level * self.translate_pct * img.size[0], 0, 1, 0),
              'TranslateYRel': (1, 0, 0, 0, 1, sign * level * self.translate_pct * img.size[1])}
    return img.transform(img.size, Image.Transform.AFFINE, matrix[name], resample,
                         fillcolor=self.fill)

  def random_map(self, element, rng: np.random.Generator):
    img = Image.fromarray(element['image'])
    for name in self.draw_ops(rng):
      if rng.random() < self.prob:
        img = self._apply(img, name, self.draw_magnitude(rng), rng)
    return {**element, 'image': np.array(img)}
