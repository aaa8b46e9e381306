"""ZeroWaste-f (semantic segmentation) as a TFDS builder reading a manual directory.

SPEC section 4: the data set is CC BY-NC 4.0 and cannot be downloaded for the user,
who unpacks it into a folder in the official layout

    {train,val,test}/data/*.PNG       RGB frames (1920x1080)
    {train,val,test}/sem_seg/*.PNG    uint8 labels 0..4, 255 = ignore

(3002 / 572 / 929 frames); an image and its label share a file stem. Preparing
checks every file once (pairs, decodability, sizes, label values) and raises
`DataError` naming the file, so a broken download fails before training, not hours
into it. Images are stored as PNG bytes (the original file where it already is an
RGB / 8-bit single-channel PNG), so no TensorFlow is needed to write or read them.
"""
import io
import os

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from input_pipeline.errors import DataError

SPLITS = ('train', 'val', 'test')
IMAGE_DIR = 'data'
LABEL_DIR = 'sem_seg'
NUM_CLASSES = 5
IGNORE_INDEX = 255
LAYOUT = ('{train,val,test}/data/*.PNG (RGB frames) and {train,val,test}/sem_seg/*.PNG '
          '(8-bit single-channel labels 0..4, 255 = ignore), image and label sharing '
          'a file stem')
# PIL modes of single-channel 8-bit PNGs: grey, and palette (whose pixels are indices).
_LABEL_MODES = ('L', 'P')


def pngs_by_stem(directory: str) -> dict[str, str]:
  """Maps file stem -> path for the *.png / *.PNG files of `directory`."""
  paths = {}
  for name in sorted(os.listdir(directory)):
    stem, ext = os.path.splitext(name)
    if ext.lower() != '.png':
      continue
    if stem in paths:
      raise DataError(f'{os.path.join(directory, name)}: a second file with stem '
                      f'{stem!r} (also {paths[stem]}); images and labels pair by stem.')
    paths[stem] = os.path.join(directory, name)
  return paths


def find_pairs(manual_dir: str | None) -> dict[str, list[tuple[str, str]]]:
  """Lists the (image, label) file pairs of every split, checking the layout.

  Args:
    manual_dir: the folder ZeroWaste-f was unpacked into.

  Returns:
    split name -> sorted list of (image path, label path).

  Raises:
    DataError: the folder or a split folder is missing, or some images have no
      label or some labels no image (all of them are listed).
  """
  if not manual_dir:
    raise DataError('ZeroWaste-f is not prepared yet and no manual directory was given: '
                    'set manual_dir to the folder it was unpacked into, laid out as '
                    f'{LAYOUT}.')
  if not os.path.isdir(manual_dir):
    raise DataError(f'ZeroWaste-f manual directory {manual_dir!r} does not exist; unpack '
                    f'the data set there in the official layout: {LAYOUT}.')
  pairs, unmatched = {}, []
  for split in SPLITS:
    folders = [os.path.join(manual_dir, split, sub) for sub in (IMAGE_DIR, LABEL_DIR)]
    for folder in folders:
      if not os.path.isdir(folder):
        raise DataError(f'{folder}: folder missing; expected the layout {LAYOUT}.')
    images, labels = (pngs_by_stem(folder) for folder in folders)
    unmatched += [f'{path} (no label in {folders[1]})'
                  for stem, path in images.items() if stem not in labels]
    unmatched += [f'{path} (no image in {folders[0]})'
                  for stem, path in labels.items() if stem not in images]
    pairs[split] = [(images[stem], labels[stem])
                    for stem in sorted(images) if stem in labels]
  if unmatched:
    raise DataError(f'ZeroWaste-f in {manual_dir}: {len(unmatched)} unpaired files:\n  '
                    + '\n  '.join(unmatched))
  return pairs


def open_png(path: str) -> tuple[Image.Image, bytes]:
  """Reads and fully decodes one PNG; returns the image and the file's bytes."""
  with open(path, 'rb') as f:
    data = f.read()
  try:
    image = Image.open(io.BytesIO(data))
    image.load()  # Decode every pixel now: a truncated file fails here.
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ...
    raise DataError(f'{path}: not a readable PNG ({e}).') from e
  if image.format != 'PNG':
    raise DataError(f'{path}: is a {image.format} file, expected PNG.')
  return image, data


def _png_bytes(image: Image.Image) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format='PNG')
  return buffer.getvalue()


def read_pair(image_path: str, label_path: str) -> tuple[bytes, bytes]:
  """Checks one image / label pair and returns the PNG bytes to store.

  Args:
    image_path: the RGB frame.
    label_path: its label map.

  Returns:
    (image PNG bytes, RGB; label PNG bytes, single-channel 8-bit).

  Raises:
    DataError: unreadable file, label not single-channel 8-bit, sizes differ, or a
      label value outside 0..4 that is not 255.
  """
  image, image_bytes = open_png(image_path)
  label, label_bytes = open_png(label_path)
  if image.mode != 'RGB':  # Stored as RGB so that every example has 3 channels.
    image_bytes = _png_bytes(image.convert('RGB'))
  if label.mode not in _LABEL_MODES:
    raise DataError(f'{label_path}: label PNG has mode {label.mode!r}; expected a '
                    'single-channel 8-bit PNG (mode L or P).')
  if image.size != label.size:
    raise DataError(f'{label_path}: label is {label.size[0]}x{label.size[1]} but its '
                    f'image {image_path} is {image.size[0]}x{image.size[1]} (W x H).')
  values = np.unique(np.asarray(label))
  bad = values[(values >= NUM_CLASSES) & (values != IGNORE_INDEX)]
  if bad.size:
    raise DataError(f'{label_path}: label values {bad.tolist()} are outside 0..'
                    f'{NUM_CLASSES - 1} and not the ignore label {IGNORE_INDEX}.')
  return image_bytes, label_bytes


class ZeroWasteF(tfds.core.GeneratorBasedBuilder):
  """ZeroWaste-f semantic segmentation (5 classes, ignore label 255)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Download ZeroWaste-f (zerowaste-f-final.zip, http://ai.bu.edu/zerowaste/), '
      'unpack it and pass the folder holding the splits as manual_dir. Layout: '
      f'{LAYOUT}.')

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3), encoding_format='png'),
            'label': tfds.features.Image(shape=(None, None, 1), encoding_format='png'),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage='http://ai.bu.edu/zerowaste/',
        license='CC BY-NC 4.0',
        disable_shuffling=True,  # Examples in file-name order.
    )

  def _split_generators(self, dl_manager):
    # `dl_manager.manual_dir` raises a bare AssertionError for a missing folder;
    # `find_pairs` checks the whole layout first and says what is wrong.
    pairs = find_pairs(os.fspath(self._manual_dir_path(dl_manager)))
    return {split: self._generate_examples(split_pairs)
            for split, split_pairs in pairs.items()}

  @staticmethod
  def _manual_dir_path(dl_manager):
    try:
      return dl_manager.manual_dir
    except AssertionError as e:
      raise DataError(f'ZeroWaste-f manual directory: {e}') from e

  def _generate_examples(self, pairs: list[tuple[str, str]]):
    for index, (image_path, label_path) in enumerate(pairs):
      image, label = read_pair(image_path, label_path)
      yield index, {'image': image, 'label': label,
                    'file_name': os.path.basename(image_path)}
