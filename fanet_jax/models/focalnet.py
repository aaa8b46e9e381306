"""The FocalNet backbone and classifier (Yang et al., "Focal Modulation Networks", NeurIPS 2022).

The FANet paper compares with FocalNet-T / -B (LRF); docs/models.md section 9 gives
the architecture and where each fact comes from: the public release
(github.com/microsoft/FocalNet), `classification/focalnet.py` for the blocks and the
ImageNet classifier, `segmentation/mmseg/models/backbones/focalnet.py` for the
features UperNet reads (a LayerNorm `norm{i}` on each stage output, `out_norms`)
and the bottom / right zero padding of inputs not divisible by the patch size.
Written here from those facts, in NHWC.

Submodule names are the release's state-dict names with '.' -> '_' where a Flax
name needs it (`patch_embed`, `layers_{i}_blocks_{j}`, `layers_{i}_downsample`,
`modulation/focal_layers_{k}`, `norm{i}`), so the weight converter is a rename
(`fanet_jax/pytorch/names.py`).

`conv_impl` picks how the depthwise focal convs are computed: 'fast' (shifted
multiplies, `fast_ops.depthwise_shifted`; XLA:CPU runs `feature_group_count`
convolutions slowly) or 'lax'. Both own the same parameters.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fanet_jax.models import layers
from fanet_jax.models.classifier import ImageClassifier

Dtype = Any
# nn.LayerNorm's default, which the release uses everywhere (FANet's norms use 1e-6).
EPS = 1e-5

# Variants: the release's configs/focalnet_{tiny,base}_lrf.yaml (focal levels 3,
# window 3: kernels 3, 5, 7; stochastic depth 0.2 / 0.5). TEST: CPU unit tests.
TINY_LRF = dict(embed_dim=96, depths=(2, 2, 6, 2), focal_levels=(3, 3, 3, 3),
                focal_windows=(3, 3, 3, 3), drop_path_rate=0.2)
BASE_LRF = dict(embed_dim=128, depths=(2, 2, 18, 2), focal_levels=(3, 3, 3, 3),
                focal_windows=(3, 3, 3, 3), drop_path_rate=0.5)
TEST = dict(embed_dim=8, depths=(1, 1, 1, 1), focal_levels=(2, 2, 2, 2),
            focal_windows=(3, 3, 3, 3), drop_path_rate=0.1)
# What the release's UperNet configs change in the backbone (upernet_focalnet_*_lrf.py):
# focal window 9 (kernels 9, 11, 13), stochastic depth 0.3, the per-stage out norms.
SEGMENTATION = dict(focal_windows=(9, 9, 9, 9), drop_path_rate=0.3, out_norms=True)


def _torch_conv(features: int, kernel_size: int, fan_in: int, *, name: str,
                strides: int = 1, conv_impl: str = 'fast', dtype: Dtype) -> nn.Conv:
  """An `nn.Conv` (no padding) initialised as PyTorch's Conv2d: U(+-1/sqrt(fan_in)).

  The release's `_init_weights` sets Linear and LayerNorm only; its convs keep
  PyTorch's default (Kaiming uniform with a = sqrt 5 gives the same bound).
  """
  init = layers.fan_in_uniform(fan_in)
  return nn.Conv(features, (kernel_size, kernel_size), strides=(strides, strides),
                 padding='VALID', kernel_init=init, bias_init=init, dtype=dtype,
                 param_dtype=jnp.float32,
                 conv_general_dilated=layers.conv_function(conv_impl), name=name)


def _dense(features: int, name: str, dtype: Dtype) -> nn.Dense:
  """A Linear layer with the release's init: trunc normal 0.02, zero bias."""
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32,
                  kernel_init=layers.trunc_normal(), name=name)


