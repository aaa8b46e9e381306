"""The frames of a colour + depth capture: finding, pairing and reading them.

`--color` holds colour frames (.png, .jpg, .jpeg, .bmp) and `--depth` the depth
maps aligned to them (16-bit single-channel PNG, millimetres, 0 = invalid), paired
by file stem, which is the frame id. A frame's recording is read from its id with
`--recording-regex` (default: everything before the last underscore, e.g.
`kitchen01_000123` belongs to `kitchen01`); pass 2 splits by recording.
"""
import os
import re
from typing import NamedTuple

import numpy as np

from input_pipeline import image_files
from input_pipeline.errors import DataError

COLOR_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp')
RECORDING_REGEX = r'(?P<recording>.+)_[^_]*'
_MODE_NAMES = {'1': '1-bit', 'L': '8-bit', 'P': '8-bit (palette)', 'LA': '8-bit',
               'RGB': '8-bit RGB', 'RGBA': '8-bit RGBA', 'F': '32-bit float'}


class Frame(NamedTuple):
  """One frame of the capture: its id, its two files and its recording."""
  id: str
  color: str
  depth: str
  recording: str


def files_by_id(directory: str, extensions: tuple[str, ...]) -> dict[str, str]:
  """Maps frame id (file stem) -> path for the files of `directory` with `extensions`.

  Raises:
    DataError: the folder is missing, two files share a stem, or a stem has white
      space.
  """
  if not os.path.isdir(directory):
    raise DataError(f'{directory}: folder missing.')
  return image_files.files_by_stem(directory, extensions, pairing='colour and depth',
                                   reject_spaces=True)


def recording_of(frame_id: str, pattern: re.Pattern, path: str) -> str:
  """The recording of a frame: group `recording` (or group 1) of `pattern`."""
  match = pattern.fullmatch(frame_id)
  if match is None:
    raise DataError(f'{path}: file name {frame_id!r} does not match --recording-regex '
                    f'{pattern.pattern!r}, which reads the recording from it.')
  return match.group('recording' if 'recording' in pattern.groupindex else 1)


def find_frames(color_dir: str, depth_dir: str, pattern: re.Pattern) -> list[Frame]:
  """Pairs colour and depth files by stem.

  Returns:
    The frames, sorted by id.

  Raises:
    DataError: a folder is missing or holds no frame, a file name does not give a
      recording, or some files have no partner (all of them are listed).
  """
  colors = files_by_id(color_dir, COLOR_EXTENSIONS)
  depths = files_by_id(depth_dir, ('.png',))
  unpaired = [f'{path} (no depth map in {depth_dir})'
              for stem, path in colors.items() if stem not in depths]
  unpaired += [f'{path} (no colour frame in {color_dir})'
               for stem, path in depths.items() if stem not in colors]
  if unpaired:
    raise DataError(f'{len(unpaired)} files without a partner:\n  '
                    + '\n  '.join(unpaired))
  if not colors:
    raise DataError(f'{color_dir}: no colour frames ({", ".join(COLOR_EXTENSIONS)}).')
  return [Frame(stem, colors[stem], depths[stem],
                recording_of(stem, pattern, colors[stem])) for stem in sorted(colors)]


def read_frame(frame: Frame) -> tuple[np.ndarray, np.ndarray]:
  """Reads and checks one frame.

  Returns:
    (uint8 (H, W, 3) colour, uint16 (H, W) depth in mm).

  Raises:
    DataError: unreadable file, colour without colour channels, depth not a
      single-channel 16-bit PNG, or sizes that differ.
  """
  color = image_files.open_fully(frame.color, frame.color)
  depth = image_files.open_fully(frame.depth, frame.depth)
  if color.mode not in ('RGB', 'RGBA', 'P', 'CMYK', 'YCbCr'):
    raise DataError(f'{frame.color}: colour frame has PIL mode {color.mode!r}, which '
                    'has no colour.')
  if depth.format != 'PNG' or depth.mode not in image_files.DEPTH_MODES:
    what = _MODE_NAMES.get(depth.mode, f'PIL mode {depth.mode!r}')
    raise DataError(f'{frame.depth}: depth is {what} ({depth.format}); expected a '
                    'single-channel 16-bit PNG of millimetres.')
  if color.size != depth.size:
    raise DataError(f'{frame.depth}: depth is {depth.size[0]}x{depth.size[1]} but its '
                    f'colour frame {frame.color} is {color.size[0]}x{color.size[1]} '
                    '(W x H); they must be aligned pixel to pixel.')
  values = np.asarray(depth)
  if values.dtype != np.uint16 and (values.min() < 0 or values.max() > 65535):
    raise DataError(f'{frame.depth}: depth values outside 0..65535.')
  return np.asarray(color.convert('RGB')), values.astype(np.uint16, copy=False)
