"""Synthetic "cluttered waste on a conveyor belt": the embedded default data set.

A TFDS builder (`synthetic_waste`, array_record) standing in for ZeroWaste-f
(docs/data.md section 6: same 5 classes, palette and ignore label) so that
`python launch.py` trains and evaluates without the licensed data. Colour never
tells the classes apart, only shape and texture do (`waste_renderer.py` draws the
images and says how). Each example comes from its own
`np.random.default_rng((seed, split_id, index))`, so a rebuild is byte-identical and
examples do not depend on one another.
"""
import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import builders
from input_pipeline import image_files
from input_pipeline import waste_renderer
from input_pipeline import zerowaste


@dataclasses.dataclass(eq=False)
class SyntheticWasteConfig(tfds.core.BuilderConfig):
  """Image side, examples per split and the seed every example is drawn from."""
  image_size: int = 96
  num_train: int = 1200
  num_val: int = 100
  num_test: int = 200
  seed: int = 0


class SyntheticWaste(builders.GeneratedBuilder):
  """Synthetic cluttered waste on a conveyor belt, ZeroWaste-f classes and labels."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = [
      SyntheticWasteConfig(name='demo', description='96x96, 1200 / 100 / 200 images.'),
      SyntheticWasteConfig(name='tiny', description='48x48, 24 / 8 / 8, for tests.',
                           image_size=48, num_train=24, num_val=8, num_test=8),
  ]
  DEFAULT_CONFIG_NAME = 'demo'

  def image_feature(self) -> tfds.features.FeatureConnector:
    return zerowaste.rgb_image()

  def encode_example(self, rng: np.random.Generator) -> tuple[bytes, bytes]:
    image, label = waste_renderer.render_example(rng, self.builder_config.image_size)
    return image_files.png_bytes(image), image_files.png_bytes(label)
