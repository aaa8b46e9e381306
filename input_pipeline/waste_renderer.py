"""Renders the synthetic cluttered-waste images of `synthetic_waste` (docs/data.md
section 6).

`render_example(rng, size)` draws one RGB image of objects on a conveyor belt and its
label map (ZeroWaste-f's classes). Every class is told apart by shape and texture,
never by colour: the belt and every object draw their base colour from one shared
distribution, so a per-pixel colour classifier stays near chance while a small CNN
can learn the classes at 96x96.

- rigid_plastic: smooth bottles / tubs (ellipses, rounded rectangles with a neck),
  cylinder shading and a bright specular band.
- cardboard: straight-edged polygons with corrugation stripes, tape and print.
- metal: cans (side-on cylinders, top-down discs) with high-contrast specular bands
  and brushed noise.
- soft_plastic: wavy blobs, translucent over whatever lies beneath (the label
  becomes soft_plastic there too), with thin bright wrinkles.
"""
import colorsys

import numpy as np

# Pixel-sized constants are given at a 96-px image and scaled with the image side.
REFERENCE_SIZE = 96
NUM_OBJECTS = (3, 12)  # Inclusive range of objects per image.
OBJECT_SCALE = (0.06, 0.6)  # Object length / image side, drawn log-uniformly.
OBJECT_SCALE_POWER = 0.3  # < 1 skews the log-uniform draw towards large objects.
OBJECT_CENTRE = (0.0, 1.0)  # Object centre / image side.
# Shared colour distribution (HSV) for the belt and every object.
SATURATION = (0.0, 0.85)
VALUE = (0.25, 0.9)
# Belt: low-amplitude ridges across it, seams, smooth grime.
BELT_RIDGE_PERIOD = (5.0, 9.0)
BELT_RIDGE_AMPLITUDE = (0.02, 0.05)
BELT_SEAM_PERIOD = (30.0, 60.0)
BELT_GRIME_AMPLITUDE = 0.08
# Rigid plastic: minor / major axis, strength of the specular band.
RIGID_ASPECT = (0.4, 0.85)
RIGID_HIGHLIGHT = (0.75, 1.0)
# Cardboard: corrugation period (px) and amplitude.
CORRUGATION_PERIOD = (3.5, 6.0)
CORRUGATION_AMPLITUDE = (0.15, 0.3)
# Metal: number of specular bands across a can, brushed-noise amplitude.
METAL_BANDS = (0.5, 1.25)
METAL_BRUSH_AMPLITUDE = 0.08
# Soft plastic: opacity, outline waviness, wrinkles.
SOFT_ALPHA = (0.35, 0.7)
SOFT_WAVE_AMPLITUDE = 0.12
SOFT_WRINKLES = (4, 9)
SOFT_WRINKLE_WIDTH = 0.7
# Lighting and sensor.
SHADOW_OFFSET = (1.0, 4.0)
SHADOW_STRENGTH = (0.25, 0.5)
ILLUMINATION_GRADIENT = (0.0, 0.5)
SENSOR_NOISE = (0.01, 0.035)



