"""ASPP and the DeepLabv3+ baseline of DenseAttentionSeg (docs/models.md sections 3-4).

ASPP as torchvision's DeepLabV3 ASPP (names `convs_0..4`, `project`): a 1x1 branch,
three dilated 3x3 branches, an image-pooling branch, each ConvBNReLU with `channels`
outputs; their concatenation goes through ConvBNReLU 1x1 and element-wise dropout
(0.1 here, docs/models.md section 3; torchvision uses 0.5).

`ResNetASPPSegmentor` is the encoder both depth segmentors share (this DeepLabV3Plus
and `dense_attention.DenseAttentionSeg`): its fields and the `backbone` (ResNet,
output stride 16) + `aspp` submodules, built in the segmentor's own scope so that
the parameter paths stay `backbone/...` and `aspp/...` (the checkpoint converter
and saved checkpoints rely on them).

DeepLabV3Plus: that encoder; the decode head projects layer1 to 48 channels,
concatenates the ASPP output resized to layer1's size, applies two ConvBNReLU 3x3
and a 1x1 classifier; the stride-4 logits are resized to the input size. All
resizes are bilinear with align_corners=False (`layers.resize_bilinear`). The model
returns logits; softmax belongs to the loss and the metrics.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fanet_jax.models import layers, resnet

Dtype = Any

# Variants: DeepLabV3Plus field values. R50 is the paper's baseline (the defaults).
R50 = dict(resnet.R50)
MICRO = dict(resnet.MICRO, aspp_channels=64, low_level_channels=12, decoder_channels=64)
TEST = dict(resnet.TEST, aspp_channels=8, low_level_channels=4, decoder_channels=8)
# RGB variants for ZeroWaste-f (docs/models.md section 4): output stride 8 with ASPP
# rates (12, 24, 36), as mmsegmentation's `deeplabv3plus_r{50,101}-d8` configs.
_RGB_D8 = dict(in_channels=3, output_stride=8, atrous_rates=(12, 24, 36))
R50_RGB = dict(R50, **_RGB_D8)
R101_RGB = dict(resnet.R101, **_RGB_D8)
TEST_RGB = dict(TEST, **_RGB_D8)


def conv_seg(num_classes: int, dtype: Dtype) -> nn.Conv:
  """The 1x1 classifier conv (with bias; normal(0.01) init as mmseg's `conv_seg`)."""
  return nn.Conv(num_classes, (1, 1), dtype=dtype, param_dtype=jnp.float32,
                 kernel_init=nn.initializers.normal(0.01), name='conv_seg')


class ASPPConv(nn.Module):
  """Dilated 3x3 conv without bias, BN, ReLU (torchvision's ASPPConv).

  Attributes:
    features: output channels.
    dilation: dilation (and padding) of the 3x3 conv.
    dtype: computation dtype.
  """
  features: int
  dilation: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Args: x (B, H, W, C); train: BatchNorm mode. Returns: (B, H, W, features)."""
    x = resnet.conv(self.features, 3, dilation=self.dilation, name='conv',
                    dtype=self.dtype)(x)
    return nn.relu(resnet.batch_norm(train, name='bn', dtype=self.dtype)(x))


class ASPP(nn.Module):
  """Atrous spatial pyramid pooling (DeepLabv3).

  Attributes:
    channels: width of every branch and of the output (256 in the paper).
    atrous_rates: dilations of the three 3x3 branches (6, 12, 18 at OS16).
    dropout_rate: element-wise dropout after the projection (0.1: docs/models.md section 3).
    dtype: computation dtype.
  """
  channels: int = 256
  atrous_rates: Sequence[int] = (6, 12, 18)
  dropout_rate: float = 0.1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Args: x (B, H, W, C) top backbone level; train: BatchNorm and dropout mode.

    Returns:
      (B, H, W, channels).
    """
    c, dt = self.channels, self.dtype
    branches = [layers.ConvBNReLU(c, 1, dtype=dt, name='convs_0')(x, train)]
    for i, rate in enumerate(self.atrous_rates):
      branches.append(ASPPConv(c, rate, dtype=dt, name=f'convs_{i + 1}')(x, train))
    pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
    pooled = layers.ConvBNReLU(c, 1, dtype=dt, name=f'convs_{len(branches)}')(
        pooled, train)
    # Bilinear up-sampling of a 1x1 map (align_corners=False) is a broadcast.
    branches.append(jnp.broadcast_to(pooled, x.shape[:3] + (c,)))
    y = layers.ConvBNReLU(c, 1, dtype=dt, name='project')(
        jnp.concatenate(branches, axis=-1), train)
    return nn.Dropout(self.dropout_rate, deterministic=not train, name='dropout')(y)


class DeepLabV3PlusHead(nn.Module):
  """DeepLabv3+ decoder: low-level projection, fusion convs, classifier.

  Attributes:
    low_level_channels: width of the layer1 projection (48).
    channels: width of the two fusion convs (256).
    num_classes: output classes.
    dtype: computation dtype.
  """
  low_level_channels: int = 48
  channels: int = 256
  num_classes: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, aspp_out: jax.Array, low_level: jax.Array,
               train: bool = False) -> jax.Array:
    """Args: aspp_out (B, h, w, C) at OS16; low_level (B, H4, W4, C1) layer1 output.

    Returns:
      (B, H4, W4, num_classes) logits at layer1's resolution.
    """
    dt = self.dtype
    low = layers.ConvBNReLU(self.low_level_channels, 1, dtype=dt,
                            name='c1_bottleneck')(low_level, train)
    x = layers.resize_bilinear(aspp_out, low.shape[1:3])
    x = jnp.concatenate([x, low], axis=-1)
    for i in range(2):
      x = layers.ConvBNReLU(self.channels, 3, dtype=dt, name=f'bottleneck_{i}')(x, train)
    return conv_seg(self.num_classes, dt)(x)


