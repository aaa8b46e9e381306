"""Integer-factor bilinear upsampling, and convs of upsampled maps at low resolution.

Bilinear upsampling (half-pixel centres, PyTorch's `align_corners=False`) by an integer
factor is, per output phase, a weighted sum of each input pixel and one clamped
neighbour. `upsample_axis` computes it that way; `conv_upsampled` uses that the
upsampling commutes with a conv's channel mixing to apply a kernel to an upsampled map
without forming it (UperNet's `fpn_bottleneck`, for its FPN levels upsampled 4x and
8x). Both go through `_upsampled_shifted_sum`, whose backward pass is written out.
Same numbers as `jax.image.resize` followed by the conv, to float32 round-off
(tests/test_conv_formulation.py).
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

# `conv_upsampled` pays from 4x upsampling on: at 2x it does as many multiply-adds as
# Winograd on the upsampled map, and its upsampling passes cost more; adding
# UperNet's 2x level gave no gain (docs/performance.md, Convs of upsampled maps at
# low resolution).
CONV_UPSAMPLED_MIN_FACTOR = 4


def upsample_axis(x: jax.Array, axis: int, factor: int) -> jax.Array:
  """Bilinear (half-pixel centres) upsampling of one axis by an integer factor.

  Output i * factor + k samples the input at i + d_k, d_k = (k + 1/2) / factor - 1/2,
  between x[i - 1] and x[i] (d_k < 0) or x[i] and x[i + 1]; the edges repeat, which is
  PyTorch's clamping of the source index.
  """
  return x if factor == 1 else _upsampled_shifted_sum([x], axis, factor, 0)


def shift(x: jax.Array, offset: int, axis: int) -> jax.Array:
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
  return shift(v, -step, axis) + jnp.pad(lax.slice_in_dim(v, edge, edge + 1, axis=axis),
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
  after upsampling instead makes XLA's fused loop index through the interleave, which
  is much slower; the backward pass is written out the same way
  (`_upsampled_shifted_sum_adjoint`) for the same reason (docs/performance.md, Convs
  of upsampled maps at low resolution).
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
      term = shift(term, e, axis)
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
      g = shift(phases[source], e, axis)
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
