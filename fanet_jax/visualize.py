"""Draws what a trained segmentor computes inside, for one image: the papers' figures.

  python -m fanet_jax.visualize workdirs/demo --image frame.png
  python -m fanet_jax.visualize workdirs/demo --image frame.png --stage 2 --block 0
  python -m fanet_jax.visualize workdirs/demo_depth --image depth.png --label label.png
  python -m fanet_jax.visualize --experiment zerowaste_fanet_tiny \\
      --weights pretrained/fanet_tiny_upernet --image frame.png --output out/

The image goes through the run's test pipeline (as predict reads it); the maps are
those of the model's own forward pass (report/internals.py). Into --output (default
WORKDIR/visualize/<image stem>/) it writes, and prints the paths of:
  frm.png        FANet (paper Fig. 6): for each stage's last block (or --stage's
                 blocks, or --stage and --block), the image and the FRM's input F,
                 smoothed Q, high frequency R = F - Q, low frequency S = F * Q and
                 output, as heat maps of their channel means;
  attention.png  DenseAttentionSeg (paper Fig. 7): each of the six levels' attention
                 map a_j, and the weight its skip gets from the other levels, over
                 the depth shown grey;
  contours.png   with --label, any model (paper Fig. 8): the contour loss's blurred
                 Sobel maps of the ground truth and of the prediction.
A model with none of these (DeepLabv3+ without --label), a bad image, label or
option, or a missing run or checkpoint is one line (exit 2). Details: docs/report.md.
"""
import argparse
import os
import sys

from fanet_jax import trained


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog='python -m fanet_jax.visualize', description=__doc__.split('\n\n')[0],
      epilog=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('run', nargs='?', metavar='WORKDIR', help="a training run's folder")
  trained.add_arguments(parser)
  parser.add_argument('--image', required=True, help='the image (RGB, or depth PNG)')
  parser.add_argument('--label', default=None,
                      help='its labels: a single-channel PNG of class indices')
  parser.add_argument('--output', default=None, metavar='DIR',
                      help='where the figures go (default: WORKDIR/visualize/<stem>/)')
  parser.add_argument('--stage', type=int, default=None, help='FANet: only this stage')
  parser.add_argument('--block', type=int, default=None,
                      help='FANet, with --stage: only this block')
  args = parser.parse_args(argv)
  if args.run and args.workdir:
    parser.error('give the run once: WORKDIR or --workdir')
  args.workdir = args.workdir or args.run
  if args.output is None and not args.workdir:
    parser.error('--output is needed with --experiment and --weights')
  return args


def read_label(path: str, size, config):
  """The labels (H, W) uint8 of `path`, checked against the image's size and classes."""
  import numpy as np
  from PIL import Image
  try:
    with Image.open(path) as image:
      label = np.asarray(image)
  except Exception as e:
    raise trained.RunError(f'{path}: not a readable image ({e})') from e
  if label.ndim != 2:
    raise trained.RunError(f'{path}: {label.shape[-1]} channels; a label is a '
                           'single-channel PNG of class indices')
  if label.shape != tuple(size):
    raise trained.RunError(f'{path}: {label.shape[1]}x{label.shape[0]} (WxH), the image '
                           f'{size[1]}x{size[0]}: a label must have the size of its image')
  bad = sorted(set(np.unique(label).tolist()) - set(range(config.num_classes))
               - {config.ignore_index})
  if bad:
    raise trained.RunError(
        f'{path}: values {", ".join(map(str, bad[:5]))}{" ..." if len(bad) > 5 else ""} '
        f'are not classes (0 to {config.num_classes - 1}, or {config.ignore_index} '
        'ignored)')
  return label.astype(np.uint8)


def visualize(args) -> list[str]:
  """Everything `main` does but printing; returns the figures' paths."""
  from fanet_jax import predict
  from fanet_jax.report import internals
  from input_pipeline.errors import DataError
  run = trained.load(args)
  config, model = run.config, run.model
  kind = internals.family(model)
  if kind is None and args.label is None:
    raise trained.RunError(
        f'model {config.model!r} has no internal maps to draw (FANet\'s FRM maps, '
        'DenseAttentionSeg\'s attention maps); give --label for its contour maps')
  if kind != 'fanet' and (args.stage is not None or args.block is not None):
    raise trained.RunError(f'--stage and --block choose FANet blocks; model '
                           f'{config.model!r} has none')
  blocks = internals.frm_blocks(model, args.stage, args.block) if kind == 'fanet' else None
  predict.check_modality([args.image], config.modality, run.origin)
  try:
    image = predict.read_image(args.image, config.modality)
  except DataError as e:
    raise trained.RunError(str(e)) from e
  label = None if args.label is None else read_label(args.label, image.shape[:2], config)
  size = predict.preprocess(image, config).shape[:2]
  stride = internals.coarsest_stride(model)
  if min(size) < stride:
    raise trained.RunError(
        f'{args.image}: {size[1]}x{size[0]} (WxH) after the test pipeline; the model '
        f'needs at least {stride} pixels a side (its coarsest stride)')
  stem = os.path.splitext(os.path.basename(args.image))[0]
  output = args.output or os.path.join(args.workdir, 'visualize', stem)
  return internals.write_figures(run, internals.Capture(run), image, label, output,
                                 blocks=blocks)


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  code, paths = trained.run_command(lambda: visualize(args))
  if not code:
    print('\n'.join(paths))
  return code


if __name__ == '__main__':
  from fanet_jax.runtime import configure_process
  configure_process()  # launch.py's XLA:CPU flags and malloc settings
  sys.exit(main())
