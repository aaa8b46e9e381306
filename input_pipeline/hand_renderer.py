"""Ray-cast hand-object depth frames: the renderer of the `synthetic_hands` data set.

`render_example` draws one frame from its own generator: a right hand (palm,
capsule fingers and thumb) curled round a box, cylinder or sphere
(`_hand`, `_object`), mirrored to a left hand half the time and posed at random in
front of an SR300-like pinhole camera (`_posed_rig`); a wall, maybe a table and
clutter behind it (`_background`). Every pixel's ray is cast against every solid
inside the solid's pixel window (`input_pipeline.ray_casting`), the nearest hit
setting depth and label. Then the sensor: depth-proportional noise, millimetre
steps, missing-depth holes mostly on depth edges (`_holes`), and the capture's
removal of everything more than `BAND_MM` behind the nearest valid surface.

Distances are in millimetres; pixel-sized constants are given at a frame
`REFERENCE_WIDTH` pixels wide and scaled with the width.
"""
import numpy as np

from input_pipeline import ray_casting

# Camera: SR300 depth, ~68 x 54 degrees; focal length (px) = FOCAL * image width.
FOCAL = 0.741
NEAREST_MM = (200.0, 600.0)  # Distance of the nearest hand / object surface,
NEAREST_POWER = 2.0  # drawn as low + (high - low) * u**power: more near frames.
PLANE_EDGE_MM = (20.0, 100.0)  # Wall and table begin this far behind the rig's front.
BAND_MM = 160.0  # The capture keeps depth up to 16 cm behind the nearest surface.
NOISE_PER_MM = (0.001, 0.003)  # Noise std / depth, drawn per frame.
REFERENCE_WIDTH = 128  # Pixel-sized constants are given at this width.
HOLES_AT_EDGES = (2, 9)  # Missing-depth blobs seeded on depth edges, per frame.
HOLES_ANYWHERE = (0, 3)  # ... and anywhere on the hand or object.
HOLE_RADIUS_PX = (0.6, 2.2)
EDGE_STEP_MM = 12.0  # A neighbour this much farther or nearer makes a depth edge.
HAND_SCALE = (0.85, 1.15)
# Hand geometry in mm at scale 1, in the hand's frame: x across the palm (thumb at
# -x for a right hand), y from the wrist to the fingers, z out of the palm.
PALM_RADII = (40.0, 46.0, 14.0)
FINGER_BASE_Y = 40.0
FINGER_BASE_X = (-27.0, -9.0, 9.0, 27.0)  # index, middle, ring, little
FINGER_LENGTH = (75.0, 82.0, 77.0, 62.0)
FINGER_RADIUS = (9.5, 9.5, 9.0, 8.0)
FINGER_SPREAD_DEG = (-7.0, -2.0, 3.0, 9.0)
PHALANX_SHARE = (0.46, 0.30, 0.24)
PHALANX_CURL_SHARE = (0.30, 0.42, 0.28)
THUMB_BASE = (-26.0, -22.0, 3.0)
THUMB_LENGTH = (42.0, 32.0, 27.0)
THUMB_RADIUS = (12.0, 10.5, 9.5)
# Objects (mm): sphere radius; cylinder radius and half length; box half sizes.
SPHERE_RADIUS = (30.0, 60.0)
CYLINDER_RADIUS = (20.0, 45.0)
CYLINDER_HALF_LENGTH = (65.0, 120.0)
BOX_HALF = ((45.0, 100.0), (25.0, 60.0), (15.0, 45.0))  # along the hand's x, y, z
OBJECT_Y = (10.0, 55.0)  # Object centre along the palm.

HAND, OBJECT = 1, 2
_FORWARD = np.array([0.0, 0.0, 1.0])  # The camera's optical axis.


