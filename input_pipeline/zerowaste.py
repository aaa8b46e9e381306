"""ZeroWaste-f (semantic segmentation) as a TFDS builder reading a manual directory.

docs/data.md section 1: the data set is CC BY-NC 4.0 and cannot be downloaded for the user,
who unpacks it into a folder in the official layout

    {train,val,test}/data/*.PNG       RGB frames (1920x1080)
    {train,val,test}/sem_seg/*.PNG    uint8 labels 0..4, 255 = ignore

(3002 / 572 / 929 frames); an image and its label share a file stem. Preparing
checks every file once (pairs, decodability, sizes, label values) and raises
`DataError` naming the file, so a broken download fails before training, not hours
into it. Images are stored as PNG bytes (the original file where it already is an
8-bit RGB / 8-bit single-channel PNG), so no TensorFlow is needed to write or read
them. An 8-bit grey or palette frame is stored converted to RGB, which loses
nothing; a 16-bit frame or one with alpha is refused, since converting it would.
"""
import os

import tensorflow_datasets as tfds

from input_pipeline import builders
from input_pipeline import image_files
from input_pipeline.errors import DataError

SPLITS = ('train', 'val', 'test')
IMAGE_DIR = 'data'
LABEL_DIR = 'sem_seg'
CLASSES = ('background', 'rigid_plastic', 'cardboard', 'metal', 'soft_plastic')
PALETTE = ((10, 10, 10), (6, 230, 230), (4, 200, 3), (204, 5, 255), (235, 255, 7))
NUM_CLASSES = len(CLASSES)
IGNORE_INDEX = 255
# PIL modes of frames stored converted to RGB: every pixel is one RGB colour, exactly.
LOSSLESS_TO_RGB = ('1', 'L', 'P')
LAYOUT = ('{train,val,test}/data/*.PNG (RGB frames) and {train,val,test}/sem_seg/*.PNG '
          '(8-bit single-channel labels 0..4, 255 = ignore), image and label sharing '
          'a file stem')


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
    images, labels = (image_files.files_by_stem(folder) for folder in folders)
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


def read_pair(image_path: str, label_path: str) -> tuple[bytes, bytes]:
  """Checks one image / label pair and returns the PNG bytes to store.

  Args:
    image_path: the RGB frame.
    label_path: its label map.

  Returns:
    (image PNG bytes, 8-bit RGB; label PNG bytes, single-channel 8-bit).

  Raises:
    DataError: unreadable file, image neither 8-bit RGB nor convertible to it without
      loss (16 bits, alpha), label not single-channel 8-bit, sizes differ, or a label
      value outside 0..4 that is not 255.
  """
  image, image_bytes = image_files.open_png(image_path)
  label, label_bytes = image_files.open_png(label_path)
  if image.mode in LOSSLESS_TO_RGB:  # Stored as RGB so that every example has 3 channels.
    image_bytes = image_files.png_bytes(image.convert('RGB'))
  elif image.mode != 'RGB' or image_files.png_bit_depth(image_bytes) != 8:
    what = image_files.describe_mode(image, image_bytes)
    raise DataError(f'{image_path}: image is {what} (PIL mode {image.mode!r}); expected '
                    'an 8-bit RGB PNG (8-bit grey and palette PNGs are converted to RGB, '
                    'losslessly). Converting this one would lose data: convert it '
                    'yourself or remove it.')
  image_files.check_label_map(label, label_path, image, image_path, NUM_CLASSES,
                              IGNORE_INDEX)
  return image_bytes, label_bytes


def rgb_image() -> tfds.features.Image:
  """The `image` feature of ZeroWaste-f and its stand-in: 8-bit RGB, PNG."""
  return tfds.features.Image(shape=(None, None, 3), encoding_format='png')


class ZeroWasteF(builders.PairFolderBuilder):
  """ZeroWaste-f semantic segmentation (5 classes, ignore label 255)."""

  TITLE = 'ZeroWaste-f'
  FOLDERS = (IMAGE_DIR, LABEL_DIR)
  find_pairs = staticmethod(find_pairs)
  read_pair = staticmethod(read_pair)

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Download ZeroWaste-f (zerowaste-f-final.zip, http://ai.bu.edu/zerowaste/), '
      'unpack it and pass the folder holding the splits as manual_dir. Layout: '
      f'{LAYOUT}.')

  HOMEPAGE = 'http://ai.bu.edu/zerowaste/'
  LICENSE = 'CC BY-NC 4.0'

  def image_feature(self) -> tfds.features.Image:
    return rgb_image()
