"""RefineNet, a DenseAttentionSeg Table 2 baseline (docs/models.md section 10).

Lin, Milan, Shen, Reid, "RefineNet: Multi-Path Refinement Networks for
High-Resolution Semantic Segmentation" (CVPR 2017): the 4-cascaded RefineNet on a
ResNet-50 encoder (layer1..layer4, strides 4..32, no dilation). Each RefineNet block:

- adaptive convs: two `RCU`s (ReLU-conv3x3-ReLU-conv3x3, residual, no BN) per input;
- `MultiResolutionFusion`: a conv3x3 per input to the smallest input width, each
  resized to the largest input's size, summed; a single input passes unchanged;
- `ChainedResidualPooling`: ReLU, then a chain of blocks (5x5 max-pool stride 1 +
  conv3x3), each block's output added to the running sum;
- an output RCU.

RefineNet-4 takes layer4 alone at 512 channels; RefineNet-3..1 take layer s and the
previous block's output at 256 [RefineNet]. Two more RCUs follow RefineNet-1, then
dropout and the classifier at stride 4; the logits are resized to the input size.

From the authors' release (guosheng/refinenet): each ResNet output first passes a
conv3x3 without bias to the path width, layer3 / layer4 through dropout 0.5; the
fusion and pooling convs and the second conv of an RCU have no bias; new convs start
from normal(0.01) with zero biases; the classifier is a conv3x3 with bias after
dropout 0.5. The release's 3 RCUs after each pooling chain are this output RCU plus
the next block's two adaptive RCUs on that path: the same network.

Readings of ours (docs/models.md section 10): 2 pooling blocks, the release's training
default (the released VOC model has 4: `crp_blocks=4`); resizes with align_corners
False. The encoder is `backbone`, the same tree as `dense_attention_seg_r50`'s. The
model returns logits, and `(logits, None)` in training.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fanet_jax.models import layers, resnet

Dtype = Any

# Variants: RefineNet field values. R50: the baseline (the defaults); TEST: widths 8/16.
R50 = dict(resnet.R50)
TEST = dict(resnet.TEST, channels=(8, 8, 8, 16))


def conv3x3(features: int, name: str, dtype: Dtype, use_bias: bool = False) -> nn.Conv:
  """A 3x3 conv, padding 1, normal(0.01) init and zero bias as the release's."""
  return nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), use_bias=use_bias,
                 dtype=dtype, param_dtype=jnp.float32,
                 kernel_init=nn.initializers.normal(0.01), name=name)


def max_pool_5x5(x: jax.Array) -> jax.Array:
  """5x5 max-pool, stride 1, padding 2 (with -inf): the size is kept."""
  return nn.max_pool(x, (5, 5), strides=(1, 1), padding=((2, 2), (2, 2)))


class RCU(nn.Module):
  """Residual conv unit: `x + conv_1(relu(conv_0(relu(x))))`, channels kept.

  Attributes:
    dtype: computation dtype.
  """
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Args: x (B, H, W, C). Returns: (B, H, W, C)."""
    c = x.shape[-1]
    y = conv3x3(c, 'conv_0', self.dtype, use_bias=True)(nn.relu(x))
    return x + conv3x3(c, 'conv_1', self.dtype)(nn.relu(y))


class MultiResolutionFusion(nn.Module):
  """conv3x3 per input to the smallest width, resize to the largest size, sum.

  Attributes:
    dtype: computation dtype.
  """
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, paths: Sequence[jax.Array]) -> jax.Array:
    """Args: paths: (B, H_i, W_i, C_i) maps. Returns: (B, max H, max W, min C)."""
    if len(paths) == 1:
      return paths[0]
    width = min(p.shape[-1] for p in paths)
    size = max((p.shape[1:3] for p in paths), key=lambda hw: hw[0] * hw[1])
    out = 0
    for i, p in enumerate(paths):
      out = out + layers.resize_bilinear(conv3x3(width, f'convs_{i}', self.dtype)(p),
                                         size)
    return out


class ChainedResidualPooling(nn.Module):
  """ReLU, then `blocks` times: `top = conv(pool(top)); x = x + top`.

  Attributes:
    blocks: pooling blocks in the chain.
    dtype: computation dtype.
  """
  blocks: int = 2
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Args: x (B, H, W, C). Returns: (B, H, W, C)."""
    x = top = nn.relu(x)
    for i in range(self.blocks):
      top = conv3x3(x.shape[-1], f'convs_{i}', self.dtype)(max_pool_5x5(top))
      x = x + top
    return x


