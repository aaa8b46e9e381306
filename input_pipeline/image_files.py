"""Image files of the data sets: encoding, saving, reading, pairing and checking them.

Shared by the TFDS builders (ZeroWaste-f, InterSegHands and their synthetic
stand-ins, synthetic ImageNet), the annotation tool and the input-pipeline
benchmark:

- `png_bytes` / `jpeg_bytes`: an array (or PIL image) encoded by PIL; TFDS would
  need TensorFlow to encode arrays itself. Prepared data sets hold these bytes, so
  the PIL call and its options must not change.
- `save_atomically`: writes an image file through a temporary file, so a killed
  run leaves no half-written file.
- `open_fully` / `open_png`: reads and decodes every pixel at once, so a truncated
  file fails on reading, with a `DataError` naming it.
- `png_bit_depth` / `describe_mode`: what a PNG holds, for the checks of its mode.
- `files_by_stem`: the files of one folder by stem, the key that pairs an image
  with its label (or a colour frame with its depth map). Each file is checked on
  listing (`check_file`): a dangling symbolic link, a folder named like an image, a
  file that cannot be opened or a file name that is not UTF-8 fails the layout pass,
  before anything is read or written.
- `check_label_map`: a label map against its image: 8-bit single-channel, same
  size, values below the number of classes or the ignore label.
"""
import errno
import io
import os
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from input_pipeline.errors import DataError

# PIL modes of single-channel 16-bit PNGs ('I' for Pillow versions that widen them).
DEPTH_MODES = ('I;16', 'I;16B', 'I;16L', 'I')
# PIL modes of single-channel 8-bit PNGs: grey, and palette (whose pixels are indices).
LABEL_MODES = ('L', 'P')


def _encode(image: np.ndarray | Image.Image, **options: Any) -> bytes:
  if isinstance(image, np.ndarray):
    image = Image.fromarray(image)
  buffer = io.BytesIO()
  image.save(buffer, **options)
  return buffer.getvalue()


def png_bytes(image: np.ndarray | Image.Image) -> bytes:
  """PNG bytes of an image, written by PIL at its default compression.

  Args:
    image: a PIL image, or an array PIL takes as one (uint8 (H, W) or (H, W, 3),
      uint16 (H, W) for 16-bit grey, ...).

  Returns:
    The bytes of the PNG file.
  """
  return _encode(image, format='PNG')


def jpeg_bytes(image: np.ndarray | Image.Image, quality: int) -> bytes:
  """JPEG bytes of an image (uint8 (H, W, 3) array or PIL image), written by PIL.

  Args:
    image: the image.
    quality: PIL's JPEG quality, 1-95.

  Returns:
    The bytes of the JPEG file.
  """
  return _encode(image, format='JPEG', quality=quality)


def save_atomically(image: np.ndarray | Image.Image, path: str, **options: Any) -> None:
  """Saves an image to `path` by way of `path + '.tmp'` and a rename.

  Args:
    image: a PIL image or an array PIL takes as one.
    path: the file written.
    **options: PIL's save options; give `format`, the temporary name has none.
  """
  if isinstance(image, np.ndarray):
    image = Image.fromarray(image)
  image.save(path + '.tmp', **options)
  os.replace(path + '.tmp', path)  # Atomic: a killed run leaves no half-written file.


def open_fully(file: str | BinaryIO, path: str, kind: str = 'image') -> Image.Image:
  """Opens an image and decodes every pixel now: a truncated file fails here.

  Args:
    file: a path or a binary file object.
    path: the file's name in the error message.
    kind: what the file should be, in the error message ('image', 'PNG').

  Returns:
    The decoded image.

  Raises:
    DataError: `path: not a readable <kind> (<PIL's reason>).`
  """
  try:
    image = Image.open(file)
    image.load()
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ...
    raise DataError(f'{path}: not a readable {kind} ({e}).') from e
  return image


def printable(path: str) -> str:
  """`path` as text that prints anywhere: bytes that are not UTF-8 as `\\xff` escapes."""
  return os.fsencode(path).decode('utf-8', 'backslashreplace')


def _unreadable(path: str, error: OSError,
                way_out: str = 'make it readable or remove it') -> DataError:
  reason = (error.strerror or str(error)).lower()
  return DataError(f'{path}: cannot be read ({reason}); {way_out}.')


def check_file(path: str) -> None:
  """Checks that `path` is a file this process can open (nothing is read).

  Args:
    path: a name listed in a data set's folder.

  Raises:
    DataError: naming `path`: a symbolic link to a file that does not exist, a
      directory, or a file that cannot be opened (permission denied, ...).
  """
  if os.path.islink(path):
    try:
      os.stat(path)
    except OSError as e:
      if e.errno != errno.ENOENT:  # A loop of links, ...
        raise _unreadable(path, e) from e
      raise DataError(f'{path}: a symbolic link to {os.path.realpath(path)}, which does '
                      'not exist; restore that file or remove the link.') from e
  if os.path.isdir(path):
    raise DataError(f'{path}: is a directory, not an image file; move it out of '
                    f'{os.path.dirname(path)}.')
  try:
    with open(path, 'rb'):
      pass
  except OSError as e:
    raise _unreadable(path, e) from e


