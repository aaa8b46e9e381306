"""Computations of FANet's layers that XLA:CPU runs faster, with the same numbers.

Measured on a 2-core CPU (PERF_NOTES.md, issue #6); every function equals its plain
counterpart to float32 round-off (tests/test_conv_formulation.py):

- `fast_conv_general_dilated`: a drop-in `conv_general_dilated` for `nn.Conv` that
  computes 1x1 convs as matmuls (`channel_matmul`; XLA:CPU differentiates a 1x1 conv
  into transposes and a slow convolution) and 3x3 stride-1 convs on large maps by
  Winograd F(4x4, 3x3) (winograd.py); everything else goes to
  `lax.conv_general_dilated`.
- `depthwise_shifted`: a depthwise conv as k*k shifted multiplies (~25x faster than
  `feature_group_count`), with a written-out backward pass.
- `grouped_conv`: a grouped conv as one matmul per group into the kernel rows'
  outputs, summed with their row shifts.
- `gelu` and `layer_norm` with written-out backward passes that keep only their
  input (autodiff keeps several arrays of the input's size per call).
- `upsample_axis`: integer-factor bilinear upsampling as weighted sums of neighbours.
- `conv_upsampled`: a conv of a bilinearly upsampled map, computed at the map's own
  resolution (UperNet's `fpn_bottleneck`, for its FPN levels upsampled 4x and 8x).

Written-out backward passes avoid recomputing an expression the forward pass also
computes: XLA:CPU merges equal expressions (and removes optimisation barriers before
it does), which would keep the forward's intermediate alive until the backward pass.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from fanet_jax.models import winograd

_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')
# Winograd F(4x4, 3x3) beats XLA's direct conv from about 32x32 maps on (measured on
# the UperNet shapes, forward and backward); below, its matmuls are too small.
WINOGRAD_MIN_PIXELS = 32 * 32
# `conv_upsampled` pays from 4x upsampling on: at 2x it does as many multiply-adds as
# Winograd on the upsampled map, and its upsampling passes cost more. FANet-tiny's
# train step: 6.60 -> 6.21 s with UperNet's 4x and 8x levels, no gain adding the 2x
# one (measured in one process alternating the compiled variants, issue #6).
CONV_UPSAMPLED_MIN_FACTOR = 4


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
  XLA:CPU then copies x transposed and runs a slower dot of the two (measured in
  FANet-tiny's train step: 6.07 -> 5.69 s, same-process A/B, issue #6).
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


def upsample_axis(x: jax.Array, axis: int, factor: int) -> jax.Array:
  """Bilinear (half-pixel centres) upsampling of one axis by an integer factor.

  Output i * factor + k samples the input at i + d_k, d_k = (k + 1/2) / factor - 1/2,
  between x[i - 1] and x[i] (d_k < 0) or x[i] and x[i + 1]; the edges repeat, which is
  PyTorch's clamping of the source index.
  """
  return x if factor == 1 else _upsampled_shifted_sum([x], axis, factor, 0)


def _shift(x: jax.Array, offset: int, axis: int) -> jax.Array:
  """y[i] = x[i + offset] along axis, zeros where i + offset is outside x."""
  if offset == 0:
    return x
  n, widths = x.shape[axis], [(0, 0)] * x.ndim
  widths[axis] = (max(-offset, 0), max(offset, 0))
  start = max(offset, 0)
  return lax.slice_in_dim(jnp.pad(x, widths), start, start + n, axis=axis)


def _neighbour(x: jax.Array, step: int, axis: int) -> jax.Array:
  """y[i] = x[clamp(i + step)] along axis, step = +-1 (the edge repeats)."""
  n = x.shape[axis]
  take = lambda start, stop: lax.slice_in_dim(x, start, stop, axis=axis)
  parts = [take(0, 1), take(0, n - 1)] if step < 0 else [take(1, n), take(n - 1, n)]
  return jnp.concatenate(parts, axis=axis)


def _neighbour_adjoint(v: jax.Array, step: int, axis: int) -> jax.Array:
  """The adjoint of `_neighbour`: z[i] = v[i - step] (zero outside), plus the
  repeated edge's v at that edge."""
  n, widths = v.shape[axis], [(0, 0)] * v.ndim
  edge = 0 if step < 0 else n - 1
  widths[axis] = (edge, n - 1 - edge)
  return _shift(v, -step, axis) + jnp.pad(lax.slice_in_dim(v, edge, edge + 1, axis=axis),
                                          widths)


