"""InterSegHands (hand / object segmentation from depth) as a TFDS builder of a manual folder.

docs/data.md section 3: DenseAttentionSeg's data set (640x480 SR300 depth maps in
16-bit millimetres, masks 0 background, 1 hand, 2 object) is announced but not
public; this builder serves it, or any depth data set, from a folder laid out as

    {train,val,test}/depth/*.png   16-bit single-channel depth in mm, 0 = missing
    {train,val,test}/mask/*.png    8-bit single-channel labels 0..2, 255 = ignore

with a depth map and its mask sharing a file stem. `train` is required, `val` and
`test` are read where present. Preparing checks every file once and raises
`DataError` naming the file (or folder) and what is wrong.

`DepthImage` stores the depth as its 16-bit PNG and decodes it with PIL: TFDS's
own `Image(dtype=np.uint16)` decodes 16 bits without TensorFlow only through OpenCV
(tfds 4.9.10 `decode_example_np_with_pil` raises for uint16), which is not a
dependency here.
"""
import io
import os

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from input_pipeline import builders
from input_pipeline import image_files
from input_pipeline.errors import DataError

SPLITS = ('train', 'val', 'test')
REQUIRED_SPLITS = ('train',)
DEPTH_DIR = 'depth'
MASK_DIR = 'mask'
CLASSES = ('background', 'hand', 'object')
# Colours of the classes in predictions and overlays [ours: the paper shows none].
PALETTE = ((0, 0, 0), (220, 20, 60), (0, 130, 255))
NUM_CLASSES = len(CLASSES)
IGNORE_INDEX = 255
LAYOUT = ('{train,val,test}/depth/*.png (16-bit single-channel depth in mm, 0 = missing) '
          'and {train,val,test}/mask/*.png (8-bit single-channel labels 0 background, '
          '1 hand, 2 object, 255 = ignore), depth and mask sharing a file stem; train is '
          'required, val and test are optional')


class DepthImage(tfds.features.Image):
  """A (H, W, 1) uint16 image stored as 16-bit PNG bytes and decoded by PIL."""

  def __init__(self, *, shape=(None, None, 1), dtype=np.uint16, encoding_format='png',
               **kwargs):
    # Keyword arguments as `Image.from_json_content` passes them when TFDS reloads
    # the features of a prepared data set.
    super().__init__(shape=shape, dtype=dtype, encoding_format=encoding_format, **kwargs)

  def decode_example_np(self, example: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(example)) as image:
      depth = np.asarray(image)
    return depth.astype(np.uint16, copy=False)[..., None]


def depth_png(depth: np.ndarray) -> bytes:
  """16-bit grey PNG bytes of a uint16 (H, W) array, written by PIL."""
  return image_files.png_bytes(np.ascontiguousarray(depth, np.uint16))


def find_pairs(manual_dir: str | None) -> dict[str, list[tuple[str, str]]]:
  """Lists the (depth, mask) file pairs of every split present, checking the layout.

  Args:
    manual_dir: the folder holding the split folders.

  Returns:
    split name -> sorted list of (depth path, mask path), for `train` and those of
    `val`, `test` whose folders exist.

  Raises:
    DataError: the folder, the train split, or the depth or mask folder of a present
      split is missing; a split has no PNG; or some depth maps have no mask or some
      masks no depth map (all of them are listed).
  """
  if not manual_dir:
    raise DataError('InterSegHands is not prepared yet and no manual directory was '
                    f'given: set manual_dir to a folder laid out as {LAYOUT}.')
  if not os.path.isdir(manual_dir):
    raise DataError(f'InterSegHands manual directory {manual_dir!r} does not exist; '
                    f'expected a folder laid out as {LAYOUT}.')
  pairs, unmatched = {}, []
  for split in SPLITS:
    split_dir = os.path.join(manual_dir, split)
    if not os.path.isdir(split_dir):
      if split in REQUIRED_SPLITS:
        raise DataError(f'{split_dir}: folder missing; expected the layout {LAYOUT}.')
      continue
    folders = [os.path.join(split_dir, sub) for sub in (DEPTH_DIR, MASK_DIR)]
    for folder in folders:
      if not os.path.isdir(folder):
        raise DataError(f'{folder}: folder missing; expected the layout {LAYOUT}.')
    depths, masks = (image_files.files_by_stem(folder) for folder in folders)
    if not depths and not masks:
      raise DataError(f'{split_dir}: no PNG files in {DEPTH_DIR}/ or {MASK_DIR}/; '
                      f'expected the layout {LAYOUT}.')
    unmatched += [f'{path} (no mask in {folders[1]})'
                  for stem, path in depths.items() if stem not in masks]
    unmatched += [f'{path} (no depth map in {folders[0]})'
                  for stem, path in masks.items() if stem not in depths]
    pairs[split] = [(depths[stem], masks[stem]) for stem in sorted(depths)
                    if stem in masks]
  if unmatched:
    raise DataError(f'InterSegHands in {manual_dir}: {len(unmatched)} unpaired files:\n  '
                    + '\n  '.join(unmatched))
  return pairs


def read_pair(depth_path: str, mask_path: str) -> tuple[bytes, bytes]:
  """Checks one depth / mask pair and returns the PNG bytes to store.

  Args:
    depth_path: the 16-bit depth map.
    mask_path: its mask.

  Returns:
    (depth PNG bytes, 16-bit grey; mask PNG bytes, single-channel 8-bit).

  Raises:
    DataError: unreadable file, depth not single-channel 16-bit, mask not
      single-channel 8-bit, sizes differ, or a mask value outside 0..2 that is not 255.
  """
  depth, depth_bytes = image_files.open_png(depth_path)
  mask, mask_bytes = image_files.open_png(mask_path)
  if depth.mode not in image_files.DEPTH_MODES:
    what = '8-bit' if depth.mode in ('1', 'L', 'P') else f'{len(depth.getbands())}-channel'
    raise DataError(f'{depth_path}: depth PNG is {what} (PIL mode {depth.mode!r}); '
                    'expected a single-channel 16-bit PNG of depth in mm.')
  if depth.mode != 'I;16':  # Widened or big-endian: store plain 16-bit grey.
    values = np.asarray(depth)
    if values.min() < 0 or values.max() > np.iinfo(np.uint16).max:
      raise DataError(f'{depth_path}: depth values outside 0..65535.')
    depth_bytes = depth_png(values.astype(np.uint16))
  image_files.check_label_map(mask, mask_path, depth, depth_path, NUM_CLASSES,
                              IGNORE_INDEX, label_name='mask', image_name='depth map')
  return depth_bytes, mask_bytes


class InterSegHands(builders.PairFolderBuilder):
  """InterSegHands hand / object segmentation from depth (3 classes, ignore 255)."""

  TITLE = 'InterSegHands'
  FOLDERS = (DEPTH_DIR, MASK_DIR)
  find_pairs = staticmethod(find_pairs)
  read_pair = staticmethod(read_pair)

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'InterSegHands is not public; put it (or any depth data set) into one folder and '
      f'pass it as manual_dir. Layout: {LAYOUT}.')

  def image_feature(self) -> DepthImage:
    return DepthImage()
