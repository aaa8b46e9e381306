"""Automatic hand / object masks of one frame from aligned colour and depth.

The auto-annotation with which DenseAttentionSeg built InterSegHands without hand
labelling (paper section 3, Figure 2, Eq. 1; docs/data.md section 5):

1. Background elimination (`eliminate_background`): hand and object are the nearest
   things to the camera, so only pixels at most `band_mm` (16 cm) behind the nearest
   valid surface are kept. Depth 0 is invalid (no sensor return) and never kept.
2. Segmentation by colour (`skin_mask`): skin is classified by linear threshold
   constraints in HSV (`SkinThresholds`); the rest of the kept region is object.
   Each of the two masks is then filtered morphologically on its own
   (`fill_small_holes`).
3. Contour filtering (`filter_segments`, Eq. 1): a connected segment s of a mask is
   kept only if N(s) > theta and perimeter(s)^2 / N(s) < phi. This drops specks and
   the thin bands that colour-depth misalignment leaves along the fingers.

`annotate_frame` runs the three steps and returns the label map (0 background,
1 hand, 2 object). Everything is whole-array numpy, scipy.ndimage (labelling,
erosion) and PIL's HSV conversion (C code), inside the bounding box of the kept
pixels (its speed: docs/performance.md, Annotation tool file formats).

Readings of what the paper leaves open (the project's, each a field of
`AnnotateParams`):
- Segments are 8-connected components of one class's mask. N(s) is their pixel
  count and perimeter(s) the count of their pixels with at least one 4-neighbour
  outside s (s minus its erosion by the 3x3 cross, the image border counting as
  outside): the 8-connected inner boundary.
- "Nearest valid surface" is the `near_pixels`-th nearest valid pixel rather than
  the single nearest one, so that a few flying pixels in front of the hand do not
  move the band.
- Morphological filtering fills holes of at most `hole_area` pixels in each mask
  (sensor holes, skin pixels in shadow) and does nothing else. An opening would
  remove every part thinner than its structuring element, real ones included
  (handles, cables, a distant finger), where Eq. 1 judges a segment as a whole and
  its area threshold already removes specks; a closing would bridge the 1-2 px
  gap of missing depth between a finger and its misalignment band, so that Eq. 1
  could no longer drop the band.
- The hand mask is filtered first; the object mask is the kept region minus the
  final hand, so a skin band that Eq. 1 drops from the hand becomes object where
  it lies on the object (it is in the depth band and not hand) and background
  where it lies on nothing else kept (Eq. 1 drops it from the object too).
"""
import dataclasses
import functools
import math

import numpy as np
from PIL import Image
from scipy import ndimage

BACKGROUND, HAND, OBJECT = 0, 1, 2
CROSS = ndimage.generate_binary_structure(2, 1)  # 4-neighbourhood.
SQUARE = ndimage.generate_binary_structure(2, 2)  # 8-neighbourhood.


@dataclasses.dataclass(frozen=True)
class SkinThresholds:
  """Skin as a box of linear constraints in HSV: lo <= channel <= hi for each channel.

  Defaults: hue and saturation bounds of Sobottka & Pitas ("Segmentation and
  tracking of faces in color images", FG 1996), widely reused for skin detection;
  the value bound is the project's, dropping dark pixels whose hue is noise.
  Tune them to the capture's lighting and skin tones (`--skin`).

  Attributes:
    hue: degrees in [-360, 360]; a negative lower bound wraps through red, e.g.
      (-20, 50) also accepts 340..360 degrees.
    saturation: in [0, 1].
    value: in [0, 1] (max(R, G, B) / 255).
  """
  hue: tuple[float, float] = (0.0, 50.0)
  saturation: tuple[float, float] = (0.23, 0.68)
  value: tuple[float, float] = (0.35, 1.0)


