"""Computations of FANet's layers that XLA:CPU runs faster, with the same numbers.

Each exists because XLA:CPU runs the plain form slowly (docs/performance.md,
section 3); every function equals its plain
counterpart to float32 round-off (tests/test_conv_formulation.py):

- `fast_conv_general_dilated`: a drop-in `conv_general_dilated` for `nn.Conv` that
  computes 1x1 convs as matmuls (`channel_matmul`; XLA:CPU differentiates a 1x1 conv
  into transposes and a slow convolution) and 3x3 stride-1 convs on large maps by
  Winograd F(4x4, 3x3) (winograd.py); everything else goes to
  `lax.conv_general_dilated`.
- `depthwise_shifted`: a depthwise conv as k*k shifted multiplies (far faster than
  `feature_group_count`; docs/performance.md, Depthwise convs as shifted multiplies), with a written-out backward pass.
- `grouped_conv`: a grouped conv as one matmul per group into the kernel rows'
  outputs, summed with their row shifts.
- `gelu` and `layer_norm` with written-out backward passes that keep only their
  input (autodiff keeps several arrays of the input's size per call).

Integer-factor bilinear upsampling and the conv of an upsampled map at the map's own
resolution are in upsampling.py.

Written-out backward passes avoid recomputing an expression the forward pass also
computes: XLA:CPU merges equal expressions (and removes optimisation barriers before
it does), which would keep the forward's intermediate alive until the backward pass.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from fanet_jax.models.ops import winograd
from fanet_jax.models.ops.upsampling import shift

_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')
# Winograd F(4x4, 3x3) beats XLA's direct conv from about 32x32 maps on (measured on
# the UperNet shapes, forward and backward); below, its matmuls are too small.
WINOGRAD_MIN_PIXELS = 32 * 32


def _gelu_cdf(x: jax.Array) -> jax.Array:
  return 0.5 + 0.5 * lax.erf(x * np.asarray(np.sqrt(0.5), x.dtype))


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, as PyTorch's `nn.GELU()`: `x / 2 * (1 + erf(x / sqrt(2)))`.

  Written with erf like PyTorch; `jax.nn.gelu(approximate=False)` uses erfc, which
  XLA:CPU evaluates several times more slowly (same values to float32 round-off).
  flax's `nn.gelu` defaults to the tanh approximation, which parity cannot use. The
  backward pass keeps only x (autodiff keeps two arrays of x's size) and recomputes
  `Phi(x) + x phi(x)` from it, like PyTorch.
  """
  return x * _gelu_cdf(x)


def _gelu_fwd(x):
  return gelu(x), x


def _gelu_bwd(x, dy):
  # Phi(x) as 1/2 - erf(-x / sqrt 2) / 2: the same number, but not the forward's
  # expression, which XLA would otherwise share and keep alive as a second residual.
  cdf = 0.5 - 0.5 * lax.erf(x * np.asarray(-np.sqrt(0.5), x.dtype))
  pdf = jnp.exp(-0.5 * x * x) * np.asarray(1 / np.sqrt(2 * np.pi), x.dtype)
  return (dy * (cdf + x * pdf),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


def fast_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                              rhs_dilation=None, dimension_numbers=None,
                              feature_group_count=1, precision=None, **kwargs):
  """`lax.conv_general_dilated` for nn.Conv (NHWC x HWIO), faster on XLA:CPU.

  1x1 stride-1 convs are matmuls over the channels; 3x3 stride-1 padding-1 convs on
  maps of at least WINOGRAD_MIN_PIXELS are Winograd F(4x4, 3x3); anything else
  (strides, dilations, groups, other kernels) goes to `lax.conv_general_dilated`.
  Same arguments, same result up to float32 round-off.
  """
  plain = lambda: lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count, precision=precision, **kwargs)
  ones = lambda v: v is None or all(d == 1 for d in v)
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DIMENSION_NUMBERS)
  if (lhs.ndim != 4 or kwargs or feature_group_count != 1 or not ones(window_strides)
      or not ones(lhs_dilation) or not ones(rhs_dilation)
      or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != nhwc):
    return plain()
  if isinstance(padding, str):  # stride 1: 'SAME' pads (k - 1) // 2 first, 'VALID' 0
    if padding not in ('SAME', 'VALID'):
      return plain()
    padding = [((k - 1) // 2, k // 2) if padding == 'SAME' else (0, 0)
               for k in rhs.shape[:2]]
  padding = tuple(tuple(p) for p in padding)
  if rhs.shape[:2] == (1, 1) and padding == ((0, 0), (0, 0)):
    return channel_matmul(lhs, rhs[0, 0], precision)
  if (rhs.shape[:2] == (3, 3) and padding == ((1, 1), (1, 1))
      and lhs.shape[1] * lhs.shape[2] >= WINOGRAD_MIN_PIXELS):
    return winograd.conv3x3(lhs, rhs)
  return plain()


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def channel_matmul(x: jax.Array, w: jax.Array, precision=None) -> jax.Array:
  """x @ w over the last axis: a 1x1 conv, (..., C) x (C, O) -> (..., O).

  The backward pass is written out for the kernel gradient: the sum over all pixels
  as one matmul of x and dy flattened to (pixels, channels), both contracting their
  leading axis. Autodiff's version contracts dy with x and transposes the result;
  XLA:CPU then copies x transposed and runs a slower dot of the two
  (docs/performance.md, 1x1 convs as matmuls).
  """
  return lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)


