"""Building blocks shared by the FANet backbone and the segmentation heads.

Implements the numerics docs/models.md sections 1 and 5 pin down (exact-erf GELU, LayerNorm eps
1e-6, per-sample stochastic depth, PyTorch-equal bilinear resizing) and section 2's
ConvBNReLU. `DepthwiseConv` and `GroupedConv` own exactly the parameters that
`nn.Conv(feature_group_count=...)` would, but can compute the convolution in a form
that XLA:CPU compiles much better (docs/performance.md, Depthwise convs as shifted
multiplies; Grouped convs as matmuls: `fast_ops.grouped_conv`). Dense convs are `nn.Conv`,
computed for `conv_impl='fast'` by `fast_ops.fast_conv_general_dilated` (1x1 as
matmuls, 3x3 on large maps by Winograd F(4x4, 3x3)); either way the parameters are
nn.Conv's, so checkpoints do not care. GELU and LayerNorm come from fast_ops.py
(written-out backward passes). Layout is NHWC.
"""
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from fanet_jax.models.ops.fast_ops import (conv_function, depthwise_shifted, gelu,
                                       grouped_conv, layer_norm)
from fanet_jax.models.ops.upsampling import (CONV_UPSAMPLED_MIN_FACTOR,  # noqa: F401
                                         conv_upsampled, upsample_axis)

Dtype = Any
_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')


def trunc_normal(std: float = 0.02, lower: float = -2.0, upper: float = 2.0):
  """timm's `trunc_normal_(std=0.02)`: N(0, std) truncated at absolute +-2.

  At std 0.02 the absolute bounds sit 100 std out and never bind, so this is a
  plain normal; jax's `truncated_normal` would instead cut at +-2 std (a 12%
  smaller spread). Clipping keeps the bounds without sampling an erf tail that
  rounds to +-1 in float32.

  Args:
    std: standard deviation.
    lower, upper: absolute truncation bounds (PyTorch's `a`, `b`).

  Returns:
    A flax initializer `(key, shape, dtype) -> array`.
  """
  def init(key, shape, dtype=jnp.float32):
    return jnp.clip(std * jax.random.normal(key, shape, dtype), lower, upper)
  return init


