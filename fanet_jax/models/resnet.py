"""ResNet encoder in torchvision's v1.5 layout (DenseAttentionSeg; docs/models.md section 3).

The stride of a down-sampling bottleneck sits in its 3x3 conv; the shortcut gets a
1x1 conv + BN when the shape changes. Output stride 16 or 8 replaces the last
stride(s) by dilation exactly as torchvision's `replace_stride_with_dilation`: in a
dilated stage the FIRST block keeps the previous dilation and only the later blocks
use the new one (`_make_layer(dilate=True)` passes `previous_dilation` to block 0).

Submodule names are torchvision's state-dict names with '.' -> '_' (`conv1`, `bn1`,
`layer{s}_{b}` with `conv1..3`, `bn1..3`, `downsample_0`, `downsample_1`), so an
ImageNet checkpoint converts by a rename (plus, for depth input, summing the RGB
filters of `conv1` into its one input channel). BatchNorm: PyTorch momentum 0.1 =
flax momentum 0.9, eps 1e-5. Layout NHWC.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Variants: ResNet field values. R50 / R101 are torchvision's resnet50 / resnet101; MICRO and TEST are
# narrow, one-block-per-stage encoders for CPU runs and unit tests.
R50 = dict(stage_sizes=(3, 4, 6, 3), base_width=64)
R101 = dict(stage_sizes=(3, 4, 23, 3), base_width=64)
MICRO = dict(stage_sizes=(1, 1, 1, 1), base_width=16)
TEST = dict(stage_sizes=(1, 1, 1, 1), base_width=4)

EXPANSION = 4  # bottleneck output channels / its width


def conv(features: int, kernel_size: int, *, name: str, strides: int = 1,
         dilation: int = 1, dtype: Dtype = jnp.float32) -> nn.Conv:
  """Conv without bias, PyTorch padding `dilation * (k - 1) // 2`, torchvision init.

  Args:
    features: output channels.
    kernel_size: square kernel size k.
    name: submodule name (the checkpoint converter relies on it).
    strides: stride in both directions.
    dilation: kernel dilation in both directions.
    dtype: computation dtype; parameters stay float32.

  Returns:
    An unbound `nn.Conv`, adopted by the module whose method calls this.
  """
  pad = dilation * (kernel_size - 1) // 2
  # torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu').
  return nn.Conv(features, (kernel_size, kernel_size), strides=(strides, strides),
                 padding=((pad, pad), (pad, pad)), kernel_dilation=(dilation, dilation),
                 use_bias=False, dtype=dtype, param_dtype=jnp.float32,
                 kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
                 name=name)


def batch_norm(train: bool, *, name: str, dtype: Dtype = jnp.float32) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.1 = flax 0.9, eps 1e-5).

  Args:
    train: use and update batch statistics when True, running averages otherwise.
    name: submodule name.
    dtype: computation dtype.

  Returns:
    An unbound `nn.BatchNorm`.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      dtype=dtype, param_dtype=jnp.float32, name=name)


def stage_plan(output_stride: int) -> list[tuple[int, int, int]]:
  """Per stage (stride, first block's dilation, later blocks' dilation), torchvision.

  Args:
    output_stride: 32 (no dilation), 16 (layer4 dilated) or 8 (layer3 and layer4).

  Returns:
    Four (stride, first_dilation, dilation) triples, layer1 first.

  Raises:
    ValueError: another output stride.
  """
  replace = {32: (False, False, False), 16: (False, False, True),
             8: (False, True, True)}
  if output_stride not in replace:
    raise ValueError(f'output_stride must be 8, 16 or 32, got {output_stride}')
  plan, dilation = [], 1
  for i in range(4):
    stride = 1 if i == 0 else 2
    previous = dilation
    if i > 0 and replace[output_stride][i - 1]:
      dilation *= stride
      stride = 1
    plan.append((stride, previous, dilation))
  return plan


class Bottleneck(nn.Module):
  """torchvision's Bottleneck (v1.5): 1x1 -> 3x3 (stride, dilation) -> 1x1 x4.

  Attributes:
    planes: width of the 1x1 / 3x3 convs; the output has 4 * planes channels.
    strides: stride of the 3x3 conv and of the shortcut conv.
    dilation: dilation of the 3x3 conv.
    dtype: computation dtype.
  """
  planes: int
  strides: int = 1
  dilation: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Args: x (B, H, W, C); train: BatchNorm mode.

    Returns:
      (B, H', W', 4 * planes), H' = ceil(H / strides).
    """
    p, dt = self.planes, self.dtype
    y = conv(p, 1, name='conv1', dtype=dt)(x)
    y = nn.relu(batch_norm(train, name='bn1', dtype=dt)(y))
    y = conv(p, 3, strides=self.strides, dilation=self.dilation, name='conv2',
             dtype=dt)(y)
    y = nn.relu(batch_norm(train, name='bn2', dtype=dt)(y))
    y = conv(EXPANSION * p, 1, name='conv3', dtype=dt)(y)
    y = batch_norm(train, name='bn3', dtype=dt)(y)
    shortcut = x
    # torchvision's rule: a projection shortcut whenever the shape changes.
    if self.strides != 1 or x.shape[-1] != EXPANSION * p:
      shortcut = conv(EXPANSION * p, 1, strides=self.strides, name='downsample_0',
                      dtype=dt)(x)
      shortcut = batch_norm(train, name='downsample_1', dtype=dt)(shortcut)
    return nn.relu(y + shortcut)


class ResNet(nn.Module):
  """ResNet-50-style encoder returning every level DenseAttentionSeg uses.

  Attributes:
    stage_sizes: bottleneck blocks per stage ((3, 4, 6, 3) for ResNet-50).
    base_width: stem width and layer1's bottleneck width (64 for ResNet-50); stage s
      has width base_width * 2**s and 4x that many output channels.
    in_channels: expected input channels (1 for depth, 3 for RGB); checked.
    output_stride: 32, 16 (default, layer4 dilated) or 8.
    dtype: computation dtype; parameters stay float32.
  """
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  base_width: int = 64
  in_channels: int = 1
  output_stride: int = 16
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict:
    """Args: images (B, H, W, in_channels); train: BatchNorm mode.

    Returns:
      {'stem': stride 2, base_width ch (conv1 + BN + ReLU, before the max-pool),
       'layer1': stride 4, 'layer2': 8, 'layer3': 16 (8 at OS8),
       'layer4': output_stride}; layer s has 4 * base_width * 2**(s-1) channels.
    """
    if images.shape[-1] != self.in_channels:
      raise ValueError(f'ResNet expects {self.in_channels} input channels, got '
                       f'images of shape {images.shape}')
    dt = self.dtype
    x = conv(self.base_width, 7, strides=2, name='conv1', dtype=dt)(images)
    x = nn.relu(batch_norm(train, name='bn1', dtype=dt)(x))
    features = {'stem': x}
    # PyTorch's MaxPool2d(3, 2, 1) pads with -inf, as flax's max_pool does.
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for s, (blocks, (stride, first_dilation, dilation)) in enumerate(
        zip(self.stage_sizes, stage_plan(self.output_stride))):
      for b in range(blocks):
        x = Bottleneck(self.base_width * 2**s, strides=stride if b == 0 else 1,
                       dilation=first_dilation if b == 0 else dilation, dtype=dt,
                       name=f'layer{s + 1}_{b}')(x, train)
      features[f'layer{s + 1}'] = x
    return features