def _hand(rng, scale, object_radius):
  """Palm, fingers and thumb of a right hand in its own frame, curled to wrap
  an object of the given radius lying on the palm."""
  s = scale
  palm_rotation = ray_casting.axis_rotation((0, 0, 1), rng.normal(0, 0.05))
  solids = [('ellipsoid', np.zeros(3), palm_rotation,
             np.asarray(PALM_RADII) * s * rng.uniform(0.93, 1.07, 3), HAND)]
  curl = rng.uniform(0.7, 1.05)  # How tightly this grasp closes.
  for x, length, radius, spread in zip(FINGER_BASE_X, FINGER_LENGTH, FINGER_RADIUS,
                                       FINGER_SPREAD_DEG):
    # A finger of length L wraps a solid of radius R through about L / R radians.
    total = np.clip(length * s / (object_radius + radius * s) * curl
                    * rng.uniform(0.85, 1.1), 0.2, 2.9)
    phi = np.deg2rad(spread + rng.normal(0, 3))
    start, theta = np.array([x, FINGER_BASE_Y, 0.0]) * s, 0.0
    for k, (share, curl_share) in enumerate(zip(PHALANX_SHARE, PHALANX_CURL_SHARE)):
      theta += total * curl_share
      direction = np.array([np.sin(phi) * np.cos(theta), np.cos(phi) * np.cos(theta),
                            np.sin(theta)])
      end = start + length * s * share * direction
      solids.append(('capsule', start, end, radius * s * (1 - 0.07 * k), HAND))
      start = end
  # Thumb: out from the palm's side, turning across the palm towards the object.
  direction = np.array([-0.55, 0.75, 0.35])
  bends = [np.zeros(3), rng.uniform(0.3, 1.1) * np.array([0.8, 0.15, 0.7]),
           rng.uniform(0.2, 1.0) * np.array([0.7, 0.0, 0.4])]
  start = np.asarray(THUMB_BASE) * s
  for length, radius, bend in zip(THUMB_LENGTH, THUMB_RADIUS, bends):
    direction = direction + bend
    direction /= np.linalg.norm(direction)
    end = start + length * s * direction
    solids.append(('capsule', start, end, radius * s, HAND))
    start = end
  return solids


def _object(rng, scale):
  """The grasped solid on the palm side of the hand frame; returns (solid, radius)."""
  kind = rng.choice(['box', 'cylinder', 'sphere'])
  if kind == 'sphere':
    radius = rng.uniform(*SPHERE_RADIUS)
    extent = np.full(3, radius)
  elif kind == 'cylinder':
    radius = rng.uniform(*CYLINDER_RADIUS)
    extent = np.array([radius, radius, radius])
  else:
    extent = np.array([rng.uniform(*r) for r in BOX_HALF])
    radius = extent[2]
  centre = np.array([rng.normal(0, 10) * scale, rng.uniform(*OBJECT_Y) * scale,
                     PALM_RADII[2] * scale + radius + rng.uniform(0, 4)])
  # Lying across the palm, tilted a little.
  rotation = (ray_casting.axis_rotation((0, 0, 1), np.deg2rad(rng.uniform(-35, 35)))
              @ ray_casting.axis_rotation((0, 1, 0), np.deg2rad(rng.uniform(-20, 20))))
  if kind == 'sphere':
    return ('ellipsoid', centre, np.eye(3), extent, OBJECT), radius
  if kind == 'cylinder':
    half = rng.uniform(*CYLINDER_HALF_LENGTH) * rotation[:, 0]
    return ('cylinder', centre - half, centre + half, radius, OBJECT), radius
  return ('box', centre, rotation, extent, OBJECT), radius


def _background(rng, rig, focal, height, width):
  """Wall, maybe a table touching or near the hand, and clutter, all behind the rig."""
  solids, planes = [], []
  far = -min(ray_casting.lowest(solid, -_FORWARD) for solid in rig)
  # Each plane n . x = c leaves the whole rig (and the camera) on the side n points to.
  for normal, gap in [((rng.normal(0, 0.2), rng.normal(0, 0.2), -1.0), (30.0, 700.0)),
                      ((rng.normal(0, 0.2), -1.0, -rng.uniform(0.3, 1.2)), (0.0, 120.0))]:
    if gap[0] == 0.0 and rng.uniform() < 0.3:
      continue  # No table.
    normal = np.asarray(normal) / np.linalg.norm(normal)
    offset = min(ray_casting.lowest(solid, normal) for solid in rig) - rng.uniform(*gap)
    planes.append((normal * offset, normal))
  for _ in range(rng.integers(0, 4)):  # Clutter standing behind the hand.
    size = rng.uniform(30, 120)
    z = far + size * 1.8 + rng.uniform(20, 400)
    x, y = (rng.uniform(-0.5, 0.5, 2) * (width, height)) / focal * z
    centre = np.array([x, y, z])
    if rng.uniform() < 0.5:
      solids.append(('ellipsoid', centre, np.eye(3), np.full(3, size), 0))
    else:
      solids.append(('box', centre, ray_casting.random_rotation(rng),
                     size * rng.uniform(0.4, 1.0, 3), 0))
  return solids, planes


def _depth_edges(depth):
  """Pixels with a neighbour (4-connected) more than EDGE_STEP_MM nearer or farther
  (depth 0 where no surface, so silhouettes are edges too)."""
  edges = np.zeros(depth.shape, bool)
  for axis in (0, 1):
    step = np.abs(np.diff(depth, axis=axis)) > EDGE_STEP_MM
    lead = [slice(None)] * 2
    lead[axis] = slice(0, -1)
    edges[tuple(lead)] |= step
    lead[axis] = slice(1, None)
    edges[tuple(lead)] |= step
  return edges


