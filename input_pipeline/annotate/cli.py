"""Hand / object masks for your own RGB-D capture, in the InterSegHands folder layout.

DenseAttentionSeg built its data set without hand labelling (paper section 3,
Figure 2): masks come from aligned colour and depth automatically
(`input_pipeline.auto_mask`), and a person only accepts or rejects frames. Two passes:

    python -m input_pipeline.annotate --color DIR --depth DIR --out OUT
    python -m input_pipeline.annotate --depth DIR --out OUT --review OUT/review.txt

Input: `--color` holds colour frames (.png, .jpg, .jpeg, .bmp) and `--depth` the
depth maps aligned to them (16-bit single-channel PNG, millimetres, 0 = invalid),
paired by file stem, which is the frame id. A frame's recording is read from its
id with `--recording-regex` (default: everything before the last underscore, e.g.
`kitchen01_000123` belongs to `kitchen01`).

Pass 1 annotates every frame in parallel (`--workers`) into `OUT/_work/mask/`
(labels 0 background, 1 hand, 2 object) and `OUT/_work/overlay/`, draws contact
sheets into `OUT/_work/sheets/` and writes the review list `OUT/review.txt` (all
frames `accept`; see `input_pipeline.contact_sheet`). It is resumable: a frame
whose mask exists is skipped, so an interrupted run continues where it stopped
(delete masks to redo frames, e.g. with other parameters).

Pass 2 (`--review`) exports the accepted frames to `OUT/{train,val}/depth/<id>.png`
(the depth file as captured) and `OUT/{train,val}/mask/<id>.png`, the layout the
`inter_seg_hands` TFDS builder reads (`input_pipeline.interseg`). The split is by
recording, never by frame, so that near-identical neighbouring frames cannot leak
from train into val: a recording goes to val iff the first 8 bytes of the SHA-256
of its name, read as a fraction of 2^64, fall below `--val-fraction`; that is
deterministic and does not depend on the other recordings. Running pass 2 again
after editing the list brings the export in line with it.
"""
import argparse
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import time
from typing import NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from input_pipeline.annotate import auto_mask
from input_pipeline.annotate import contact_sheet
from input_pipeline.errors import DataError

COLOR_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp')
RECORDING_REGEX = r'(?P<recording>.+)_[^_]*'
WORK_DIR, REVIEW_FILE = '_work', 'review.txt'
SPLITS = ('train', 'val')
_DEPTH_MODES = ('I;16', 'I;16B', 'I;16L', 'I')  # 'I': Pillow versions that widen 16 bits.
_MODE_NAMES = {'1': '1-bit', 'L': '8-bit', 'P': '8-bit (palette)', 'LA': '8-bit',
               'RGB': '8-bit RGB', 'RGBA': '8-bit RGBA', 'F': '32-bit float'}


class Frame(NamedTuple):
  id: str
  color: str
  depth: str
  recording: str


def _files_by_stem(directory: str, extensions: tuple[str, ...]) -> dict[str, str]:
  if not os.path.isdir(directory):
    raise DataError(f'{directory}: folder missing.')
  paths = {}
  for name in sorted(os.listdir(directory)):
    stem, ext = os.path.splitext(name)
    if ext.lower() not in extensions:
      continue
    path = os.path.join(directory, name)
    if stem in paths:
      raise DataError(f'{path}: a second file with stem {stem!r} (also {paths[stem]}); '
                      'colour and depth pair by stem.')
    if len(stem.split()) != 1:
      raise DataError(f'{path}: white space in the file name; frame ids cannot have any.')
    paths[stem] = path
  return paths


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
  colors = _files_by_stem(color_dir, COLOR_EXTENSIONS)
  depths = _files_by_stem(depth_dir, ('.png',))
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


def _open(path: str) -> Image.Image:
  try:
    image = Image.open(path)
    image.load()  # Decode every pixel now: a truncated file fails here.
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ...
    raise DataError(f'{path}: not a readable image ({e}).') from e
  return image


