"""DenseAttentionSeg: dense attention over six levels and a deconvolution decoder.

Implements docs/models.md section 3 ("DenseAttentionSeg: Segment Hands from Interacted
Objects Using Depth Input", 2019). Encoder: ResNet-50 at output stride 16 + ASPP,
shared with DeepLabV3Plus (`deeplab.ResNetASPPSegmentor`).
Six levels L1..L6 (stem, layer1..layer4, ASPP) each pass a SqueezeUnit giving
`t_j`; `s_j = relu(t_j)` are the squeezed features, `a_j = sigmoid(t_j)` the
attention maps. Level i's skip is weighted by the product of every OTHER level's
attention map resized to its size (`dense_attention`). The decoder climbs from
skip_6 with six transposed convs, concatenating skip_5..skip_1 on the way.

Readings of the spec written down here:
- `attention` ('residual' | 'multiplicative' | 'none') only changes how skips are
  formed. a_j and s_j come from the same t_j, so no parameter is attention-only:
  the three modes own identical parameter trees, and 'none' merely skips the
  sigmoid, the resizes and the products.
- Concatenation order in the decoder: [decoder feature, skip].
- Transposed convs: PyTorch ConvTranspose2d(k, s, padding=1) sizes (k=3, s=1 keeps
  the size; k=4, s=2 doubles it), computed per output parity (`ConvTranspose`).
  When the input is not divisible by 16 a doubled feature can miss its skip by a
  pixel; it is then bilinearly resized to the skip's size before the
  concatenation, and the final logits to the input size. At sizes divisible by 16
  (480x640 included) these resizes are identities.
- The paper's network ends in a softmax; this module returns the logits.
"""
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from fanet_jax.models import deeplab, layers, resnet

Dtype = Any
_DN = ('NHWC', 'HWIO', 'NHWC')

ATTENTION_MODES = ('residual', 'multiplicative', 'none')
LEVEL_KEYS = ('stem', 'layer1', 'layer2', 'layer3', 'layer4')  # + the ASPP output

# Variants: DenseAttentionSeg field values. R50 is the paper's model (the defaults).
R50 = dict(resnet.R50)
# The micro decoder keeps 32 channels down to full resolution: narrower, it fitted a
# single batch several times more slowly (docs/performance.md, 2026-11-22: depth
# demos, depth-model latency, decoder width).
MICRO = dict(resnet.MICRO, aspp_channels=64, squeeze_channels=32,
             decoder_channels=(64, 64, 32, 32, 32, 32))
TEST = dict(resnet.TEST, aspp_channels=8, squeeze_channels=4,
            decoder_channels=(8, 8, 8, 4, 4, 4))


def dense_attention(squeezed: Sequence[jax.Array],
                    attentions: Optional[Sequence[jax.Array]],
                    mode: str = 'residual') -> list:
  """Attended skips: `s_i` weighted by every other level's attention map.

  `fine_i * coarse_i = prod_{j != i} resize(a_j -> size(s_i))` (`level_weight`): maps
  of finer levels are down-sampled, of coarser levels up-sampled, both by plain
  bilinear sampling (half-pixel centres, no antialias); an empty product is 1.

  Args:
    squeezed: s_1..s_n, each (B, H_i, W_i, k), finest first.
    attentions: a_1..a_n of the same shapes, or None when mode is 'none'.
    mode: 'residual' `s * (1 + fine * coarse)`, 'multiplicative'
      `s * fine * coarse`, or 'none' `s`.

  Returns:
    The n skips, shaped as `squeezed`.

  Raises:
    ValueError: unknown mode, or missing / mismatched attention maps.
  """
  if mode not in ATTENTION_MODES:
    raise ValueError(f'attention must be one of {ATTENTION_MODES}, got {mode!r}')
  if mode == 'none':
    return list(squeezed)
  if attentions is None or len(attentions) != len(squeezed):
    raise ValueError(f'mode {mode!r} needs one attention map per level')
  skips = []
  for i, s in enumerate(squeezed):
    weight = level_weight(attentions, i, s.shape[1:3], s.dtype)
    skips.append(s * (1 + weight) if mode == 'residual' else s * weight)
  return skips


def level_weight(attentions: Sequence[jax.Array], i: int, size: Sequence[int],
                 dtype: Dtype) -> jax.Array:
  """`fine_i * coarse_i`: the product of every level's attention map but level i's,
  each resized to `size` (plain bilinear sampling); 1 when there is no other level.

  Args:
    attentions: a_1..a_n, finest first, each (B, H_j, W_j, k).
    i: the level weighted (0-based).
    size: its (H_i, W_i).
    dtype: of the product.

  Returns:
    (B, H_i, W_i, k), or a scalar 1.
  """
  weight = jnp.ones((), dtype)
  for j, a in enumerate(attentions):
    if j != i:
      weight = weight * layers.resize_bilinear(a, size)
  return weight