def _channel_matmul_fwd(x, w, precision):
  return channel_matmul(x, w, precision), (x, w)


def _channel_matmul_bwd(precision, residuals, dy):
  x, w = residuals
  dx = lax.dot_general(dy, w, (((dy.ndim - 1,), (1,)), ((), ())), precision=precision)
  dw = lax.dot_general(x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1]),
                       (((0,), (0,)), ((), ())), precision=precision)
  return dx.astype(x.dtype), dw.astype(w.dtype)


channel_matmul.defvjp(_channel_matmul_fwd, _channel_matmul_bwd)


def conv_function(impl: str):
  """The `conv_general_dilated` of nn.Conv for a conv_impl: 'fast' or 'lax'."""
  if impl == 'fast':
    return fast_conv_general_dilated
  if impl == 'lax':
    return lax.conv_general_dilated
  raise ValueError(f"conv_impl must be 'fast' or 'lax', got {impl!r}")


def grouped_conv(x: jax.Array, kernel: jax.Array, groups: int) -> jax.Array:
  """Grouped conv, stride 1, zero padding k // 2 (size kept), NHWC x HWIO.

  `lax.conv_general_dilated(..., feature_group_count=groups)` as one matmul per
  group: the group's input with its k column shifts side by side, (B, H, W, k*ci),
  times the kernel as a (k*ci, k*co) matrix gives every kernel row's contribution at
  once; those are summed with their row shifts (one elementwise pass). The same
  multiply-adds as the direct conv, in matmuls XLA:CPU runs fast, forward and
  backward (the kernel gradient is `channel_matmul`'s). XLA:CPU's own convolutions of
  FANet's grouped 7x7 (12 to 96 channels per group) run slowly, and their kernel
  gradients at stage 0 take its generic loop (docs/performance.md, Grouped convs as
  matmuls). Same numbers to float32 round-off.

  Args:
    x: (B, H, W, C) input.
    kernel: (k, k, C / groups, O) kernel, k odd; group i maps input channels
      [i C/G, (i+1) C/G) to output channels [i O/G, (i+1) O/G).
    groups: number of groups G.

  Returns:
    (B, H, W, O).
  """
  k, kw, ci, o = kernel.shape
  b, h, w, c = x.shape
  if k != kw or k % 2 == 0 or c != ci * groups or o % groups:
    raise ValueError(f'grouped_conv needs a square odd kernel (k, k, C/G, O) with O '
                     f'divisible by G: got kernel {kernel.shape}, input channels {c}, '
                     f'{groups} groups')
  pad, co = k // 2, o // groups
  xp = jnp.pad(x, ((0, 0), (0, 0), (pad, pad), (0, 0)))
  outs = []
  for i in range(groups):
    xi = xp[..., i * ci:(i + 1) * ci]
    columns = jnp.concatenate([lax.slice_in_dim(xi, j, j + w, axis=2) for j in range(k)],
                              axis=-1)  # (B, H, W, k*ci): column shift j, then channel
    # Rows (column shift j, input channel), columns (kernel row t, output channel).
    wi = kernel[..., i * co:(i + 1) * co].transpose(1, 2, 0, 3).reshape(k * ci, k * co)
    # Split rather than indexed, as in upsampling.conv_upsampled.
    rows = jnp.split(channel_matmul(columns, wi), k, axis=-1)
    y = shift(rows[0], -pad, 1)
    for t in range(1, k):
      y = y + shift(rows[t], t - pad, 1)
    outs.append(y)
  return jnp.concatenate(outs, axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array,
               epsilon: float) -> jax.Array:
  """LayerNorm over the last axis in float32: `(x - mean) / sqrt(var + eps) * scale + bias`.

  The variance is the two-pass mean of squared deviations (as PyTorch's reference
  writes it). The backward pass keeps x and the per-pixel mean and 1/std only, and
  recomputes the normalised x from them (autodiff keeps several arrays of x's size).

  Args:
    x: (..., C) input.
    scale, bias: (C,) affine parameters.
    epsilon: added to the variance.

  Returns:
    float32 array of x's shape.
  """
  return _layer_norm_fwd(x, scale, bias, epsilon)[0]


