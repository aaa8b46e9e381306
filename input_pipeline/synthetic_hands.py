"""Synthetic hand-object depth frames: the embedded default data set of DenseAttentionSeg.

A TFDS builder (`synthetic_hands`, array_record) standing in for InterSegHands (SPEC
sections 3 and 4: one 16-bit depth channel in millimetres, labels 0 background,
1 hand, 2 object) so that the DenseAttentionSeg demo trains without the unreleased
data. Each frame is ray-cast from analytic solids through a pinhole camera with the
RealSense SR300's field of view (68 degrees across), so occlusion is exact:

- hand: a flattened-ellipsoid palm, four fingers of three capsule phalanges each
  and a three-capsule thumb (no wrist or forearm: a thick hand-labelled cylinder
  would look like a cylinder object), curled to wrap the object; random
  handedness, size, finger spread and curl, and a uniformly random 3-D orientation.
- object: a box, a cylinder or a sphere held against the palm, so fingers lie in
  front of it, wrap around it or hide behind it depending on the view.
- background: a wall, often a table under the hand, and a few clutter solids, all
  behind the hand; as in the paper's capture everything more than 16 cm behind the
  nearest valid surface is removed (depth 0, label 0), so only the table and clutter
  parts inside that band stay as labelled background.
- sensor: the nearest surface lies 20-60 cm away; Gaussian noise with a standard
  deviation proportional to depth, depth rounded to millimetres, and missing-depth
  holes (blobs of depth 0, mostly on depth edges; their label is kept, as an
  annotation would be).

Hand and object differ in shape (thin capsules joined to a palm versus one convex
solid), not in depth statistics. Each example comes from its own
`np.random.default_rng((seed, split_id, index))`, so a rebuild is byte-identical.
"""
import dataclasses
import io

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from input_pipeline import interseg

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

SPLIT_IDS = {'train': 0, 'val': 1, 'test': 2}
HAND, OBJECT = 1, 2
_FORWARD = np.array([0.0, 0.0, 1.0])  # The camera's optical axis.


# Ray casting. Rays leave the camera at the origin with unit directions `d` (..., 3);
# every function returns the distance t along the ray to the first hit in front of
# the camera, inf where the ray misses.

def _first_hit(t, hit):
  return np.where(hit & (t > 0), t, np.inf)


def _ellipsoid(d, centre, rotation, radii):
  """Ellipsoid with semi-axes `radii` along the columns of `rotation`."""
  o = -(centre @ rotation) / radii  # The ray in the unit sphere's frame.
  v = (d @ rotation) / radii
  a = np.sum(v * v, -1)
  b = v @ o
  h = b * b - a * (o @ o - 1)
  with np.errstate(invalid='ignore'):
    return _first_hit((-b - np.sqrt(h)) / a, h >= 0)


def _capsule(d, p0, p1, radius):
  """Segment p0-p1 swept by a sphere (after Inigo Quilez's capsule intersector)."""
  ba, oa = p1 - p0, -p0
  baba, baoa, oaoa = ba @ ba, ba @ oa, oa @ oa
  bard, rdoa = d @ ba, d @ oa
  a = baba - bard * bard
  b = baba * rdoa - baoa * bard
  c = baba * oaoa - baoa * baoa - radius * radius * baba
  h = b * b - a * c
  with np.errstate(invalid='ignore', divide='ignore'):
    t_body = (-b - np.sqrt(h)) / a
    y = baoa + t_body * bard
    body = (h >= 0) & (y > 0) & (y < baba)
    # Otherwise the ray may hit the sphere capping the nearer end.
    start = y <= 0
    bc = np.where(start, rdoa, -(d @ p1))
    hc = bc * bc - (np.where(start, oaoa, p1 @ p1) - radius * radius)
    t_cap = -bc - np.sqrt(hc)
  return np.where(body, _first_hit(t_body, body), _first_hit(t_cap, (h >= 0) & (hc > 0)))


def _cylinder(d, p0, p1, radius):
  """Capped cylinder of axis p0-p1 (after Inigo Quilez's cylinder intersector)."""
  ba, oc = p1 - p0, -p0
  baba, baoc = ba @ ba, ba @ oc
  bard = d @ ba
  k2 = baba - bard * bard
  k1 = baba * (d @ oc) - baoc * bard
  k0 = baba * (oc @ oc) - baoc * baoc - radius * radius * baba
  h = k1 * k1 - k2 * k0
  with np.errstate(invalid='ignore', divide='ignore'):
    h = np.sqrt(h)
    t_body = (-k1 - h) / k2
    y = baoc + t_body * bard
    body = (y > 0) & (y < baba)
    t_cap = (np.where(y < 0, 0.0, baba) - baoc) / bard
    cap = np.abs(k1 + k2 * t_cap) < h
  return np.where(body, _first_hit(t_body, body), _first_hit(t_cap, cap))