class RefineNetBlock(nn.Module):
  """Adaptive RCUs per input, fusion, chained residual pooling, output RCUs.

  Attributes:
    adapt_rcus: RCUs on each input (2).
    crp_blocks: pooling blocks of the chained residual pooling.
    output_rcus: RCUs after the pooling (1).
    dtype: computation dtype.
  """
  adapt_rcus: int = 2
  crp_blocks: int = 2
  output_rcus: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, paths: Sequence[jax.Array]) -> jax.Array:
    """Args: paths: the inputs, the finest first. Returns: the refined map."""
    adapted = []
    for i, x in enumerate(paths):
      for j in range(self.adapt_rcus):
        x = RCU(self.dtype, name=f'adapt_{i}_{j}')(x)
      adapted.append(x)
    x = MultiResolutionFusion(self.dtype, name='fusion')(adapted)
    x = ChainedResidualPooling(self.crp_blocks, self.dtype, name='crp')(x)
    for j in range(self.output_rcus):
      x = RCU(self.dtype, name=f'output_{j}')(x)
    return x


class RefineNet(nn.Module):
  """The 4-cascaded RefineNet on a ResNet encoder, returning logits.

  Parameters: `backbone` (ResNet, output stride 32), `reduce_{s}` (conv3x3 on layer
  s), `refinenet_{s}` (s = 4..1), `final_{j}` (RCUs), `conv_seg`.

  Attributes:
    num_classes: output classes (background, hand, object).
    in_channels: input channels (1: depth).
    stage_sizes, base_width: the ResNet encoder's fields.
    channels: path widths of RefineNet-1..4 ((256, 256, 256, 512)).
    adapt_rcus, crp_blocks, output_rcus: see `RefineNetBlock`.
    final_rcus: RCUs after RefineNet-1 (2).
    dropout_rate: dropout on layer3, layer4 and before the classifier (0.5).
    dtype: computation dtype; parameters stay float32.
  """
  num_classes: int = 3
  in_channels: int = 1
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  base_width: int = 64
  channels: Sequence[int] = (256, 256, 256, 512)
  adapt_rcus: int = 2
  crp_blocks: int = 2
  output_rcus: int = 1
  final_rcus: int = 2
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    """Args: images (B, H, W, in_channels) float; train: BatchNorm and dropout mode.

    Returns:
      eval: (B, H, W, num_classes) logits. train: (logits, None) (no auxiliary
      head), the contract of `EncoderDecoder`.
    """
    dt = self.dtype
    dropout = lambda x: nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    features = resnet.ResNet(self.stage_sizes, self.base_width, self.in_channels,
                             output_stride=32, dtype=dt, name='backbone')(images, train)
    x = None
    for s in (4, 3, 2, 1):
      level = features[f'layer{s}']
      level = dropout(level) if s >= 3 else level
      level = conv3x3(self.channels[s - 1], f'reduce_{s}', dt)(level)
      block = RefineNetBlock(self.adapt_rcus, self.crp_blocks, self.output_rcus, dt,
                             name=f'refinenet_{s}')
      x = block([level] if x is None else [level, x])
    for j in range(self.final_rcus):
      x = RCU(dt, name=f'final_{j}')(x)
    logits = conv3x3(self.num_classes, 'conv_seg', dt, use_bias=True)(dropout(x))
    logits = layers.resize_bilinear(logits, images.shape[1:3])
    return (logits, None) if train else logits
