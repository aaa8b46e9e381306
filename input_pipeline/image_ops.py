"""Image resizing and colour conversion with OpenCV's numerics, in numpy.

mmseg runs these on OpenCV, which is not a dependency here; its numerics are
written in vectorised numpy:
- `resize_bilinear`: cv2.INTER_LINEAR for uint8 bit for bit (half-pixel centres, no
  antialiasing, edge pixels replicated, cv2's 11-bit fixed-point weights and its
  rounding), `resize_nearest`: cv2.INTER_NEAREST (src = floor(dst * in / out)).
- `rgb_to_hsv` / `hsv_to_rgb`: cv2's uint8 HSV (hue in [0, 180)). RGB->HSV is cv2's
  integer algorithm exactly. HSV->RGB is cv2's float32 algorithm, rounded as cv2's
  scalar code does; cv2 4.x/5.x SIMD builds (what mmseg ran) truncate instead, which
  darkens a third of the values by 1 level per round trip (mean -0.34). Rounding
  keeps the round trip unbiased; it is the one deliberate difference from mmseg.
"""
import numpy as np

_COEF_BITS = 11  # cv2 INTER_RESIZE_COEF_BITS
_HSV_SHIFT = 12  # cv2 hsv_shift
_LEVELS = np.arange(256, dtype=np.float64)
# cv2's HSV division tables: saturate_cast<int> rounds to nearest; entry 0 is 0.
_SDIV = np.rint((255 << _HSV_SHIFT) / np.maximum(_LEVELS, 1)).astype(np.int32) * (_LEVELS > 0)
_HDIV = np.rint((180 << _HSV_SHIFT) / (6 * np.maximum(_LEVELS, 1))).astype(np.int32) * (_LEVELS > 0)
# Per hue sector, which of (v, p, q, t) becomes (r, g, b) (cv2's table lists (b, g, r)),
# as bit shifts, indexed [channel][sector].
_SECTOR_SHIFTS = 8 * np.array([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0],
                               [0, 1, 2]], np.uint32).T.copy()


def rescale_size(height, width, scale):
  """mmcv `rescale_size`: the largest keep-ratio size fitting a (long, short) scale.

  Args:
    height: input height.
    width: input width.
    scale: (a, b); the long side is fitted to max(a, b), the short side to min(a, b).

  Returns:
    (new_height, new_width) = int(side * factor + 0.5), factor = min(long_target /
    long_side, short_target / short_side).
  """
  factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
  return int(height * factor + 0.5), int(width * factor + 0.5)


