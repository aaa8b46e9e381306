"""Ray casting of analytic solids: where each pixel's ray first hits a scene.

The geometry of the synthetic hand-object frames (`input_pipeline.hand_renderer`).
Rays leave a pinhole camera at the origin with unit directions `d` (..., 3), the
optical axis along +z. Every intersector returns the distance t along each ray to
the first hit in front of the camera, inf where the ray misses, so a z-buffer is
the minimum over solids.

A solid is a tuple (kind, a, b, c, label): ('ellipsoid' | 'box', centre, rotation,
radii or half sizes) or ('capsule' | 'cylinder', end, end, radius); `CAST[kind]`
intersects rays with it. `window` bounds the pixels a solid can cover, `move`
places it, `lowest` bounds it along a direction; `axis_rotation` and
`random_rotation` make rotation matrices.
"""
import numpy as np


def first_hit(t, hit):
  """`t` where the ray hits (`hit`) in front of the camera, inf elsewhere."""
  return np.where(hit & (t > 0), t, np.inf)


def ellipsoid(d, centre, rotation, radii):
  """Ellipsoid with semi-axes `radii` along the columns of `rotation`."""
  o = -(centre @ rotation) / radii  # The ray in the unit sphere's frame.
  v = (d @ rotation) / radii
  a = np.sum(v * v, -1)
  b = v @ o
  h = b * b - a * (o @ o - 1)
  with np.errstate(invalid='ignore'):
    return first_hit((-b - np.sqrt(h)) / a, h >= 0)


def capsule(d, p0, p1, radius):
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
  return np.where(body, first_hit(t_body, body), first_hit(t_cap, (h >= 0) & (hc > 0)))


def cylinder(d, p0, p1, radius):
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
  return np.where(body, first_hit(t_body, body), first_hit(t_cap, cap))


def box(d, centre, rotation, half):
  """Box with half sizes `half` along the columns of `rotation` (slab test)."""
  o = -(centre @ rotation)
  v = d @ rotation
  with np.errstate(divide='ignore', invalid='ignore'):
    t0, t1 = (-half - o) / v, (half - o) / v
  near = np.max(np.minimum(t0, t1), -1)
  far = np.min(np.maximum(t0, t1), -1)
  return first_hit(near, far >= near)


def plane(d, point, normal):
  """Infinite plane through `point` with normal `normal`."""
  with np.errstate(divide='ignore', invalid='ignore'):
    t = (point @ normal) / (d @ normal)
  return first_hit(t, np.isfinite(t))


def axis_rotation(axis, angle):
  """Rotation matrix by `angle` (radians) about `axis` (Rodrigues)."""
  x, y, z = np.asarray(axis, np.float64) / np.linalg.norm(axis)
  k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
  return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def random_rotation(rng):
  """A uniformly random rotation (from a normalised Gaussian quaternion)."""
  w, x, y, z = (lambda q: q / np.linalg.norm(q))(rng.normal(size=4))
  return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                   [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                   [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


# The intersector of each kind of solid: CAST[kind](d, a, b, c) for (kind, a, b, c, _).
CAST = {'ellipsoid': ellipsoid, 'box': box, 'capsule': capsule, 'cylinder': cylinder}


def bounding_sphere(solid):
  """(centre, radius) of a sphere holding the solid."""
  kind, a, b, c, _ = solid
  if kind == 'ellipsoid':
    return a, np.max(c)
  if kind == 'box':
    return a, np.linalg.norm(c)
  return (a + b) / 2, np.linalg.norm(b - a) / 2 + c


def window(solid, focal, height, width):
  """The (rows, cols) slices of the pixels whose rays can hit the solid."""
  (x, y, z), r = bounding_sphere(solid)
  if z - r <= 1.0:  # Reaches the camera plane: no finite projection bound.
    return slice(0, height), slice(0, width)
  bounds = []
  for centre, size in ((x, width), (y, height)):
    low = min((centre - r) / (z - r), (centre - r) / (z + r)) * focal + size / 2
    high = max((centre + r) / (z - r), (centre + r) / (z + r)) * focal + size / 2
    bounds.append(slice(int(np.clip(np.floor(low), 0, size)),
                        int(np.clip(np.ceil(high) + 1, 0, size))))
  return bounds[1], bounds[0]


def move(solid, rotation, translation):
  """The solid under x -> rotation @ x + translation."""
  kind, a, b, c, label = solid
  if kind in ('ellipsoid', 'box'):
    return kind, rotation @ a + translation, rotation @ b, c, label
  return kind, rotation @ a + translation, rotation @ b + translation, c, label


def lowest(solid, n):
  """A lower bound of n . x over the solid (n a unit vector)."""
  kind, a, b, c, _ = solid
  if kind == 'ellipsoid':
    return n @ a - np.linalg.norm(c * (n @ b))
  if kind == 'box':
    return n @ a - np.sum(c * np.abs(n @ b))
  return min(n @ a, n @ b) - c