class ResNetASPPSegmentor(nn.Module):
  """Base of the segmentors on a ResNet + ASPP encoder: their shared fields and `encode`.

  A subclass adds its decoder's fields and, as its last field, `dtype` (the
  computation dtype), which `encode` reads; declared here it would stand before the
  subclass's fields in the dataclass order.

  Attributes:
    num_classes: output classes (background, hand, object).
    in_channels: input channels (1: depth).
    stage_sizes, base_width, output_stride: the ResNet encoder's fields.
    aspp_channels: ASPP width.
    atrous_rates: ASPP dilations.
    dropout_rate: ASPP dropout.
  """
  num_classes: int = 3
  in_channels: int = 1
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  base_width: int = 64
  output_stride: int = 16
  aspp_channels: int = 256
  atrous_rates: Sequence[int] = (6, 12, 18)
  dropout_rate: float = 0.1

  def encode(self, images: jax.Array, train: bool = False) -> tuple[dict, jax.Array]:
    """Runs the encoder; call it from the subclass's compact `__call__`.

    Args:
      images: (B, H, W, in_channels) float.
      train: BatchNorm and dropout mode.

    Returns:
      (features, top): the `resnet.ResNet` levels ('stem', 'layer1'..'layer4') and
      the ASPP output on layer4, (B, h, w, aspp_channels).
    """
    features = resnet.ResNet(self.stage_sizes, self.base_width, self.in_channels,
                             self.output_stride, dtype=self.dtype,
                             name='backbone')(images, train)
    top = ASPP(self.aspp_channels, self.atrous_rates, self.dropout_rate,
               dtype=self.dtype, name='aspp')(features['layer4'], train)
    return features, top


class DeepLabV3Plus(ResNetASPPSegmentor):
  """DeepLabv3+ with a ResNet encoder, the paper's baseline (Table 2).

  Attributes:
    num_classes, in_channels, stage_sizes, base_width, output_stride,
      aspp_channels, atrous_rates, dropout_rate: see `ResNetASPPSegmentor`.
    low_level_channels: layer1 projection width.
    decoder_channels: fusion conv width.
    dtype: computation dtype; parameters stay float32.
  """
  low_level_channels: int = 48
  decoder_channels: int = 256
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    """Args: images (B, H, W, in_channels) float; train: BatchNorm and dropout mode.

    Returns:
      eval: (B, H, W, num_classes) logits. train: (logits, None) (no auxiliary
      head), the contract of `EncoderDecoder`.
    """
    features, x = self.encode(images, train)
    logits = DeepLabV3PlusHead(self.low_level_channels, self.decoder_channels,
                               self.num_classes, dtype=self.dtype,
                               name='decode_head')(x, features['layer1'], train)
    logits = layers.resize_bilinear(logits, images.shape[1:3])
    return (logits, None) if train else logits
