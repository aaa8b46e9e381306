"""Segments your own images with a trained segmentor.

  python -m fanet_jax.predict --workdir workdirs/demo --input frames/ more.png --output out/
  python -m fanet_jax.predict --workdir workdirs/demo_depth --input depth/ --output out/ \\
      --probs
  python -m fanet_jax.predict --experiment zerowaste_fanet_tiny \\
      --weights pretrained/fanet_tiny_upernet --input frames/ --output out/ \\
      --mode slide --crop 512 512 --stride 341 341

Inputs are image files and folders (a folder's .png/.jpg/.jpeg files, in name
order): 8-bit RGB (grey and palette images are taken as RGB) for the RGB models,
16-bit single-channel depth PNGs in mm for the depth models. The model, its test
pipeline (keep-ratio rescale and size divisor, normalisation; or the depth range),
its inference mode and the class names and colours come from the run's config.json
and checkpoint (`--checkpoint`, default best), or from an experiment and converted
weights (fanet_jax/trained.py). For each input `<stem>` it writes, at the input's
size:
  OUTPUT/pred/<stem>.png   the class of every pixel, as a palette PNG: pixel values
                           are class indices, the palette the data set's colours
  OUTPUT/vis/<stem>.png    the image with the colour mask blended in (--opacity) and
                           a legend below it
  OUTPUT/probs/<stem>.npz  with --probs: `probs`, float16 (H, W, classes)
Each file is written whole or not at all; --skip-existing goes on where an
interrupted run stopped. Frames are read and written by threads while the model
runs; frames of one size are batched (--batch) and each size compiles once.

A file that cannot be read, or whose mode the model cannot take (a 16-bit image for
an RGB model, an RGB image for a depth model), is skipped with one warning line; the
rest are written, the summary names the skipped files and the exit code is 1. A
missing run or checkpoint, or inputs none of which the model can take, stop at once
with one line (exit 2).
"""
import argparse
import collections
import concurrent.futures
import os
import sys
import time

from fanet_jax import trained

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')
# PIL modes an RGB model takes as RGB without losing anything: grey and palette.
AS_RGB_MODES = ('1', 'L', 'P', 'RGB')


def parse_args(argv):
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  trained.add_arguments(parser)
  parser.add_argument('--input', nargs='+', required=True, metavar='PATH',
                      help='image files and folders of images')
  parser.add_argument('--output', required=True, help='folder the results go into')
  parser.add_argument('--opacity', type=float, default=0.5,
                      help='weight of the colour mask in vis/ (default: 0.5)')
  parser.add_argument('--probs', action='store_true',
                      help='also write the class probabilities (probs/<stem>.npz)')
  parser.add_argument('--no-vis', dest='vis', action='store_false',
                      help='do not write the overlays (vis/)')
  parser.add_argument('--batch', type=int, default=1,
                      help='frames of one size per model call (default: 1)')
  parser.add_argument('--skip-existing', dest='skip_existing', action='store_true',
                      help='leave out inputs whose pred/<stem>.png exists')
  trained.add_inference_arguments(parser)
  parser.add_argument('--threads', type=int, default=2,
                      help='threads that read and threads that write files (default: 2)')
  args = parser.parse_args(argv)
  if not 0 <= args.opacity <= 1:
    parser.error(f'--opacity must be in [0, 1], got {args.opacity}')
  if args.batch < 1 or args.threads < 1:
    parser.error('--batch and --threads must be at least 1')
  return args


# --- inputs ---------------------------------------------------------------------------


def list_inputs(paths: list[str]) -> list[str]:
  """The image files named by `paths`: files as given, folders' images in name order.

  Raises:
    RunError: a path that does not exist, no image at all, or two inputs with one
      stem (their outputs would have one name).
  """
  from input_pipeline.image_files import printable
  files = []
  for path in paths:
    if os.path.isdir(path):
      files += [os.path.join(path, name) for name in sorted(os.listdir(path))
                if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS]
    elif os.path.lexists(path):
      files.append(path)
    else:
      raise trained.RunError(f'{path}: no such file or folder')
  if not files:
    raise trained.RunError(f'no {"/".join(IMAGE_EXTENSIONS)} images in '
                           f'{", ".join(paths)}')
  stems = {}
  for file in files:
    stem = os.path.splitext(os.path.basename(file))[0]
    if stem in stems:
      raise trained.RunError(
          f'{printable(file)} and {printable(stems[stem])} would both be written as '
          f'{printable(stem)}.png: give them in separate runs or rename one')
    stems[stem] = file
  return files


def _header(path: str):
  """(PIL image, header bytes) of a file, nothing decoded."""
  from PIL import Image
  with open(path, 'rb') as f:
    head = f.read(32)
  return Image.open(path), head


