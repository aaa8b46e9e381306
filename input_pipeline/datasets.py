"""The segmentation data sets and their class names, opened as random-access sources.

ZeroWaste-f (docs/data.md section 1: 5 classes, ignore label 255) and the synthetic
stand-in with the same classes; InterSegHands (section 3: depth, 3 classes) and its
synthetic stand-in. `load_source` prepares a TFDS data set on first use (the
synthetic ones are generated, ZeroWaste-f and InterSegHands are read from their
manual directories) and opens one split as an array_record data source: random
access, `len()`, pickleable, so grain can shard it per JAX process and read it from
worker processes. Neither preparing nor reading needs TensorFlow (PNG bytes are
written and decoded by PIL).

Preparing is safe to kill and to start from several runs at once: one preparation
at a time holds a lock beside the data set, removes what a killed one left and
writes into a temporary folder that TFDS renames when the data set is complete. A
manual data set already prepared is checked against its manual directory, so an
edited folder is refused rather than silently ignored.
"""
import fcntl
import os
import shutil
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import interseg
from input_pipeline import synthetic_hands
from input_pipeline import synthetic_waste
from input_pipeline import zerowaste
from input_pipeline.errors import DataError

IGNORE_INDEX = 255
SPLITS = ('train', 'val', 'test')
# Every builder here; a plain mapping, so an unknown name fails with the list.
BUILDERS = {
    'synthetic_waste': synthetic_waste.SyntheticWaste,
    'zero_waste_f': zerowaste.ZeroWasteF,
    'synthetic_hands': synthetic_hands.SyntheticHands,
    'inter_seg_hands': interseg.InterSegHands,
}
# Class names by label value, from each data set's own module.
CLASS_NAMES = {
    'synthetic_waste': zerowaste.CLASSES,  # the stand-in has ZeroWaste-f's classes
    'zero_waste_f': zerowaste.CLASSES,
    'synthetic_hands': interseg.CLASSES,  # ... and this one InterSegHands'
    'inter_seg_hands': interseg.CLASSES,
}
# Colours by label value, for predictions and overlays.
PALETTES = {
    'synthetic_waste': zerowaste.PALETTE,
    'zero_waste_f': zerowaste.PALETTE,
    'synthetic_hands': interseg.PALETTE,
    'inter_seg_hands': interseg.PALETTE,
}
# Layout checks of the data sets read from a manual directory, run before TFDS's own
# (which fails on a missing folder with an AssertionError about "manual directory").
MANUAL_LAYOUT_CHECKS = {
    'zero_waste_f': zerowaste.find_pairs,
    'inter_seg_hands': interseg.find_pairs,
}
# Held, beside the data set's version folders, by the one process preparing it.
PREPARE_LOCK = '.prepare.lock'


class SegmentationSource:
  """A TFDS data source whose examples are `{'image', 'label', 'file_name'}`.

  TFDS decodes the label as (H, W, 1) and the file name as bytes; this squeezes
  the label to (H, W) and decodes the name, so transforms see one format. The image
  keeps its channel axis: uint8 (H, W, 3) RGB, or uint16 (H, W, 1) depth in mm.
  """

  def __init__(self, source: Any, name: str, split: str, image_dtype=np.uint8,
               class_names: tuple[str, ...] = ()):
    self._source = source
    self.name = name
    self.split = split
    self.image_dtype = np.dtype(image_dtype)
    self.class_names = tuple(class_names)  # by label value

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    example = self._source[index]
    return {
        'image': np.asarray(example['image'], self.image_dtype),
        'label': np.asarray(example['label'], np.uint8)[..., 0],
        'file_name': example['file_name'].decode('utf-8'),
    }

  def __repr__(self) -> str:
    return f'SegmentationSource({self.name}, {self.split}, {len(self)} examples)'