def read_frame(frame: Frame) -> tuple[np.ndarray, np.ndarray]:
  """Reads and checks one frame.

  Returns:
    (uint8 (H, W, 3) colour, uint16 (H, W) depth in mm).

  Raises:
    DataError: unreadable file, colour without colour channels, depth not a
      single-channel 16-bit PNG, or sizes that differ.
  """
  color, depth = _open(frame.color), _open(frame.depth)
  if color.mode not in ('RGB', 'RGBA', 'P', 'CMYK', 'YCbCr'):
    raise DataError(f'{frame.color}: colour frame has PIL mode {color.mode!r}, which '
                    'has no colour.')
  if depth.format != 'PNG' or depth.mode not in _DEPTH_MODES:
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


def _save(array: np.ndarray, path: str, **options) -> None:
  Image.fromarray(array).save(path + '.tmp', **options)
  os.replace(path + '.tmp', path)  # Atomic: a killed run leaves no half-written file.


def annotate_one(frame: Frame, work_dir: str, params: auto_mask.AnnotateParams) -> str:
  """Annotates one frame into `work_dir`; returns '' or the problem with its input."""
  try:
    rgb, depth = read_frame(frame)
  except DataError as e:
    return str(e)
  labels = auto_mask.annotate_frame(rgb, depth, params)
  # Overlays are only looked at: JPEG encodes 30 times faster than PNG here.
  _save(contact_sheet.overlay(rgb, labels),
        os.path.join(work_dir, 'overlay', frame.id + contact_sheet.OVERLAY_SUFFIX),
        format='JPEG', quality=90)
  # The mask last: its presence marks the frame done. Level 1: 1.3 ms instead of
  # 3 ms at the default level, for files of 6 KB instead of 3.5 KB at 640x480.
  _save(labels, os.path.join(work_dir, 'mask', frame.id + '.png'), format='PNG',
        compress_level=1)
  return ''


def annotate(frames: list[Frame], out: str, params: auto_mask.AnnotateParams,
             workers: int) -> int:
  """Pass 1: annotates the frames not done yet, draws sheets, updates the review list.

  Returns:
    The number of frames annotated in this run.
  """
  work_dir = os.path.join(out, WORK_DIR)
  for sub in ('mask', 'overlay'):
    os.makedirs(os.path.join(work_dir, sub), exist_ok=True)
  params_path = os.path.join(work_dir, 'params.json')
  params_json = json.dumps(dataclasses.asdict(params), sort_keys=True)
  if os.path.exists(params_path):
    with open(params_path) as f:
      if f.read() != params_json:
        print(f'annotate: note: parameters differ from {params_path}; frames annotated '
              'before keep their masks (delete them to redo them).')
  with open(params_path, 'w') as f:
    f.write(params_json)
  todo = [frame for frame in frames
          if not os.path.exists(os.path.join(work_dir, 'mask', frame.id + '.png'))]
  print(f'annotate: {len(frames)} frames, {len(frames) - len(todo)} already annotated '
        f'(skipped), {len(todo)} to annotate with {workers} workers.')
  task = functools.partial(annotate_one, work_dir=work_dir, params=params)
  start, errors = time.perf_counter(), []
  # 'spawn': forking a process that has imported JAX (the tests do) can deadlock.
  pool = multiprocessing.get_context('spawn').Pool(workers) if workers > 1 else _NoPool()
  with pool:
    for error in tqdm(pool.imap_unordered(task, todo, chunksize=4), total=len(todo),
                      unit='frame', desc='annotate', file=sys.stderr):
      if error:
        errors.append(error)
  if errors:
    raise DataError(f'{len(errors)} frames could not be read (the others are done; fix '
                    'these and run again to continue):\n  ' + '\n  '.join(errors))
  sheets = contact_sheet.write_sheets([frame.id for frame in frames], work_dir,
                                      changed={frame.id for frame in todo})
  review = os.path.join(out, REVIEW_FILE)
  accepted, rejected = contact_sheet.update_review(review, sheets)
  seconds = time.perf_counter() - start
  print(f'annotate: {len(todo)} annotated in {seconds:.1f} s with the contact sheets '
        f'({len(todo) / max(seconds, 1e-9):.1f} frames/s); review list {review}: '
        f'{accepted} accept, {rejected} reject; sheets in {work_dir}/sheets.')
  return len(todo)


