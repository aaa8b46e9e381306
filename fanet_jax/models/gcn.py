"""GCN (Large Kernel Matters), a DenseAttentionSeg baseline (docs/models.md section 10).

Peng, Zhang, Yu, Luo, Sun, "Large Kernel Matters -- Improve Semantic Segmentation by
Global Convolutional Network" (CVPR 2017), Fig. 2 on a ResNet-50 encoder:

- `GCN` (Fig. 2(b)): two branches, k x 1 then 1 x k and 1 x k then k x 1, summed;
  num_classes channels throughout, no BatchNorm and no nonlinearity [GCN].
- `BoundaryRefinement` (BR, Fig. 2(c)): `x + conv3x3(relu(conv3x3(x)))` [GCN].
- `GlobalConvNet` (Fig. 2): GCN + BR on res-2..res-5 (layer1..layer4, strides 4..32,
  no dilation); from res-5 down, each score map is up-sampled by a x2 deconvolution,
  added to the next finer one and refined by a BR; two more x2 deconvolutions, each
  followed by a BR, reach the input resolution.

Readings of ours (docs/models.md section 10): biases on every conv, Kaiming-normal
fan_in init; the deconvolutions are PyTorch `ConvTranspose2d(4, 2, padding=1)`
without bias, initialised to bilinear interpolation and learned; where an up-sampled
map misses the finer one by a pixel (inputs not divisible by 32) it is resized
bilinearly to its size, and the logits to the input size. The encoder is `backbone`,
the same tree as `dense_attention_seg_r50`'s, so a `resnet50_torchvision` conversion
loads into it. The model returns logits, and `(logits, None)` in training.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fanet_jax.models import dense_attention, layers, resnet

Dtype = Any

# Variants: GlobalConvNet field values. R50: the baseline (the defaults, k = 9).
R50 = dict(resnet.R50, kernel_size=9)
TEST = dict(resnet.TEST, kernel_size=9)

# Kaiming normal over fan_in: the score maps of a 2048-channel input start O(1)
# (fan_out init, 3 outputs, would scale them up by ~sqrt(fan_in / fan_out)).
_KAIMING_IN = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


def _conv(features: int, kernel: tuple, name: str, dtype: Dtype) -> nn.Conv:
  """A k_h x k_w conv with bias, 'same' padding (k // 2 per side, odd k)."""
  pad = tuple((k // 2, k // 2) for k in kernel)
  return nn.Conv(features, kernel, padding=pad, dtype=dtype, param_dtype=jnp.float32,
                 kernel_init=_KAIMING_IN, name=name)


def bilinear_kernel(shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
  """A (4, 4, C_in, C_out) x2 up-sampling kernel: bilinear taps on the channel diagonal.

  FCN's `upsample_filt` for factor 2: taps (0.25, 0.75, 0.75, 0.25) per axis. With
  PyTorch's `ConvTranspose2d(4, 2, padding=1)` it equals `layers.resize_bilinear` x2
  (align_corners False) except on the one-pixel border, where it sees zero padding.

  Args:
    shape: (4, 4, C_in, C_out).
    dtype: of the result.

  Returns:
    The kernel; channel i maps to channel i (i < min(C_in, C_out)), others are 0.
  """
  k, _, cin, cout = shape
  taps = 1.0 - np.abs(np.arange(k) - (k - 1) / 2) / (k // 2)
  kernel = np.zeros(shape, np.float32)
  for i in range(min(cin, cout)):
    kernel[:, :, i, i] = np.outer(taps, taps)
  return jnp.asarray(kernel, dtype)


def deconv(features: int, impl: str = 'parity', dtype: Dtype = jnp.float32,
           name: Optional[str] = None) -> nn.Module:
  """The x2 deconvolution: DenseAttentionSeg's `ConvTranspose` (PyTorch's
  `ConvTranspose2d(4, 2, padding=1)`, no bias) starting from `bilinear_kernel`.

  Args:
    features: output channels.
    impl: 'parity' (fast on XLA:CPU) or 'lax' (ONNX `ConvTranspose`); same numbers.
    dtype: computation dtype; the kernel (4, 4, C_in, features) stays float32.
    name: submodule name.

  Returns:
    The module: (B, H, W, C) -> (B, 2H, 2W, features).
  """
  return dense_attention.ConvTranspose(
      features, 4, 2, impl, kernel_init=lambda key, shape, dtype=jnp.float32:
      bilinear_kernel(shape, dtype), dtype=dtype, name=name)


class GCN(nn.Module):
  """Global convolution: (k x 1 -> 1 x k) + (1 x k -> k x 1), no BN, no ReLU [GCN].

  Attributes:
    features: output (and intermediate) channels: the number of classes.
    kernel_size: k.
    dtype: computation dtype.
  """
  features: int
  kernel_size: int = 9
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Args: x (B, H, W, C). Returns: (B, H, W, features)."""
    k, c, dt = self.kernel_size, self.features, self.dtype
    if k % 2 == 0:
      raise ValueError(f'GCN kernel_size must be odd (centred padding), got {k}')
    left = _conv(c, (1, k), 'left_1', dt)(_conv(c, (k, 1), 'left_0', dt)(x))
    right = _conv(c, (k, 1), 'right_1', dt)(_conv(c, (1, k), 'right_0', dt)(x))
    return left + right


class BoundaryRefinement(nn.Module):
  """BR: `x + conv3x3(relu(conv3x3(x)))`, channels kept [GCN].

  Attributes:
    dtype: computation dtype.
  """
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Args: x (B, H, W, C). Returns: (B, H, W, C)."""
    c = x.shape[-1]
    y = nn.relu(_conv(c, (3, 3), 'conv_0', self.dtype)(x))
    return x + _conv(c, (3, 3), 'conv_1', self.dtype)(y)


class GlobalConvNet(nn.Module):
  """GCN + BR on ResNet-50 res-2..res-5 with the deconvolution decoder of [GCN] Fig. 2.

  Parameters: `backbone` (ResNet, output stride 32), `gcn_{s}` and `br_{s}` on
  layer s (s = 1..4), `deconv_{s}` (layer s's map x2 onto layer s - 1, s = 4, 3, 2),
  `fuse_br_{s}` after each sum (s = 3, 2, 1), `up_deconv_{i}` and `up_br_{i}`
  (i = 1, 2: stride 4 -> 2 -> 1).

  Attributes:
    num_classes: output classes (background, hand, object).
    in_channels: input channels (1: depth).
    stage_sizes, base_width: the ResNet encoder's fields.
    kernel_size: k of the GCN modules (9).
    deconv_impl: how the deconvolutions are computed ('parity' or 'lax'; the same
      parameters and numbers, `dense_attention.ConvTranspose`).
    dtype: computation dtype; parameters stay float32.
  """
  num_classes: int = 3
  in_channels: int = 1
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  base_width: int = 64
  kernel_size: int = 9
  deconv_impl: str = 'parity'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    """Args: images (B, H, W, in_channels) float; train: BatchNorm mode.

    Returns:
      eval: (B, H, W, num_classes) logits. train: (logits, None) (no auxiliary
      head), the contract of `EncoderDecoder`.
    """
    c, dt = self.num_classes, self.dtype
    features = resnet.ResNet(self.stage_sizes, self.base_width, self.in_channels,
                             output_stride=32, dtype=dt, name='backbone')(images, train)
    scores = {s: BoundaryRefinement(dt, name=f'br_{s}')(
        GCN(c, self.kernel_size, dt, name=f'gcn_{s}')(features[f'layer{s}']))
        for s in range(1, 5)}
    x = scores[4]
    for s in (3, 2, 1):
      up = deconv(c, self.deconv_impl, dt, name=f'deconv_{s + 1}')(x)
      # A pixel short or over at sizes not divisible by 32; identity otherwise.
      up = layers.resize_bilinear(up, scores[s].shape[1:3])
      x = BoundaryRefinement(dt, name=f'fuse_br_{s}')(up + scores[s])
    for i in (1, 2):
      x = deconv(c, self.deconv_impl, dt, name=f'up_deconv_{i}')(x)
      x = BoundaryRefinement(dt, name=f'up_br_{i}')(x)
    logits = layers.resize_bilinear(x, images.shape[1:3])
    return (logits, None) if train else logits
