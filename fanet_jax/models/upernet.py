"""UperNet decode head and FCN auxiliary head, as mmsegmentation's (docs/models.md section 2).

Parameter paths mirror mmsegmentation's state-dict names with '.' -> '_'
(`psp_modules_{i}`, `bottleneck`, `lateral_convs_{i}`, `fpn_convs_{i}`,
`fpn_bottleneck`, `conv_seg`; FCN: `convs_0`, `conv_seg`), every ConvBNReLU holding
`conv` and `bn`. All resizes are bilinear with align_corners=False.

`conv_impl='fast'` computes the dense convs as matmuls (1x1) and Winograd F(4x4, 3x3)
(3x3 on maps of 32x32 and more); `fpn_bottleneck` (46% of the segmentor's
multiply-adds when written plainly) applies its kernel to the FPN levels upsampled 4x
and 8x at their own resolution instead of on the upsampled maps
(`upsampling.conv_upsampled`). 'lax' computes them all as XLA convolutions of the
concatenation; the parameters are the same.
"""
from typing import Any, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fanet_jax.models import layers

Dtype = Any


def _pool_matrix(size: int, bins: int) -> np.ndarray:
  """(bins, size) averaging matrix of PyTorch's adaptive pooling along one axis.

  Bin i spans [floor(i * size / bins), ceil((i + 1) * size / bins)); bins may
  overlap when size is not a multiple of bins.
  """
  m = np.zeros((bins, size), np.float32)
  for i in range(bins):
    start, end = (i * size) // bins, -((-(i + 1) * size) // bins)
    m[i, start:end] = 1.0 / (end - start)
  return m


def adaptive_avg_pool(x: jax.Array, output_size: Union[int, Sequence[int]]) -> jax.Array:
  """PyTorch's `adaptive_avg_pool2d` on NHWC, with static shapes (jit-friendly).

  Computed as one constant averaging matrix per axis, built in numpy from the static
  input shape, applied with einsum.

  Args:
    x: (B, H, W, C) array.
    output_size: s or (oh, ow).

  Returns:
    (B, oh, ow, C) array of x's dtype.
  """
  oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
  mh = jnp.asarray(_pool_matrix(x.shape[1], oh), x.dtype)
  mw = jnp.asarray(_pool_matrix(x.shape[2], ow), x.dtype)
  return jnp.einsum('ph,qw,bhwc->bpqc', mh, mw, x)


def _conv_seg(num_classes: int, conv_impl: str, dtype: Dtype) -> nn.Conv:
  """The classifier conv of mmseg's decode heads (1x1, bias, normal(0.01) init)."""
  return nn.Conv(num_classes, (1, 1), dtype=dtype, param_dtype=jnp.float32,
                 kernel_init=nn.initializers.normal(0.01),
                 conv_general_dilated=layers.conv_function(conv_impl), name='conv_seg')


class PPM(nn.Module):
  """Pyramid pooling: adaptive pool to s x s, ConvBNReLU 1x1, resize back; per scale.

  It shares its parent's scope, so its convs sit at `<head>/psp_modules_{i}` like
  mmseg's `decode_head.psp_modules.{i}.1` instead of one level deeper.

  Attributes:
    pool_scales: output sizes of the pooling.
    channels: output channels of every branch.
    conv_impl: 'fast' or 'lax'.
    dtype: computation dtype.
  """
  pool_scales: Sequence[int] = (1, 2, 3, 6)
  channels: int = 256
  conv_impl: str = 'fast'
  dtype: Dtype = jnp.float32

  def setup(self):
    nn.share_scope(self, self.parent)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> list:
    """Args: x (B, H, W, C); train: BatchNorm mode.

    Returns:
      One (B, H, W, channels) array per pool scale.
    """
    outs = []
    for i, scale in enumerate(self.pool_scales):
      y = adaptive_avg_pool(x, scale)
      y = layers.ConvBNReLU(self.channels, 1, conv_impl=self.conv_impl, dtype=self.dtype,
                            name=f'psp_modules_{i}')(y, train)
      outs.append(layers.resize_bilinear(y, x.shape[1:3]))
    return outs


