"""ImageNet classification (backbone pretraining): data, objective, top-k evaluation.

The pretraining recipe of docs/recipes.md: soft-target cross-entropy against
label-smoothed, Mixup / CutMix-mixed targets (timm's `SoftTargetCrossEntropy` after
`Mixup`; the mixing runs on the device batch), and top-1 / top-5 accuracy on the
validation split (resize 256, centre crop 224), with the counts accumulated on device.
"""
import functools
from typing import Any, Callable, Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from fanet_jax import distributed, mixup, sharding
from fanet_jax.config import Config
from input_pipeline import classification_pipeline, imagenet, sampling
from input_pipeline.classification_pipeline import PADDING_LABEL


class Classification:
  """The classification task of one config."""

  best_metric = 'top1'
  summary_keys = ('top1', 'top5')
  image_channels = 3

  def __init__(self, config: Config):
    self.config = config

  def load_sources(self, splits: Sequence[str]) -> dict:
    """split -> random-access source (the data set is prepared on first use)."""
    c = self.config
    return distributed.prepare_then_open(
        functools.partial(imagenet.load_classification_source, c.dataset,
                          data_dir=c.data_dir, manual_dir=c.manual_dir,
                          builder_config=c.dataset_config),
        splits)

  def train_loader(self, source, mesh: Mesh):
    """This process's infinite, checkpointable grain loader of training batches."""
    c = self.config
    shard_index, shard_count = sampling.per_process_shard()
    return classification_pipeline.train_loader(
        source, batch_size=sharding.local_batch_size(c.batch_size, mesh),
        crop_size=c.crop_size[0], flip_prob=c.flip_prob,
        randaug_num_ops=c.randaug_num_ops, randaug_magnitude=c.randaug_magnitude,
        randaug_mstd=c.randaug_mstd, random_erase_prob=c.random_erase_prob,
        mean=c.mean, std=c.std, seed=c.seed, shard_index=shard_index,
        shard_count=shard_count, worker_count=c.worker_count)

  def eval_batches(self, source, mesh: Mesh) -> Iterable[dict]:
    """This process's evaluation batches of one split."""
    c = self.config
    shard_index, shard_count = sampling.per_process_shard()
    return classification_pipeline.eval_batches(
        source, batch_size=sharding.eval_local_batch_size(c.eval_batch_size, mesh),
        resize_size=c.eval_resize, crop_size=c.crop_size[0], mean=c.mean, std=c.std,
        shard_index=shard_index, shard_count=shard_count)

  def objective(self, contour: bool) -> tuple[Callable, Callable]:
    """`(loss_fn, prepare_batch)` for `train_step.make_train_step` (classification has
    one phase: `contour` is not used)."""
    del contour
    c = self.config
    return loss_fn, make_prepare_batch(
        num_classes=c.num_classes, mixup_alpha=c.mixup_alpha,
        cutmix_alpha=c.cutmix_alpha, switch_prob=c.mixup_switch_prob,
        label_smoothing=c.label_smoothing)

  def evaluate(self, model: nn.Module, variables: Any, source, mesh: Mesh) -> dict:
    """`evaluate`'s accuracies of `model` on one split."""
    return evaluate(model, variables, self.eval_batches(source, mesh), mesh=mesh)

  @staticmethod
  def format_table(metrics: dict) -> str:
    return format_table(metrics)


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean over the batch of `-sum(targets * log_softmax(logits))`, in float32."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.mean(-jnp.sum(targets * log_probs, axis=-1))


def loss_fn(logits: jax.Array, batch: dict) -> tuple[jax.Array, dict]:
  """The training objective on a batch with soft `target`s (see `make_prepare_batch`).

  Returns:
    (loss, parts): `top1` is the accuracy against the unmixed `label` (under Mixup a
    loose signal, as in timm's logs).
  """
  loss = soft_cross_entropy(logits, batch['target'])
  top1 = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
  return loss, {'top1': top1}


def make_prepare_batch(*, num_classes: int, mixup_alpha: float, cutmix_alpha: float,
                       switch_prob: float, label_smoothing: float) -> Callable:
  """`prepare_batch(batch, rng)` for the train step: mixes the device batch and adds
  the soft `target`s (smoothed one-hots when both alphas are 0)."""
  def prepare_batch(batch, rng):
    images, targets, _ = mixup.mix_batch(
        rng, batch['image'], batch['label'], num_classes=num_classes,
        mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, switch_prob=switch_prob,
        label_smoothing=label_smoothing)
    return {**batch, 'image': images, 'target': targets}
  return prepare_batch


def make_eval_step(model: nn.Module) -> Callable:
  """Builds `eval_step(variables, batch, counts) -> counts`, counts = [top-1 hits,
  top-5 hits, examples, examples with non-finite logits]; labels equal to
  PADDING_LABEL count for nothing."""
  def eval_step(variables, batch, counts):
    logits = model.apply(variables, batch['image'], train=False).astype(jnp.float32)
    labels = batch['label']
    valid = labels != PADDING_LABEL
    k = min(5, logits.shape[-1])
    _, top = jax.lax.top_k(logits, k)
    hit5 = jnp.any(top == labels[:, None], axis=-1) & valid
    hit1 = (top[:, 0] == labels) & valid
    bad = valid & ~jnp.all(jnp.isfinite(logits), axis=-1)
    return counts + jnp.stack([jnp.sum(hit1), jnp.sum(hit5), jnp.sum(valid),
                               jnp.sum(bad)])
  return eval_step


@functools.lru_cache(maxsize=8)
def _jitted_eval_step(model: nn.Module, mesh: Mesh) -> Callable:
  # One jitted step per model and mesh: evaluations trace the model once.
  replicated = sharding.replicated(mesh)
  return jax.jit(make_eval_step(model),
                 in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
                 out_shardings=replicated, donate_argnums=2)


def evaluate(model: nn.Module, variables: Any, batches: Iterable[dict], *,
             mesh: Mesh) -> dict:
  """Top-1 / top-5 accuracy (in %) of `model` over `batches`.

  Args:
    model: the classifier.
    variables: its variables, replicated on `mesh`.
    batches: per-process numpy batches (`image`, `label`), padding labelled
      PADDING_LABEL.
    mesh: the device mesh.

  Returns:
    {'top1', 'top5', 'count'}; both accuracies NaN, and `nonfinite` the count of
    examples, where some example's logits were not finite.
  """
  replicated = sharding.replicated(mesh)
  step = _jitted_eval_step(model, mesh)
  counts = jax.device_put(jnp.zeros(4, jnp.int32), replicated)
  for batch in batches:
    counts = step(variables, sharding.shard_batch(batch, mesh), counts)
  hit1, hit5, count, nonfinite = np.asarray(counts.addressable_data(0)).tolist()
  if nonfinite:
    return {'top1': float('nan'), 'top5': float('nan'), 'count': count,
            'nonfinite': nonfinite}
  return {'top1': 100.0 * hit1 / max(count, 1), 'top5': 100.0 * hit5 / max(count, 1),
          'count': count}


def format_table(metrics: dict) -> str:
  """One line: top-1 and top-5 accuracy over the scored examples."""
  return (f'top-1 {metrics["top1"]:.2f}  top-5 {metrics["top5"]:.2f}  '
          f'({metrics["count"]} images)')