def _colour(rng: np.random.Generator) -> np.ndarray:
  """One draw from the colour distribution shared by the belt and all objects."""
  rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*SATURATION), rng.uniform(*VALUE))
  return np.asarray(rgb, np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
  """Zero-mean unit-scale noise varying over `cells` cells per side (bilinear)."""
  coarse = rng.normal(size=(cells + 1, cells + 1)).astype(np.float32)
  interp = np.stack([np.interp(np.linspace(0, cells, size), np.arange(cells + 1), row)
                     for row in np.eye(cells + 1)], axis=1).astype(np.float32)
  return interp @ coarse @ interp.T


def _belt(rng, yy, xx, px):
  """The conveyor belt: base tone, ridges across the belt, seams and grime."""
  size = yy.shape[0]
  ridges = rng.uniform(*BELT_RIDGE_AMPLITUDE) * np.sin(
      2 * np.pi * yy / (rng.uniform(*BELT_RIDGE_PERIOD) * px) + rng.uniform(0, 6.3))
  seam_period = rng.uniform(*BELT_SEAM_PERIOD) * px
  seam = np.mod(xx - rng.uniform(0, seam_period), seam_period) < 1.0
  seams = np.where(seam, -0.12, 0.0)
  grime = BELT_GRIME_AMPLITUDE * _smooth_noise(rng, size, 5)
  shade = 1.0 + ridges + seams + grime
  return _colour(rng) * shade[..., None]


def _box_sd(u, v, half_u, half_v, radius=0.0):
  """Signed distance (px, negative inside) to a rectangle with rounded corners."""
  qu = np.abs(u) - half_u + radius
  qv = np.abs(v) - half_v + radius
  outside = np.hypot(np.maximum(qu, 0), np.maximum(qv, 0))
  return outside + np.minimum(np.maximum(qu, qv), 0) - radius


def _rigid_plastic(rng, u, v, length, px):
  """Bottle or tub: smooth rounded body, glossy shading, a bright specular highlight."""
  a = length / 2
  b = a * rng.uniform(*RIGID_ASPECT)
  strength = rng.uniform(*RIGID_HIGHLIGHT)
  if rng.uniform() < 0.5:  # Tub or lid seen from above: a dome with a round glint.
    rho = np.minimum(np.hypot(u / a, v / b), 1)
    sd = (np.hypot(u / a, v / b) - 1) * b
    shade = 0.35 + 0.65 * np.sqrt(1 - rho**2)
    spot = rng.uniform(-0.4, 0.4, 2)
    highlight = strength * np.exp(-((u / a - spot[0])**2 + (v / b - spot[1])**2) / 0.04)
    cap = np.zeros(u.shape, bool)
  else:  # Bottle: rounded body plus a capped neck, a glint along the body.
    body = _box_sd(u + 0.15 * a, v, 0.85 * a, b, 0.8 * b)
    neck = _box_sd(u - 0.85 * a, v, 0.15 * a, 0.4 * b, 0.2 * b)
    sd = np.minimum(body, neck)
    n = np.clip(v / b, -1, 1)
    shade = 0.35 + 0.65 * np.sqrt(1 - n**2)
    highlight = strength * np.exp(-((n - rng.uniform(-0.5, 0.5)) / 0.18)**2)
    cap = u > 0.85 * a
  base = np.where(cap[..., None], _colour(rng), _colour(rng)) * shade[..., None]
  return sd, base + (1 - base) * highlight[..., None], 1.0


def _cardboard(rng, u, v, length, px):
  """Box or flap: straight-edged polygon, corrugation stripes, tape and print."""
  a = length / 2
  b = a * rng.uniform(0.4, 1.0)
  if rng.uniform() < 0.6:
    sd = _box_sd(u, v, a, b)
  else:  # Convex polygon: max over edges of the distance to each edge's line.
    m = rng.integers(4, 7)
    angles = 2 * np.pi * (np.arange(m) + rng.uniform(-0.3, 0.3, m)) / m
    apothem = rng.uniform(0.75, 1.0, m) * a
    sd = np.max([np.cos(t) * u + np.sin(t) * v * a / b - r
                 for t, r in zip(angles, apothem)], axis=0) * b / a
    sd = np.maximum(sd, np.hypot(u, v) - 1.45 * a)  # Keep inside the drawing window.
  period = rng.uniform(*CORRUGATION_PERIOD) * px
  shade = 1 + rng.uniform(*CORRUGATION_AMPLITUDE) * np.sin(2 * np.pi * u / period)
  shade += 0.08 * (v / b)  # A flat, matte surface tilted towards the light.
  shade = np.where(sd > -1.5 * px, 0.6 * shade, shade)  # Dark cut edges.
  if rng.uniform() < 0.5:  # A fold across the flap.
    fold = np.abs(u - rng.uniform(-0.6, 0.6) * a) < 0.6 * px
    shade = np.where(fold, 0.6 * shade, shade)
  image = _colour(rng) * shade[..., None]
  if rng.uniform() < 0.6:  # Tape: a smooth strip across the box.
    tape = np.abs(v - rng.uniform(-0.5, 0.5) * b) < rng.uniform(0.1, 0.25) * b
    image = np.where(tape[..., None], 0.5 + 0.5 * _colour(rng), image)
  for _ in range(rng.integers(0, 3)):  # Print: small dark patches.
    centre = rng.uniform(-0.6, 0.6, 2) * (a, b)
    half = rng.uniform(0.08, 0.25, 2) * (a, b)
    patch = _box_sd(u - centre[0], v - centre[1], *half) < 0
    image = np.where(patch[..., None], 0.35 * _colour(rng), image)
  return sd, image, 1.0


def _metal(rng, u, v, length, px):
  """Can: side-on cylinder with specular bands, or top-down disc with a rim."""
  a = length / 2
  brush_axis = v if rng.uniform() < 0.5 else u
  knots = int(2 * a) + 5  # About one brushed-noise value per pixel along the axis.
  brush = METAL_BRUSH_AMPLITUDE * np.interp(
      brush_axis, np.linspace(-a - 2, a + 2, knots), rng.normal(size=knots))
  if rng.uniform() < 0.6:  # Side-on can: bands along the axis, a white glint, rims.
    b = a * rng.uniform(0.35, 0.7)
    sd = _box_sd(u, v, a, b, 0.15 * b)
    n = v / b
    bands = np.cos(np.pi * (n * rng.uniform(*METAL_BANDS) + rng.uniform()))
    shade = 0.15 + np.abs(bands)**3
    glint = np.exp(-((n - rng.uniform(-0.6, 0.6)) / 0.1)**2)
    shade = np.where(np.abs(np.abs(u) - 0.85 * a) < 0.8 * px, 0.3, shade)
  else:  # Top-down: disc, rim ring and an angular specular lobe.
    r = np.hypot(u, v)
    sd = r - a
    lobe = np.abs(np.cos(np.arctan2(v, u) - rng.uniform(0, np.pi)))**4
    shade = 0.2 + 0.9 * lobe
    shade = np.where(np.abs(r - 0.8 * a) < 0.9 * px, 1.3 - shade, shade)
    glint = 0.5 * lobe**4
  image = _colour(rng) * (shade + brush)[..., None]
  return sd, image + (1 - image) * glint[..., None], 1.0


def _soft_plastic(rng, u, v, length, px):
  """Bag or film: wavy-outlined translucent blob with thin bright wrinkles."""
  a = length / 2
  aspect = rng.uniform(0.5, 1.0)
  r = np.hypot(u, v / aspect)
  theta = np.arctan2(v / aspect, u)
  outline = 1 + sum(rng.uniform(0, SOFT_WAVE_AMPLITUDE)
                    * np.cos(k * theta + rng.uniform(0, 6.3)) for k in (2, 3, 4, 5))
  outline += 0.04 * np.cos(rng.integers(8, 15) * theta + rng.uniform(0, 6.3))
  sd = (r - a * 0.85 * outline) * aspect
  wrinkles = np.zeros_like(u)
  for _ in range(rng.integers(*SOFT_WRINKLES)):
    p0 = rng.uniform(-0.5, 0.5, 2) * a
    t = rng.uniform(0, np.pi)
    along = (u - p0[0]) * np.cos(t) + (v - p0[1]) * np.sin(t)
    across = -(u - p0[0]) * np.sin(t) + (v - p0[1]) * np.cos(t)
    across += rng.uniform(0.5, 2.0) * px * np.sin(along / (rng.uniform(2, 5) * px))
    line = np.exp(-(across / (SOFT_WRINKLE_WIDTH * px))**2)
    line *= np.abs(along) < rng.uniform(0.3, 0.8) * a
    wrinkles = np.maximum(wrinkles, line)
  # The film's edge glints like a wrinkle, which outlines the wavy shape.
  wrinkles = np.maximum(wrinkles, np.exp(-(sd / (SOFT_WRINKLE_WIDTH * px))**2))
  alpha = rng.uniform(*SOFT_ALPHA)
  image = _colour(rng) + 0.9 * wrinkles[..., None]
  return sd, image, alpha + (1 - alpha) * 0.8 * wrinkles


_OBJECTS = {1: _rigid_plastic, 2: _cardboard, 3: _metal, 4: _soft_plastic}


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """`mask` moved by (dy, dx) px, zero-filled, with a 3x3 box blur (soft shadows)."""
  out = np.zeros_like(mask)
  h, w = mask.shape
  out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
      mask[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
  padded = np.pad(out, 1, mode='edge')
  return sum(padded[i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9


def render_example(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
  """Draws one cluttered-waste scene.

  Args:
    rng: the example's own generator (all randomness comes from it).
    size: image side in pixels.

  Returns:
    image (size, size, 3) uint8 and label (size, size) uint8 in 0..4.
  """
  px = size / REFERENCE_SIZE
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
  image = _belt(rng, yy, xx, px)
  label = np.zeros((size, size), np.uint8)
  light = rng.uniform(0, 2 * np.pi)
  offset = rng.uniform(*SHADOW_OFFSET) * px
  dy, dx = int(round(offset * np.sin(light))), int(round(offset * np.cos(light)))
  num = rng.integers(NUM_OBJECTS[0], NUM_OBJECTS[1] + 1)
  low, high = np.log(OBJECT_SCALE)
  scales = np.exp(low + (high - low) * rng.uniform(size=num)**OBJECT_SCALE_POWER)
  for scale in np.sort(scales)[::-1]:  # Large first, so small objects stay visible.
    cls = int(rng.integers(1, 5))
    length = scale * size
    cy, cx = rng.uniform(*OBJECT_CENTRE, 2) * size
    t = rng.uniform(0, 2 * np.pi)
    # Draw inside the object's bounding window only (every shape lies within
    # 1.5 half-lengths of its centre), with room for the shadow.
    half = 0.75 * length + offset + 2
    win = (slice(max(int(cy - half), 0), min(int(cy + half) + 1, size)),
           slice(max(int(cx - half), 0), min(int(cx + half) + 1, size)))
    u = (xx[win] - cx) * np.cos(t) + (yy[win] - cy) * np.sin(t)
    v = -(xx[win] - cx) * np.sin(t) + (yy[win] - cy) * np.cos(t)
    sd, colour, opacity = _OBJECTS[cls](rng, u, v, length, px)
    coverage = np.clip(0.5 - sd, 0, 1)  # Anti-aliased edge, one pixel wide.
    shadow = _shift(coverage, dy, dx) * rng.uniform(*SHADOW_STRENGTH) * np.mean(opacity)
    alpha = (coverage * opacity)[..., None]
    image[win] = image[win] * (1 - shadow[..., None]) * (1 - alpha) + colour * alpha
    label[win][sd <= 0] = cls  # Translucent soft plastic labels what it covers.
  gradient = ((xx - size / 2) * np.cos(light) + (yy - size / 2) * np.sin(light)) / size
  image = image * (1 + rng.uniform(*ILLUMINATION_GRADIENT) * gradient)[..., None]
  image = image + rng.normal(0, rng.uniform(*SENSOR_NOISE), image.shape)
  return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), label
