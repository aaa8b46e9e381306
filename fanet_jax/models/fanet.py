"""The FANet backbone: AFE blocks with SCM and FRM (FANet, ICIP 2024; docs/models.md section 1).

Written to match the public PyTorch reference block for block, in NHWC. Submodule
names follow the reference's state-dict names (`downsample_layers_{i}`,
`stages_{s}_{b}`, `attn.{dwconv, proj1, ...}`) so the weight converter is a rename.
The reference's `attn.ctx_conv` / `attn.norm3` live here in the `scm` submodule.

`conv_impl` picks how convs are computed: 'fast' (depthwise as shifted multiplies,
grouped as one matmul per group, 1x1 as matmuls; see layers.py) or 'lax' (XLA
convolutions, feature_group_count). Both own identical parameters, so one checkpoint
serves either.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fanet_jax.models import layers

Dtype = Any

# Variants table: FANet field values. `tiny` is the paper's model; `micro` and
# `test` are small widths for CPU runs and unit tests.
TINY = dict(widths=(96, 192, 384, 768), depths=(2, 2, 8, 2), kernel_sizes=(5, 5, 3, 3),
            drop_path_rate=0.1)
MICRO = dict(widths=(32, 64, 128, 256), depths=(1, 1, 2, 1), kernel_sizes=(5, 5, 3, 3),
             drop_path_rate=0.05)
TEST = dict(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1), kernel_sizes=(5, 5, 3, 3),
            drop_path_rate=0.1)


class SCM(nn.Module):
  """Spatial context module: `LN(GELU(Conv7x7_groups4(x)))`, width unchanged.

  Attributes:
    kernel_size: context kernel (7 in the reference).
    groups: groups of the context conv (4 in the reference).
    conv_impl: 'fast' or 'lax'.
    dtype: computation dtype.
  """
  kernel_size: int = 7
  groups: int = 4
  conv_impl: str = 'fast'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Args: x (B, H, W, c). Returns: (B, H, W, c)."""
    y = layers.GroupedConv(x.shape[-1], self.kernel_size, self.groups,
                           impl=layers.conv_impls(self.conv_impl)[1], dtype=self.dtype,
                           name='ctx_conv')(x)
    return layers.LayerNorm(dtype=self.dtype, name='norm')(layers.gelu(y))


class FRM(nn.Module):
  """Feature refinement module: low- (F*Q) and high-frequency (F-Q) branches.

  Q is F smoothed by a stride-2 depthwise conv and resized back (bilinear, half-pixel
  centres). Only enabled branches exist and are concatenated (L then H); `proj`
  maps that concatenation back to F's width. Sows `F`, `Q`, `S` = F*Q, `R` = F-Q
  (of the enabled branches) and `output` into 'intermediates'.

  Attributes:
    use_low: keep the low-frequency branch (`lconv`, `norm1`).
    use_high: keep the high-frequency branch (`hconv`, `norm2`).
    conv_impl: 'fast' or 'lax'.
    dtype: computation dtype.
  """
  use_low: bool = True
  use_high: bool = True
  conv_impl: str = 'fast'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, f: jax.Array) -> jax.Array:
    """Args: f (B, H, W, c). Returns: (B, H, W, c)."""
    if not (self.use_low or self.use_high):
      raise ValueError('FRM needs at least one of use_low, use_high')
    c, impl = f.shape[-1], layers.conv_impls(self.conv_impl)[0]
    dw = lambda name, strides=1: layers.DepthwiseConv(
        c, 3, strides=strides, padding=1, impl=impl, dtype=self.dtype, name=name)
    q = layers.resize_bilinear(dw('down', strides=2)(f), f.shape[1:3])
    # The maps of the paper's Fig. 6, for `mutable=['intermediates']`
    # (report/internals.py); without it `sow` does nothing.
    self.sow('intermediates', 'F', f)
    self.sow('intermediates', 'Q', q)
    branches = []
    if self.use_low:
      s = f * q
      self.sow('intermediates', 'S', s)
      low = dw('lconv')(layers.gelu(s))
      branches.append(layers.LayerNorm(dtype=self.dtype, name='norm1')(low))
    if self.use_high:
      r = f - q
      self.sow('intermediates', 'R', r)
      high = dw('hconv')(layers.gelu(r))
      branches.append(layers.LayerNorm(dtype=self.dtype, name='norm2')(high))
    y = jnp.concatenate(branches, axis=-1)
    out = layers.gelu(layers.conv2d(c, 1, name='proj', dtype=self.dtype,
                                    impl=self.conv_impl)(y))
    self.sow('intermediates', 'output', out)
    return out


