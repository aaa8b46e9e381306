"""ImageNet-1K (ILSVRC 2012) and its synthetic stand-in, opened as classification sources.

The data side of backbone pretraining. `load_classification_source` opens one split
of TFDS `imagenet2012` (1000 classes; 'train' 1,281,167 and 'validation' 50,000
images) or of the generated `synthetic_imagenet` as an array_record data source:
random access, `len()`, pickleable, so grain can shard it per JAX process and read
it from worker processes. Reading needs no TensorFlow: TFDS hands over the stored
JPEG bytes and PIL decodes them here, to 3-channel RGB whatever the file holds.

ImageNet is never prepared on the fly. Prepare it once with

  python -m input_pipeline.imagenet prepare --manual_dir DIR --data_dir DIR

after putting ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from
https://image-net.org/download-images, after registering) into the manual_dir.
Preparation runs TFDS's own `imagenet2012` builder, which reads the tars with
`tf.io.gfile`, so it needs TensorFlow (`pip install tensorflow`) this one time; it
writes array_record files to <data_dir>/imagenet2012/<version>/ and takes hours.
Training reads those files with grain and does not need TensorFlow.
"""
import argparse
import importlib.util
import io
import os
import sys
from typing import Any

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from input_pipeline import synthetic_imagenet
from input_pipeline.errors import DataError

IMAGENET_SPLIT_SIZES = {'train': 1_281_167, 'validation': 50_000}
IMAGENET_NUM_CLASSES = 1000
MANUAL_FILES = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')
# Every classification builder; a plain mapping, so an unknown name fails with the list.
CLASSIFICATION_BUILDERS = {
    'imagenet2012': tfds.builder_cls('imagenet2012'),
    'synthetic_imagenet': synthetic_imagenet.SyntheticImagenet,
}


def decode_rgb(data: bytes) -> np.ndarray:
  """Decodes JPEG / PNG bytes to uint8 (H, W, 3) RGB with PIL.

  TFDS's own numpy decoding only widens grayscale; CMYK (a few ImageNet JPEGs
  before TFDS's fix), palette or RGBA files would keep 1 or 4 channels.
  """
  with Image.open(io.BytesIO(data)) as image:
    if image.mode != 'RGB':
      image = image.convert('RGB')
    return np.asarray(image)


class ClassificationSource:
  """A TFDS data source whose examples are `{'image', 'label', 'file_name'}`.

  The image is decoded here rather than by TFDS (see `decode_rgb`); the label
  becomes an int32 scalar and the file name a str. Arrays are read-only.
  """

  def __init__(self, source: Any, name: str, split: str, num_classes: int):
    self._source = source
    self.name = name
    self.split = split
    self.num_classes = num_classes

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    example = self._source[index]
    return {
        'image': decode_rgb(example['image']),
        'label': np.int32(example['label']),
        'file_name': example['file_name'].decode('utf-8'),
    }

  def __repr__(self) -> str:
    return (f'ClassificationSource({self.name}, {self.split}, {len(self)} examples, '
            f'{self.num_classes} classes)')


def prepare_command(manual_dir: str | None, data_dir: str) -> str:
  """The one-time ImageNet preparation command, with the given folders filled in."""
  return (f'python -m input_pipeline.imagenet prepare --manual_dir '
          f'{manual_dir or "DIR_WITH_ILSVRC2012_TARS"} --data_dir {data_dir}')


def _prepared_imagenet(data_dir: str, manual_dir: str | None) -> tfds.core.DatasetBuilder:
  """The imagenet2012 builder over an array_record folder prepared before."""
  # No file_format argument: the info must say what was written, not what we want.
  builder = CLASSIFICATION_BUILDERS['imagenet2012'](data_dir=data_dir)
  folder = builder.data_path
  # (`is_prepared` alone logs a warning when the folder does not exist yet.)
  if not (folder.exists() and builder.is_prepared()):
    raise DataError(
        f'ImageNet-1K (imagenet2012 {builder.version}) is not prepared in {folder}. '
        f'Put {" and ".join(MANUAL_FILES)} in a folder and prepare it once (needs '
        f'TensorFlow, takes hours): {prepare_command(manual_dir, data_dir)}')
  formats = builder.info.available_file_formats()
  if tfds.core.FileFormat.ARRAY_RECORD not in formats:
    raise DataError(
        f'ImageNet-1K in {folder} is prepared as {sorted(f.value for f in formats)}, '
        'but grain reads array_record. Convert it in place (needs TensorFlow): '
        f'tfds convert_format --dataset_version_dir={folder} '
        '--out_file_format=array_record, or prepare it again into another data_dir: '
        f'{prepare_command(manual_dir, "NEW_DATA_DIR")}')
  return builder


