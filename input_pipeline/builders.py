"""The two kinds of TFDS segmentation builder here: generated, and read from a folder.

`GeneratedBuilder` serves the synthetic stand-ins: example i of a split is drawn from
its own seed `(config.seed, split id, i)`, so a data set is the same on every machine
and any example can be regenerated alone. `PairFolderBuilder` serves the data sets a
user puts into a manual directory as image/label file pairs (ZeroWaste-f,
InterSegHands): the whole layout is checked first, then every pair is read, checked
and stored in file-name order. Both store PNG bytes (no TensorFlow needed).

A prepared folder data set keeps a fingerprint of its manual directory (the relative
path, size and modification time of every file of its layout, in
`FINGERPRINT_FILE`), so that a manual directory edited after preparation is
noticed (`check_unchanged`) instead of the old prepared set being used silently.
"""
import abc
import json
import os
import sys

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import image_files
from input_pipeline.errors import DataError

SPLIT_IDS = {'train': 0, 'val': 1, 'test': 2}
FINGERPRINT_FILE = 'manual_dir_fingerprint.json'


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


def manual_dir_fingerprint(manual_dir: str, splits: tuple[str, ...],
                           folders: tuple[str, ...]) -> dict[str, list[int]]:
  """The files of a manual directory's layout, by `os.stat` alone (no pixel is read).

  Args:
    manual_dir: the folder holding the split folders.
    splits: the split folders (absent ones are skipped) ...
    folders: ... and the folders in each whose PNG files are read.

  Returns:
    relative path ('train/data/a.png') -> [size in bytes, modification time in ns];
    [-1, -1] for a file that cannot be stat'ed (a link gone dangling).
  """
  files = {}
  for split in splits:
    for folder in folders:
      directory = os.path.join(manual_dir, split, folder)
      try:
        names = sorted(os.listdir(directory))
      except OSError:  # A folder missing or unreadable now: its files count as removed.
        continue
      for name in names:
        if os.path.splitext(name)[1].lower() != '.png':
          continue
        try:
          stat = os.stat(os.path.join(directory, name))
          files[f'{split}/{folder}/{name}'] = [stat.st_size, stat.st_mtime_ns]
        except OSError:
          files[f'{split}/{folder}/{name}'] = [-1, -1]
  return files


def describe_changes(old: dict[str, list[int]], new: dict[str, list[int]]) -> str:
  """'2 files added, 1 changed, e.g. train/data/x.png'; '' when `old == new`."""
  added = sorted(set(new) - set(old))
  removed = sorted(set(old) - set(new))
  changed = sorted(path for path in set(old) & set(new) if old[path] != new[path])
  counts = [f'{len(paths)} {what}' for paths, what in
            ((added, 'added'), (removed, 'removed'), (changed, 'changed')) if paths]
  if not counts:
    return ''
  number, what = counts[0].split(' ')  # '2 files added, 1 changed': the first names files.
  counts[0] = f'{number} {"file" if number == "1" else "files"} {what}'
  example = min(added + removed + changed)
  return f'{", ".join(counts)}, e.g. {image_files.printable(example)}'


class PairFolderBuilder(SegmentationBuilder, skip_registration=True):
  """A builder reading image/label file pairs from its manual directory.

  Subclasses set `TITLE` (the data set's name in messages), `FOLDERS` (the image and
  label folder of a split folder) and define `find_pairs` and `read_pair`.
  """

  TITLE = ''
  SPLITS = tuple(SPLIT_IDS)
  FOLDERS = ()

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
    manual_dir = os.fspath(manual_dir)
    pairs = self.find_pairs(manual_dir)
    # Taken before any file is read: a file edited while being read counts as changed.
    self._fingerprint = {
        'manual_dir': os.path.abspath(manual_dir),
        'files': manual_dir_fingerprint(manual_dir, self.SPLITS, self.FOLDERS)}
    return {split: self._generate_examples(split_pairs)
            for split, split_pairs in pairs.items()}

  def _download_and_prepare(self, dl_manager, download_config=None):
    super()._download_and_prepare(dl_manager, download_config)
    # `data_dir` is still TFDS's temporary folder, renamed to `data_path` once the
    # data set is complete: the fingerprint appears with the data set, or not at all.
    with open(os.path.join(self.data_dir, FINGERPRINT_FILE), 'w') as f:
      json.dump(self._fingerprint, f)

  def check_unchanged(self, manual_dir: str) -> None:
    """Checks that the prepared data set was prepared from `manual_dir` as it is now.

    A data set prepared without a fingerprint (by an older version) is not checked.

    Args:
      manual_dir: an existing folder.

    Raises:
      DataError: a file of the layout was added, removed or changed (size or
        modification time) since preparation; or the fingerprint is unreadable.
    """
    path = os.path.join(self.data_path, FINGERPRINT_FILE)
    if not os.path.exists(path):
      logging.info('%s in %s has no %s (prepared by an older version): not compared '
                   'with %s.', self.TITLE, self.data_path, FINGERPRINT_FILE, manual_dir)
      return
    try:
      with open(path) as f:
        fingerprint = json.load(f)
      prepared_from, old = fingerprint['manual_dir'], fingerprint['files']
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise DataError(f'{path}: unreadable ({e}); delete {self.data_path} to prepare '
                      f'{self.TITLE} again.') from e
    changes = describe_changes(old, manual_dir_fingerprint(manual_dir, self.SPLITS,
                                                           self.FOLDERS))
    if not changes:
      return
    if os.path.abspath(manual_dir) == prepared_from:
      what = f'{manual_dir} changed since {self.TITLE} was prepared in {self.data_path}'
    else:
      what = (f'{manual_dir} differs from {prepared_from}, from which {self.TITLE} was '
              f'prepared in {self.data_path}')
    raise DataError(f'{what} ({changes}); delete {self.data_path} to prepare it again.')

  def _generate_examples(self, pairs: list[tuple[str, str]]):
    for index, (image_path, label_path) in enumerate(pairs):
      image, label = self.read_pair(image_path, label_path)
      yield index, {'image': image, 'label': label,
                    'file_name': os.path.basename(image_path)}