class AFE(nn.Module):
  """The AFE block's token mixer: conv embedding, squeeze, SCM + FRM, fuse.

  Attributes:
    kernel_size: the stage's conv-embedding depthwise kernel.
    use_scm, use_frm_high, use_frm_low: ablation switches (paper Table 2); with
      SCM and FRM both off the squeezed C/2 features go straight to `proj2`.
    conv_impl: 'fast' or 'lax'.
    dtype: computation dtype.
  """
  kernel_size: int = 3
  use_scm: bool = True
  use_frm_high: bool = True
  use_frm_low: bool = True
  conv_impl: str = 'fast'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Args: x (B, H, W, C). Returns: (B, H, W, C)."""
    c, dtype = x.shape[-1], self.dtype
    y = layers.DepthwiseConv(c, self.kernel_size, impl=layers.conv_impls(self.conv_impl)[0],
                             dtype=dtype, name='dwconv')(x)
    x = x + layers.LayerNorm(dtype=dtype, name='norm1')(layers.gelu(y))
    x = layers.gelu(layers.conv2d(c // 2, 1, name='proj1', dtype=dtype,
                                  impl=self.conv_impl)(x))
    x = layers.LayerNorm(dtype=dtype, name='norm2')(x)
    branches = []
    if self.use_scm:
      branches.append(SCM(conv_impl=self.conv_impl, dtype=dtype, name='scm')(x))
    if self.use_frm_low or self.use_frm_high:
      branches.append(FRM(self.use_frm_low, self.use_frm_high, conv_impl=self.conv_impl,
                          dtype=dtype, name='enhance')(x))
    # Both off is the paper's "CE + ConvMLP" baseline: proj2 maps C/2 -> C.
    y = jnp.concatenate(branches, axis=-1) if branches else x
    return layers.gelu(layers.conv2d(c, 1, name='proj2', dtype=dtype,
                                     impl=self.conv_impl)(y))


class ConvMLP(nn.Module):
  """MLP with a depthwise positional conv: fc1, GELU, h + GELU(pos(h)), fc2.

  Attributes:
    mlp_ratio: hidden width / input width.
    conv_impl: 'fast' or 'lax'.
    dtype: computation dtype.
  """
  mlp_ratio: int = 4
  conv_impl: str = 'fast'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Args: x (B, H, W, C). Returns: (B, H, W, C)."""
    c, hidden = x.shape[-1], x.shape[-1] * self.mlp_ratio
    h = layers.gelu(layers.conv2d(hidden, 1, name='fc1', dtype=self.dtype,
                                  impl=self.conv_impl)(x))
    pos = layers.DepthwiseConv(hidden, 3, impl=layers.conv_impls(self.conv_impl)[0],
                               dtype=self.dtype, name='pos')(h)
    h = h + layers.gelu(pos)
    return layers.conv2d(c, 1, name='fc2', dtype=self.dtype, impl=self.conv_impl)(h)