def fan_in_uniform(fan_in: int):
  """PyTorch's default conv / linear bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  Args:
    fan_in: input channels x kernel area of the layer the bias belongs to.

  Returns:
    A flax initializer `(key, shape, dtype) -> array`.
  """
  bound = 1.0 / float(fan_in) ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def resize_bilinear(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """Bilinear resize of NHWC `x` to `size` = (h, w).

  Equals PyTorch `interpolate(mode='bilinear', align_corners=False)` both ways;
  antialiasing is off because PyTorch does not blur when down-sampling. Upsampling
  by integer factors (every resize of FANet's FRM and UperNet but two of the PPM's)
  is computed as weighted sums of neighbours, which XLA fuses and differentiates
  without the transposes of `jax.image.resize`'s matmul form; the weights are the
  same, so are the values up to float32 round-off.

  Args:
    x: (B, H, W, C) array.
    size: target (h, w).

  Returns:
    (B, h, w, C) array of x's dtype.
  """
  h, w = int(size[0]), int(size[1])
  (in_h, in_w) = x.shape[1:3]
  if (in_h, in_w) == (h, w):
    return x
  if h % in_h == 0 and w % in_w == 0:
    return upsample_axis(upsample_axis(x, 1, h // in_h), 2, w // in_w)
  return jax.image.resize(x, (x.shape[0], h, w, x.shape[3]), method='linear',
                          antialias=False)


def conv2d(features: int, kernel_size: int, *, name: str, strides: int = 1,
           padding: Optional[int] = None, dtype: Dtype = jnp.float32,
           impl: str = 'lax', bias_init: Callable = nn.initializers.zeros) -> nn.Conv:
  """A dense conv with bias and the backbone's init (trunc normal 0.02, zero bias).

  Padding is explicit (PyTorch's k//2 by default): 'SAME' pads asymmetrically at
  stride 2 and would shift features against the reference.

  Args:
    features: output channels.
    kernel_size: square kernel size k.
    name: submodule name (the weight converter relies on it).
    strides: stride in both directions.
    padding: symmetric padding, k//2 when None.
    dtype: computation dtype.
    impl: 'fast' or 'lax', see `conv_function`.
    bias_init: the bias initializer (zeros, as the reference's `_init_weights`).

  Returns:
    An unbound `nn.Conv`, adopted by the module whose method calls this.
  """
  pad = kernel_size // 2 if padding is None else padding
  return nn.Conv(features, (kernel_size, kernel_size), strides=(strides, strides),
                 padding=((pad, pad), (pad, pad)), kernel_init=trunc_normal(),
                 bias_init=bias_init, dtype=dtype,
                 param_dtype=jnp.float32, conv_general_dilated=conv_function(impl),
                 name=name)


class LayerNorm(nn.Module):
  """LayerNorm over the channel axis with the reference's eps of 1e-6.

  Parameters as `nn.LayerNorm` (`scale` ones, `bias` zeros, float32); statistics in
  float32 whatever the computation dtype (see `layer_norm`).

  Attributes:
    epsilon: added to the variance.
    dtype: output dtype (None: the input's).
  """
  epsilon: float = 1e-6
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Args: x (..., C). Returns: the normalised x, same shape."""
    c = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    return layer_norm(x, scale, bias, self.epsilon).astype(self.dtype or x.dtype)


class DropPath(nn.Module):
  """Per-sample stochastic depth: drops a whole residual branch, scales by 1/keep.

  Attributes:
    rate: probability of dropping the branch for a sample.
  """
  rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    """Args: x (B, ...) branch output; deterministic: identity when True.

    Returns:
      x with some samples zeroed and the rest divided by 1 - rate.
    """
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, mask_shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


def conv_impls(conv_impl: str) -> tuple[str, str]:
  """Maps a backbone's `conv_impl` to (DepthwiseConv impl, GroupedConv impl).

  Args:
    conv_impl: 'fast' (the formulations XLA:CPU runs fast) or 'lax' (XLA convolutions).

  Returns:
    ('shifted', 'matmul') or ('lax', 'lax').
  """
  if conv_impl == 'fast':
    return 'shifted', 'matmul'
  if conv_impl == 'lax':
    return 'lax', 'lax'
  raise ValueError(f"conv_impl must be 'fast' or 'lax', got {conv_impl!r}")


class DepthwiseConv(nn.Module):
  """Depthwise k x k conv; parameters as `nn.Conv(feature_group_count=C)`.

  Attributes:
    features: channels (input = output).
    kernel_size: square kernel size k.
    strides: stride in both directions (FRM's `down` uses 2).
    padding: symmetric padding, k//2 when None (PyTorch's convention).
    impl: 'shifted' (sum of k*k strided slices times the kernel taps; fast on
      XLA:CPU) or 'lax' (`conv_general_dilated` with feature_group_count).
    use_bias: add a bias (zeros at init); FocalNet's focal convs have none.
    kernel_init: the kernel's initializer (trunc normal 0.02, FANet's).
    dtype: computation dtype; parameters stay float32.
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: Optional[int] = None
  impl: str = 'shifted'
  use_bias: bool = True
  kernel_init: Callable = trunc_normal()
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Args: x (B, H, W, C). Returns: (B, H', W', C), H' = (H + 2p - k)//s + 1."""
    k, s, c = self.kernel_size, self.strides, self.features
    pad = k // 2 if self.padding is None else self.padding
    kernel = self.param('kernel', self.kernel_init, (k, k, 1, c), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if self.impl == 'lax':
      y = lax.conv_general_dilated(x, kernel, (s, s), ((pad, pad), (pad, pad)),
                                   dimension_numbers=_DIMENSION_NUMBERS,
                                   feature_group_count=c)
    elif self.impl == 'shifted':
      y = depthwise_shifted(x, kernel, s, pad)
    else:
      raise ValueError(f"DepthwiseConv impl must be 'shifted' or 'lax', "
                       f'got {self.impl!r}')
    if not self.use_bias:
      return y
    return y + self.param('bias', nn.initializers.zeros, (c,), jnp.float32).astype(
        self.dtype)


class GroupedConv(nn.Module):
  """Grouped k x k conv with bias; parameters as `nn.Conv(feature_group_count=G)`.

  Attributes:
    features: output channels (divisible by groups).
    kernel_size: square kernel size k.
    groups: number of groups G (the input channels must divide by it).
    strides: stride in both directions.
    padding: symmetric padding, k//2 when None.
    impl: 'matmul' (`fast_ops.grouped_conv`: one matmul per group; strided or
      size-changing convs fall back to one dense conv per group on channel slices,
      faster on XLA:CPU than feature_group_count: docs/performance.md, Grouped convs
      as matmuls) or 'lax' (feature_group_count).
    dtype: computation dtype; parameters stay float32.
  """
  features: int
  kernel_size: int
  groups: int
  strides: int = 1
  padding: Optional[int] = None
  impl: str = 'matmul'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Args: x (B, H, W, C_in). Returns: (B, H', W', features)."""
    k, s, g = self.kernel_size, self.strides, self.groups
    pad = k // 2 if self.padding is None else self.padding
    cin = x.shape[-1]
    if cin % g or self.features % g:
      raise ValueError(f'channels {cin} -> {self.features} do not divide into {g} groups')
    kernel = self.param('kernel', trunc_normal(), (k, k, cin // g, self.features),
                        jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    x, kernel, bias = (a.astype(self.dtype) for a in (x, kernel, bias))
    conv = lambda lhs, rhs, groups: lax.conv_general_dilated(
        lhs, rhs, (s, s), ((pad, pad), (pad, pad)),
        dimension_numbers=_DIMENSION_NUMBERS, feature_group_count=groups)
    if self.impl == 'lax':
      return conv(x, kernel, g) + bias
    if self.impl != 'matmul':
      raise ValueError(f"GroupedConv impl must be 'matmul' or 'lax', got {self.impl!r}")
    if s == 1 and k % 2 and pad == k // 2:
      return grouped_conv(x, kernel, g) + bias
    # feature_group_count semantics: group i maps input slice i to output slice i.
    ci, co = cin // g, self.features // g
    outs = [conv(x[..., i * ci:(i + 1) * ci], kernel[..., i * co:(i + 1) * co], 1)
            for i in range(g)]
    return jnp.concatenate(outs, axis=-1) + bias


class ConvBNReLU(nn.Module):
  """mmcv's ConvModule: conv without bias, BatchNorm, ReLU (docs/models.md section 2).

  Its input may also be several maps that the conv reads concatenated along the
  channels, each bilinearly resized to the first one's size (UperNet's
  `fpn_bottleneck`). With conv_impl 'fast' a map upsampled by integer factors of at
  least CONV_UPSAMPLED_MIN_FACTOR is then never formed: its part of the kernel is
  applied at its own resolution (`conv_upsampled`); the rest are resized and
  concatenated. The parameters are those of `nn.Conv(use_bias=False)` on the whole
  concatenation either way.

  Attributes:
    features: output channels.
    kernel_size: square kernel size k.
    padding: symmetric padding, k//2 when None.
    conv_impl: 'fast' or 'lax' (see `conv_function`; same parameters).
    dtype: computation dtype.
  """
  features: int
  kernel_size: int = 1
  padding: Optional[int] = None
  conv_impl: str = 'lax'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Any, train: bool = False) -> jax.Array:
    """Args:
      x: (B, H, W, C) array, or a sequence of (B, h_i, w_i, C_i) arrays, read as the
        concatenation of all of them resized to (h_0, w_0).
      train: batch statistics (and their update) when True.

    Returns:
      (B, H, W, features).
    """
    maps = list(x) if isinstance(x, (list, tuple)) else [x]
    k = self.kernel_size
    pad = k // 2 if self.padding is None else self.padding
    # mmcv's ConvModule init: kaiming normal, fan_out, ReLU gain.
    kernel = ConvKernel((k, k, sum(m.shape[-1] for m in maps), self.features),
                        nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
                        name='conv')().astype(self.dtype)
    conv = lambda lhs, rhs: conv_function(self.conv_impl)(
        lhs, rhs, (1, 1), ((pad, pad), (pad, pad)), dimension_numbers=_DIMENSION_NUMBERS)
    size = maps[0].shape[1:3]
    upsampled, resized, parts, start = [], [], [], 0
    for m in maps:
      m, part = m.astype(self.dtype), kernel[:, :, start:start + m.shape[-1]]
      start += m.shape[-1]
      factors = (size[0] // m.shape[1], size[1] // m.shape[2])
      if (self.conv_impl == 'fast' and 2 * pad == k - 1
          and min(factors) >= CONV_UPSAMPLED_MIN_FACTOR
          and (factors[0] * m.shape[1], factors[1] * m.shape[2]) == tuple(size)):
        upsampled.append(conv_upsampled(m, part, factors, pad))
      else:
        resized.append(resize_bilinear(m, size))
        parts.append(part)
    y = conv(resized[0], parts[0]) if len(resized) == 1 else conv(
        jnp.concatenate(resized, axis=-1), jnp.concatenate(parts, axis=2))
    for term in upsampled:
      y = y + term
    # PyTorch momentum 0.1 is flax momentum 0.9.
    y = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, param_dtype=jnp.float32, name='bn')(y)
    return nn.relu(y)


class ConvKernel(nn.Module):
  """An HWIO kernel owned as `nn.Conv` owns it: float32 param 'kernel'.

  Attributes:
    shape: (k, k, in_channels, out_channels).
    kernel_init: initializer.
  """
  shape: tuple
  kernel_init: Callable

  @nn.compact
  def __call__(self) -> jax.Array:
    """Returns: the kernel (float32)."""
    return self.param('kernel', self.kernel_init, self.shape, jnp.float32)