def _box(d, centre, rotation, half):
  """Box with half sizes `half` along the columns of `rotation` (slab test)."""
  o = -(centre @ rotation)
  v = d @ rotation
  with np.errstate(divide='ignore', invalid='ignore'):
    t0, t1 = (-half - o) / v, (half - o) / v
  near = np.max(np.minimum(t0, t1), -1)
  far = np.min(np.maximum(t0, t1), -1)
  return _first_hit(near, far >= near)


def _plane(d, point, normal):
  with np.errstate(divide='ignore', invalid='ignore'):
    t = (point @ normal) / (d @ normal)
  return _first_hit(t, np.isfinite(t))


def _axis_rotation(axis, angle):
  """Rotation matrix by `angle` (radians) about `axis` (Rodrigues)."""
  x, y, z = np.asarray(axis, np.float64) / np.linalg.norm(axis)
  k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
  return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _random_rotation(rng):
  """A uniformly random rotation (from a normalised Gaussian quaternion)."""
  w, x, y, z = (lambda q: q / np.linalg.norm(q))(rng.normal(size=4))
  return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                   [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                   [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


# A solid is (kind, a, b, c, label): ('ellipsoid' | 'box', centre, rotation, radii or
# half sizes) or ('capsule' | 'cylinder', end, end, radius).
_CAST = {'ellipsoid': _ellipsoid, 'box': _box, 'capsule': _capsule, 'cylinder': _cylinder}


def _bounding_sphere(solid):
  """(centre, radius) of a sphere holding the solid."""
  kind, a, b, c, _ = solid
  if kind == 'ellipsoid':
    return a, np.max(c)
  if kind == 'box':
    return a, np.linalg.norm(c)
  return (a + b) / 2, np.linalg.norm(b - a) / 2 + c


def _window(solid, focal, height, width):
  """The (rows, cols) slices of the pixels whose rays can hit the solid."""
  (x, y, z), r = _bounding_sphere(solid)
  if z - r <= 1.0:  # Reaches the camera plane: no finite projection bound.
    return slice(0, height), slice(0, width)
  bounds = []
  for centre, size in ((x, width), (y, height)):
    low = min((centre - r) / (z - r), (centre - r) / (z + r)) * focal + size / 2
    high = max((centre + r) / (z - r), (centre + r) / (z + r)) * focal + size / 2
    bounds.append(slice(int(np.clip(np.floor(low), 0, size)),
                        int(np.clip(np.ceil(high) + 1, 0, size))))
  return bounds[1], bounds[0]


def _move(solid, rotation, translation):
  """The solid under x -> rotation @ x + translation."""
  kind, a, b, c, label = solid
  if kind in ('ellipsoid', 'box'):
    return kind, rotation @ a + translation, rotation @ b, c, label
  return kind, rotation @ a + translation, rotation @ b + translation, c, label


def _lowest(solid, n):
  """A lower bound of n . x over the solid (n a unit vector)."""
  kind, a, b, c, _ = solid
  if kind == 'ellipsoid':
    return n @ a - np.linalg.norm(c * (n @ b))
  if kind == 'box':
    return n @ a - np.sum(c * np.abs(n @ b))
  return min(n @ a, n @ b) - c


def _hand(rng, scale, object_radius):
  """Palm, fingers and thumb of a right hand in its own frame, curled to wrap
  an object of the given radius lying on the palm."""
  s = scale
  solids = [('ellipsoid', np.zeros(3), _axis_rotation((0, 0, 1), rng.normal(0, 0.05)),
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
  rotation = (_axis_rotation((0, 0, 1), np.deg2rad(rng.uniform(-35, 35)))
              @ _axis_rotation((0, 1, 0), np.deg2rad(rng.uniform(-20, 20))))
  if kind == 'sphere':
    return ('ellipsoid', centre, np.eye(3), extent, OBJECT), radius
  if kind == 'cylinder':
    half = rng.uniform(*CYLINDER_HALF_LENGTH) * rotation[:, 0]
    return ('cylinder', centre - half, centre + half, radius, OBJECT), radius
  return ('box', centre, rotation, extent, OBJECT), radius


def _background(rng, rig, focal, height, width):
  """Wall, maybe a table touching or near the hand, and clutter, all behind the rig."""
  solids, planes = [], []
  far = -min(_lowest(solid, -_FORWARD) for solid in rig)
  # Each plane n . x = c leaves the whole rig (and the camera) on the side n points to.
  for normal, gap in [((rng.normal(0, 0.2), rng.normal(0, 0.2), -1.0), (30.0, 700.0)),
                      ((rng.normal(0, 0.2), -1.0, -rng.uniform(0.3, 1.2)), (0.0, 120.0))]:
    if gap[0] == 0.0 and rng.uniform() < 0.3:
      continue  # No table.
    normal = np.asarray(normal) / np.linalg.norm(normal)
    offset = min(_lowest(solid, normal) for solid in rig) - rng.uniform(*gap)
    planes.append((normal * offset, normal))
  for _ in range(rng.integers(0, 4)):  # Clutter standing behind the hand.
    size = rng.uniform(30, 120)
    z = far + size * 1.8 + rng.uniform(20, 400)
    x, y = (rng.uniform(-0.5, 0.5, 2) * (width, height)) / focal * z
    centre = np.array([x, y, z])
    if rng.uniform() < 0.5:
      solids.append(('ellipsoid', centre, np.eye(3), np.full(3, size), 0))
    else:
      solids.append(('box', centre, _random_rotation(rng),
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
  rotation = _random_rotation(rng)
  if rng.uniform() < 0.5:  # A left hand: the right one mirrored.
    rotation = rotation @ np.diag([-1.0, 1.0, 1.0])
  # Rotate about the midpoint of the palm (the origin) and the object's centre.
  centre = _bounding_sphere(grasped)[0] / 2
  rig = [_move(solid, rotation, -rotation @ centre) for solid in rig]
  # Push it back until its nearest point is at the drawn distance.
  low, high = NEAREST_MM
  z = (low + (high - low) * rng.uniform() ** NEAREST_POWER
       - min(_lowest(solid, _FORWARD) for solid in rig))
  # The rig's centre projects into the middle 40% of the frame.
  x, y = (rng.uniform(0.3, 0.7, 2) - 0.5) * (width, height) / focal * z
  return [_move(solid, np.eye(3), np.array([x, y, z])) for solid in rig]


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
    window = _window(solid, focal, height, width)
    kind, a, b, c, solid_label = solid
    hit = _CAST[kind](rays[window], a, b, c)
    nearer = hit < t[window]
    t[window][nearer], label[window][nearer] = hit[nearer], solid_label
  # Planes end (a table edge) before they come nearer than the rig.
  edge = rng.uniform(*PLANE_EDGE_MM) + min(_lowest(solid, _FORWARD) for solid in rig)
  for point, normal in planes:
    hit = _plane(rays, point, normal)
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


@dataclasses.dataclass(eq=False)
class SyntheticHandsConfig(tfds.core.BuilderConfig):
  """Frame size, examples per split and the seed every example is drawn from."""
  height: int = 96
  width: int = 128
  num_train: int = 1200
  num_val: int = 100
  num_test: int = 200
  seed: int = 0


class SyntheticHands(tfds.core.GeneratorBasedBuilder):
  """Synthetic hand-object depth frames with InterSegHands' classes and format."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = [
      SyntheticHandsConfig(name='demo', description='96x128 (640x480 / 5), '
                           '1200 / 100 / 200 frames.'),
      SyntheticHandsConfig(name='tiny', description='48x64, 16 / 4 / 4, for tests.',
                           height=48, width=64, num_train=16, num_val=4, num_test=4),
  ]
  DEFAULT_CONFIG_NAME = 'demo'

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=interseg.features(),
        supervised_keys=('image', 'label'),
        # Keep generation order: example i of a split is index i, as its seed says.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    sizes = {'train': config.num_train, 'val': config.num_val, 'test': config.num_test}
    return {split: self._generate_examples(split, num) for split, num in sizes.items()}

  def _generate_examples(self, split: str, num_examples: int):
    config = self.builder_config
    for index in range(num_examples):
      rng = np.random.default_rng((config.seed, SPLIT_IDS[split], index))
      depth, label = render_example(rng, config.height, config.width)
      file_name = f'{split}_{index:05d}.png'
      yield file_name, {'image': interseg.depth_png(depth), 'label': _png(label),
                        'file_name': file_name}


def _png(array: np.ndarray) -> bytes:
  """PNG bytes written by PIL (TFDS would need TensorFlow to encode arrays)."""
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG')
  return buffer.getvalue()