class FocalModulation(nn.Module):
  """Focal modulation: `proj(q * h(sum_l gate_l * ctx_l + gate_L * ctx_global))`.

  `f` maps x to q (C), ctx (C) and L + 1 gates. Level l: ctx = GELU(DepthwiseConv(ctx)),
  kernel `focal_factor * l + focal_window`; the global context is GELU of the last
  level's mean over all pixels. `h` is a 1x1 conv with bias.

  Attributes:
    focal_level: L, the number of focal levels.
    focal_window: kernel of the first level.
    focal_factor: kernel growth per level.
    conv_impl: 'fast' or 'lax'.
    dtype: computation dtype.
  """
  focal_level: int = 3
  focal_window: int = 3
  focal_factor: int = 2
  conv_impl: str = 'fast'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Args: x (B, H, W, C). Returns: (B, H, W, C)."""
    c, levels = x.shape[-1], self.focal_level
    y = _dense(2 * c + levels + 1, 'f', self.dtype)(x)
    q, ctx, gates = y[..., :c], y[..., c:2 * c], y[..., 2 * c:]
    ctx_all = 0.0
    for level in range(levels):
      k = self.focal_factor * level + self.focal_window
      # Depthwise, no bias, PyTorch's default init (the release leaves convs to it).
      focal_conv = layers.DepthwiseConv(
          c, k, impl=layers.conv_impls(self.conv_impl)[0], use_bias=False,
          kernel_init=layers.fan_in_uniform(k * k), dtype=self.dtype,
          name=f'focal_layers_{level}')
      ctx = layers.gelu(focal_conv(ctx))
      ctx_all = ctx_all + ctx * gates[..., level:level + 1]
    # The mean over thousands of pixels in float32 (bf16 would lose precision).
    ctx_global = jnp.mean(ctx.astype(jnp.float32), axis=(1, 2), keepdims=True)
    ctx_all = ctx_all + layers.gelu(ctx_global).astype(ctx.dtype) * gates[..., levels:]
    modulator = _torch_conv(c, 1, c, name='h', conv_impl=self.conv_impl,
                            dtype=self.dtype)(ctx_all)
    return _dense(c, 'proj', self.dtype)(q * modulator)


class Mlp(nn.Module):
  """Linear `fc1` (width x ratio), exact GELU, Linear `fc2` back to the width.

  Attributes:
    mlp_ratio: hidden width / width.
    dtype: computation dtype.
  """
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Args: x (B, H, W, C). Returns: (B, H, W, C)."""
    h = layers.gelu(_dense(int(x.shape[-1] * self.mlp_ratio), 'fc1', self.dtype)(x))
    return _dense(x.shape[-1], 'fc2', self.dtype)(h)


class FocalNetBlock(nn.Module):
  """`x + DropPath(FocalModulation(LN1(x)))`, then `x + DropPath(Mlp(LN2(x)))`.

  No layer scale and no post-LN: the release's tiny / base models use neither.

  Attributes:
    focal_level, focal_window: of the modulation.
    mlp_ratio: hidden width / width.
    drop_path: stochastic-depth rate of this block.
    conv_impl: 'fast' or 'lax'.
    dtype: computation dtype.
  """
  focal_level: int = 3
  focal_window: int = 3
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  conv_impl: str = 'fast'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Args: x (B, H, W, C); train: enables stochastic depth. Returns: (B, H, W, C)."""
    drop = layers.DropPath(self.drop_path, name='drop_path')
    norm = lambda name: layers.LayerNorm(EPS, dtype=self.dtype, name=name)
    y = FocalModulation(self.focal_level, self.focal_window, conv_impl=self.conv_impl,
                        dtype=self.dtype, name='modulation')(norm('norm1')(x))
    x = x + drop(y, deterministic=not train)
    y = Mlp(self.mlp_ratio, self.dtype, name='mlp')(norm('norm2')(x))
    return x + drop(y, deterministic=not train)


class PatchEmbed(nn.Module):
  """Patch embedding: p x p conv with stride p (`proj`), then LayerNorm (`norm`).

  The stem (p = 4) and the down-sampling at the end of stages 1-3 (p = 2, twice the
  width). Inputs whose size is not a multiple of p are zero-padded at the bottom and
  right first, as the release's segmentation backbone does (its classifier floors
  instead; the two agree on sizes divisible by 32).

  Attributes:
    features: output channels.
    patch_size: p.
    conv_impl: 'fast' or 'lax'.
    dtype: computation dtype.
  """
  features: int
  patch_size: int = 4
  conv_impl: str = 'fast'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Args: x (B, H, W, C). Returns: (B, ceil(H / p), ceil(W / p), features)."""
    p = self.patch_size
    pad_h, pad_w = -x.shape[1] % p, -x.shape[2] % p
    if pad_h or pad_w:
      x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    x = _torch_conv(self.features, p, x.shape[-1] * p * p, strides=p, name='proj',
                    conv_impl=self.conv_impl, dtype=self.dtype)(x)
    return layers.LayerNorm(EPS, dtype=self.dtype, name='norm')(x)