@dataclasses.dataclass(frozen=True)
class AnnotateParams:
  """Parameters of `annotate_frame`; pixel sizes are meant for 640x480 frames.

  Attributes:
    band_mm: depth band kept behind the nearest valid surface (paper: 16 cm).
    near_pixels: the nearest surface is the depth of this many nearest valid pixels.
    skin: HSV thresholds of skin.
    hole_area: holes of at most this many pixels are filled in each mask.
    theta: Eq. 1, a segment is kept only if its area is greater (pixels).
    phi: Eq. 1, ... and its perimeter^2 / area is smaller. A band 1 px wide has
      perimeter = area, so theta and phi together drop every such band; 2 px wide
      ones go unless longer than about 140 px on a diagonal. For scale: a disc
      measures 10, a square 16, the tests' hands (palm, wrist, spread fingers)
      50-70; phi leaves them a margin of 2.
  """
  band_mm: int = 160
  near_pixels: int = 50
  skin: SkinThresholds = SkinThresholds()
  hole_area: int = 100
  theta: int = 300
  phi: float = 150.0


def eliminate_background(depth: np.ndarray, band_mm: int = 160,
                         near_pixels: int = 50) -> np.ndarray:
  """Step 1: the pixels within `band_mm` behind the nearest valid surface.

  Args:
    depth: uint16 (H, W) depth in millimetres, 0 = invalid.
    band_mm: depth band kept behind the nearest surface.
    near_pixels: the nearest surface is the smallest depth that at least this many
      valid pixels reach (1 = the paper's plain minimum).

  Returns:
    bool (H, W), True where kept (foreground); all False when fewer than
    `near_pixels` pixels are valid.
  """
  counts = np.bincount(depth.ravel(), minlength=1)
  counts[0] = 0  # Invalid.
  reached = np.cumsum(counts)
  if reached[-1] < near_pixels:
    return np.zeros(depth.shape, bool)
  nearest = int(np.searchsorted(reached, max(near_pixels, 1)))
  return (depth > 0) & (depth <= nearest + band_mm)


@functools.lru_cache(maxsize=8)
def _lookup_tables(thresholds: SkinThresholds) -> tuple[np.ndarray, ...]:
  """Per-channel bool tables over PIL's 0..255 HSV codes (bin centres compared)."""
  centres = (np.arange(256) + 0.5) / 256.0  # PIL floors h * 255, s * 255.
  hue = centres * 360.0
  lo, hi = thresholds.hue
  in_hue = ((hue >= lo) & (hue <= hi)) | ((hue - 360.0 >= lo) & (hue - 360.0 <= hi))
  low, high = thresholds.saturation
  saturation = (centres >= low) & (centres <= high)
  value = np.arange(256) / 255.0  # V is max(R, G, B) exactly.
  value = (value >= thresholds.value[0]) & (value <= thresholds.value[1])
  return in_hue, saturation, value


def skin_mask(rgb: np.ndarray,
              thresholds: SkinThresholds = SkinThresholds()) -> np.ndarray:
  """Step 2: skin-coloured pixels.

  Args:
    rgb: uint8 (H, W, 3).
    thresholds: the HSV box of skin.

  Returns:
    bool (H, W), True for skin.
  """
  hsv = np.asarray(Image.fromarray(rgb, 'RGB').convert('HSV'))
  in_hue, in_saturation, in_value = _lookup_tables(thresholds)
  return in_hue[hsv[..., 0]] & in_saturation[hsv[..., 1]] & in_value[hsv[..., 2]]


def fill_small_holes(mask: np.ndarray, max_area: int) -> np.ndarray:
  """Step 2's morphological filtering: fills holes of at most `max_area` pixels.

  A hole is a 4-connected component of the complement not touching the image border
  (the dual of the 8-connected segments).

  Args:
    mask: bool (H, W).
    max_area: largest hole filled, in pixels.

  Returns:
    bool (H, W): `mask` with its small holes filled.
  """
  holes, count = ndimage.label(~mask, structure=CROSS)
  if count == 0:
    return mask.copy()
  fill = np.bincount(holes.ravel(), minlength=count + 1) <= max_area
  fill[0] = False
  for edge in (holes[0], holes[-1], holes[:, 0], holes[:, -1]):
    fill[edge] = False
  return mask | fill[holes]


