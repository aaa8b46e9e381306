"""grain training loaders and evaluation batches of the segmentation data (SPEC 3, 4).

`train_loader` is the FANet fine-tuning pipeline (mmsegmentation order: rescale,
crop, flip, photometric distortion, normalise, pad) on a grain `DataLoader`: each JAX
process reads its rows of every global batch, shuffled per epoch, checkpointable
through its iterator state.
`eval_batches` is the test pipeline (keep-ratio rescale, sides up to a multiple,
normalise; the label keeps its original size), a plain deterministic generator that
keeps every process in step. `depth_train_loader` and `depth_eval_batches` are the
same for DenseAttentionSeg's depth frames (full frames, no rescale or crop; random
flip, rotation and depth noise, then depth normalisation into one channel).
"""
import sys

from absl import flags
import grain.python as grain
import jax
import numpy as np

from input_pipeline import depth_transforms
from input_pipeline import transforms
from input_pipeline.errors import DataError

# grain's default (16 threads reading 500 examples ahead) holds ~3 GB of decoded
# 1080p frames per process and starved the transforms: 1.7 instead of 12 img/s on 2
# cores. Two threads still overlap PNG decoding (PIL releases the GIL) with transforms.
DEFAULT_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)


def per_process_shard():
  """Returns (shard_index, shard_count) for this JAX process: one shard per process."""
  return jax.process_index(), jax.process_count()


def train_transforms(*, num_classes, crop_size, img_scale, ratio_range, cat_max_ratio,
                     flip_prob, photometric, mean, std, ignore_index):
  """The per-example training transforms, in mmseg order.

  Args:
    num_classes: labels must be below this or equal to ignore_index.
    crop_size: (height, width) of the random crop and of the padded output.
    img_scale: (long, short) scale of the random rescale.
    ratio_range: (low, high) range of the random rescale ratio.
    cat_max_ratio: RandomCrop's largest-class limit (1 turns the check off).
    flip_prob: probability of a horizontal flip.
    photometric: whether to apply PhotometricDistortion.
    mean: RGB mean for Normalize.
    std: RGB std for Normalize.
    ignore_index: label value that counts for nothing; also the label padding.

  Returns:
    list of grain transforms mapping a source example to
    {'image': float32 (ch, cw, 3), 'label': int32 (ch, cw)}.
  """
  ops = [transforms.ValidateLabel(num_classes, ignore_index),
         transforms.RandomRescaleCrop(
             transforms.RandomRescale(tuple(img_scale), tuple(ratio_range)),
             transforms.RandomCrop(tuple(crop_size), cat_max_ratio, ignore_index)),
         transforms.RandomFlip(flip_prob)]
  if photometric:
    ops.append(transforms.PhotometricDistortion())
  ops += [transforms.Normalize(tuple(mean), tuple(std)),
          transforms.Pad(tuple(crop_size), pad_val=0, seg_pad_val=ignore_index),
          transforms.ToTrainingExample()]
  return ops


def train_loader(source, *, batch_size, num_classes, crop_size, img_scale, ratio_range,
                 cat_max_ratio=0.75, flip_prob=0.5, photometric=True, mean, std,
                 ignore_index=255, seed, shard_index=0, shard_count=1, worker_count=0,
                 num_epochs=None, read_options=None):
  """The training data loader of one process.

  The source is read in an order reshuffled every epoch from `seed`; each process
  reads its rows of every global batch (`GlobalOrderSampler`), and each example's
  augmentation draws come from `seed` and its global position, so a run is
  reproducible whatever the number of processes, and the loader iterator's
  `get_state()` / `set_state()` resume it exactly.

  Args:
    source: random-access source (len, __getitem__) of
      {'image': uint8 (H, W, 3), 'label': uint8 (H, W), 'file_name': str}.
    batch_size: examples per batch of this process (the per-process batch).
    num_classes, crop_size, img_scale, ratio_range, cat_max_ratio, flip_prob,
      photometric, mean, std, ignore_index: see `train_transforms`.
    seed: shuffle and augmentation seed (a non-negative 32-bit int).
    shard_index: this process's shard, usually `per_process_shard()[0]`.
    shard_count: number of shards, usually `per_process_shard()[1]`.
    worker_count: grain worker processes (0: transform in this process).
    num_epochs: epochs to read; None repeats forever.
    read_options: grain.ReadOptions of the source reads (in each worker); default
      `DEFAULT_READ_OPTIONS`.

  Returns:
    grain.DataLoader yielding {'image': float32 (B, ch, cw, 3), 'label': int32
    (B, ch, cw)}, incomplete last batches dropped.
  """
  ops = train_transforms(
      num_classes=num_classes, crop_size=crop_size, img_scale=img_scale,
      ratio_range=ratio_range, cat_max_ratio=cat_max_ratio, flip_prob=flip_prob,
      photometric=photometric, mean=mean, std=std, ignore_index=ignore_index)
  return grain_loader(source, ops, batch_size=batch_size, seed=seed,
                       shard_index=shard_index, shard_count=shard_count,
                       worker_count=worker_count, num_epochs=num_epochs,
                       read_options=read_options)