def _synthetic(name: str, data_dir: str,
               builder_config: str | None) -> tfds.core.DatasetBuilder:
  """A generated builder, prepared on first use."""
  builder_cls = CLASSIFICATION_BUILDERS[name]
  configs = [config.name for config in builder_cls.BUILDER_CONFIGS]
  if builder_config is not None and builder_config not in configs:
    raise DataError(f'Unknown builder config {builder_config!r} of {name}; '
                    f'valid: {configs}.')
  builder = builder_cls(data_dir=data_dir, config=builder_config,
                        file_format='array_record')
  if not (builder.data_path.exists() and builder.is_prepared()):
    builder.download_and_prepare()
  return builder


def load_classification_source(name: str, split: str, *, data_dir: str,
                               manual_dir: str | None = None,
                               builder_config: str | None = None) -> ClassificationSource:
  """Opens one split of a classification data set.

  Args:
    name: a key of `CLASSIFICATION_BUILDERS`: 'imagenet2012' or 'synthetic_imagenet'.
    split: 'train' or 'validation' (also 'test', labels -1, for an imagenet2012
      prepared with the test tar).
    data_dir: TFDS data directory (prepared data sets live under it).
    manual_dir: where the ImageNet tars are; only used to fill in the preparation
      command of the error raised when imagenet2012 is not prepared.
    builder_config: 'demo' or 'tiny' for synthetic_imagenet (None: 'demo'); must be
      None for imagenet2012.

  Returns:
    A pickleable random-access source of dicts: 'image' uint8 (H, W, 3) RGB of the
    stored size, 'label' int32 scalar below `num_classes`, 'file_name' str.

  Raises:
    DataError: unknown name, config or split; imagenet2012 not prepared under
      data_dir, or prepared in a format other than array_record (the message names
      the folder and the command that fixes it).
  """
  if name not in CLASSIFICATION_BUILDERS:
    raise DataError(f'Unknown data set {name!r}; '
                    f'valid: {sorted(CLASSIFICATION_BUILDERS)}.')
  data_dir = os.fspath(data_dir)
  if name == 'imagenet2012':
    if builder_config is not None:
      raise DataError(f'imagenet2012 has no builder configs; got {builder_config!r}.')
    builder = _prepared_imagenet(data_dir, manual_dir)
  else:
    builder = _synthetic(name, data_dir, builder_config)
  if split not in builder.info.splits:
    raise DataError(f'{name} in {builder.data_path} has no split {split!r}; it has '
                    f'{sorted(builder.info.splits)}.')
  # Hand over the stored bytes: `decode_rgb` makes every image 3-channel RGB.
  source = builder.as_data_source(split, decoders={'image': tfds.decode.SkipDecoding()})
  return ClassificationSource(source, name, split,
                              builder.info.features['label'].num_classes)


def prepare_imagenet(manual_dir: str, data_dir: str) -> str:
  """Prepares TFDS imagenet2012 as array_record files, once.

  Args:
    manual_dir: folder holding ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar.
    data_dir: TFDS data directory to write <data_dir>/imagenet2012/<version>/ into.

  Returns:
    The folder the prepared data set was written to.

  Raises:
    DataError: manual_dir missing or without the two tars.
    ImportError: TensorFlow is not installed (TFDS reads the tars with it).
  """
  if not os.path.isdir(manual_dir):
    raise DataError(f'{manual_dir}: no such folder (the ImageNet manual_dir).')
  missing = [f for f in MANUAL_FILES if not os.path.isfile(os.path.join(manual_dir, f))]
  if missing:
    raise DataError(f'{manual_dir}: missing {", ".join(missing)} (download them from '
                    'https://image-net.org/download-images after registering).')
  if importlib.util.find_spec('tensorflow') is None:
    raise ImportError(
        'Preparing imagenet2012 needs TensorFlow once (TFDS reads the tars with '
        'tf.io.gfile): pip install tensorflow, then run this again. Training reads '
        'the prepared array_record files with grain and does not need it.')
  builder = CLASSIFICATION_BUILDERS['imagenet2012'](
      data_dir=os.fspath(data_dir), file_format='array_record')
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return os.fspath(builder.data_path)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m input_pipeline.imagenet', description=__doc__.split('\n\n')[0])
  commands = parser.add_subparsers(dest='command', required=True)
  prepare = commands.add_parser(
      'prepare', help='one-time TFDS imagenet2012 preparation (needs TensorFlow)')
  prepare.add_argument('--manual_dir', required=True,
                       help=f'folder holding {" and ".join(MANUAL_FILES)}')
  prepare.add_argument('--data_dir', required=True, help='TFDS data directory')
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  try:
    folder = prepare_imagenet(args.manual_dir, args.data_dir)
  except (DataError, ImportError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'imagenet2012 prepared in {folder}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