def open_png(path: str) -> tuple[Image.Image, bytes]:
  """Reads and fully decodes one PNG; returns the image and the file's bytes.

  Raises:
    DataError: the file cannot be read (permission denied, gone, ...), is not a
      readable image, or is an image but not a PNG.
  """
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise _unreadable(path, e) from e
  image = open_fully(io.BytesIO(data), path, 'PNG')
  if image.format != 'PNG':
    raise DataError(f'{path}: is a {image.format} file, expected PNG.')
  return image, data


def png_bit_depth(data: bytes) -> int:
  """Bits per sample of PNG bytes (1, 2, 4, 8 or 16), from the file's header.

  Only the header tells: PIL reads a 16-bit RGB or RGBA PNG as 8-bit, dropping the
  low byte of every sample.
  """
  return data[24]  # Signature (8), IHDR length and type (8), width, height (8).


def describe_mode(image: Image.Image, data: bytes) -> str:
  """What a decoded PNG holds, in words: '16-bit RGB', 'RGB with alpha', ..."""
  bits = png_bit_depth(data)
  words = {'1': '1-bit grey', 'L': f'{bits}-bit grey', 'P': 'palette',
           'PA': 'palette with alpha', 'LA': f'{bits}-bit grey with alpha',
           'RGB': f'{bits}-bit RGB', 'RGBA': f'{bits}-bit RGB with alpha',
           'I': '32-bit grey', 'F': 'floating-point grey',
           **{mode: '16-bit grey' for mode in DEPTH_MODES[:3]}}
  return words.get(image.mode, f'{len(image.getbands())}-channel')


def files_by_stem(directory: str, extensions: tuple[str, ...] = ('.png',),
                  pairing: str = 'images and labels',
                  reject_spaces: bool = False) -> dict[str, str]:
  """Maps file stem -> path for the files of `directory` with one of `extensions`.

  Args:
    directory: an existing folder.
    extensions: lower-case extensions with their dot; matched in any case.
    pairing: what pairs by stem, named in the error on a repeated stem.
    reject_spaces: raise for a stem with white space (frame ids cannot have any).

  Returns:
    stem -> path, in file-name order.

  Raises:
    DataError: the folder cannot be listed; a file name that is not UTF-8 (the
      data sets store file names as text); a file that `check_file` refuses; two
      files with one stem (e.g. a.png and a.PNG), or white space in a stem when
      `reject_spaces`. The first such file (in name order) is named.
  """
  try:
    names = sorted(os.listdir(directory))
  except OSError as e:
    raise _unreadable(directory, e, 'make the folder readable') from e
  paths = {}
  for name in names:
    stem, ext = os.path.splitext(name)
    if ext.lower() not in extensions:
      continue
    path = os.path.join(directory, name)
    try:
      name.encode('utf-8')  # Bytes that are not UTF-8 come back from listdir as surrogates.
    except UnicodeEncodeError as e:
      raise DataError(f'{printable(path)}: the file name is not valid UTF-8; file names '
                      'must be UTF-8, since the data set stores them as text: rename '
                      'the file.') from e
    check_file(path)
    if stem in paths:
      raise DataError(f'{path}: a second file with stem {stem!r} (also {paths[stem]}); '
                      f'{pairing} pair by stem.')
    if reject_spaces and len(stem.split()) != 1:
      raise DataError(f'{path}: white space in the file name; frame ids cannot have any.')
    paths[stem] = path
  return paths


def check_label_map(label: Image.Image, label_path: str, image: Image.Image,
                    image_path: str, num_classes: int, ignore_index: int,
                    label_name: str = 'label', image_name: str = 'image') -> None:
  """Checks a decoded label map against its decoded image.

  Args:
    label: the label map.
    label_path: its file, named in the errors.
    image: the image it labels.
    image_path: its file, named in the errors.
    num_classes: labels must be below this ...
    ignore_index: ... or this value.
    label_name: what the data set calls a label map ('label', 'mask').
    image_name: what it calls the image ('image', 'depth map').

  Raises:
    DataError: naming `label_path`: the label map is not single-channel 8-bit
      (mode L or P), its size differs from the image's, or it holds values that are
      neither below `num_classes` nor `ignore_index` (all of them are listed).
  """
  if label.mode not in LABEL_MODES:
    raise DataError(f'{label_path}: {label_name} PNG has mode {label.mode!r}; expected a '
                    'single-channel 8-bit PNG (mode L or P).')
  if image.size != label.size:
    raise DataError(f'{label_path}: {label_name} is {label.size[0]}x{label.size[1]} but '
                    f'its {image_name} {image_path} is {image.size[0]}x{image.size[1]} '
                    '(W x H).')
  values = np.unique(np.asarray(label))
  bad = values[(values >= num_classes) & (values != ignore_index)]
  if bad.size:
    raise DataError(f'{label_path}: {label_name} values {bad.tolist()} are outside 0..'
                    f'{num_classes - 1} and not the ignore label {ignore_index}.')