def depth_train_transforms(*, num_classes, rotate_degrees, noise_sigma_mm, flip_prob,
                           min_mm, max_mm, ignore_index):
  """The per-example training transforms of depth frames (DenseAttentionSeg).

  Args:
    num_classes: labels must be below this or equal to ignore_index.
    rotate_degrees: rotation angle ~ U(-rotate_degrees, rotate_degrees) (0: none).
    noise_sigma_mm: std of the Gaussian noise on valid depth, in mm (0: none).
    flip_prob: probability of a horizontal flip.
    min_mm: depth mapped to 0 by the normalisation.
    max_mm: depth mapped to 1 by the normalisation.
    ignore_index: label value that counts for nothing.

  Returns:
    list of grain transforms mapping a source example to
    {'image': float32 (H, W, 1), 'label': int32 (H, W)} at the frame's full size.
  """
  return [depth_transforms.ValidateDepthLabel(num_classes, ignore_index),
          transforms.RandomFlip(flip_prob),
          depth_transforms.RandomRotate(rotate_degrees),
          depth_transforms.DepthNoise(noise_sigma_mm),
          depth_transforms.NormalizeDepth(min_mm, max_mm),
          transforms.ToTrainingExample()]


def depth_train_loader(source, *, batch_size, num_classes=3, rotate_degrees,
                       noise_sigma_mm, flip_prob=0.5, min_mm, max_mm, ignore_index=255,
                       seed, shard_index=0, shard_count=1, worker_count=0,
                       num_epochs=None, read_options=None):
  """The training data loader of depth frames of one process.

  Full frames (the paper trains at 640x480: no rescale, no crop), randomly flipped,
  rotated and noised, normalised by `NormalizeDepth`. Sharding, per-epoch shuffling,
  reproducibility and `get_state()` / `set_state()` as `train_loader`.

  Args:
    source: random-access source (len, __getitem__) of
      {'image': uint16 (H, W, 1) depth in mm, 'label': uint8 (H, W), 'file_name'}.
    batch_size: examples per batch of this process (the per-process batch).
    num_classes, rotate_degrees, noise_sigma_mm, flip_prob, min_mm, max_mm,
      ignore_index: see `depth_train_transforms`.
    seed, shard_index, shard_count, worker_count, num_epochs, read_options: see
      `train_loader`.

  Returns:
    grain.DataLoader yielding {'image': float32 (B, H, W, 1), 'label': int32
    (B, H, W)}, incomplete last batches dropped.
  """
  ops = depth_train_transforms(
      num_classes=num_classes, rotate_degrees=rotate_degrees,
      noise_sigma_mm=noise_sigma_mm, flip_prob=flip_prob, min_mm=min_mm, max_mm=max_mm,
      ignore_index=ignore_index)
  return grain_loader(source, ops, batch_size=batch_size, seed=seed,
                       shard_index=shard_index, shard_count=shard_count,
                       worker_count=worker_count, num_epochs=num_epochs,
                       read_options=read_options)