class UPerHead(nn.Module):
  """UperNet head: PPM on the top level, FPN top-down path, fuse at the s4 size.

  Attributes:
    in_keys: backbone feature keys, finest first.
    channels: width of every internal conv.
    pool_scales: PPM scales.
    dropout_rate: channel dropout (Dropout2d) before `conv_seg`.
    num_classes: output classes.
    conv_impl: 'fast' or 'lax' (same parameters, different XLA programs).
    dtype: computation dtype.
  """
  in_keys: Sequence[str] = ('s4', 's8', 's16', 's32')
  channels: int = 256
  pool_scales: Sequence[int] = (1, 2, 3, 6)
  dropout_rate: float = 0.1
  num_classes: int = 5
  conv_impl: str = 'fast'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: dict, train: bool = False) -> jax.Array:
    """Args: features: backbone outputs by key; train: BatchNorm and dropout mode.

    Returns:
      (B, h, w, num_classes) logits at the resolution of `features[in_keys[0]]`.
    """
    inputs = [features[k] for k in self.in_keys]
    cbr = lambda k, name: layers.ConvBNReLU(self.channels, k, conv_impl=self.conv_impl,
                                            dtype=self.dtype, name=name)
    top = inputs[-1]
    pooled = PPM(self.pool_scales, self.channels, conv_impl=self.conv_impl,
                 dtype=self.dtype, name='ppm')(top, train)
    psp = cbr(3, 'bottleneck')(jnp.concatenate([top] + pooled, axis=-1), train)
    laterals = [cbr(1, f'lateral_convs_{i}')(x, train) for i, x in enumerate(inputs[:-1])]
    laterals.append(psp)
    for i in range(len(laterals) - 1, 0, -1):
      laterals[i - 1] = laterals[i - 1] + layers.resize_bilinear(
          laterals[i], laterals[i - 1].shape[1:3])
    outs = [cbr(3, f'fpn_convs_{i}')(lat, train) for i, lat in enumerate(laterals[:-1])]
    outs.append(laterals[-1])
    # The concatenation of all levels resized to the finest (ConvBNReLU resizes them).
    x = cbr(3, 'fpn_bottleneck')(outs, train)
    # mmseg uses Dropout2d here: whole channels are dropped per sample.
    x = nn.Dropout(self.dropout_rate, broadcast_dims=(1, 2), deterministic=not train,
                   name='dropout')(x)
    return _conv_seg(self.num_classes, self.conv_impl, self.dtype)(x)


class FCNHead(nn.Module):
  """mmseg FCNHead with num_convs=1, concat_input=False (the auxiliary head).

  Attributes:
    in_key: backbone feature key it reads.
    channels: width of its conv.
    dropout_rate: channel dropout before `conv_seg`.
    num_classes: output classes.
    conv_impl: 'fast' or 'lax'.
    dtype: computation dtype.
  """
  in_key: str = 's16'
  channels: int = 256
  dropout_rate: float = 0.1
  num_classes: int = 5
  conv_impl: str = 'fast'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: dict, train: bool = False) -> jax.Array:
    """Args: features: backbone outputs by key; train: BatchNorm and dropout mode.

    Returns:
      (B, h, w, num_classes) logits at the resolution of `features[in_key]`.
    """
    x = layers.ConvBNReLU(self.channels, 3, conv_impl=self.conv_impl, dtype=self.dtype,
                          name='convs_0')(features[self.in_key], train)
    x = nn.Dropout(self.dropout_rate, broadcast_dims=(1, 2), deterministic=not train,
                   name='dropout')(x)
    return _conv_seg(self.num_classes, self.conv_impl, self.dtype)(x)
