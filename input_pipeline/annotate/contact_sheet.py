"""Review material of the auto-annotation: overlays, contact sheets, the review list.

DenseAttentionSeg (paper section 3) had a person accept or reject every
automatically annotated frame instead of labelling it. Pass 1 of
`input_pipeline.annotate` (`first_pass.py`) writes, for that person,

    <out>/_work/overlay/<frame>.jpg    the colour frame at half size: hand tinted
                                       red, object blue, background dimmed
    <out>/_work/sheets/sheet_NNNN.png  grids of COLUMNS x ROWS overlays, each with
                                       its frame id printed above it
    <out>/review.txt                   the review list, one frame a line:

        # sheet_0000.png
        accept kitchen01_000001
        reject kitchen01_000002

Every frame starts as `accept`; the person changes the lines of bad frames to
`reject` (`#` lines and blank lines are ignored). Running pass 1 again keeps the
decisions already in the list and adds new frames as `accept`.
"""
import os

import numpy as np
from PIL import Image, ImageDraw

from input_pipeline import image_files
from input_pipeline.errors import DataError

COLUMNS, ROWS = 4, 5  # Overlays per sheet row and column: 20 frames a sheet.
CELL = (320, 240)  # Width, height of one overlay on a sheet (half of 640x480).
CAPTION = 16  # Pixel height of the frame-id strip above each overlay.
# Overlay colours (RGB) of background, hand, object: hand red, object blue.
TINTS = np.array([(0, 0, 0), (255, 40, 40), (40, 110, 255)], np.uint16)
DECISIONS = {'accept': True, 'reject': False}
INDEX = 'index.txt'  # In the sheets folder: "sheet_NNNN.png id id ..." per line.
OVERLAY_SUFFIX = '.jpg'


def overlay(rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """The colour frame at half size with the labels blended in.

  Args:
    rgb: uint8 (H, W, 3).
    labels: uint8 (H, W), 0 background, 1 hand, 2 object.

  Returns:
    uint8 (H // 2, W // 2, 3): labelled pixels half colour, half tint; background
    at a third of its brightness, so what was cut away stays visible.
  """
  small = np.asarray(Image.fromarray(rgb, 'RGB').reduce(2), np.uint16)
  classes = labels[: small.shape[0] * 2: 2, : small.shape[1] * 2: 2]
  blended = np.where(classes[..., None] > 0, (small + TINTS[classes]) // 2, small // 3)
  return blended.astype(np.uint8)


def _sheet(frame_ids: list[str], overlay_dir: str) -> Image.Image:
  sheet = Image.new('RGB', (COLUMNS * CELL[0], ROWS * (CELL[1] + CAPTION)))
  draw = ImageDraw.Draw(sheet)
  for index, frame_id in enumerate(frame_ids):
    left, top = (index % COLUMNS) * CELL[0], (index // COLUMNS) * (CELL[1] + CAPTION)
    with Image.open(os.path.join(overlay_dir, frame_id + OVERLAY_SUFFIX)) as image:
      image.thumbnail(CELL)
      sheet.paste(image, (left, top + CAPTION))
    draw.text((left + 4, top + 2), frame_id, fill=(255, 255, 255))
  return sheet


def write_sheets(frame_ids: list[str], work_dir: str,
                 changed: set[str]) -> list[tuple[str, list[str]]]:
  """Writes the contact sheets of `frame_ids` (in order), skipping up-to-date ones.

  Args:
    frame_ids: every annotated frame, in review order.
    work_dir: holds `overlay/` (read) and `sheets/` (written).
    changed: frames annotated in this run; their sheets are redrawn.

  Returns:
    (sheet file name, its frame ids) for every sheet.
  """
  overlay_dir, sheet_dir = (os.path.join(work_dir, sub) for sub in ('overlay', 'sheets'))
  os.makedirs(sheet_dir, exist_ok=True)
  index_path = os.path.join(sheet_dir, INDEX)
  previous = {}
  if os.path.exists(index_path):
    with open(index_path) as f:
      previous = {line.split()[0]: line.split()[1:] for line in f if line.strip()}
  per_sheet = COLUMNS * ROWS
  sheets = [(f'sheet_{start // per_sheet:04d}.png', frame_ids[start: start + per_sheet])
            for start in range(0, len(frame_ids), per_sheet)]
  for name, ids in sheets:
    path = os.path.join(sheet_dir, name)
    if previous.get(name) != ids or changed.intersection(ids) or not os.path.exists(path):
      # Level 1: several times faster than the default level on noisy photos
      # (docs/performance.md, Annotation tool file formats).
      image_files.save_atomically(_sheet(ids, overlay_dir), path, format='PNG',
                                  compress_level=1)
  for name in set(previous) - {name for name, _ in sheets}:  # Fewer frames than before.
    if os.path.exists(os.path.join(sheet_dir, name)):
      os.remove(os.path.join(sheet_dir, name))
  with open(index_path, 'w') as f:
    f.writelines(f'{name} {" ".join(ids)}\n' for name, ids in sheets)
  return sheets


def read_review(path: str) -> dict[str, bool]:
  """Reads a review list.

  Args:
    path: the list, lines `accept <frame id>` or `reject <frame id>`.

  Returns:
    frame id -> True if accepted, in file order.

  Raises:
    DataError: unreadable file, or a line (named by number) that is not a decision
      and a frame id, or a frame listed twice.
  """
  try:
    with open(path) as f:
      lines = f.read().splitlines()
  except OSError as e:
    raise DataError(f'{path}: cannot read the review list ({e}).') from e
  decisions = {}
  for number, line in enumerate(lines, 1):
    if not line.strip() or line.lstrip().startswith('#'):
      continue
    words = line.split()
    if len(words) != 2 or words[0] not in DECISIONS:
      raise DataError(f'{path}:{number}: {line!r} is not "accept <frame id>" or '
                      '"reject <frame id>".')
    if words[1] in decisions:
      raise DataError(f'{path}:{number}: frame {words[1]!r} is listed twice.')
    decisions[words[1]] = DECISIONS[words[0]]
  return decisions


def update_review(path: str, sheets: list[tuple[str, list[str]]]) -> tuple[int, int]:
  """Writes the review list of `sheets`, keeping the decisions already in `path`.

  Args:
    path: the review list; created if missing.
    sheets: (sheet file name, frame ids) as returned by `write_sheets`.

  Returns:
    (frames accepted, frames rejected) in the list written.
  """
  old = read_review(path) if os.path.exists(path) else {}
  lines = ['# Review list of input_pipeline.annotate: one frame a line, "accept <id>" or',
           '# "reject <id>". Look at the contact sheets in _work/sheets/ (frame ids are',
           '# printed on them), change the lines of wrong masks to "reject", export:',
           '# python -m input_pipeline.annotate --depth DIR --out DIR --review THIS_FILE']
  counts = [0, 0]
  for name, ids in sheets:
    lines.append(f'# {name}')
    for frame_id in ids:
      accepted = old.get(frame_id, True)
      counts[not accepted] += 1
      lines.append(f'{"accept" if accepted else "reject"} {frame_id}')
  with open(path + '.tmp', 'w') as f:
    f.write('\n'.join(lines) + '\n')
  os.replace(path + '.tmp', path)
  return counts[0], counts[1]
