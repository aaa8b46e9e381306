"""From a Config to data: the sources, the training loader and the evaluation batches.

The one place where the config's data fields meet `input_pipeline/`: 'rgb' data
(ZeroWaste-f and its synthetic stand-in) gets mmsegmentation's transforms (SPEC
section 4), 'depth' data (InterSegHands and its synthetic stand-in) gets the
DenseAttentionSeg augmentations (SPEC section 3), and classification data (ImageNet
and its synthetic stand-in) the pretraining recipe's (SPEC section 4). Every process
reads its own rows of each global batch.
"""
import functools

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from fanet_jax import sharding
from fanet_jax.config import Config
from input_pipeline import classification_pipeline, datasets, imagenet, pipeline

MODALITIES = ('rgb', 'depth')


def class_names(config: Config) -> tuple[str, ...]:
  """Names of the classes of the config's segmentation data set."""
  names = datasets.HAND_CLASSES if config.modality == 'depth' else datasets.ZEROWASTE_CLASSES
  return tuple(names[:config.num_classes])


def load_sources(config: Config, splits: tuple[str, ...]) -> dict:
  """Prepares the data set on process 0 first (the others wait), then opens `splits`.

  Returns:
    split -> random-access source.
  """
  if config.modality not in MODALITIES:
    raise ValueError(f'modality must be one of {MODALITIES}, got {config.modality!r}')
  opener = (imagenet.load_classification_source if config.task == 'classification'
            else datasets.load_source)
  load = functools.partial(opener, config.dataset, data_dir=config.data_dir,
                           manual_dir=config.manual_dir,
                           builder_config=config.dataset_config)
  if jax.process_index() == 0:
    load(splits[0])
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('dataset prepared')
  return {split: load(split) for split in splits}


def train_loader(config: Config, source, mesh: Mesh):
  """This process's infinite, checkpointable grain loader of training batches."""
  shard_index, shard_count = pipeline.per_process_shard()
  if config.task == 'classification':
    return classification_pipeline.train_loader(
        source, batch_size=sharding.local_batch_size(config.batch_size, mesh),
        crop_size=config.crop_size[0], flip_prob=config.flip_prob,
        randaug_num_ops=config.randaug_num_ops,
        randaug_magnitude=config.randaug_magnitude, randaug_mstd=config.randaug_mstd,
        random_erase_prob=config.random_erase_prob, mean=config.mean, std=config.std,
        seed=config.seed, shard_index=shard_index, shard_count=shard_count,
        worker_count=config.worker_count)
  common = dict(batch_size=sharding.local_batch_size(config.batch_size, mesh),
                num_classes=config.num_classes, flip_prob=config.flip_prob,
                ignore_index=config.ignore_index, seed=config.seed,
                shard_index=shard_index, shard_count=shard_count,
                worker_count=config.worker_count)
  if config.modality == 'depth':
    return pipeline.depth_train_loader(
        source, rotate_degrees=config.rotate_degrees,
        noise_sigma_mm=config.depth_noise_mm, min_mm=config.depth_range_mm[0],
        max_mm=config.depth_range_mm[1], **common)
  return pipeline.train_loader(
      source, crop_size=config.crop_size, img_scale=config.img_scale,
      ratio_range=config.ratio_range, cat_max_ratio=config.cat_max_ratio,
      photometric=config.photometric, mean=config.mean, std=config.std, **common)


def eval_batches(config: Config, source, mesh: Mesh):
  """This process's evaluation batches of one split (global batch: whole devices)."""
  global_batch = -(-config.eval_batch_size // mesh.size) * mesh.size
  shard_index, shard_count = pipeline.per_process_shard()
  if config.task == 'classification':
    return classification_pipeline.eval_batches(
        source, batch_size=global_batch // shard_count, resize_size=config.eval_resize,
        crop_size=config.crop_size[0], mean=config.mean, std=config.std,
        shard_index=shard_index, shard_count=shard_count)
  common = dict(batch_size=global_batch // shard_count, num_classes=config.num_classes,
                ignore_index=config.ignore_index, shard_index=shard_index,
                shard_count=shard_count)
  if config.modality == 'depth':
    return pipeline.depth_eval_batches(source, min_mm=config.depth_range_mm[0],
                                       max_mm=config.depth_range_mm[1], **common)
  return pipeline.eval_batches(source, img_scale=config.img_scale,
                               size_divisor=config.size_divisor, mean=config.mean,
                               std=config.std, **common)