def _phase_weight(q: int, factor: int) -> float:
  """Where output phase q of a `factor`-times upsampling samples, in input pixels."""
  return (q + 0.5) / factor - 0.5


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _upsampled_shifted_sum(taps: list, axis: int, factor: int, pad: int) -> jax.Array:
  """sum_t shift(upsample(taps[t])) along `axis`: out[j] = sum_t up_t[j + t - pad].

  Reads outside the upsampled length are zeros (a conv's zero padding). Computed per
  output phase j = factor * i + p: up_t[j + t - pad] = up_t[factor * (i + e) + p'] is
  a weighted sum of taps[t] at i + e and its clamped neighbour, so every term is a
  shift of a low-resolution array, and the phases interleave by a reshape. Shifting
  after upsampling instead makes XLA's fused loop index through the interleave: in
  the FANet-tiny train step the forward passes of fpn_bottleneck's 4x and 8x levels
  took 104 ms that way, 24 ms this way. The backward pass is written out the same
  way (`_upsampled_shifted_sum_adjoint`): on those levels' shapes alone autodiff's
  took 104 and 26 ms, this one 46 and 12 (train step median 5.24 -> 5.20 s in a
  same-process A/B, issue #6).
  """
  phases = []
  for p in range(factor):
    out = None
    for t, tap in enumerate(taps):
      e, q = divmod(p + t - pad, factor)
      d = _phase_weight(q, factor)
      term = tap
      if d:
        w = np.asarray(abs(d), tap.dtype)
        term = (1 - w) * tap + w * _neighbour(tap, -1 if d < 0 else 1, axis)
      term = _shift(term, e, axis)
      out = term if out is None else out + term
    phases.append(out)
  y = jnp.stack(phases, axis=axis + 1)
  shape = list(taps[0].shape)
  shape[axis] *= factor
  return y.reshape(shape)


def _upsampled_shifted_sum_adjoint(dy: jax.Array, num_taps: int, axis: int,
                                   factor: int, pad: int) -> list:
  """The taps' gradients: tap t's is upsample^T(shift(dy, pad - t)).

  Per input phase: phase q of dy shifted by pad - t is phase (q + pad - t) mod
  factor of dy, shifted by whole low-resolution pixels; upsample^T weighs phase q by
  1 - |d_q| in place and by |d_q| through the adjoint of the clamped neighbour.
  """
  n = dy.shape[axis] // factor
  phases = [lax.slice_in_dim(dy, q, q + factor * (n - 1) + 1, factor, axis=axis)
            for q in range(factor)]
  grads = []
  for t in range(num_taps):
    sums = {}  # 0: in place; -1, +1: through the neighbour on that side
    for q in range(factor):
      e, source = divmod(q + pad - t, factor)
      g = _shift(phases[source], e, axis)
      d = _phase_weight(q, factor)
      for side, w in ((0, 1 - abs(d)), (-1 if d < 0 else 1, abs(d))):
        if w:
          term = g if w == 1 else g * np.asarray(w, dy.dtype)
          sums[side] = term if side not in sums else sums[side] + term
    grad = sums[0]
    for side in (-1, 1):
      if side in sums:
        grad = grad + _neighbour_adjoint(sums[side], side, axis)
    grads.append(grad)
  return grads


def _upsampled_shifted_sum_fwd(taps, axis, factor, pad):
  # Linear in the taps: nothing to keep but their number (a leafless residual).
  return _upsampled_shifted_sum(taps, axis, factor, pad), (None,) * len(taps)