class _NoPool:
  """`Pool`'s interface for one worker: runs in this process (no start-up)."""

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False

  def imap_unordered(self, function, items, chunksize=1):
    del chunksize
    return map(function, items)


def split_of(recording: str, val_fraction: float) -> str:
  """'val' iff the recording's SHA-256, as a fraction of 2^64, is below `val_fraction`."""
  digest = hashlib.sha256(recording.encode('utf-8')).digest()
  fraction = int.from_bytes(digest[:8], 'big') / 2.0 ** 64
  return 'val' if fraction < val_fraction else 'train'


def _sync(split_dir: str, sources: dict[str, tuple[str, str]]) -> None:
  """Makes `split_dir/{depth,mask}/` hold exactly `sources` (id -> (depth, mask))."""
  for sub, which in (('depth', 0), ('mask', 1)):
    folder = os.path.join(split_dir, sub)
    if os.path.isdir(folder):  # Frames rejected or moved since the last export.
      for name in os.listdir(folder):
        if os.path.splitext(name)[0] not in sources or name.endswith('.tmp'):
          os.remove(os.path.join(folder, name))
    if not sources:
      if os.path.isdir(folder):
        os.rmdir(folder)
      continue
    os.makedirs(folder, exist_ok=True)
    for frame_id, paths in sources.items():
      target = os.path.join(folder, frame_id + '.png')
      stale = os.path.exists(target) and os.path.getmtime(target) < os.path.getmtime(
          paths[which])  # Re-annotated since the last export.
      if stale or not os.path.exists(target):
        shutil.copyfile(paths[which], target + '.tmp')
        os.replace(target + '.tmp', target)
  if not sources and os.path.isdir(split_dir) and not os.listdir(split_dir):
    os.rmdir(split_dir)  # An empty split folder would fail the TFDS builder.


def export(out: str, depth_dir: str, review: str, pattern: re.Pattern,
           val_fraction: float) -> dict[str, int]:
  """Pass 2: exports the accepted frames of `review` to `out/{train,val}/`.

  Returns:
    split -> number of frames exported.

  Raises:
    DataError: a bad review list, accepted frames without a mask or depth map,
      or no accepted frame in train.
  """
  decisions = contact_sheet.read_review(review)
  mask_dir = os.path.join(out, WORK_DIR, 'mask')
  depths = _files_by_stem(depth_dir, ('.png',))
  masks = _files_by_stem(mask_dir, ('.png',)) if os.path.isdir(mask_dir) else {}
  accepted = [frame_id for frame_id, ok in decisions.items() if ok]
  missing = [f'{frame_id} (no mask in {mask_dir}: run pass 1 first)'
             for frame_id in accepted if frame_id not in masks]
  missing += [f'{frame_id} (no depth map in {depth_dir})'
              for frame_id in accepted if frame_id not in depths]
  if missing:
    raise DataError(f'{review}: {len(missing)} accepted frames cannot be exported:\n  '
                    + '\n  '.join(missing))
  sources = {split: {} for split in SPLITS}
  recordings = {split: set() for split in SPLITS}
  for frame_id in sorted(accepted):
    recording = recording_of(frame_id, pattern, f'{review}: frame {frame_id}')
    split = split_of(recording, val_fraction)
    sources[split][frame_id] = (depths[frame_id], masks[frame_id])
    recordings[split].add(recording)
  if not sources['train']:
    raise DataError(f'{review}: no accepted frame falls into train (recordings '
                    f'{sorted(recordings["val"])} all hash into val at --val-fraction '
                    f'{val_fraction}); the inter_seg_hands builder needs train.')
  for split in SPLITS:
    _sync(os.path.join(out, split), sources[split])
  unreviewed = len(set(masks) - set(decisions))
  print(f'export: train {len(sources["train"])} frames from {len(recordings["train"])} '
        f'recordings, val {len(sources["val"])} frames from {len(recordings["val"])} '
        f'recordings; {len(decisions) - len(accepted)} rejected'
        + (f'; {unreviewed} annotated frames are not in {review} and were not exported'
           if unreviewed else '') + f'. Train with: python launch.py --experiment '
        f'interseg_dense_attention --set manual_dir={out}')
  if not sources['val']:
    print(f'export: note: no recording hashes into val at --val-fraction {val_fraction}.')
  return {split: len(sources[split]) for split in SPLITS}