class FANetBlock(nn.Module):
  """`x + DropPath(AFE(LN1(x)))`, then `x + DropPath(ConvMLP(LN2(x)))`.

  Attributes:
    kernel_size: the stage's conv-embedding kernel.
    mlp_ratio: ConvMLP expansion.
    drop_path: stochastic-depth rate of this block.
    use_scm, use_frm_high, use_frm_low: AFE ablation switches.
    conv_impl: 'fast' or 'lax'.
    dtype: computation dtype.
  """
  kernel_size: int = 3
  mlp_ratio: int = 4
  drop_path: float = 0.0
  use_scm: bool = True
  use_frm_high: bool = True
  use_frm_low: bool = True
  conv_impl: str = 'fast'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Args: x (B, H, W, C); train: enables stochastic depth. Returns: (B, H, W, C)."""
    drop = layers.DropPath(self.drop_path, name='drop_path')
    y = layers.LayerNorm(dtype=self.dtype, name='layer_norm1')(x)
    y = AFE(self.kernel_size, self.use_scm, self.use_frm_high, self.use_frm_low,
            conv_impl=self.conv_impl, dtype=self.dtype, name='attn')(y)
    x = x + drop(y, deterministic=not train)
    y = layers.LayerNorm(dtype=self.dtype, name='layer_norm2')(x)
    y = ConvMLP(self.mlp_ratio, conv_impl=self.conv_impl, dtype=self.dtype, name='mlp')(y)
    return x + drop(y, deterministic=not train)


class FANet(nn.Module):
  """FANet backbone: 4 stages of FANetBlocks behind conv down-samplings (no norms).

  Initialisation is the reference's (trunc normal 0.02 kernels, zero biases) except
  for the stem's bias, drawn as PyTorch draws a conv bias, U(+-1/sqrt(fan_in)). The
  reference zeroes it and only ever fine-tunes from ImageNet weights. From scratch, a
  zero stem bias maps the segmentation crops' zero padding to the zero vector, and
  with every other bias zero too, those pixels stay exactly zero in every stage
  whose receptive field lies inside the padding: each LayerNorm there sees zero
  variance, where its backward pass multiplies the gradient by 1/sqrt(eps) = 1000.
  About 30 such LayerNorms in series overflow float32 in stage 0's gradient on the
  first step. A non-zero stem bias makes the padding's features an ordinary,
  channel-varying vector. Converted or pretrained weights replace it, so outputs
  for them are unchanged.

  Attributes:
    widths: channels per stage.
    depths: blocks per stage.
    kernel_sizes: conv-embedding depthwise kernel per stage.
    mlp_ratio: ConvMLP expansion.
    drop_path_rate: stochastic depth, linear from 0 to this over all blocks.
    use_scm, use_frm_high, use_frm_low: AFE ablation switches.
    conv_impl: 'fast' or 'lax' (same parameters, different XLA programs).
    remat_stages: stages whose blocks keep only their input for the backward pass and
      recompute the rest (`nn.remat`): stage 0's activations are the largest; the
      recomputation costs little time (docs/performance.md, Memory-minimising
      scheduler and stage-0 remat).
      Same numbers, same parameters. On the CPU this needs xla_cpu.configure(): the
      default scheduler moves the recomputation back into the forward pass.
    dtype: computation dtype; parameters are float32.
  """
  widths: Sequence[int] = (96, 192, 384, 768)
  depths: Sequence[int] = (2, 2, 8, 2)
  kernel_sizes: Sequence[int] = (5, 5, 3, 3)
  mlp_ratio: int = 4
  drop_path_rate: float = 0.1
  use_scm: bool = True
  use_frm_high: bool = True
  use_frm_low: bool = True
  conv_impl: str = 'fast'
  remat_stages: Sequence[int] = (0,)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    """Args: x (B, H, W, 3) images; train: enables stochastic depth.

    Returns:
      {'s4', 's8', 's16', 's32'}: stage outputs (B, h, w, widths[i]) at strides
      4, 8, 16, 32 (sizes follow the conv arithmetic floor((H + 2p - k)/s) + 1).
    """
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths))
    features, block = {}, 0
    for s, (width, depth, k) in enumerate(zip(self.widths, self.depths,
                                              self.kernel_sizes)):
      # Stem: 5x5 stride 4 pad 2; later: 3x3 stride 2 pad 1. No norm after either.
      stem = s == 0
      k_in = 5 if stem else 3
      x = layers.conv2d(width, k_in, strides=4 if stem else 2,
                        padding=2 if stem else 1, name=f'downsample_layers_{s}',
                        dtype=self.dtype, impl=self.conv_impl,
                        bias_init=(layers.fan_in_uniform(x.shape[-1] * k_in * k_in)
                                   if stem else nn.initializers.zeros))(x)
      # `train` (argument 2, counting self) is a Python bool: static under remat.
      block_cls = (nn.remat(FANetBlock, static_argnums=(2,)) if s in self.remat_stages
                   else FANetBlock)
      for b in range(depth):
        x = block_cls(k, self.mlp_ratio, float(rates[block]), self.use_scm,
                      self.use_frm_high, self.use_frm_low, conv_impl=self.conv_impl,
                      dtype=self.dtype, name=f'stages_{s}_{b}')(x, train)
        block += 1
      features[f's{4 * 2 ** s}'] = x
    return features