class FocalNet(nn.Module):
  """FocalNet backbone: patch embedding, 4 stages of blocks, down-sampling after 1-3.

  Attributes:
    embed_dim: width of stage 1; stage i has embed_dim * 2**i.
    depths: blocks per stage.
    focal_levels: focal levels per stage.
    focal_windows: first-level kernel per stage.
    mlp_ratio: MLP expansion.
    patch_size: stem patch size.
    drop_path_rate: stochastic depth, linear from 0 to this over all blocks.
    out_norms: a LayerNorm `norm{i}` on every stage output, as the release's
      segmentation backbone; off for the classifier, which has its own `norm`.
    conv_impl: 'fast' or 'lax' (same parameters, different XLA programs).
    dtype: computation dtype; parameters are float32.
  """
  embed_dim: int = 96
  depths: Sequence[int] = (2, 2, 6, 2)
  focal_levels: Sequence[int] = (3, 3, 3, 3)
  focal_windows: Sequence[int] = (3, 3, 3, 3)
  mlp_ratio: float = 4.0
  patch_size: int = 4
  drop_path_rate: float = 0.2
  out_norms: bool = False
  conv_impl: str = 'fast'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    """Args: x (B, H, W, 3) images; train: enables stochastic depth.

    Returns:
      {'s4', 's8', 's16', 's32'}: stage outputs (B, h, w, embed_dim * 2**i) at strides
      4, 8, 16, 32 (sizes rounded up), normalised by `norm{i}` when `out_norms`.
    """
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths))
    stages = len(self.depths)
    x = PatchEmbed(self.embed_dim, self.patch_size, self.conv_impl, self.dtype,
                   name='patch_embed')(x)
    features, block = {}, 0
    for i, depth in enumerate(self.depths):
      for j in range(depth):
        x = FocalNetBlock(self.focal_levels[i], self.focal_windows[i], self.mlp_ratio,
                          float(rates[block]), conv_impl=self.conv_impl,
                          dtype=self.dtype, name=f'layers_{i}_blocks_{j}')(x, train)
        block += 1
      out = (layers.LayerNorm(EPS, dtype=self.dtype, name=f'norm{i}')(x)
             if self.out_norms else x)
      features[f's{self.patch_size * 2 ** i}'] = out
      if i < stages - 1:
        x = PatchEmbed(2 * x.shape[-1], 2, self.conv_impl, self.dtype,
                       name=f'layers_{i}_downsample')(x)
    return features


class FocalNetClassifier(ImageClassifier):
  """The release's ImageNet classifier: LayerNorm `norm` on every pixel of the
  last stage, mean over the pixels, Linear `head`.

  ImageClassifier pools first and normalises after (FANet's order); LayerNorm does
  not commute with the mean, so the order is the release's here. Same fields and
  names otherwise (`backbone`, `norm`, `head`), so the converter drops `backbone.`
  for it as for ImageClassifier.
  """

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    """Args: images (B, H, W, 3); train: enables stochastic depth.

    Returns:
      (B, num_classes) logits.
    """
    x = self.backbone(images, train=train)['s32']
    x = layers.LayerNorm(EPS, dtype=self.dtype, name='norm')(x)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return _dense(self.num_classes, 'head', self.dtype)(x)