def _layer_norm_stats(x, epsilon):
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return x, mean, lax.rsqrt(var + epsilon)


def _layer_norm_fwd(x, scale, bias, epsilon):
  x32, mean, rstd = _layer_norm_stats(x, epsilon)
  y = (x32 - mean) * rstd * scale.astype(jnp.float32) + bias.astype(jnp.float32)
  return y, (x, mean, rstd, scale)


def _layer_norm_bwd(epsilon, residuals, dy):
  # With g = dy * scale and xhat = (x - mean) * rstd, dx = rstd * (g - mean_c(g)
  # - xhat * mean_c(g * xhat)) = rstd * g + b + c * x with per-pixel b, c from two
  # per-pixel sums over g and g * x. No array of x's size is formed from x alone:
  # XLA would compute such an array early in the backward pass and keep it alive.
  del epsilon
  x, mean, rstd, scale = residuals
  x32, dy = x.astype(jnp.float32), dy.astype(jnp.float32)
  n = x.shape[-1]
  g = dy * scale.astype(jnp.float32)
  sum_g = jnp.sum(g, axis=-1, keepdims=True)
  sum_gxhat = rstd * (jnp.sum(g * x32, axis=-1, keepdims=True) - mean * sum_g)
  c = -(rstd * rstd / n) * sum_gxhat
  b = -(rstd / n) * sum_g - c * mean
  dx = rstd * g + b + c * x32
  axes = tuple(range(x.ndim - 1))
  # Not written as dy * xhat: XLA would share the forward's xhat and keep it alive.
  dscale = jnp.sum(dy * rstd * x32 - dy * (mean * rstd), axis=axes)
  dbias = jnp.sum(dy, axis=axes)
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


def _windows(x: jax.Array, k: int, s: int, pad: int, out: tuple[int, int]) -> list:
  """The k*k strided windows of x padded by `pad` that tap (i, j) reads, row-major."""
  b, _, _, c = x.shape
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ho, wo = out
  return [lax.slice(xp, (0, i, j, 0), (b, i + s * (ho - 1) + 1, j + s * (wo - 1) + 1, c),
                    (1, s, s, 1)) for i in range(k) for j in range(k)]


