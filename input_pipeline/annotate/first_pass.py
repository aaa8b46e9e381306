"""Pass 1 of the annotation tool: every frame masked automatically, then reviewed.

Annotates every frame in parallel (`--workers`) into `OUT/_work/mask/` (labels
0 background, 1 hand, 2 object; `input_pipeline.annotate.auto_mask`) and
`OUT/_work/overlay/`, draws contact sheets into `OUT/_work/sheets/` and writes the
review list `OUT/review.txt` (all frames `accept`; see
`input_pipeline.annotate.contact_sheet`). It is resumable: a frame whose mask
exists is skipped, so an interrupted run continues where it stopped (delete masks
to redo frames, e.g. with other parameters).
"""
import dataclasses
import functools
import json
import multiprocessing
import os
import sys
import time

from tqdm import tqdm

from input_pipeline import image_files
from input_pipeline.annotate import auto_mask
from input_pipeline.annotate import contact_sheet
from input_pipeline.annotate.frames import Frame, read_frame
from input_pipeline.errors import DataError

WORK_DIR, REVIEW_FILE = '_work', 'review.txt'


def annotate_one(frame: Frame, work_dir: str, params: auto_mask.AnnotateParams) -> str:
  """Annotates one frame into `work_dir`: its overlay, then its mask.

  Args:
    frame: the frame.
    work_dir: holds `mask/` and `overlay/`.
    params: the parameters of `auto_mask.annotate_frame`.

  Returns:
    '' when done, else the problem with the frame's files (nothing is written).
  """
  try:
    rgb, depth = read_frame(frame)
  except DataError as e:
    return str(e)
  labels = auto_mask.annotate_frame(rgb, depth, params)
  # Overlays are only looked at: JPEG, much faster to encode than PNG
  # (docs/performance.md, Annotation tool file formats).
  image_files.save_atomically(
      contact_sheet.overlay(rgb, labels),
      os.path.join(work_dir, 'overlay', frame.id + contact_sheet.OVERLAY_SUFFIX),
      format='JPEG', quality=90)
  # The mask last: its presence marks the frame done. Level 1 is much faster than the
  # default, for slightly larger files (docs/performance.md, Annotation tool file
  # formats).
  image_files.save_atomically(labels, os.path.join(work_dir, 'mask', frame.id + '.png'),
                              format='PNG', compress_level=1)
  return ''


def annotate(frames: list[Frame], out: str, params: auto_mask.AnnotateParams,
             workers: int) -> int:
  """Pass 1: annotates the frames not done yet, draws sheets, updates the review list.

  Args:
    frames: the capture's frames, in review order (`frames.find_frames`).
    out: the output folder; pass 1 writes `out/_work/` and `out/review.txt`.
    params: the parameters of `auto_mask.annotate_frame`.
    workers: parallel processes (1: in this process).

  Returns:
    The number of frames annotated in this run.

  Raises:
    DataError: some frames could not be read (all are listed; the others are done).
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
