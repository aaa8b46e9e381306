"""The two kinds of TFDS segmentation builder here: generated, and read from a folder.

`GeneratedBuilder` serves the synthetic stand-ins: example i of a split is drawn from
its own seed `(config.seed, split id, i)`, so a data set is the same on every machine
and any example can be regenerated alone. `PairFolderBuilder` serves the data sets a
user puts into a manual directory as image/label file pairs (ZeroWaste-f,
InterSegHands): the whole layout is checked first, then every pair is read, checked
and stored in file-name order. Both store PNG bytes (no TensorFlow needed).
"""
import abc
import os
import sys

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline.errors import DataError

SPLIT_IDS = {'train': 0, 'val': 1, 'test': 2}


class SegmentationBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A segmentation data set: `image` (the subclass's `image_feature`), an 8-bit PNG
  `label` map and the `file_name`, stored in generation order. The description is the
  subclass module's docstring; `HOMEPAGE` and `LICENSE` go into the data set's info.
  """

  HOMEPAGE = None
  LICENSE = None

  @abc.abstractmethod
  def image_feature(self) -> tfds.features.FeatureConnector:
    """The feature of the `image` entry."""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=sys.modules[type(self).__module__].__doc__,
        features=tfds.features.FeaturesDict({
            'image': self.image_feature(),
            'label': tfds.features.Image(shape=(None, None, 1), encoding_format='png'),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage=self.HOMEPAGE,
        license=self.LICENSE,
        # Generation order: example i of a generated split is drawn from seed i, and
        # a folder's examples stay in file-name order.
        disable_shuffling=True,
    )


class GeneratedBuilder(SegmentationBuilder, skip_registration=True):
  """A builder whose examples are drawn, per example, from the config's seed.

  Subclasses have a builder config with `seed`, `num_train`, `num_val`, `num_test`,
  and define `encode_example`.
  """

  @abc.abstractmethod
  def encode_example(self, rng: np.random.Generator) -> tuple[bytes, bytes]:
    """Draws one example from `rng`: (encoded image, encoded label)."""

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    sizes = {'train': config.num_train, 'val': config.num_val, 'test': config.num_test}
    return {split: self._generate_examples(split, num) for split, num in sizes.items()}

  def _generate_examples(self, split: str, num_examples: int):
    config = self.builder_config
    for index in range(num_examples):
      rng = np.random.default_rng((config.seed, SPLIT_IDS[split], index))
      image, label = self.encode_example(rng)
      file_name = f'{split}_{index:05d}.png'
      yield file_name, {'image': image, 'label': label, 'file_name': file_name}


class PairFolderBuilder(SegmentationBuilder, skip_registration=True):
  """A builder reading image/label file pairs from its manual directory.

  Subclasses set `TITLE` (the data set's name in messages) and define `find_pairs`
  and `read_pair`.
  """

  TITLE = ''

  @staticmethod
  @abc.abstractmethod
  def find_pairs(manual_dir: str | None) -> dict[str, list[tuple[str, str]]]:
    """Checks the folder's layout: split -> (image path, label path) pairs."""

  @staticmethod
  @abc.abstractmethod
  def read_pair(image_path: str, label_path: str) -> tuple[bytes, bytes]:
    """Reads and checks one pair: (image PNG bytes, label PNG bytes)."""

  def _split_generators(self, dl_manager):
    # `dl_manager.manual_dir` raises a bare AssertionError for a missing folder;
    # `find_pairs` checks the whole layout first and says what is wrong.
    try:
      manual_dir = dl_manager.manual_dir
    except AssertionError as e:
      raise DataError(f'{self.TITLE} manual directory: {e}') from e
    pairs = self.find_pairs(os.fspath(manual_dir))
    return {split: self._generate_examples(split_pairs)
            for split, split_pairs in pairs.items()}

  def _generate_examples(self, pairs: list[tuple[str, str]]):
    for index, (image_path, label_path) in enumerate(pairs):
      image, label = self.read_pair(image_path, label_path)
      yield index, {'image': image, 'label': label,
                    'file_name': os.path.basename(image_path)}