def _depthwise_sum(x, kernel, s, pad):
  """sum over taps of window * kernel tap: the depthwise conv without bias."""
  k, (_, h, w, _) = kernel.shape[0], x.shape
  out = ((h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1)
  y = None
  for t, window in enumerate(_windows(x, k, s, pad, out)):
    term = window * kernel[t // k, t % k, 0]
    y = term if y is None else y + term
  return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_shifted(x: jax.Array, kernel: jax.Array, strides: int,
                      pad: int) -> jax.Array:
  """Depthwise conv (no bias) as a sum of k*k shifted multiplies, NHWC x (k, k, 1, C).

  The backward pass is written out: jax's own keeps all k*k windows alive for the
  kernel gradient (k*k copies of the input per layer). Here only x is saved; the
  input gradient is a shifted sum over the (dilated) output gradient with the
  flipped kernel; the kernel gradient is summed over blocks of output rows first
  (`_depthwise_kernel_grad`).

  Args:
    x: (B, H, W, C) input.
    kernel: (k, k, 1, C) taps.
    strides: stride in both directions.
    pad: symmetric zero padding.

  Returns:
    (B, H', W', C) with H' = (H + 2 pad - k) // strides + 1.
  """
  return _depthwise_sum(x, kernel, strides, pad)


def _depthwise_fwd(x, kernel, strides, pad):
  return _depthwise_sum(x, kernel, strides, pad), (x, kernel)


def _depthwise_kernel_grad(x, dy, k, s, pad):
  """dkernel[i, j] = sum over b, h, w of xp[b, s h + i, s w + j] * dy[b, h, w] (xp: x padded).

  Summed in two steps: one elementwise pass adds the products of r = 8 (or fewer)
  consecutive output rows for every tap, into a (k*k, B, H/r, W, C) array, which
  one reduction then sums. Faster than k*k whole-map multiply-reductions
  (docs/performance.md, Depthwise kernel gradient in row blocks), which XLA:CPU runs on windows it
  first copies out (reductions do not fuse slices), re-reading both maps per tap.
  """
  b, _, _, c = x.shape
  ho, wo = dy.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  r = next(r for r in (8, 4, 2, 1) if ho % r == 0)
  blocks = ho // r
  taps = []
  for i in range(k):
    for j in range(k):
      partial = None
      for q in range(r):  # output rows q, q + r, q + 2r, ... and the input rows they read
        rows = lax.slice(xp, (0, i + s * q, j, 0),
                         (b, i + s * q + s * r * (blocks - 1) + 1, j + s * (wo - 1) + 1, c),
                         (1, s * r, s, 1))
        grads = lax.slice(dy, (0, q, 0, 0), (b, q + r * (blocks - 1) + 1, wo, c),
                          (1, r, 1, 1))
        partial = rows * grads if partial is None else partial + rows * grads
      taps.append(partial)
  return jnp.sum(jnp.stack(taps), axis=(1, 2, 3), dtype=jnp.float32)


def _depthwise_bwd(strides, pad, residuals, dy):
  # With E = dy dilated by the stride and padded by k - 1 in front, the input
  # gradient is dx[q] = sum_t E[q + pad + k - 1 - t] * kernel[t]. Slicing dy rather
  # than x keeps XLA from merging these windows with the forward's (merged, k*k
  # copies of x would live from the forward to here).
  x, kernel = residuals
  k, s = kernel.shape[0], strides
  b, h, w, c = x.shape
  (ho, wo), (hp, wp) = dy.shape[1:3], (h + 2 * pad, w + 2 * pad)
  e = lax.pad(dy, jnp.zeros((), dy.dtype),
              ((0, 0, 0), (k - 1, hp - s * (ho - 1) - 1, s - 1),
               (k - 1, wp - s * (wo - 1) - 1, s - 1), (0, 0, 0)))
  dx = None
  for i in range(k):
    for j in range(k):
      start = (0, pad + k - 1 - i, pad + k - 1 - j, 0)
      term = lax.slice(e, start, (b, start[1] + h, start[2] + w, c)) * kernel[i, j, 0]
      dx = term if dx is None else dx + term
  dkernel = _depthwise_kernel_grad(x, dy, k, s, pad)
  return dx, dkernel.reshape(kernel.shape).astype(kernel.dtype)


depthwise_shifted.defvjp(_depthwise_fwd, _depthwise_bwd)