def _linear_taps(n_in, n_out, reset_border):
  """Source indices and fixed-point weights of cv2 INTER_LINEAR along one axis."""
  scale = 1.0 / (n_out / n_in)  # cv2 computes the ratio this way, in double
  pos = ((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32)  # cv2: float
  idx = np.floor(pos)
  frac = (pos - idx).astype(np.float32)
  idx = idx.astype(np.intp)
  if reset_border:  # cv2 resets the weight at the left/right border, not top/bottom
    frac[(idx < 0) | (idx >= n_in - 1)] = 0
    idx = np.clip(idx, 0, n_in - 1)
  # Both weights are rounded separately (they may not sum to 2048), as in cv2.
  one = np.float32(1 << _COEF_BITS)
  w0 = np.rint((np.float32(1) - frac) * one).astype(np.int32)
  w1 = np.rint(frac * one).astype(np.int32)
  return np.clip(idx, 0, n_in - 1), np.clip(idx + 1, 0, n_in - 1), w0, w1


def resize_bilinear(image, size, window=None):
  """Resizes a uint8 (H, W, C) image like cv2.resize(INTER_LINEAR), bit for bit.

  Separable: a horizontal pass on the needed source rows, then a vertical pass, in
  cv2's fixed point (11-bit weights; vertical sums are shifted as cv2's SIMD code
  does, which truncates slightly more than exact rounding would).

  Args:
    image: uint8 array (H, W, C).
    size: (out_height, out_width).
    window: optional (row_slice, col_slice) of the output: only that part is
      computed, equal to `resize_bilinear(image, size)[window]` at a fraction of
      the cost (used to resize just the random crop).

  Returns:
    uint8 array (out_height, out_width, C), or the window of it.
  """
  (h, w, c), (oh, ow) = image.shape, size
  window = window or (slice(None), slice(None))
  if (oh, ow) == (h, w):
    return image[window].copy()
  y0, y1, wy0, wy1 = (a[window[0]] for a in _linear_taps(h, oh, reset_border=False))
  x0, x1, wx0, wx1 = (a[window[1]] for a in _linear_taps(w, ow, reset_border=True))
  # Gather along the flattened (W * C) axis: much faster than image[:, x0].
  channels = np.arange(c)
  i0 = (x0[:, None] * c + channels).ravel()
  i1 = (x1[:, None] * c + channels).ravel()
  a0, a1 = np.repeat(wx0, c), np.repeat(wx1, c)

  def horizontal(rows):
    rows = rows.reshape(rows.shape[0], w * c)
    out = np.take(rows, i0, axis=1) * a0  # uint8 * int32 weights -> int32
    out += np.take(rows, i1, axis=1) * a1
    out >>= 4  # cv2's SIMD vertical pass drops these 4 bits first
    return out

  top, bottom = y0[0], y1[-1] + 1  # the source rows read (taps increase)
  if 2 * len(y0) < bottom - top:  # strong downscale: only the rows that are read
    r0, r1 = horizontal(image[y0]), horizontal(image[y1])
  else:
    rows = horizontal(image[top:bottom])
    r0, r1 = rows[y0 - top], rows[y1 - top]
  for rows, weights in ((r0, wy0), (r1, wy1)):
    rows *= weights[:, None]
    rows >>= 16
  out = (r0 + r1 + 2) >> 2
  return out.astype(np.uint8).reshape(len(y0), len(x0), c)


def resize_nearest(label, size):
  """Resizes a 2-D label map like cv2.resize(INTER_NEAREST): src = floor(dst*in/out).

  Args:
    label: array (H, W).
    size: (out_height, out_width).

  Returns:
    array (out_height, out_width) holding only values of `label`.
  """
  def index(n_in, n_out):
    src = np.floor(np.arange(n_out) * (1.0 / (n_out / n_in))).astype(np.intp)
    return np.minimum(src, n_in - 1)
  return label[index(label.shape[0], size[0])][:, index(label.shape[1], size[1])]


def rgb_to_hsv(image):
  """cv2 RGB2HSV for uint8, exactly: H in [0, 180), S and V in [0, 255].

  Args:
    image: uint8 (..., 3) RGB.

  Returns:
    uint8 (..., 3) HSV.
  """
  r, g, b = (image[..., c].astype(np.int32) for c in range(3))
  v = np.maximum(np.maximum(r, g), b)
  diff = v - np.minimum(np.minimum(r, g), b)
  h = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
  h = (h * _HDIV[diff] + (1 << (_HSV_SHIFT - 1))) >> _HSV_SHIFT
  h += (h < 0) * 180
  hsv = np.empty(image.shape, np.uint8)
  hsv[..., 0] = h
  hsv[..., 1] = (diff * _SDIV[v] + (1 << (_HSV_SHIFT - 1))) >> _HSV_SHIFT
  hsv[..., 2] = v
  return hsv


def hsv_to_rgb(hsv):
  """cv2 HSV2RGB for uint8 (H in [0, 180)), in float32 as cv2, rounded (see top).

  Args:
    hsv: uint8 (..., 3) HSV.

  Returns:
    uint8 (..., 3) RGB.
  """
  h = hsv[..., 0].astype(np.float32) * np.float32(6 / 180)
  h = np.where(h >= 6, h - np.float32(6), h)  # cv2's fmod(h, 6): exact for h < 12
  s = hsv[..., 1].astype(np.float32) * np.float32(1 / 255)
  v = hsv[..., 2].astype(np.float32) * np.float32(1 / 255)
  sector = np.floor(h)
  frac = h - sector
  # The 4 candidate values (v, p, q, t) as bytes of one uint32; each output channel
  # shifts out the byte its sector picks (faster than a fancy-indexed gather).
  packed = np.zeros(h.shape, np.uint32)
  for k, value in enumerate([v, v * (1 - s), v * (1 - s * frac), v * (1 - s * (1 - frac))]):
    value *= np.float32(255)
    packed |= np.rint(value).astype(np.uint32) << np.uint32(8 * k)
  sector = sector.astype(np.intp)
  rgb = np.empty(hsv.shape, np.uint8)
  for c in range(3):
    rgb[..., c] = packed >> _SECTOR_SHIFTS[c][sector]  # keeps the low byte
  return rgb