def segment_stats(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Eq. 1's measures of every segment of `mask`.

  Args:
    mask: bool (H, W).

  Returns:
    (labels, area, perimeter): int (H, W) segment ids (0 = not in mask, segments
    8-connected), and per id the pixel count N(s) and the boundary pixel count
    perimeter(s) (pixels with a 4-neighbour outside the segment); index 0 unused.
  """
  labels, count = ndimage.label(mask, structure=SQUARE)
  area = np.bincount(labels.ravel(), minlength=count + 1)
  # Distinct 8-connected segments never touch, so eroding the whole mask erodes
  # each segment on its own.
  boundary = mask & ~ndimage.binary_erosion(mask, structure=CROSS, border_value=0)
  perimeter = np.bincount(labels[boundary], minlength=count + 1)
  area[0] = perimeter[0] = 0
  return labels, area, perimeter


def filter_segments(mask: np.ndarray, theta: float, phi: float) -> np.ndarray:
  """Step 3, Eq. 1: keeps a segment s iff N(s) > theta and perimeter(s)^2 / N(s) < phi.

  Args:
    mask: bool (H, W).
    theta: area threshold (pixels).
    phi: compactness threshold; `math.inf` with theta 0 keeps everything.

  Returns:
    bool (H, W): the kept segments.
  """
  labels, area, perimeter = segment_stats(mask)
  # perimeter^2 < phi * area: no division (id 0 has area 0 and is dropped anyway).
  keep = (area > theta) & (perimeter.astype(np.float64) ** 2 < phi * np.maximum(area, 1))
  keep[0] = False
  return keep[labels]


def annotate_frame(rgb: np.ndarray, depth: np.ndarray,
                   params: AnnotateParams = AnnotateParams()) -> np.ndarray:
  """Steps 1-3 on one aligned frame.

  Args:
    rgb: uint8 (H, W, 3) colour.
    depth: uint16 (H, W) depth in millimetres aligned to `rgb`, 0 = invalid.
    params: the method's parameters.

  Returns:
    uint8 (H, W) labels: 0 background, 1 hand, 2 object.
  """
  if rgb.shape[:2] != depth.shape:
    raise ValueError(f'colour {rgb.shape[:2]} and depth {depth.shape} differ in size')
  labels = np.zeros(depth.shape, np.uint8)
  kept = eliminate_background(depth, params.band_mm, params.near_pixels)
  rows, cols = np.flatnonzero(kept.any(axis=1)), np.flatnonzero(kept.any(axis=0))
  if rows.size == 0:
    return labels
  # Steps 2-3 inside the bounding box of the kept pixels plus a one-pixel margin:
  # the same result as on the whole frame (outside the box nothing is kept, and the
  # margin keeps holes and boundaries as they are), at a fraction of the cost.
  box = (slice(max(rows[0] - 1, 0), rows[-1] + 2),
         slice(max(cols[0] - 1, 0), cols[-1] + 2))
  kept = kept[box]
  skin = skin_mask(np.ascontiguousarray(rgb[box]), params.skin)
  hand = filter_segments(fill_small_holes(kept & skin, params.hole_area),
                         params.theta, params.phi)
  # The rest of the kept region is object, once the hand is final: a skin band that
  # Eq. 1 dropped from the hand becomes object where it lies on the object.
  obj = filter_segments(fill_small_holes(kept & ~hand, params.hole_area),
                        params.theta, params.phi)
  labels[box][obj] = OBJECT
  labels[box][hand] = HAND  # Over object pixels its holes were filled with.
  return labels


def no_contour_filter(params: AnnotateParams) -> AnnotateParams:
  """`params` with step 3 switched off (theta 0, phi infinite): for comparisons."""
  return dataclasses.replace(params, theta=0, phi=math.inf)