def decoder_strides(output_stride: int) -> tuple:
  """Strides of D1..D6: each climbs from one level's stride to the next finer one.

  Args:
    output_stride: the encoder's output stride (16: the paper's (1, 1, 2, 2, 2, 2)).

  Returns:
    Six ints.
  """
  level = [2, 4]                                   # stem, layer1 (after the max-pool)
  for stride, _, _ in resnet.stage_plan(output_stride)[1:]:
    level.append(level[-1] * stride)               # layer2, layer3, layer4
  level.append(level[-1])                          # ASPP keeps layer4's stride
  finer = [1] + level[:-1]                         # D6 goes back to the input
  return tuple(c // f for c, f in zip(level[::-1], finer[::-1]))


class SqueezeUnit(nn.Module):
  """ConvBNReLU 1x1 -> k, then Conv3x3 (no bias) + BN -> t; s = relu(t), a = sigmoid(t).

  Attributes:
    channels: k (64 in the paper).
    with_attention: also return a = sigmoid(t); None in its place when False.
    dtype: computation dtype.
  """
  channels: int = 64
  with_attention: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple:
    """Args: x (B, H, W, C) one level; train: BatchNorm mode.

    Returns:
      (s, a), both (B, H, W, channels); a is None without attention.
    """
    t = layers.ConvBNReLU(self.channels, 1, dtype=self.dtype, name='reduce')(x, train)
    t = resnet.conv(self.channels, 3, name='conv', dtype=self.dtype)(t)
    t = resnet.batch_norm(train, name='bn', dtype=self.dtype)(t)
    # The attention map is taken before the ReLU, so it can fall below 0.5.
    return nn.relu(t), (nn.sigmoid(t) if self.with_attention else None)


class ConvTranspose(nn.Module):
  """Transposed conv without bias: PyTorch ConvTranspose2d(k, s, padding=1) sizes.

  Owns the parameters of `nn.ConvTranspose(transpose_kernel=False)`: `kernel`
  (k, k, C_in, features), stored unflipped (a PyTorch weight converts by a spatial
  flip and an in/out transpose). XLA:CPU differentiates the input-dilated conv of
  `lax.conv_transpose` very slowly (docs/performance.md, Transposed convs per output
  parity), so for k=4, s=2 the 'parity' impl computes
  the same convolution as one 2x2 conv per output parity, interleaved.

  Attributes:
    features: output channels.
    kernel_size: 3 (stride 1) or 4 (stride 2).
    strides: up-sampling factor, 1 or 2.
    impl: 'parity' (fast) or 'lax' (`lax.conv_transpose`); same numbers.
    kernel_init: the kernel's initializer (Kaiming normal over fan_out; GCN's
      deconvolutions start as bilinear up-sampling).
    dtype: computation dtype; parameters stay float32.
  """
  features: int
  kernel_size: int
  strides: int
  impl: str = 'parity'
  kernel_init: Callable = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Args: x (B, H, W, C). Returns: (B, s*H, s*W, features)."""
    k, s = self.kernel_size, self.strides
    if (k, s) not in ((3, 1), (4, 2)):
      raise ValueError(f'transposed conv supports (kernel, stride) (3, 1) and (4, 2), '
                       f'got {(k, s)}')
    if self.impl not in ('parity', 'lax'):
      raise ValueError(f"ConvTranspose impl must be 'parity' or 'lax', got {self.impl!r}")
    kernel = self.param('kernel', self.kernel_init, (k, k, x.shape[-1], self.features),
                        jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    # lax pads the stride-dilated input: PyTorch's padding 1 is k - 2 there.
    pad = ((k - 2, k - 2),) * 2
    if self.impl == 'lax':
      return lax.conv_transpose(x, kernel, (s, s), pad, dimension_numbers=_DN)
    if s == 1:   # a stride-1 transposed conv (unflipped kernel) is a plain conv
      return lax.conv_general_dilated(x, kernel, (1, 1), pad, dimension_numbers=_DN)
    # Output row 2i takes taps 0, 2 at input rows i-1, i; row 2i+1 taps 1, 3 at i, i+1:
    # parity p uses kernel[p::2] with padding (1, 0) for p = 0 and (0, 1) for p = 1.
    pads = ((1, 0), (0, 1))
    rows = []
    for py in (0, 1):
      cols = [lax.conv_general_dilated(
          x, kernel[py::2, px::2], (1, 1), (pads[py], pads[px]),
          dimension_numbers=_DN) for px in (0, 1)]
      rows.append(jnp.stack(cols, axis=3))           # (B, H, W, px, C)
    y = jnp.stack(rows, axis=2)                      # (B, H, py, W, px, C)
    b, h, _, w, _, c = y.shape
    return y.reshape(b, 2 * h, 2 * w, c)


class DeconvBNReLU(nn.Module):
  """Transposed conv (no bias), BN, ReLU.

  Attributes:
    features: output channels.
    kernel_size: 3 for stride 1, 4 for stride 2.
    strides: up-sampling factor.
    impl: `ConvTranspose` impl.
    dtype: computation dtype.
  """
  features: int
  kernel_size: int
  strides: int
  impl: str = 'parity'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Args: x (B, H, W, C). Returns: (B, s*H, s*W, features)."""
    x = ConvTranspose(self.features, self.kernel_size, self.strides, self.impl,
                      dtype=self.dtype, name='conv')(x)
    return nn.relu(resnet.batch_norm(train, name='bn', dtype=self.dtype)(x))


class DenseAttentionDecoder(nn.Module):
  """Six transposed convs D1..D6 + BN + ReLU, skip concatenations, 1x1 classifier.

  Attributes:
    channels: outputs of D1..D6 ((256, 256, 128, 64, 64, 32) in the spec).
    strides: strides of D1..D6 ((1, 1, 2, 2, 2, 2) at output stride 16).
    num_classes: output classes.
    deconv_impl: `ConvTranspose` impl ('parity' or 'lax').
    dtype: computation dtype.
  """
  channels: Sequence[int] = (256, 256, 128, 64, 64, 32)
  strides: Sequence[int] = (1, 1, 2, 2, 2, 2)
  num_classes: int = 3
  deconv_impl: str = 'parity'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, skips: Sequence[jax.Array], train: bool = False) -> jax.Array:
    """Args: skips: skip_1..skip_6, finest first; train: BatchNorm mode.

    Returns:
      (B, H, W, num_classes) logits at twice skip_1's size (the input size when it
      is divisible by 16).
    """
    x = skips[-1]
    for i, (c, s) in enumerate(zip(self.channels, self.strides)):
      x = DeconvBNReLU(c, 3 if s == 1 else 2 * s, s, self.deconv_impl, dtype=self.dtype,
                       name=f'deconv_{i + 1}')(x, train)
      if i < len(skips) - 1:
        skip = skips[-2 - i]                  # skip_5 after D1, ..., skip_1 after D5
        x = layers.resize_bilinear(x, skip.shape[1:3])  # identity at sizes % 16 == 0
        x = jnp.concatenate([x, skip], axis=-1)
    return deeplab.conv_seg(self.num_classes, self.dtype)(x)


