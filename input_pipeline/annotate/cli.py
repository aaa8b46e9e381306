"""Hand / object masks for your own RGB-D capture, in the InterSegHands folder layout.

DenseAttentionSeg built its data set without hand labelling (paper section 3,
Figure 2): masks come from aligned colour and depth automatically
(`input_pipeline.annotate.auto_mask`), and a person only accepts or rejects frames.
Two passes:

    python -m input_pipeline.annotate --color DIR --depth DIR --out OUT
    python -m input_pipeline.annotate --depth DIR --out OUT --review OUT/review.txt

This module is the command line; the capture's frames and their ids are read by
`frames.py`, pass 1 (masks, contact sheets, the review list `OUT/review.txt`) is
`first_pass.py` and pass 2 (the accepted frames exported to `OUT/{train,val}/`,
split by recording) is `export.py`, all in `input_pipeline/annotate/`.
"""
import argparse
import dataclasses
import json
import os
import re
import sys

from input_pipeline.annotate import auto_mask
from input_pipeline.annotate import export
from input_pipeline.annotate import first_pass
from input_pipeline.annotate import frames
from input_pipeline.errors import DataError


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


def parse_args(argv: list[str]) -> argparse.Namespace:
  """Parses the command line; exits with a usage error where it is inconsistent.

  Args:
    argv: the arguments, without the program name.

  Returns:
    The options; `recording_regex` compiled, `skin` as `auto_mask.SkinThresholds`.
  """
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
  parser.add_argument('--recording-regex', type=_recording_regex,
                      default=frames.RECORDING_REGEX,
                      help='reads the recording from a frame id: group "recording" or 1 '
                      f'(default {frames.RECORDING_REGEX!r}: all before the last '
                      'underscore)')
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


def main(argv: list[str] | None = None) -> int:
  """Runs pass 1, or pass 2 when `--review` is given.

  Args:
    argv: the arguments, without the program name (None: `sys.argv[1:]`).

  Returns:
    The exit status: 0 done, 2 bad input data (the error is printed).
  """
  args = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    if args.review is not None:
      export.export(args.out, args.depth, args.review, args.recording_regex,
                    args.val_fraction)
      return 0
    params = auto_mask.AnnotateParams(
        band_mm=args.band_mm, near_pixels=args.near_pixels, skin=args.skin,
        hole_area=args.hole_area, theta=args.theta, phi=args.phi)
    capture = frames.find_frames(args.color, args.depth, args.recording_regex)
    first_pass.annotate(capture, args.out, params, args.workers)
  except DataError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