def _kind(image, head: bytes) -> tuple[str, str]:
  """('rgb' | 'depth' | 'other', the file's mode in words) from a file's header."""
  from input_pipeline import image_files
  if image.format == 'PNG':
    words = image_files.describe_mode(image, head)
    bits = image_files.png_bit_depth(head)
  else:
    words, bits = f'{image.format} {image.mode}', 8
  if image.mode in image_files.DEPTH_MODES and image.format == 'PNG':
    return 'depth', words
  if image.mode in AS_RGB_MODES and bits <= 8:
    return 'rgb', words
  return 'other', words


WANTED = {'rgb': '8-bit RGB images (PNG or JPEG; grey and palette are taken as RGB)',
          'depth': '16-bit single-channel PNG depth maps in mm'}


def check_modality(files: list[str], modality: str, origin: str) -> None:
  """Raises RunError when no readable input is of the model's modality (RGB images
  given to a depth model, ...); mixed inputs are left to `read_image` to skip."""
  seen = collections.Counter()
  for path in files:
    try:
      image, head = _header(path)
      with image:
        kind, words = _kind(image, head)
    except Exception:  # unreadable: skipped later with its reason
      continue
    if kind == modality:
      return
    seen[words] += 1
  if seen:
    found = ', '.join(f'{count} {words}' for words, count in seen.most_common())
    raise trained.RunError(f'the model of {origin} reads {WANTED[modality]}, and the '
                           f'inputs are {found}: none of them can be segmented')


def read_image(path: str, modality: str):
  """An input as the test pipeline takes it: uint8 (H, W, 3) RGB, or uint16 (H, W, 1)
  depth in mm.

  Raises:
    DataError: naming `path`: unreadable, or of a mode the model cannot take.
  """
  import numpy as np
  from input_pipeline.errors import DataError
  try:
    image, head = _header(path)
  except OSError as e:
    if e.errno is not None:  # the system's: permission denied, ...
      raise DataError(f'{path}: cannot be read ({e.strerror.lower()})') from e
    raise DataError(f'{path}: not a readable image ({e})') from e
  except Exception as e:  # PIL's other complaints about the header
    raise DataError(f'{path}: not a readable image ({e})') from e
  with image:
    kind, words = _kind(image, head)
    if kind != modality:
      raise DataError(f'{path}: a {words} image; the model reads {WANTED[modality]}')
    try:
      image.load()
    except Exception as e:  # truncated, corrupt
      raise DataError(f'{path}: not a readable image ({e})') from e
    if modality == 'rgb':
      return np.asarray(image.convert('RGB'))
    depth = np.asarray(image)
    if depth.dtype != np.uint16:  # PIL's widened 'I'
      if depth.min() < 0 or depth.max() > 65535:
        raise DataError(f'{path}: depth values outside 0..65535')
      depth = depth.astype(np.uint16)
    return depth[..., None]


def preprocess(image, config):
  """The model's input (h, w, C) float32 of one input, by the test pipeline."""
  from input_pipeline import depth_transforms, transforms
  if config.modality == 'depth':
    steps = [depth_transforms.NormalizeDepth(*config.depth_range_mm)]
  else:
    steps = [transforms.Rescale(tuple(config.img_scale), config.size_divisor),
             transforms.Normalize(tuple(config.mean), tuple(config.std))]
  element = {'image': image}
  for step in steps:
    element = step.map(element)
  return element['image']


# --- outputs --------------------------------------------------------------------------


def class_map_png(classes, palette):
  """A palette PNG image whose pixel values are the classes."""
  import numpy as np
  from PIL import Image
  image = Image.fromarray(np.asarray(classes, np.uint8), mode='L')
  image.putpalette([value for colour in palette for value in colour])
  return image


def depth_to_grey(depth, depth_range):
  """A depth map (H, W, 1) in mm as a uint8 RGB image (H, W, 3): near white, far dark
  (linear over `depth_range`, (low, high) mm, clipped), missing (0) black."""
  import numpy as np
  low, high = depth_range
  depth = depth[..., 0].astype(np.float32)
  grey = np.where(depth > 0, 1 - np.clip((depth - low) / (high - low), 0, 1), 0)
  return np.repeat((grey * 255).astype(np.uint8)[..., None], 3, -1)


