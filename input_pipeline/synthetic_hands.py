"""Synthetic hand-object depth frames: the embedded default data set of DenseAttentionSeg.

A TFDS builder (`synthetic_hands`, array_record) standing in for InterSegHands
(docs/data.md section 3: one 16-bit depth channel in millimetres, labels 0
background, 1 hand, 2 object) so that the DenseAttentionSeg demo trains without the unreleased
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
The frames are drawn by `input_pipeline.hand_renderer`.
"""
import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import builders
from input_pipeline import hand_renderer
from input_pipeline import image_files
from input_pipeline import interseg

@dataclasses.dataclass(eq=False)
class SyntheticHandsConfig(tfds.core.BuilderConfig):
  """Frame size, examples per split and the seed every example is drawn from."""
  height: int = 96
  width: int = 128
  num_train: int = 1200
  num_val: int = 100
  num_test: int = 200
  seed: int = 0


class SyntheticHands(builders.GeneratedBuilder):
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

  def image_feature(self) -> tfds.features.FeatureConnector:
    return interseg.DepthImage()

  def encode_example(self, rng: np.random.Generator) -> tuple[bytes, bytes]:
    config = self.builder_config
    depth, label = hand_renderer.render_example(rng, config.height, config.width)
    return interseg.depth_png(depth), image_files.png_bytes(label)
