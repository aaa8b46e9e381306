"""Semantic segmentation: data, objective and whole-image evaluation (docs/recipes.md).

RGB data (ZeroWaste-f and its synthetic stand-in) gets mmsegmentation's transforms,
depth data (InterSegHands and its synthetic stand-in) DenseAttentionSeg's
augmentations (docs/data.md). The objective is cross-entropy plus the auxiliary
head's, and in DenseAttentionSeg's fine-tuning phase the contour loss.

Evaluation is mmsegmentation's whole-image inference, or its sliding-window
inference (`eval_mode`), either with test-time augmentation (`eval_tta_scales`;
fanet_jax/inference.py): the segmentor sees the rescaled image, its logits are
resized bilinearly back to the label's size before the arg-max, and a confusion
matrix is accumulated on device. Padding examples in the
batches carry only ignored labels, so they count for nothing. A model whose logits
are not finite at some scored pixel gets no score (NaN metrics, never a best
checkpoint): the arg-max of NaN logits is class 0, which would otherwise score as
background.
"""
import functools
from typing import Any, Callable, Iterable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from fanet_jax import distributed, inference, losses, sharding
from fanet_jax import metrics as metrics_lib
from fanet_jax.config import Config, ConfigError
from input_pipeline import datasets, sampling, segmentation_eval, segmentation_training

MODALITIES = ('rgb', 'depth')


class Segmentation:
  """The segmentation task of one config."""

  best_metric = 'mIoU'
  summary_keys = ('mIoU', 'aAcc', 'mAcc', 'fwIoU', 'fgIoU')

  def __init__(self, config: Config):
    if config.modality not in MODALITIES:
      raise ConfigError(f'modality must be one of {MODALITIES}, got {config.modality!r}')
    self.config = config
    self.image_channels = config.image_channels

  def load_sources(self, splits: Sequence[str]) -> dict:
    """split -> random-access source (the data set is prepared on first use)."""
    c = self.config
    return distributed.prepare_then_open(
        functools.partial(datasets.load_source, c.dataset, data_dir=c.data_dir,
                          manual_dir=c.manual_dir, builder_config=c.dataset_config),
        splits)

  def train_loader(self, source, mesh: Mesh):
    """This process's infinite, checkpointable grain loader of training batches."""
    c = self.config
    shard_index, shard_count = sampling.per_process_shard()
    common = dict(batch_size=sharding.local_batch_size(c.batch_size, mesh),
                  num_classes=c.num_classes, flip_prob=c.flip_prob,
                  ignore_index=c.ignore_index, seed=c.seed, shard_index=shard_index,
                  shard_count=shard_count, worker_count=c.worker_count)
    if c.modality == 'depth':
      return segmentation_training.depth_train_loader(
          source, rotate_degrees=c.rotate_degrees, noise_sigma_mm=c.depth_noise_mm,
          min_mm=c.depth_range_mm[0], max_mm=c.depth_range_mm[1], **common)
    return segmentation_training.rgb_train_loader(
        source, crop_size=c.crop_size, img_scale=c.img_scale, ratio_range=c.ratio_range,
        cat_max_ratio=c.cat_max_ratio, photometric=c.photometric, mean=c.mean,
        std=c.std, **common)

  def eval_batches(self, source, mesh: Mesh) -> Iterable[dict]:
    """This process's evaluation batches of one split."""
    c = self.config
    shard_index, shard_count = sampling.per_process_shard()
    common = dict(batch_size=sharding.eval_local_batch_size(c.eval_batch_size, mesh),
                  num_classes=c.num_classes, ignore_index=c.ignore_index,
                  shard_index=shard_index, shard_count=shard_count)
    if c.modality == 'depth':
      return segmentation_eval.depth_eval_batches(
          source, min_mm=c.depth_range_mm[0], max_mm=c.depth_range_mm[1], **common)
    return segmentation_eval.rgb_eval_batches(
        source, img_scale=c.img_scale, size_divisor=c.size_divisor, mean=c.mean,
        std=c.std, **common)

  def objective(self, contour: bool) -> tuple[Callable, None]:
    """`(loss_fn, prepare_batch)` for `train_step.make_train_step`; `contour` adds the
    contour loss (the fine-tuning phase)."""
    c = self.config
    return losses.make_loss_fn(
        aux_weight=c.aux_weight, ignore_index=c.ignore_index,
        class_weights=c.class_weights,
        contour_weight=c.contour_weight if contour else 0.0), None

  def evaluate(self, model: nn.Module, variables: Any, source, mesh: Mesh) -> dict:
    """`evaluate`'s metrics of `model` on one split, per-class entries named by the
    data set's classes."""
    c = self.config
    return evaluate(model, variables, self.eval_batches(source, mesh), mesh=mesh,
                    num_classes=c.num_classes, ignore_index=c.ignore_index,
                    class_names=source.class_names[:c.num_classes],
                    foreground=c.foreground_classes, mode=c.eval_mode,
                    crop=c.eval_crop, stride=c.eval_stride,
                    tta_scales=c.eval_tta_scales)

  @staticmethod
  def format_table(metrics: dict) -> str:
    return metrics_lib.format_table(metrics)