class DenseAttentionSeg(deeplab.ResNetASPPSegmentor):
  """The DenseAttentionSeg segmentor (paper Fig. 2), returning logits.

  Parameters: `backbone` (ResNet), `aspp`, `squeeze_1..6` (one per level, L1 = stem
  ... L6 = ASPP), `decoder` (`deconv_1..6`, `conv_seg`). Apply with
  `mutable=['intermediates']` to also get the six levels (and the attention maps).

  Attributes:
    num_classes, in_channels, stage_sizes, base_width, output_stride,
      aspp_channels, atrous_rates, dropout_rate: see
      `deeplab.ResNetASPPSegmentor` (the encoder DeepLabV3Plus shares).
    squeeze_channels: k of the SqueezeUnits (64).
    attention: 'residual' (project's choice), 'multiplicative', or 'none'
      (the paper's "without dense attention" ablation).
    decoder_channels: outputs of D1..D6.
    deconv_impl: how the transposed convs are computed ('parity' or 'lax'; the same
      parameters and numbers).
    dtype: computation dtype; parameters stay float32.
  """
  squeeze_channels: int = 64
  attention: str = 'residual'
  decoder_channels: Sequence[int] = (256, 256, 128, 64, 64, 32)
  deconv_impl: str = 'parity'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    """Args: images (B, H, W, in_channels) float; train: BatchNorm and dropout mode.

    Returns:
      eval: (B, H, W, num_classes) logits. train: (logits, None) (no auxiliary
      head), the contract of `EncoderDecoder`.
    """
    if self.attention not in ATTENTION_MODES:
      raise ValueError(f'attention must be one of {ATTENTION_MODES}, '
                       f'got {self.attention!r}')
    dt = self.dtype
    features, top = self.encode(images, train)
    levels = [features[k] for k in LEVEL_KEYS] + [top]
    self.sow('intermediates', 'levels', tuple(levels))
    with_attention = self.attention != 'none'
    squeezed, attentions = [], []
    for i, level in enumerate(levels):
      s, a = SqueezeUnit(self.squeeze_channels, with_attention, dtype=dt,
                         name=f'squeeze_{i + 1}')(level, train)
      squeezed.append(s)
      attentions.append(a)
    if with_attention:
      self.sow('intermediates', 'attention_maps', tuple(attentions))
    skips = dense_attention(squeezed, attentions if with_attention else None,
                            self.attention)
    decoder = DenseAttentionDecoder(self.decoder_channels,
                                    decoder_strides(self.output_stride),
                                    self.num_classes, self.deconv_impl, dtype=dt,
                                    name='decoder')
    logits = decoder(skips, train)
    logits = layers.resize_bilinear(logits, images.shape[1:3])
    return (logits, None) if train else logits