def overlay(image, classes, palette, names, opacity, depth_range=None):
  """The image (RGB, or depth shown grey) with the classes' colours blended in at
  `opacity`, and a legend of the classes below it."""
  import numpy as np
  from PIL import Image, ImageDraw, ImageFont
  if image.shape[-1] == 1:
    image = depth_to_grey(image, depth_range)
  colours = np.asarray(palette, np.float32)[classes]
  blended = ((1 - opacity) * image + opacity * colours).round().astype(np.uint8)
  height, width = classes.shape
  size = max(12, min(width, height) // 30)
  font = ImageFont.load_default(size=size)
  pad = size // 2
  widths = [size + pad + int(font.getlength(name)) + 2 * pad for name in names]
  rows, x = 1, pad
  for w in widths:
    if x + w > width and x > pad:
      rows, x = rows + 1, pad
    x += w
  canvas = Image.new('RGB', (width, height + rows * (size + pad) + pad), (255, 255, 255))
  canvas.paste(Image.fromarray(blended), (0, 0))
  draw = ImageDraw.Draw(canvas)
  x, y = pad, height + pad
  for name, colour, w in zip(names, palette, widths):
    if x + w > width and x > pad:
      x, y = pad, y + size + pad
    draw.rectangle([x, y, x + size, y + size], fill=tuple(colour), outline=(0, 0, 0))
    draw.text((x + size + pad, y), name, fill=(0, 0, 0), font=font)
    x += w
  return canvas


def write_outputs(output: str, stem: str, image, classes, probs, legend, opacity,
                  depth_range) -> None:
  """Writes pred/, vis/ (legend: (palette, names), or None for none) and probs/ of
  one input, each through a temporary file."""
  import numpy as np
  from input_pipeline.image_files import save_atomically
  palette, names = legend
  save_atomically(class_map_png(classes, palette),
                  os.path.join(output, 'pred', f'{stem}.png'), format='PNG')
  if opacity is not None:
    save_atomically(overlay(image, classes, palette, names, opacity, depth_range),
                    os.path.join(output, 'vis', f'{stem}.png'), format='PNG')
  if probs is not None:
    path = os.path.join(output, 'probs', f'{stem}.npz')
    with open(path + '.tmp', 'wb') as f:
      np.savez_compressed(f, probs=probs)
    os.replace(path + '.tmp', path)


# --- the model ------------------------------------------------------------------------


class Segmenter:
  """The jitted prediction of a batch by the run's inference mode, compiled once per
  shape, ahead of time, so that compile time is measured apart from prediction time:
  - `segmenter(images, output_size)`: the classes (uint8) and, with `probs`, the
    float16 probabilities, at `output_size`;
  - `segmenter.score(images, labels)`: the classes at the labels' size, their
    confusion matrix against the labels and the count of scored pixels whose scores
    are not finite (as the evaluation step counts them).
  """

  def __init__(self, run: trained.Trained, probs: bool = False):
    import jax
    import jax.numpy as jnp
    from fanet_jax import inference
    from fanet_jax.tasks import segmentation
    config, model = run.config, run.model
    self.variables = jax.device_put(run.variables)
    self.compile_seconds = 0.0
    self._compiled = {}

    def scores(variables, images, output_size):
      return inference.scores(
          lambda x: model.apply(variables, x, train=False), images, output_size,
          config.eval_mode, config.eval_crop, config.eval_stride, config.eval_tta_scales)

    def predict(variables, images, output_size):
      scored = scores(variables, images, output_size)
      classes = jnp.argmax(scored, -1).astype(jnp.uint8)
      if not probs:
        return classes, None
      if not config.eval_tta_scales:  # TTA's scores are probabilities already
        scored = jax.nn.softmax(scored, axis=-1)
      return classes, scored.astype(jnp.float16)

    def score(variables, images, labels):
      classes, confusion, nonfinite = segmentation.count_batch(
          scores(variables, images, labels.shape[1:3]), labels, config.num_classes,
          config.ignore_index)
      return classes.astype(jnp.uint8), confusion, nonfinite
    self._predict = jax.jit(predict, static_argnums=2)
    self._score = jax.jit(score)

  def _compiled_for(self, key, jitted, *args):
    if key not in self._compiled:
      start = time.perf_counter()
      self._compiled[key] = jitted.lower(self.variables, *args).compile()
      self.compile_seconds += time.perf_counter() - start
    return self._compiled[key]

  def __call__(self, images, output_size):
    size = tuple(output_size)
    compiled = self._compiled_for((images.shape, size), self._predict, images, size)
    return compiled(self.variables, images)

  def score(self, images, labels):
    compiled = self._compiled_for(('score', images.shape, labels.shape), self._score,
                                  images, labels)
    return compiled(self.variables, images, labels)


# --- the loop -------------------------------------------------------------------------


class _Clock:
  """Seconds the main thread waited for the reading and the writing threads."""

  def __init__(self):
    self.waited = 0.0

  def wait(self, future):
    start = time.perf_counter()
    try:
      return future.result()
    finally:
      self.waited += time.perf_counter() - start


def predict(args) -> dict:
  """Everything `main` does but the summary; returns the counts and timings."""
  import numpy as np
  from tqdm import tqdm

  from input_pipeline import datasets
  from input_pipeline.errors import DataError

  files = list_inputs(args.input)
  run = trained.load(args, trained.inference_overrides(args))
  config = run.config
  check_modality(files, config.modality, run.origin)
  names = datasets.CLASS_NAMES[config.dataset][:config.num_classes]
  palette = datasets.PALETTES[config.dataset][:config.num_classes]
  outputs = ['pred'] + ['vis'] * args.vis + ['probs'] * args.probs
  for folder in outputs:
    os.makedirs(os.path.join(args.output, folder), exist_ok=True)
  stem = lambda path: os.path.splitext(os.path.basename(path))[0]
  done = {f: args.skip_existing and os.path.exists(
      os.path.join(args.output, 'pred', f'{stem(f)}.png')) for f in files}
  done_before = [f for f in files if done[f]]
  todo = [f for f in files if not done[f]]
  segmenter = Segmenter(run, args.probs)

  def load(path):
    image = read_image(path, config.modality)
    return image, preprocess(image, config)

  skipped, written, clock = [], 0, _Clock()
  bar = tqdm(total=len(todo), unit='frame', desc='predict', dynamic_ncols=True)
  with concurrent.futures.ThreadPoolExecutor(args.threads) as readers, \
       concurrent.futures.ThreadPoolExecutor(args.threads) as writers:
    ahead = collections.deque()
    pending_writes = collections.deque()
    queue = iter(todo)
    batch = []

    def fill():
      while len(ahead) < 2 * args.batch + args.threads:
        path = next(queue, None)
        if path is None:
          return
        ahead.append((path, readers.submit(load, path)))

    def flush():
      nonlocal written
      if not batch:
        return
      images = np.zeros((args.batch,) + batch[0][2].shape, np.float32)
      for i, (_, _, model_input) in enumerate(batch):
        images[i] = model_input
      classes, probs = segmenter(images, batch[0][1].shape[:2])
      classes = np.asarray(classes)
      probs = None if probs is None else np.asarray(probs)
      for i, (path, image, _) in enumerate(batch):
        pending_writes.append(writers.submit(
            write_outputs, args.output, stem(path), image, classes[i],
            None if probs is None else probs[i], (palette, names),
            args.opacity if args.vis else None, config.depth_range_mm))
      while len(pending_writes) > 2 * args.threads:
        clock.wait(pending_writes.popleft())
      written += len(batch)
      bar.update(len(batch))
      elapsed = max(time.perf_counter() - start - segmenter.compile_seconds, 1e-9)
      bar.set_postfix_str(f'waiting for files {100 * clock.waited / elapsed:.0f}%')
      batch.clear()

    start = time.perf_counter()
    fill()
    while ahead:
      path, future = ahead.popleft()
      fill()
      try:
        image, model_input = clock.wait(future)
      except DataError as e:
        skipped.append(str(e))
        bar.write(f'warning: skipped {e}')
        bar.update(1)
        continue
      if batch and (batch[0][1].shape != image.shape or len(batch) == args.batch):
        flush()
      batch.append((path, image, model_input))
      if len(batch) == args.batch:
        flush()
    flush()
    while pending_writes:
      clock.wait(pending_writes.popleft())
    seconds = time.perf_counter() - start - segmenter.compile_seconds
  bar.close()
  return {'written': written, 'skipped': skipped, 'done_before': len(done_before),
          'seconds': seconds, 'waited': clock.waited,
          'compile_seconds': segmenter.compile_seconds,
          'sizes': len(segmenter._compiled), 'outputs': outputs, 'origin': run.origin}


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    code, result = trained.run_command(lambda: predict(args))
  except KeyboardInterrupt:
    print(f'error: interrupted; the files in {args.output} are complete: run the same '
          'command with --skip-existing to go on', file=sys.stderr)
    return 130
  if code:
    return code
  count, seconds = result['written'], result['seconds']
  rate = f'{count / seconds:.2f} frames/s' if seconds > 0 and count else 'no frames'
  print(f'segmented {count} frames with {result["origin"]} into {args.output} '
        f'({", ".join(f + "/" for f in result["outputs"])}) in {seconds:.1f} s: {rate}; '
        f'waiting for files {100 * result["waited"] / max(seconds, 1e-9):.0f}% of that '
        f'time; {result["sizes"]} input sizes compiled in '
        f'{result["compile_seconds"]:.1f} s (not counted)'
        + (f'; {result["done_before"]} done before, left out' if result['done_before']
           else ''))
  if result['skipped']:
    print(f'skipped {len(result["skipped"])}:\n  ' + '\n  '.join(result['skipped']))
    return 1
  return 0


if __name__ == '__main__':
  from fanet_jax.runtime import configure_process
  configure_process()  # launch.py's XLA:CPU flags and malloc settings
  sys.exit(main())
