"""grain training loader and evaluation batches of ImageNet-style classification data.

The pretraining pipeline of docs/data.md section 4: random resized crop 224, flip, RandAugment
(m9, mstd 0.5), normalise, random erasing 0.25 (per example, over numpy, in grain
worker processes); Mixup / CutMix are applied later, on the device batch
(`fanet_jax/tasks/classification.py`). Evaluation: shorter side 256, centre crop 224. The
training loader shares the segmentation loaders' sampler, so its global batches do
not depend on the number of JAX processes.
"""
import numpy as np

from input_pipeline import imagenet_transforms, sampling

PADDING_LABEL = -1  # labels of the examples that complete the last evaluation batch


def train_loader(source, *, batch_size, crop_size=224, flip_prob=0.5,
                 randaug_num_ops=2, randaug_magnitude=9.0, randaug_mstd=0.5,
                 random_erase_prob=0.25, mean, std, seed, shard_index=0, shard_count=1,
                 worker_count=0, num_epochs=None, read_options=None):
  """The training data loader of one process.

  Args:
    source: random-access source of {'image': uint8 (H, W, 3), 'label': int32}.
    batch_size: examples per batch of this process.
    crop_size, flip_prob, randaug_num_ops, randaug_magnitude, randaug_mstd,
      random_erase_prob, mean, std: see `imagenet_transforms.train_transforms`.
    seed, shard_index, shard_count, worker_count, num_epochs, read_options: see
      `segmentation_training.rgb_train_loader`.

  Returns:
    grain.DataLoader yielding {'image': float32 (B, crop, crop, 3), 'label': int32 (B,)}.
  """
  ops = imagenet_transforms.train_transforms(
      crop_size=crop_size, flip_prob=flip_prob, randaug_num_ops=randaug_num_ops,
      randaug_magnitude=randaug_magnitude, randaug_mstd=randaug_mstd,
      random_erase_prob=random_erase_prob, mean=mean, std=std)
  return sampling.grain_loader(source, ops, batch_size=batch_size, seed=seed,
                               shard_index=shard_index, shard_count=shard_count,
                               worker_count=worker_count, num_epochs=num_epochs,
                               read_options=read_options)


def eval_batches(source, *, batch_size, resize_size=256, crop_size=224, mean, std,
                 shard_index=0, shard_count=1):
  """Evaluation batches of one process, in order, every process yielding as many.

  Shard i takes examples [i * n // k, (i + 1) * n // k); batches are completed with
  zero images labelled PADDING_LABEL (counted for nothing).

  Returns:
    iterator of {'image': float32 (B, crop, crop, 3), 'label': int32 (B,)}.
  """
  steps = imagenet_transforms.eval_transforms(resize_size=resize_size,
                                              crop_size=crop_size, mean=mean, std=std)
  indices, num_batches = sampling.eval_shard(len(source), batch_size, shard_index,
                                             shard_count)
  return _batches(source, indices, steps, batch_size, crop_size, num_batches)


def _batches(source, indices, steps, batch_size, crop_size, num_batches):
  for b in range(num_batches):
    image = np.zeros((batch_size, crop_size, crop_size, 3), np.float32)
    label = np.full((batch_size,), PADDING_LABEL, np.int32)
    for row, index in enumerate(indices[b * batch_size:(b + 1) * batch_size]):
      example = source[index]
      for step in steps:
        example = step.map(example)
      image[row], label[row] = example['image'], example['label']
    yield {'image': image, 'label': label}