def make_eval_step(model: nn.Module, num_classes: int, ignore_index: int,
                   mode: str = 'whole', crop: Optional[tuple[int, int]] = None,
                   stride: Optional[tuple[int, int]] = None,
                   tta_scales: tuple[float, ...] = ()) -> Callable:
  """Builds `eval_step(variables, batch, (confusion, nonfinite)) -> the same, updated`;
  `nonfinite` counts the scored pixels whose logits are not all finite.

  Args:
    model: the segmentor (`apply(variables, images, train=False)` -> logits at the
      input size).
    num_classes: number of classes.
    ignore_index: label value not counted.
    mode: 'whole' or 'slide' (`inference.logits`).
    crop: the windows' (H, W) for 'slide'.
    stride: their step (H, W) for 'slide'.
    tta_scales: test-time augmentation at these ratios of the test scale
      (`inference.tta_probabilities`); () for none.

  Returns:
    The pure step; `batch['label']` may be larger or smaller than the image.
  """
  def eval_step(variables, batch, counts):
    confusion, nonfinite = counts
    apply_fn = lambda images: model.apply(variables, images, train=False)
    # With TTA probabilities: their arg-max and finiteness serve as the logits'.
    scores = inference.scores(apply_fn, batch['image'], batch['label'].shape[1:3], mode,
                              crop, stride, tta_scales)
    _, batch_confusion, batch_nonfinite = count_batch(scores, batch['label'], num_classes,
                                                      ignore_index)
    return confusion + batch_confusion, nonfinite + batch_nonfinite
  return eval_step


def count_batch(scores: jax.Array, labels: jax.Array, num_classes: int,
                ignore_index: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(predictions (B, H, W), confusion matrix, count of scored pixels whose scores are
  not all finite) of class scores (B, H, W, K) at the labels' size (B, H, W)."""
  predictions = jnp.argmax(scores, axis=-1)
  bad = (labels != ignore_index) & ~jnp.all(jnp.isfinite(scores), axis=-1)
  return (predictions,
          metrics_lib.confusion_matrix(labels, predictions, num_classes, ignore_index),
          jnp.sum(bad, dtype=jnp.int32))


@functools.lru_cache(maxsize=8)
def _jitted_eval_step(model: nn.Module, num_classes: int, ignore_index: int,
                      mesh: Mesh, mode: str, crop, stride, tta_scales) -> Callable:
  # One jitted step per model, mesh and mode, so that a run's evaluations (and the
  # runs of one process) trace the model once, not at every evaluation.
  return jax.jit(make_eval_step(model, num_classes, ignore_index, mode, crop, stride,
                                tta_scales),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh),
                               sharding.replicated(mesh)),
                 out_shardings=sharding.replicated(mesh), donate_argnums=2)


def evaluate(model: nn.Module, variables: Any, batches: Iterable[dict], *, mesh: Mesh,
             num_classes: int, ignore_index: int, class_names: Sequence[str] = (),
             foreground: Sequence[int] = (), mode: str = 'whole',
             crop: Optional[Sequence[int]] = None,
             stride: Optional[Sequence[int]] = None,
             tta_scales: Sequence[float] = ()) -> dict:
  """Runs the model over `batches` and returns `metrics_from_confusion`'s dict.

  Args:
    model: the segmentor.
    variables: `{'params', 'batch_stats'}`, replicated on `mesh`.
    batches: per-process numpy batches (`image`, `label`), as the evaluation
      pipelines of input_pipeline/segmentation_eval.py yield.
    mesh: the device mesh.
    num_classes: number of classes.
    ignore_index: label value not counted.
    class_names: names for the per-class entries.
    foreground: classes whose mean IoU is reported as `fgIoU`.
    mode: 'whole' or 'slide' (fanet_jax/inference.py).
    crop: the sliding windows' (H, W).
    stride: their step (H, W).
    tta_scales: test-time augmentation's ratios of the test scale; () for none.

  Returns:
    The metrics dict, plus `confusion` (the matrix as nested lists). Where some
    scored pixel's logits were not finite, `nonfinite_pixels` gives their count
    and every metric is NaN.
  """
  step = _jitted_eval_step(model, num_classes, ignore_index, mesh, mode,
                           crop and tuple(crop), stride and tuple(stride),
                           tuple(tta_scales))
  counts = jax.device_put((jnp.zeros((num_classes, num_classes), jnp.int32),
                           jnp.zeros((), jnp.int32)), sharding.replicated(mesh))
  for batch in batches:
    counts = step(variables, sharding.shard_batch(batch, mesh), counts)
  # Replicated: every process holds the whole matrix, even across hosts.
  confusion, nonfinite = (np.asarray(c.addressable_data(0)) for c in counts)
  return scored(confusion, int(nonfinite), class_names, foreground)


def scored(confusion: np.ndarray, nonfinite: int, class_names: Sequence[str] = (),
           foreground: Sequence[int] = ()) -> dict:
  """`evaluate`'s result for an accumulated confusion matrix and count of scored
  pixels with non-finite logits (every metric NaN where that count is not 0)."""
  result = metrics_lib.metrics_from_confusion(np.asarray(confusion), class_names,
                                              foreground)
  result['confusion'] = np.asarray(confusion).tolist()
  if nonfinite:
    result = metrics_lib.unscored(result)
    result['nonfinite_pixels'] = int(nonfinite)
  return result
