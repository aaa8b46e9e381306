"""Scores a trained segmentor on one split of its data set.

  python -m fanet_jax.evaluate --workdir workdirs/demo
  python -m fanet_jax.evaluate --workdir workdirs/demo --split val --checkpoint latest
  python -m fanet_jax.evaluate --workdir workdirs/demo --mode slide --crop 64 64 \\
      --stride 43 43 --per-image per_image.csv
  python -m fanet_jax.evaluate --workdir workdirs/demo --tta
  python -m fanet_jax.evaluate --experiment zerowaste_fanet_tiny \\
      --weights pretrained/fanet_tiny_upernet --set manual_dir=/data/zerowaste-f

The model, the data set and its test pipeline are the run's (`WORKDIR/config.json`);
the variables are those of its best checkpoint (default), of its newest one
(`latest`), or of a step. Converted PyTorch weights (`--weights`, written by
`python -m fanet_jax.pytorch.convert`) are scored with an experiment's config
instead (fanet_jax/trained.py). Prints the per-class table (IoU and accuracy per
class, aAcc, mAcc, mIoU, fwIoU, and fgIoU where the run names foreground classes) and
writes it to `WORKDIR/eval/<split>-<mode>[-tta].json` (`--output`), with the
confusion matrix the metrics come from: it is accumulated over the whole split, so
the split's IoU is not a mean of per-image IoUs. `--per-image FILE.csv` adds one
row per image: its file name and its IoU for each class (empty where the class is in
neither its labels nor its prediction), to find the failure cases. Modes:
docs/recipes.md section 6.
"""
import argparse
import csv
import dataclasses
import json
import os
import sys
from typing import Any, Iterator, Optional

from fanet_jax import trained


def parse_args(argv):
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  trained.add_arguments(parser)
  parser.add_argument('--split', default='test', help='train, val or test (default: test)')
  trained.add_inference_arguments(parser)
  parser.add_argument('--per-image', dest='per_image', default=None, metavar='FILE.csv',
                      help="write each image's per-class IoU to this CSV file")
  parser.add_argument('--output', default=None, metavar='FILE.json',
                      help='where the metrics go (default: WORKDIR/eval/<split>-<mode>'
                      '[-tta].json, or WEIGHTS-eval/... for converted weights)')
  return parser.parse_args(argv)


def _iou_row(confusion) -> list[Optional[float]]:
  """Per-class IoU of one image's confusion matrix; None where the class is in neither
  the labels nor the prediction."""
  import numpy as np
  confusion = np.asarray(confusion, np.float64)
  hits = np.diag(confusion)
  union = confusion.sum(0) + confusion.sum(1) - hits
  return [float(h / u) if u else None for h, u in zip(hits, union)]


class RecordingSource:
  """A source that keeps the file names of the examples read from it, in order, so
  that an image is named without decoding its example a second time."""

  def __init__(self, source):
    self._source, self.file_names = source, []

  def __len__(self):
    return len(self._source)

  def __getitem__(self, index):
    example = self._source[index]
    self.file_names.append(example['file_name'])
    return example


def per_image(run: trained.Trained, source,
              segmenter=None) -> Iterator[tuple[str, Any, int, Any]]:
  """(file name, confusion matrix (int64), count of scored pixels with non-finite
  scores, classes (H, W) uint8 at the label's size) of each image of a split's source
  (or of a list of its examples), in order: one process, one device, batches of one,
  the run's test pipeline and inference mode.

  Args:
    run: the segmentor.
    source: examples with `image`, `label` and `file_name`.
    segmenter: the run's `predict.Segmenter` (its compiled shapes kept across calls);
      a new one if None.
  """
  import jax
  import numpy as np

  from fanet_jax import predict, sharding, tasks
  if jax.process_count() > 1:
    raise trained.RunError('per-image evaluation needs a single process')
  task = tasks.create(dataclasses.replace(run.config, eval_batch_size=1))
  mesh = sharding.create_mesh(jax.devices()[:1])
  segmenter = segmenter or predict.Segmenter(run)
  recording = RecordingSource(source)
  for index, batch in enumerate(task.eval_batches(recording, mesh)):
    classes, confusion, nonfinite = segmenter.score(batch['image'], batch['label'])
    yield (recording.file_names[index], np.asarray(confusion, np.int64), int(nonfinite),
           np.asarray(classes)[0])


def evaluate_run(args) -> dict:
  """Everything `main` does but printing; returns the metrics written."""
  import jax

  from fanet_jax import sharding, tasks
  from fanet_jax.progress import write_atomically
  from fanet_jax.tasks import segmentation

  run = trained.load(args, trained.inference_overrides(args))
  config = run.config
  task = tasks.create(config)
  source = task.load_sources((args.split,))[args.split]
  if args.per_image:
    names = source.class_names[:config.num_classes]
    rows, confusion, nonfinite = [], 0, 0
    for file_name, image_confusion, image_nonfinite, _ in per_image(run, source):
      confusion, nonfinite = confusion + image_confusion, nonfinite + image_nonfinite
      rows.append([file_name] + _iou_row(image_confusion))
    # The split's metrics from the summed matrix, as a whole-split pass gives them.
    results = segmentation.scored(confusion, nonfinite, names, config.foreground_classes)
    with open(args.per_image, 'w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(['file_name'] + list(names))
      writer.writerows([name] + ['' if v is None else f'{v:.6f}' for v in ious]
                       for name, *ious in rows)
  else:
    mesh = sharding.create_mesh()
    variables = jax.device_put(run.variables, sharding.replicated(mesh))
    results = task.evaluate(run.model, variables, source, mesh)
  results.update(split=args.split, step=run.step, weights=run.origin,
                 mode=config.eval_mode, crop=config.eval_crop, stride=config.eval_stride,
                 tta_scales=config.eval_tta_scales)
  if jax.process_index() == 0:
    name = f'{args.split}-{config.eval_mode}{"-tta" if config.eval_tta_scales else ""}'
    folder = (os.path.join(args.workdir, 'eval') if args.workdir
              else os.path.normpath(args.weights) + '-eval')
    out = args.output or os.path.join(folder, f'{name}.json')
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    write_atomically(out, json.dumps(results, indent=2))
    results['written_to'] = out
  return results


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  from fanet_jax import metrics
  code, results = trained.run_command(lambda: evaluate_run(args))
  if code:
    return code
  tta = (f' with test-time augmentation at {", ".join(map(str, results["tta_scales"]))}'
         ' (each flipped and not)' if results['tta_scales'] else '')
  print(f'{args.split} split, {results["weights"]}, {results["mode"]} inference{tta}:')
  print(metrics.format_table(results))
  if 'written_to' in results:
    print(f'written to {results["written_to"]}')
  return 0


if __name__ == '__main__':
  from fanet_jax.runtime import configure_process
  configure_process()  # launch.py's XLA:CPU flags and malloc settings
  sys.exit(main())