def _skin(text: str) -> auto_mask.SkinThresholds:
  """--skin: JSON (or a JSON file) with some of the keys hue, saturation, value."""
  if os.path.isfile(text):
    with open(text) as f:
      text = f.read()
  fields = [field.name for field in dataclasses.fields(auto_mask.SkinThresholds)]
  example = '{"hue": [0, 50], "saturation": [0.23, 0.68], "value": [0.35, 1]}'
  try:
    bounds = json.loads(text)
    bounds = {key: tuple(float(x) for x in pair) for key, pair in bounds.items()}
  except (ValueError, TypeError, AttributeError) as e:
    raise argparse.ArgumentTypeError(f'{text!r}: not JSON of [lo, hi] pairs ({e}); '
                                     f'example: {example}')
  bad = [key for key, pair in bounds.items()
         if key not in fields or len(pair) != 2 or pair[0] > pair[1]]
  if bad:
    raise argparse.ArgumentTypeError(f'{text!r}: bad entries {bad}; keys are {fields}, '
                                     f'each a [lo, hi] pair; example: {example}')
  return auto_mask.SkinThresholds(**bounds)


def _recording_regex(text: str) -> re.Pattern:
  try:
    pattern = re.compile(text)
  except re.error as e:
    raise argparse.ArgumentTypeError(f'{text!r}: not a regular expression ({e})')
  if pattern.groups == 0:
    raise argparse.ArgumentTypeError(f'{text!r}: has no group to capture the recording')
  return pattern


def parse_args(argv):
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      epilog='Pass 1: --color --depth --out. Pass 2: --depth --out --review.')
  defaults = auto_mask.AnnotateParams()
  cores = (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
           else os.cpu_count())
  parser.add_argument('--color', help='folder of colour frames (pass 1)')
  parser.add_argument('--depth', required=True,
                      help='folder of aligned 16-bit depth PNGs in mm')
  parser.add_argument('--out', required=True, help='output folder')
  parser.add_argument('--review', help='edited review list: export its accepted frames')
  parser.add_argument('--workers', type=int, default=cores,
                      help=f'parallel processes (default: the {cores} cores available)')
  parser.add_argument('--recording-regex', type=_recording_regex, default=RECORDING_REGEX,
                      help='reads the recording from a frame id: group "recording" or 1 '
                      f'(default {RECORDING_REGEX!r}: all before the last underscore)')
  parser.add_argument('--val-fraction', type=float, default=0.1,
                      help='share of recordings (by hash) in val (default 0.1)')
  parser.add_argument('--skin', type=_skin, default=defaults.skin,
                      help='HSV box of skin as JSON or a JSON file: hue in degrees, '
                      'saturation and value in 0..1 (default: hue [0, 50], '
                      'saturation [0.23, 0.68], value [0.35, 1])')
  for name, kind, text in (('band_mm', int, 'depth band behind the nearest surface'),
                           ('near_pixels', int, 'pixels that make the nearest surface'),
                           ('hole_area', int, 'largest hole filled in a mask (px)'),
                           ('theta', int, 'Eq. 1: least segment area (px)'),
                           ('phi', float, 'Eq. 1: largest perimeter^2 / area')):
    parser.add_argument('--' + name.replace('_', '-'), type=kind,
                        default=getattr(defaults, name),
                        help=f'{text} (default {getattr(defaults, name)})')
  args = parser.parse_args(argv)
  if args.review is None and args.color is None:
    parser.error('pass 1 needs --color (or give --review to export).')
  if args.workers < 1:
    parser.error('--workers must be at least 1.')
  return args


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    if args.review is not None:
      export(args.out, args.depth, args.review, args.recording_regex, args.val_fraction)
      return 0
    params = auto_mask.AnnotateParams(
        band_mm=args.band_mm, near_pixels=args.near_pixels, skin=args.skin,
        hole_area=args.hole_area, theta=args.theta, phi=args.phi)
    frames = find_frames(args.color, args.depth, args.recording_regex)
    annotate(frames, args.out, params, args.workers)
  except DataError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