def _upsampled_shifted_sum_bwd(axis, factor, pad, residuals, dy):
  return (_upsampled_shifted_sum_adjoint(dy, len(residuals), axis, factor, pad),)


_upsampled_shifted_sum.defvjp(_upsampled_shifted_sum_fwd, _upsampled_shifted_sum_bwd)


def conv_upsampled(x: jax.Array, kernel: jax.Array, factors: tuple[int, int],
                   pad: int) -> jax.Array:
  """Stride-1 conv (zero padding `pad`) of x upsampled by integer `factors`, NHWC x HWIO.

  Equals `conv(upsample(x), kernel)` (bilinear, half-pixel centres) without forming
  the upsampled x: the upsampling acts on every channel alike, so it commutes with
  the kernel's channel mixing. One matmul at x's resolution maps x to the k*k taps'
  outputs; those are upsampled and summed with their shifts, rows then columns
  (elementwise passes XLA fuses). That is fh * fw times fewer multiply-adds than the
  direct conv after upsampling (at 2x as many as Winograd F(4x4, 3x3) there, at 4x
  and 8x 4 and 16 times fewer), and the upsampled input is never formed, forward or
  backward. Same numbers to float32 round-off.

  Args:
    x: (B, h, w, C) input at its own resolution.
    kernel: (k, k, C, O) taps.
    factors: integer upsampling factors (fh, fw) of the conv's input.
    pad: zero padding of the upsampled input on every side; k // 2 (odd k).

  Returns:
    (B, fh h, fw w, O).
  """
  kh, kw, c, o = kernel.shape
  if 2 * pad != kh - 1 or kh != kw:
    raise ValueError(f'conv_upsampled keeps the size: needs a square odd kernel and '
                     f'pad = k // 2, got kernel {kernel.shape[:2]} and pad {pad}')
  z = lax.dot_general(x, kernel.transpose(2, 0, 1, 3).reshape(c, kh * kw * o),
                      (((3,), (0,)), ((), ())))
  # Split rather than indexed: the gradient of a split is a concatenation, that of
  # each index a zero-padded copy of all of z.
  taps = jnp.split(z, kh * kw, axis=-1)
  rows = [_upsampled_shifted_sum(taps[i * kw:(i + 1) * kw], 2, factors[1], pad)
          for i in range(kh)]
  return _upsampled_shifted_sum(rows, 1, factors[0], pad)


def grouped_conv(x: jax.Array, kernel: jax.Array, groups: int) -> jax.Array:
  """Grouped conv, stride 1, zero padding k // 2 (size kept), NHWC x HWIO.

  `lax.conv_general_dilated(..., feature_group_count=groups)` as one matmul per
  group: the group's input with its k column shifts side by side, (B, H, W, k*ci),
  times the kernel as a (k*ci, k*co) matrix gives every kernel row's contribution at
  once; those are summed with their row shifts (one elementwise pass). The same
  multiply-adds as the direct conv, in matmuls XLA:CPU runs fast, forward and
  backward (the kernel gradient is `channel_matmul`'s). XLA:CPU's own convolutions of
  FANet's grouped 7x7 (12 to 96 channels per group) run at 6-30 GFLOP/s, and their
  kernel gradients at stage 0 take its generic loop: FANet-tiny's train step
  5.43 -> 4.97 s with this (same-process A/B, issue #6). Same numbers to float32
  round-off.

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
    # Split rather than indexed, as in conv_upsampled.
    rows = jnp.split(channel_matmul(columns, wi), k, axis=-1)
    y = _shift(rows[0], -pad, 1)
    for t in range(1, k):
      y = y + _shift(rows[t], t - pad, 1)
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
  one reduction then sums. Measured in the FANet-tiny train step (issue #6): 0.6 s
  less than k*k whole-map multiply-reductions, which XLA:CPU runs on windows it
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
