"""The segmentation data sets, their classes and palette, opened as random-access sources.

SPEC section 4: ZeroWaste-f (5 classes, ignore label 255) and the synthetic stand-in
with the same classes. `load_source` prepares a TFDS data set on first use (the
synthetic one is generated, ZeroWaste-f is read from its manual directory) and opens
one split as an array_record data source: random access, `len()`, pickleable, so
grain can shard it per JAX process and read it from worker processes. Neither
preparing nor reading needs TensorFlow (PNG bytes are written and decoded by PIL).
"""
import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import synthetic_waste
from input_pipeline import zerowaste
from input_pipeline.errors import DataError

ZEROWASTE_CLASSES = ('background', 'rigid_plastic', 'cardboard', 'metal', 'soft_plastic')
ZEROWASTE_PALETTE = ((10, 10, 10), (6, 230, 230), (4, 200, 3), (204, 5, 255),
                     (235, 255, 7))
IGNORE_INDEX = 255
SPLITS = ('train', 'val', 'test')
# Every builder here; a plain mapping, so an unknown name fails with the list.
BUILDERS = {
    'synthetic_waste': synthetic_waste.SyntheticWaste,
    'zero_waste_f': zerowaste.ZeroWasteF,
}


class SegmentationSource:
  """A TFDS data source whose examples are `{'image', 'label', 'file_name'}`.

  TFDS decodes the label as (H, W, 1) and the file name as bytes; this squeezes
  the label to (H, W) and decodes the name, so transforms see one format.
  """

  def __init__(self, source: Any, name: str, split: str):
    self._source = source
    self.name = name
    self.split = split

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    example = self._source[index]
    return {
        'image': np.asarray(example['image'], np.uint8),
        'label': np.asarray(example['label'], np.uint8)[..., 0],
        'file_name': example['file_name'].decode('utf-8'),
    }

  def __repr__(self) -> str:
    return f'SegmentationSource({self.name}, {self.split}, {len(self)} examples)'


def make_builder(name: str, *, data_dir: str,
                 builder_config: str | None = None) -> tfds.core.DatasetBuilder:
  """Instantiates a builder of this package (nothing is prepared yet).

  Args:
    name: 'synthetic_waste' or 'zero_waste_f'.
    data_dir: TFDS data directory.
    builder_config: builder config name ('demo', 'tiny' for synthetic_waste; None
      for its default, and for zero_waste_f, which has no configs).

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


def load_source(name: str, split: str, *, data_dir: str, manual_dir: str | None = None,
                builder_config: str | None = None) -> SegmentationSource:
  """Opens one split of a data set, preparing the data set first if needed.

  Args:
    name: 'synthetic_waste' or 'zero_waste_f'.
    split: 'train', 'val' or 'test'.
    data_dir: TFDS data directory (prepared data sets live under it).
    manual_dir: where ZeroWaste-f was unpacked; only read while preparing it.
    builder_config: builder config name, see `make_builder`.

  Returns:
    A pickleable random-access source of dicts: 'image' uint8 (H, W, 3), 'label'
    uint8 (H, W) with values in 0..4 or 255, 'file_name' str.

  Raises:
    DataError: unknown name, config or split; for ZeroWaste-f, a manual directory
      that is missing, not in the official layout, or holds a bad file.
  """
  builder = make_builder(name, data_dir=data_dir, builder_config=builder_config)
  if split not in SPLITS:
    raise DataError(f'Unknown split {split!r} of {name}; valid: {list(SPLITS)}.')
  # (`is_prepared` alone logs a warning when the folder does not exist yet.)
  if not (builder.data_path.exists() and builder.is_prepared()):
    if name == 'zero_waste_f':
      # Check the layout here too: TFDS would otherwise fail on a missing folder
      # with an AssertionError about "manual directory" before our checks run.
      zerowaste.find_pairs(manual_dir)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=download_config)
  return SegmentationSource(builder.as_data_source(split), name, split)