class GlobalOrderSampler:
  """Makes every process's share of a global batch independent of the process count.

  grain's DataLoader gives process p of P the sampler indices p, p + P, p + 2P, ...
  and batches them in order; `make_array_from_process_local_data` then stacks the
  processes' batches. This sampler maps those indices so that global batch k holds
  positions [k * B, (k + 1) * B) of one shuffled order of the whole data set, in
  that order (process p gets rows [p * b, (p + 1) * b) of it, b = B / P), and every
  example's random augmentation is drawn from its global position. One process or
  many, one device or many: a run sees exactly the same batches.

  Args:
    num_records: examples in the source.
    local_batch_size: examples per batch of one process (b).
    shard_index: this process (p).
    shard_count: number of processes (P).
    seed: shuffle and augmentation seed.
    num_epochs: epochs to read; None repeats forever.
  """

  def __init__(self, num_records: int, *, local_batch_size: int, shard_index: int,
               shard_count: int, seed: int, num_epochs=None):
    self._inner = grain.IndexSampler(num_records=num_records, shuffle=True,
                                     num_epochs=num_epochs, seed=seed)
    self._local_batch = local_batch_size
    self._shard_index = shard_index
    self._shard_count = shard_count
    # Whole global batches only: positions past the last full one are not read.
    global_batch = local_batch_size * shard_count
    self._length = (sys.maxsize if num_epochs is None else
                    num_epochs * num_records // global_batch * global_batch)

  def __len__(self) -> int:
    return self._length

  def __repr__(self) -> str:  # grain validates a restored state against this.
    return (f'GlobalOrderSampler({self._inner!r}, local_batch_size={self._local_batch}, '
            f'shard_index={self._shard_index}, shard_count={self._shard_count})')

  def __getitem__(self, index: int) -> grain.RecordMetadata:
    if index < 0 or index >= self._length:
      raise IndexError(f'sampler index {index} out of [0, {self._length})')
    local, process = divmod(index, self._shard_count)
    batch, row = divmod(local, self._local_batch)
    position = (batch * self._shard_count + process) * self._local_batch + row
    metadata = self._inner[position]
    return grain.RecordMetadata(index=index, record_key=metadata.record_key,
                                rng=metadata.rng)


def grain_loader(source, ops, *, batch_size, seed, shard_index, shard_count,
                  worker_count, num_epochs, read_options):
  """A per-epoch shuffled grain DataLoader batching the output of `ops`, whose global
  batches do not depend on the number of processes (see `GlobalOrderSampler`)."""
  shard_options = grain.ShardOptions(shard_index, shard_count, drop_remainder=True)
  sampler = GlobalOrderSampler(len(source), local_batch_size=batch_size,
                               shard_index=shard_index, shard_count=shard_count,
                               seed=seed, num_epochs=num_epochs)
  ops = list(ops) + [grain.Batch(batch_size, drop_remainder=True)]
  if worker_count > 0 and not flags.FLAGS.is_parsed():
    # grain's worker processes read absl flags, which fail if never parsed (tests,
    # notebooks, launchers that do not use absl.app).
    flags.FLAGS.mark_as_parsed()
  return grain.DataLoader(data_source=source, sampler=sampler, operations=ops,
                          worker_count=worker_count, shard_options=shard_options,
                          read_options=read_options or DEFAULT_READ_OPTIONS)


def eval_batches(source, *, batch_size, num_classes, img_scale, size_divisor, mean, std,
                 ignore_index=255, shard_index=0, shard_count=1):
  """Evaluation batches of one process: deterministic, in order, no augmentation.

  Shard i takes examples [i * n // k, (i + 1) * n // k). Consecutive examples are
  batched while their sizes agree; every batch is completed to `batch_size` with
  padding examples (zero image, label all ignore_index), which count for nothing.
  With several shards every shard yields the same number of batches (shorter shards
  add all-padding batches), which needs every example to have the size of the
  source's first example: a DataError names any example that does not.

  Args:
    source: random-access source of {'image', 'label', 'file_name'} examples.
    batch_size: examples per batch of this process.
    num_classes: labels must be below this or equal to ignore_index.
    img_scale: (long, short) scale the image is fitted into, keeping its ratio.
    size_divisor: image sides are then resized up to a multiple of this (or None).
    mean: RGB mean for Normalize.
    std: RGB std for Normalize.
    ignore_index: label value that counts for nothing.
    shard_index: this process's shard.
    shard_count: number of shards (processes).

  Returns:
    iterator of {'image': float32 (B, h, w, 3), 'label': int32 (B, H0, W0)}, with
    (h, w) the rescaled size and (H0, W0) the original size.
  """
  rescale = transforms.Rescale(tuple(img_scale), size_divisor)
  steps = [transforms.ValidateLabel(num_classes, ignore_index), rescale,
           transforms.Normalize(tuple(mean), tuple(std))]
  indices, reference, num_batches = _eval_shard(source, batch_size, shard_index,
                                                shard_count)
  padding_shape = None if reference is None else (
      rescale.output_size(*reference[0][:2]) + (3,))
  return _eval_generator(source, indices, steps, batch_size, ignore_index, reference,
                         num_batches, padding_shape)


def depth_eval_batches(source, *, batch_size, num_classes=3, min_mm, max_mm,
                       ignore_index=255, shard_index=0, shard_count=1):
  """Evaluation batches of depth frames of one process: full frames, normalised.

  Sharding, batching of equal sizes, padding examples (zero image, label all
  ignore_index) and equal batch counts across shards as `eval_batches`.

  Args:
    source: random-access source of {'image': uint16 (H, W, 1), 'label', 'file_name'}.
    batch_size: examples per batch of this process.
    num_classes: labels must be below this or equal to ignore_index.
    min_mm: depth mapped to 0 by `NormalizeDepth`.
    max_mm: depth mapped to 1 by `NormalizeDepth`.
    ignore_index: label value that counts for nothing.
    shard_index: this process's shard.
    shard_count: number of shards (processes).

  Returns:
    iterator of {'image': float32 (B, H, W, 1), 'label': int32 (B, H, W)}.
  """
  steps = [depth_transforms.ValidateDepthLabel(num_classes, ignore_index),
           depth_transforms.NormalizeDepth(min_mm, max_mm)]
  indices, reference, num_batches = _eval_shard(source, batch_size, shard_index,
                                                shard_count)
  padding_shape = None if reference is None else reference[0]
  return _eval_generator(source, indices, steps, batch_size, ignore_index, reference,
                         num_batches, padding_shape)


def eval_shard(num_examples, batch_size, shard_index, shard_count):
  """Splits evaluation over shards: shard i reads [i * n // k, (i + 1) * n // k).

  Returns:
    (this shard's indices, the batch count of the longest shard, which every shard
    must yield to keep the processes in step).
  """
  bounds = [i * num_examples // shard_count for i in range(shard_count + 1)]
  num_batches = max(-(-(end - start) // batch_size)
                    for start, end in zip(bounds, bounds[1:]))
  return range(bounds[shard_index], bounds[shard_index + 1]), num_batches


def _eval_shard(source, batch_size, shard_index, shard_count):
  """`eval_shard` of a segmentation source, with what multi-process batching needs.

  Returns:
    (this shard's indices, reference, num_batches): with several shards, reference
    is the (image shape, label shape) of example 0, which every example must have,
    and num_batches the batch count of the longest shard, which every shard yields;
    both are None with one shard.
  """
  indices, num_batches = eval_shard(len(source), batch_size, shard_index, shard_count)
  if shard_count == 1 or not len(source):
    return indices, None, None
  first = source[0]
  return indices, (first['image'].shape, first['label'].shape), num_batches


def _eval_generator(source, indices, steps, batch_size, ignore_index, reference,
                    num_batches, padding_shape):
  """Yields the batches of `eval_batches` (a separate function so errors in its
  arguments are raised at the call, not at the first batch); all-padding batches
  have images of `padding_shape` (the transformed reference image's shape)."""
  pending, count = [], 0
  for index in indices:
    example = source[index]
    if reference and (example['image'].shape, example['label'].shape) != reference:
      name, image, label = example.get('file_name', index), example['image'], example['label']
      raise DataError(
          f'{name}: image/label size {image.shape[:2]}/{label.shape} differs from the '
          f'first example\'s {reference[0][:2]}/{reference[1]}; multi-process evaluation '
          'needs one size (evaluate with one process, or bucket the data by size)')
    for step in steps:
      example = step.map(example)
    if pending and (example['image'].shape, example['label'].shape) != (
        pending[0]['image'].shape, pending[0]['label'].shape):
      yield _complete_batch(pending, batch_size, ignore_index)
      pending, count = [], count + 1
    pending.append(example)
    if len(pending) == batch_size:
      yield _complete_batch(pending, batch_size, ignore_index)
      pending, count = [], count + 1
  if pending:
    yield _complete_batch(pending, batch_size, ignore_index)
    count += 1
  if num_batches is not None:
    padding = {'image': np.zeros((batch_size,) + tuple(padding_shape), np.float32),
               'label': np.full((batch_size,) + reference[1], ignore_index, np.int32)}
    for _ in range(count, num_batches):
      yield {key: value.copy() for key, value in padding.items()}


def _complete_batch(examples, batch_size, ignore_index):
  """Stacks examples and fills the batch up with zero images and all-ignore labels."""
  image = np.zeros((batch_size,) + examples[0]['image'].shape, np.float32)
  label = np.full((batch_size,) + examples[0]['label'].shape, ignore_index, np.int32)
  for i, example in enumerate(examples):
    image[i], label[i] = example['image'], example['label']
  return {'image': image, 'label': label}
