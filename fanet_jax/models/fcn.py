"""FCN-32s / FCN-16s / FCN-8s on VGG-16, DenseAttentionSeg's depth baselines (docs/models.md section 8).

Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation"
(CVPR 2015, PAMI 2017): VGG-16 with its classifier turned into convolutions (fc6 as
a 7x7 conv, fc7 as 1x1), a 1x1 class-score layer, and skips from pool4 (FCN-16s) and
pool3 (FCN-8s) that refine the stride-32 scores.

`VGG16` is torchvision's `vgg16().features` plus the convolutionalised fc6 / fc7.
Its convs are named `features_{i}` after their index in torchvision's `features`
Sequential (ReLUs and pools take the other indices), and fc6 / fc7 are what
torchvision calls `classifier.0` / `classifier.3`, so an ImageNet checkpoint converts
by a rename and a reshape (`fanet_jax/pytorch/names.py`).

Deviations from the paper's Caffe nets, each [ours] in docs/models.md section 8:
'same' padding instead of the pad-100 first conv and crop layers; skips fused after a
bilinear resize to the skip's exact size; the upsampling is fixed bilinear (no learned
deconvolutions); the scores are resized to the input size at the end. The model
returns logits, and `(logits, None)` in training, as `deeplab.DeepLabV3Plus`.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fanet_jax.models import layers

Dtype = Any

# Variants: FCN field values. VGG16_FULL is torchvision's vgg16 (the defaults); TEST
# keeps the 13 convs (and so torchvision's indices) at widths 4-16 for unit tests.
VGG16_FULL = dict(widths=(64, 128, 256, 512, 512), depths=(2, 2, 3, 3, 3),
                  fc_channels=4096)
TEST = dict(widths=(4, 8, 8, 16, 16), depths=(2, 2, 3, 3, 3), fc_channels=16)


def feature_indices(depths: Sequence[int]) -> list[list[int]]:
  """torchvision's `features` index of every conv, per block.

  Each conv is followed by a ReLU and each block by a max-pool, and each of them
  takes an index of the Sequential: (0, 2), (5, 7), (10, 12, 14), ... for VGG-16.

  Args:
    depths: convs per block.

  Returns:
    One list of conv indices per block.
  """
  indices, i = [], 0
  for depth in depths:
    indices.append([i + 2 * j for j in range(depth)])
    i += 2 * depth + 1
  return indices


def _conv(features: int, kernel_size: int, name: str, dtype: Dtype,
          kernel_init: Any) -> nn.Conv:
  # 'same' padding for every kernel size ([ours]: docs/models.md section 8).
  return nn.Conv(features, (kernel_size, kernel_size), padding='SAME', dtype=dtype,
                 param_dtype=jnp.float32, kernel_init=kernel_init, name=name)


class VGG16(nn.Module):
  """VGG-16 features and the convolutionalised fc6 / fc7 (FCN's encoder).

  Attributes:
    widths: channels of the five blocks (64, 128, 256, 512, 512).
    depths: 3x3 convs per block (2, 2, 3, 3, 3).
    fc_channels: width of fc6 and fc7 (4096).
    in_channels: expected input channels (1: depth); checked.
    dropout_rate: dropout after fc6 and after fc7 in training (0.5, [FCN]).
    dtype: computation dtype; parameters stay float32.
  """
  widths: Sequence[int] = (64, 128, 256, 512, 512)
  depths: Sequence[int] = (2, 2, 3, 3, 3)
  fc_channels: int = 4096
  in_channels: int = 1
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict:
    """Args: images (B, H, W, in_channels); train: dropout mode.

    Returns:
      {'pool1'..'pool5': strides 2..32 (floor sizes, as torchvision's MaxPool2d(2, 2)),
       'fc7': stride 32, fc_channels}.
    """
    if images.shape[-1] != self.in_channels:
      raise ValueError(f'VGG16 expects {self.in_channels} input channels, got '
                       f'images of shape {images.shape}')
    # torchvision: kaiming_normal_(fan_out, relu) for convs, normal(0, 0.01) for Linear.
    kaiming = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
    x, features = images, {}
    for b, (width, indices) in enumerate(zip(self.widths, feature_indices(self.depths))):
      for i in indices:
        x = nn.relu(_conv(width, 3, f'features_{i}', self.dtype, kaiming)(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')
      features[f'pool{b + 1}'] = x
    for name, k in (('fc6', 7), ('fc7', 1)):
      x = nn.relu(_conv(self.fc_channels, k, name, self.dtype,
                        nn.initializers.normal(0.01))(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    features['fc7'] = x
    return features


class FCN(nn.Module):
  """FCN-32s, -16s or -8s on VGG-16 (the `prediction_stride` picks which).

  Attributes:
    num_classes: output classes (background, hand, object).
    in_channels: input channels (1: depth).
    prediction_stride: 32 (FCN-32s), 16 (adds the pool4 skip) or 8 (adds pool3 too).
    widths, depths, fc_channels, dropout_rate: the `VGG16` encoder's fields.
    dtype: computation dtype; parameters stay float32.
  """
  num_classes: int = 3
  in_channels: int = 1
  prediction_stride: int = 8
  widths: Sequence[int] = (64, 128, 256, 512, 512)
  depths: Sequence[int] = (2, 2, 3, 3, 3)
  fc_channels: int = 4096
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    """Args: images (B, H, W, in_channels) float; train: dropout mode.

    Returns:
      eval: (B, H, W, num_classes) logits. train: (logits, None) (no auxiliary
      head), the contract of `EncoderDecoder` and `DeepLabV3Plus`.
    """
    if self.prediction_stride not in (32, 16, 8):
      raise ValueError(f'prediction_stride must be 32, 16 or 8, got '
                       f'{self.prediction_stride}')
    features = VGG16(self.widths, self.depths, self.fc_channels, self.in_channels,
                     self.dropout_rate, dtype=self.dtype, name='backbone')(images, train)
    # [FCN]: class-score layers start at zero (the skips then start as no-ops).
    score = lambda name: _conv(self.num_classes, 1, name, self.dtype,  # noqa: E731
                               nn.initializers.zeros)
    x = score('score_fr')(features['fc7'])
    skips = {32: (), 16: ('pool4',), 8: ('pool4', 'pool3')}[self.prediction_stride]
    for level in skips:
      skip = score(f'score_{level}')(features[level])
      # x2 to the skip's exact size (one pixel more at odd sizes), then sum [FCN].
      x = layers.resize_bilinear(x, skip.shape[1:3]) + skip
    logits = layers.resize_bilinear(x, images.shape[1:3])
    return (logits, None) if train else logits