def _holes(rng, edges, foreground, px):
  """Missing-depth blobs: ellipses seeded on depth edges, a few anywhere in front."""
  height, width = edges.shape
  yy, xx = np.mgrid[0:height, 0:width] + 0.5
  seeds = []
  for candidates, count in ((edges & foreground, HOLES_AT_EDGES),
                            (foreground, HOLES_ANYWHERE)):
    ys, xs = np.nonzero(candidates)
    if len(ys):
      picks = rng.integers(0, len(ys), rng.integers(count[0], count[1] + 1))
      seeds += [(ys[i] + 0.5, xs[i] + 0.5) for i in picks]
  holes = np.zeros(edges.shape, bool)
  for cy, cx in seeds:
    a, b = rng.uniform(*HOLE_RADIUS_PX, 2) * px
    t = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
    v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
    holes |= (u / a) ** 2 + (v / b) ** 2 <= 1
  return holes


def _posed_rig(rng, focal, height, width):
  """Hand and grasped object, randomly posed in front of the camera."""
  scale = rng.uniform(*HAND_SCALE)
  grasped, radius = _object(rng, scale)
  rig = _hand(rng, scale, radius) + [grasped]
  rotation = ray_casting.random_rotation(rng)
  if rng.uniform() < 0.5:  # A left hand: the right one mirrored.
    rotation = rotation @ np.diag([-1.0, 1.0, 1.0])
  # Rotate about the midpoint of the palm (the origin) and the object's centre.
  centre = ray_casting.bounding_sphere(grasped)[0] / 2
  rig = [ray_casting.move(solid, rotation, -rotation @ centre) for solid in rig]
  # Push it back until its nearest point is at the drawn distance.
  low, high = NEAREST_MM
  z = (low + (high - low) * rng.uniform() ** NEAREST_POWER
       - min(ray_casting.lowest(solid, _FORWARD) for solid in rig))
  # The rig's centre projects into the middle 40% of the frame.
  x, y = (rng.uniform(0.3, 0.7, 2) - 0.5) * (width, height) / focal * z
  return [ray_casting.move(solid, np.eye(3), np.array([x, y, z])) for solid in rig]


def render_example(rng: np.random.Generator, height: int,
                   width: int) -> tuple[np.ndarray, np.ndarray]:
  """Draws one hand-object depth frame.

  Args:
    rng: the example's own generator (all randomness comes from it).
    height: frame height in pixels.
    width: frame width in pixels.

  Returns:
    depth uint16 (height, width) in mm, 0 where missing or removed, and label uint8
    (height, width): 0 background, 1 hand, 2 object.
  """
  focal = FOCAL * width
  yy, xx = np.mgrid[0:height, 0:width] + 0.5
  rays = np.stack([(xx - width / 2) / focal, (yy - height / 2) / focal,
                   np.ones((height, width))], -1)
  rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
  rig = _posed_rig(rng, focal, height, width)
  clutter, planes = _background(rng, rig, focal, height, width)
  t = np.full((height, width), np.inf)
  label = np.zeros((height, width), np.uint8)
  for solid in rig + clutter:  # z-buffer: the nearest hit decides depth and label.
    window = ray_casting.window(solid, focal, height, width)
    kind, a, b, c, solid_label = solid
    hit = ray_casting.CAST[kind](rays[window], a, b, c)
    nearer = hit < t[window]
    t[window][nearer], label[window][nearer] = hit[nearer], solid_label
  # Planes end (a table edge) before they come nearer than the rig.
  edge = rng.uniform(*PLANE_EDGE_MM) + min(ray_casting.lowest(solid, _FORWARD)
                                           for solid in rig)
  for point, normal in planes:
    hit = ray_casting.plane(rays, point, normal)
    hit[hit * rays[..., 2] < edge] = np.inf
    nearer = hit < t
    t[nearer], label[nearer] = hit[nearer], 0
  depth = t * rays[..., 2]  # Distance along the optical axis, as depth cameras report.
  # Sensor: depth-proportional noise, millimetre steps, missing depth at edges.
  depth = np.where(np.isfinite(depth), depth, 0.0)
  noisy = depth + rng.normal(size=depth.shape) * rng.uniform(*NOISE_PER_MM) * depth
  holes = _holes(rng, _depth_edges(depth), label > 0, width / REFERENCE_WIDTH)
  measured = np.where(~holes, np.round(noisy), 0.0)
  measured = np.clip(measured, 0, np.iinfo(np.uint16).max)
  valid = measured > 0
  # The capture's background removal: beyond the band behind the nearest surface.
  if valid.any():
    removed = measured > measured[valid].min() + BAND_MM
    measured[removed], label[removed] = 0, 0
  return measured.astype(np.uint16), label