def make_builder(name: str, *, data_dir: str,
                 builder_config: str | None = None) -> tfds.core.DatasetBuilder:
  """Instantiates a builder of this package (nothing is prepared yet).

  Args:
    name: a key of `BUILDERS`: 'synthetic_waste', 'zero_waste_f', 'synthetic_hands'
      or 'inter_seg_hands'.
    data_dir: TFDS data directory.
    builder_config: builder config name ('demo', 'tiny' for the synthetic sets; None
      for their default, and for the manual ones, which have no configs).

  Returns:
    The builder, writing and reading array_record files.

  Raises:
    DataError: unknown data set or builder config (the valid ones are listed).
  """
  if name not in BUILDERS:
    raise DataError(f'Unknown data set {name!r}; valid: {sorted(BUILDERS)}.')
  builder_cls = BUILDERS[name]
  configs = [config.name for config in builder_cls.BUILDER_CONFIGS]
  if builder_config is not None and builder_config not in configs:
    raise DataError(f'Unknown builder config {builder_config!r} of {name}; '
                    f'valid: {configs or "none (leave it unset)"}.')
  return builder_cls(data_dir=os.fspath(data_dir), config=builder_config,
                     file_format='array_record')


def _prepare(builder: tfds.core.DatasetBuilder, name: str, manual_dir: str | None,
             builder_config: str | None) -> tfds.core.DatasetBuilder:
  """Prepares the data set of `builder`, unless another run did while this one waited.

  Returns:
    A builder of the prepared data set.
  """
  folder = builder.data_path.parent
  folder.mkdir(parents=True, exist_ok=True)
  with open(os.path.join(folder, PREPARE_LOCK), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Released on closing, and when the process dies.
    if builder.data_path.exists() and builder.is_prepared():  # By the run we waited for.
      return make_builder(name, data_dir=builder.data_dir_root,
                          builder_config=builder_config)
    # A preparation killed outright leaves TFDS's temporary folder
    # `incomplete.XXXXXX_<version>` behind, which TFDS never reuses nor removes (each
    # preparation draws a new name); under the lock none of them is in use.
    for stale in folder.glob(f'{tfds.core.constants.INCOMPLETE_PREFIX}*_'
                             f'{builder.data_path.name}'):
      shutil.rmtree(stale)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=download_config)
  return builder


def load_source(name: str, split: str, *, data_dir: str, manual_dir: str | None = None,
                builder_config: str | None = None) -> SegmentationSource:
  """Opens one split of a data set, preparing the data set first if needed.

  Args:
    name: a key of `BUILDERS`, see `make_builder`.
    split: 'train', 'val' or 'test'.
    data_dir: TFDS data directory (prepared data sets live under it).
    manual_dir: where ZeroWaste-f or InterSegHands was put; read while preparing
      it, and afterwards, where given and present, compared with what was prepared.
    builder_config: builder config name, see `make_builder`.

  Returns:
    A pickleable random-access source of dicts: 'image' uint8 (H, W, 3) RGB for the
    waste sets, uint16 (H, W, 1) depth in mm (0 = missing) for the hand sets; 'label'
    uint8 (H, W) with values below the number of classes or 255; 'file_name' str.

  Raises:
    DataError: unknown name, config or split, or a split the prepared data set does
      not have (InterSegHands without val / test); for the manual data sets, a
      manual directory that is missing, not in the expected layout, or holds a bad
      file, or, once prepared, a manual directory changed since (a resumed run must
      not train on other data than it started with).
  """
  builder = make_builder(name, data_dir=data_dir, builder_config=builder_config)
  if split not in SPLITS:
    raise DataError(f'Unknown split {split!r} of {name}; valid: {list(SPLITS)}.')
  # (`is_prepared` alone logs a warning when the folder does not exist yet.)
  if builder.data_path.exists() and builder.is_prepared():
    if name in MANUAL_LAYOUT_CHECKS and manual_dir and os.path.isdir(manual_dir):
      builder.check_unchanged(manual_dir)
  else:
    if name in MANUAL_LAYOUT_CHECKS:  # The whole folder, before anything is written.
      MANUAL_LAYOUT_CHECKS[name](manual_dir)
    builder = _prepare(builder, name, manual_dir, builder_config)
  if split not in builder.info.splits:
    raise DataError(f'{name} in {builder.data_dir} has no split {split!r}; it has '
                    f'{sorted(builder.info.splits)}.')
  return SegmentationSource(builder.as_data_source(split), name, split,
                            builder.info.features['image'].np_dtype, CLASS_NAMES[name])
