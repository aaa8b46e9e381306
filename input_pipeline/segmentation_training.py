"""grain training loaders of the segmentation data (docs/data.md).

`rgb_train_loader` is the FANet fine-tuning pipeline (mmsegmentation order: rescale,
crop, flip, photometric distortion, normalise, pad); `depth_train_loader` is
DenseAttentionSeg's (full frames, no rescale or crop; random flip, rotation and
depth noise, then depth normalisation into one channel). Each JAX process reads its
rows of every global batch, shuffled per epoch, checkpointable through its iterator
state (`sampling.py`).
"""
from input_pipeline import depth_transforms
from input_pipeline import sampling
from input_pipeline import transforms


def rgb_train_transforms(*, num_classes, crop_size, img_scale, ratio_range, cat_max_ratio,
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


def rgb_train_loader(source, *, batch_size, num_classes, crop_size, img_scale, ratio_range,
                 cat_max_ratio=0.75, flip_prob=0.5, photometric=True, mean, std,
                 ignore_index=255, seed, shard_index=0, shard_count=1, worker_count=0,
                 num_epochs=None, read_options=None):
  """The training data loader of one process.

  The source is read in an order reshuffled every epoch from `seed`; each process
  reads its rows of every global batch (`sampling.GlobalOrderSampler`), and each example's
  augmentation draws come from `seed` and its global position, so a run is
  reproducible whatever the number of processes, and the loader iterator's
  `get_state()` / `set_state()` resume it exactly.

  Args:
    source: random-access source (len, __getitem__) of
      {'image': uint8 (H, W, 3), 'label': uint8 (H, W), 'file_name': str}.
    batch_size: examples per batch of this process (the per-process batch).
    num_classes, crop_size, img_scale, ratio_range, cat_max_ratio, flip_prob,
      photometric, mean, std, ignore_index: see `rgb_train_transforms`.
    seed: shuffle and augmentation seed (a non-negative 32-bit int).
    shard_index: this process's shard, usually `sampling.per_process_shard()[0]`.
    shard_count: number of shards, usually `sampling.per_process_shard()[1]`.
    worker_count: grain worker processes (0: transform in this process).
    num_epochs: epochs to read; None repeats forever.
    read_options: grain.ReadOptions of the source reads (in each worker); default
      `sampling.DEFAULT_READ_OPTIONS`.

  Returns:
    grain.DataLoader yielding {'image': float32 (B, ch, cw, 3), 'label': int32
    (B, ch, cw)}, incomplete last batches dropped.
  """
  ops = rgb_train_transforms(
      num_classes=num_classes, crop_size=crop_size, img_scale=img_scale,
      ratio_range=ratio_range, cat_max_ratio=cat_max_ratio, flip_prob=flip_prob,
      photometric=photometric, mean=mean, std=std, ignore_index=ignore_index)
  return sampling.grain_loader(source, ops, batch_size=batch_size, seed=seed,
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
  reproducibility and `get_state()` / `set_state()` as `rgb_train_loader`.

  Args:
    source: random-access source (len, __getitem__) of
      {'image': uint16 (H, W, 1) depth in mm, 'label': uint8 (H, W), 'file_name'}.
    batch_size: examples per batch of this process (the per-process batch).
    num_classes, rotate_degrees, noise_sigma_mm, flip_prob, min_mm, max_mm,
      ignore_index: see `depth_train_transforms`.
    seed, shard_index, shard_count, worker_count, num_epochs, read_options: see
      `rgb_train_loader`.

  Returns:
    grain.DataLoader yielding {'image': float32 (B, H, W, 1), 'label': int32
    (B, H, W)}, incomplete last batches dropped.
  """
  ops = depth_train_transforms(
      num_classes=num_classes, rotate_degrees=rotate_degrees,
      noise_sigma_mm=noise_sigma_mm, flip_prob=flip_prob, min_mm=min_mm, max_mm=max_mm,
      ignore_index=ignore_index)
  return sampling.grain_loader(source, ops, batch_size=batch_size, seed=seed,
                       shard_index=shard_index, shard_count=shard_count,
                       worker_count=worker_count, num_epochs=num_epochs,
                       read_options=read_options)
