"""Building blocks shared by the FANet backbone and the segmentation heads.

Implements the numerics SPEC.md section 1 pins down (exact-erf GELU, LayerNorm eps
1e-6, per-sample stochastic depth, PyTorch-equal bilinear resizing) and section 2's
ConvBNReLU. `DepthwiseConv` and `GroupedConv` own exactly the parameters that
`nn.Conv(feature_group_count=...)` would, but can compute the convolution in a form
that XLA:CPU compiles much better (PERF_NOTES.md: depthwise via feature_group_count
is ~25x slower than a sum of shifted multiplies; the grouped 7x7 ~2.5x slower than
dense convs over channel slices). Layout is NHWC.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any
_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, as PyTorch's `nn.GELU()`; flax defaults to the tanh form."""
  return nn.gelu(x, approximate=False)


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


def resize_bilinear(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """Bilinear resize of NHWC `x` to `size` = (h, w).

  Equals PyTorch `interpolate(mode='bilinear', align_corners=False)` both ways;
  antialiasing is off because PyTorch does not blur when down-sampling.

  Args:
    x: (B, H, W, C) array.
    size: target (h, w).

  Returns:
    (B, h, w, C) array of x's dtype.
  """
  h, w = int(size[0]), int(size[1])
  if x.shape[1:3] == (h, w):
    return x
  return jax.image.resize(x, (x.shape[0], h, w, x.shape[3]), method='linear',
                          antialias=False)


def conv2d(features: int, kernel_size: int, *, name: str, strides: int = 1,
           padding: Optional[int] = None, dtype: Dtype = jnp.float32) -> nn.Conv:
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

  Returns:
    An unbound `nn.Conv`, adopted by the module whose method calls this.
  """
  pad = kernel_size // 2 if padding is None else padding
  return nn.Conv(features, (kernel_size, kernel_size), strides=(strides, strides),
                 padding=((pad, pad), (pad, pad)), kernel_init=trunc_normal(),
                 bias_init=nn.initializers.zeros, dtype=dtype,
                 param_dtype=jnp.float32, name=name)


class LayerNorm(nn.LayerNorm):
  """LayerNorm over the channel axis with the reference's eps of 1e-6."""
  epsilon: float = 1e-6


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


class DepthwiseConv(nn.Module):
  """Depthwise k x k conv with bias; parameters as `nn.Conv(feature_group_count=C)`.

  Attributes:
    features: channels (input = output).
    kernel_size: square kernel size k.
    strides: stride in both directions (FRM's `down` uses 2).
    padding: symmetric padding, k//2 when None (PyTorch's convention).
    impl: 'shifted' (sum of k*k strided slices times the kernel taps; fast on
      XLA:CPU) or 'lax' (`conv_general_dilated` with feature_group_count).
    dtype: computation dtype; parameters stay float32.
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: Optional[int] = None
  impl: str = 'shifted'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Args: x (B, H, W, C). Returns: (B, H', W', C), H' = (H + 2p - k)//s + 1."""
    k, s, c = self.kernel_size, self.strides, self.features
    pad = k // 2 if self.padding is None else self.padding
    kernel = self.param('kernel', trunc_normal(), (k, k, 1, c), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    x, kernel, bias = (a.astype(self.dtype) for a in (x, kernel, bias))
    if self.impl == 'lax':
      y = lax.conv_general_dilated(x, kernel, (s, s), ((pad, pad), (pad, pad)),
                                   dimension_numbers=_DIMENSION_NUMBERS,
                                   feature_group_count=c)
      return y + bias
    if self.impl != 'shifted':
      raise ValueError(f"DepthwiseConv impl must be 'shifted' or 'lax', "
                       f'got {self.impl!r}')
    b, h, w, _ = x.shape
    # Pad once, then every tap is a strided window of the padded input.
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho, wo = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    y = None
    for i in range(k):
      for j in range(k):
        end = (b, i + s * (ho - 1) + 1, j + s * (wo - 1) + 1, c)
        window = lax.slice(xp, (0, i, j, 0), end, (1, s, s, 1))
        term = window * kernel[i, j, 0]
        y = term if y is None else y + term
    return y + bias


class GroupedConv(nn.Module):
  """Grouped k x k conv with bias; parameters as `nn.Conv(feature_group_count=G)`.

  Attributes:
    features: output channels (divisible by groups).
    kernel_size: square kernel size k.
    groups: number of groups G (the input channels must divide by it).
    strides: stride in both directions.
    padding: symmetric padding, k//2 when None.
    impl: 'split' (one dense conv per group on channel slices, concatenated; the
      same convolution, compiled ~2.5x faster on XLA:CPU) or 'lax'
      (feature_group_count).
    dtype: computation dtype; parameters stay float32.
  """
  features: int
  kernel_size: int
  groups: int
  strides: int = 1
  padding: Optional[int] = None
  impl: str = 'split'
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
    if self.impl != 'split':
      raise ValueError(f"GroupedConv impl must be 'split' or 'lax', got {self.impl!r}")
    # feature_group_count semantics: group i maps input slice i to output slice i.
    ci, co = cin // g, self.features // g
    outs = [conv(x[..., i * ci:(i + 1) * ci], kernel[..., i * co:(i + 1) * co], 1)
            for i in range(g)]
    return jnp.concatenate(outs, axis=-1) + bias


class ConvBNReLU(nn.Module):
  """mmcv's ConvModule: conv without bias, BatchNorm, ReLU (SPEC section 2).

  Attributes:
    features: output channels.
    kernel_size: square kernel size k.
    padding: symmetric padding, k//2 when None.
    dtype: computation dtype.
  """
  features: int
  kernel_size: int = 1
  padding: Optional[int] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Args: x (B, H, W, C); train: batch statistics (and their update) when True.

    Returns:
      (B, H, W, features).
    """
    pad = self.kernel_size // 2 if self.padding is None else self.padding
    # mmcv's ConvModule init: kaiming normal, fan_out, ReLU gain.
    x = nn.Conv(self.features, (self.kernel_size,) * 2, padding=((pad, pad), (pad, pad)),
                use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out',
                                                             'normal'),
                name='conv')(x)
    # PyTorch momentum 0.1 is flax momentum 0.9.
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, param_dtype=jnp.float32, name='bn')(x)
    return nn.relu(x)
