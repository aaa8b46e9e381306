"""Pass 2 of the annotation tool: the reviewed frames exported for training.

`--review` exports the accepted frames of the review list to
`OUT/{train,val}/depth/<id>.png` (the depth file as captured) and
`OUT/{train,val}/mask/<id>.png` (pass 1's mask), the layout the `inter_seg_hands`
TFDS builder reads (`input_pipeline.interseg`). The split is by recording, never
by frame, so that near-identical neighbouring frames cannot leak from train into
val: a recording goes to val iff the first 8 bytes of the SHA-256 of its name, read
as a fraction of 2^64, fall below `--val-fraction`; that is deterministic and does
not depend on the other recordings. Running pass 2 again after editing the list
brings the export in line with it.
"""
import hashlib
import os
import re
import shutil

from input_pipeline.annotate import contact_sheet
from input_pipeline.annotate import first_pass
from input_pipeline.annotate import frames
from input_pipeline.errors import DataError

SPLITS = ('train', 'val')


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


def _check_apart(depth_dir: str, out: str):
  """Refuses a capture folder inside `out/{train,val}`: the export deletes there
  every file that is not an accepted frame, which would take the inputs with it."""
  source = os.path.realpath(depth_dir)
  for split in SPLITS:
    target = os.path.realpath(os.path.join(out, split))
    if os.path.commonpath([source, target]) == target:
      raise DataError(f'{depth_dir}: the capture\'s depth maps lie inside {target}, '
                      'which the export rewrites (deleting files that are not accepted '
                      'frames); pass the folder the capture was saved to')


def export(out: str, depth_dir: str, review: str, pattern: re.Pattern,
           val_fraction: float) -> dict[str, int]:
  """Pass 2: exports the accepted frames of `review` to `out/{train,val}/`.

  Args:
    out: the output folder of pass 1 (its masks are in `out/_work/mask/`).
    depth_dir: the capture's depth maps, copied as they are.
    review: the review list, edited.
    pattern: reads the recording from a frame id (`frames.recording_of`).
    val_fraction: the share of recordings, by hash, in val (`split_of`).

  Returns:
    split -> number of frames exported.

  Raises:
    DataError: the depth folder lies inside the folders the export rewrites, a bad
      review list, accepted frames without a mask or depth map, or no accepted frame
      in train.
  """
  _check_apart(depth_dir, out)
  decisions = contact_sheet.read_review(review)
  mask_dir = os.path.join(out, first_pass.WORK_DIR, 'mask')
  depths = frames.files_by_id(depth_dir, ('.png',))
  masks = frames.files_by_id(mask_dir, ('.png',)) if os.path.isdir(mask_dir) else {}
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
    recording = frames.recording_of(frame_id, pattern, f'{review}: frame {frame_id}')
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
