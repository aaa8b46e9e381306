"""Evaluation batches of the segmentation data (docs/data.md, test pipelines).

`rgb_eval_batches` is the FANet test pipeline (keep-ratio rescale, sides up to a
multiple, normalise; the label keeps its original size); `depth_eval_batches` gives
DenseAttentionSeg's full depth frames, normalised. Both are plain deterministic
generators that keep every process in step: each process reads its own contiguous
shard and yields as many batches as the others.
"""
import numpy as np

from input_pipeline import depth_transforms
from input_pipeline import sampling
from input_pipeline import transforms
from input_pipeline.errors import DataError


def rgb_eval_batches(source, *, batch_size, num_classes, img_scale, size_divisor, mean, std,
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
  ignore_index) and equal batch counts across shards as `rgb_eval_batches`.

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


def _eval_shard(source, batch_size, shard_index, shard_count):
  """`sampling.eval_shard` of a segmentation source, with what multi-process batching needs.

  Returns:
    (this shard's indices, reference, num_batches): with several shards, reference
    is the (image shape, label shape) of example 0, which every example must have,
    and num_batches the batch count of the longest shard, which every shard yields;
    both are None with one shard.
  """
  indices, num_batches = sampling.eval_shard(len(source), batch_size, shard_index, shard_count)
  if shard_count == 1 or not len(source):
    return indices, None, None
  first = source[0]
  return indices, (first['image'].shape, first['label'].shape), num_batches


def _eval_generator(source, indices, steps, batch_size, ignore_index, reference,
                    num_batches, padding_shape):
  """Yields the batches of `rgb_eval_batches` (a separate function so errors in its
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
