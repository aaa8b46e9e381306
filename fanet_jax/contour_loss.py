"""Contour loss of DenseAttentionSeg (paper Eq. 3-5; docs/recipes.md section 1).

    S(M)  = sum_{l >= 1} sqrt((Kh * M_l)^2 + (Kv * M_l)^2 + eps)    (Sobel, Eq. 3)
    B(M)  = G * M                                 (normalised 5x5 Gaussian, Eq. 4)
    L     = mean over pixels of (B(S(Y)) - B(S(P)))^2                        (Eq. 5)

with P = softmax(logits) and Y = one_hot(labels). Class 0 (background) has no
contour of its own. Readings written down here:
- `*` is cross-correlation with zero 'same' padding (the usual conv2d 'SAME'). The
  zero border makes a class touching the image border show an edge there, in S(Y)
  and S(P) alike, so it is rewarded only as much as P matches Y.
- eps (1e-6) sits inside every per-class square root: the gradient of sqrt at 0 is
  infinite, with eps it is finite. Its constant sqrt(eps) per class is the same in
  S(Y) and S(P) and cancels where both are flat.
- Ignored pixels (label == ignore_index): P and Y are both zeroed there before the
  Sobel filter, so the prediction at an ignored pixel neither enters nor gets a
  gradient, and the squared error is averaged over the non-ignored pixels only.
- Both kernels are separable (Sobel = [1,2,1] x [-1,0,1]; the normalised 2-D
  Gaussian = the outer product of the normalised 1-D one); with zero padding the
  two 1-D passes equal the 2-D correlation exactly. They run as shifted adds on
  NHWC arrays, which XLA:CPU handles far better than a per-class grouped conv.
"""
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


# Sobel Kh[a, b] = SMOOTH[a] * DIFF[b] (responds to change along W); Kv = Kh.T.
_SOBEL_DIFF = (-1.0, 0.0, 1.0)
_SOBEL_SMOOTH = (1.0, 2.0, 1.0)
SOBEL_H = np.outer(_SOBEL_SMOOTH, _SOBEL_DIFF).astype(np.float32)
SOBEL_V = SOBEL_H.T.copy()


def gaussian_taps(size: int = 5, sigma: float = 2.121) -> np.ndarray:
  """1-D Gaussian taps summing to 1; their outer product is the normalised 2-D kernel.

  Args:
    size: number of taps (odd).
    sigma: standard deviation in pixels.

  Returns:
    (size,) float64 array.
  """
  r = np.arange(size) - size // 2
  g = np.exp(-r.astype(np.float64)**2 / (2 * sigma**2))
  return g / g.sum()


def _correlate_1d(x: jax.Array, taps: Sequence[float], axis: int) -> jax.Array:
  """Cross-correlation along `axis` with zero 'same' padding, as shifted adds."""
  r = len(taps) // 2
  pad = [(0, 0)] * x.ndim
  pad[axis] = (r, r)
  xp = jnp.pad(x, pad)
  n = x.shape[axis]
  out = None
  for i, t in enumerate(taps):
    if t == 0:
      continue
    term = float(t) * lax.slice_in_dim(xp, i, i + n, axis=axis)
    out = term if out is None else out + term
  return out


def _correlate_separable(x: jax.Array, col: Sequence[float],
                         row: Sequence[float]) -> jax.Array:
  """2-D cross-correlation of (B, H, W, C) with kernel outer(col, row), zero padded."""
  return _correlate_1d(_correlate_1d(x, row, axis=2), col, axis=1)


def edge_strength(maps: jax.Array, eps: float = 1e-6) -> jax.Array:
  """S(M) of Eq. 3: summed Sobel gradient magnitudes of the classes l >= 1.

  Args:
    maps: (B, H, W, C) per-class maps (probabilities or one-hot).
    eps: added under each square root (finite gradients on flat regions).

  Returns:
    (B, H, W) float32.
  """
  m = maps[..., 1:].astype(jnp.float32)
  gx = _correlate_separable(m, _SOBEL_SMOOTH, _SOBEL_DIFF)
  gy = _correlate_separable(m, _SOBEL_DIFF, _SOBEL_SMOOTH)
  return jnp.sum(jnp.sqrt(gx * gx + gy * gy + eps), axis=-1)


def blur(x: jax.Array, size: int = 5, sigma: float = 2.121) -> jax.Array:
  """B(.) of Eq. 4: normalised Gaussian, zero 'same' padding, on (B, H, W)."""
  g = gaussian_taps(size, sigma)
  return _correlate_separable(x[..., None], g, g)[..., 0]


def contour_loss_from_probs(probs: jax.Array, labels_onehot: jax.Array,
                            valid: Optional[jax.Array] = None, *, eps: float = 1e-6,
                            sigma: float = 2.121) -> jax.Array:
  """Eq. 5 on probability maps: mean of (B(S(Y)) - B(S(P)))^2.

  Args:
    probs: (B, H, W, C) class probabilities P.
    labels_onehot: (B, H, W, C) one-hot labels Y.
    valid: optional (B, H, W) bool; False pixels are zeroed in P and Y and left
      out of the mean.
    eps: see `edge_strength`.
    sigma: Gaussian standard deviation.

  Returns:
    The scalar loss (0 when every pixel is invalid).
  """
  probs = probs.astype(jnp.float32)
  labels_onehot = labels_onehot.astype(jnp.float32)
  if valid is not None:
    mask = valid[..., None]
    probs = jnp.where(mask, probs, 0.0)
    labels_onehot = jnp.where(mask, labels_onehot, 0.0)
  err = blur(edge_strength(labels_onehot, eps), sigma=sigma) - blur(
      edge_strength(probs, eps), sigma=sigma)
  err = err * err
  if valid is None:
    return jnp.mean(err)
  weight = valid.astype(jnp.float32)
  return jnp.sum(err * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def contour_loss(logits: jax.Array, labels: jax.Array, *, ignore_index: int = 255,
                 eps: float = 1e-6, sigma: float = 2.121) -> jax.Array:
  """The contour loss of logits against integer labels.

  Args:
    logits: (B, H, W, C) at the labels' resolution.
    labels: (B, H, W) class ids; `ignore_index` pixels count for nothing.
    ignore_index: label value to ignore.
    eps, sigma: see `contour_loss_from_probs`.

  Returns:
    The scalar loss.
  """
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  valid = labels != ignore_index
  onehot = jax.nn.one_hot(jnp.where(valid, labels, 0), logits.shape[-1])
  return contour_loss_from_probs(probs, onehot, valid, eps=eps, sigma=sigma)
