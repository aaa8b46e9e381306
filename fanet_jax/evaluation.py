"""Whole-image evaluation on a data split (SPEC section 4, test pipeline).

The segmentor sees the rescaled image; its logits are resized bilinearly back to the
original label size before the arg-max (mmsegmentation's whole-image inference), and
a confusion matrix is accumulated on device. Padding examples in the batches carry
only ignored labels, so they count for nothing.
"""
from typing import Any, Callable, Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from fanet_jax import metrics as metrics_lib
from fanet_jax import sharding
from fanet_jax.models import layers


def make_eval_step(model: nn.Module, num_classes: int, ignore_index: int) -> Callable:
  """Builds `eval_step(variables, batch, confusion) -> confusion`.

  Args:
    model: the segmentor (`apply(variables, images, train=False)` -> logits at the
      input size).
    num_classes: number of classes.
    ignore_index: label value not counted.

  Returns:
    The pure step; `batch['label']` may be larger or smaller than the image.
  """
  def eval_step(variables, batch, confusion):
    logits = model.apply(variables, batch['image'], train=False)
    logits = layers.resize_bilinear(logits.astype(jnp.float32),
                                    batch['label'].shape[1:3])
    predictions = jnp.argmax(logits, axis=-1)
    return confusion + metrics_lib.confusion_matrix(
        batch['label'], predictions, num_classes, ignore_index)
  return eval_step


def evaluate(model: nn.Module, variables: Any, batches: Iterable[dict], *, mesh: Mesh,
             num_classes: int, ignore_index: int, class_names: Sequence[str] = (),
             foreground: Sequence[int] = ()) -> dict:
  """Runs the model over `batches` and returns `metrics_from_confusion`'s dict.

  Args:
    model: the segmentor.
    variables: `{'params', 'batch_stats'}`, replicated on `mesh`.
    batches: per-process numpy batches (`image`, `label`), as `eval_batches` yields.
    mesh: the device mesh.
    num_classes: number of classes.
    ignore_index: label value not counted.
    class_names: names for the per-class entries.
    foreground: classes whose mean IoU is reported as `fgIoU`.

  Returns:
    The metrics dict, plus `confusion` (the matrix as nested lists).
  """
  step = jax.jit(make_eval_step(model, num_classes, ignore_index),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh),
                               sharding.replicated(mesh)),
                 out_shardings=sharding.replicated(mesh), donate_argnums=2)
  confusion = jax.device_put(jnp.zeros((num_classes, num_classes), jnp.int32),
                             sharding.replicated(mesh))
  for batch in batches:
    confusion = step(variables, sharding.shard_batch(batch, mesh), confusion)
  # Replicated: every process holds the whole matrix, even across hosts.
  confusion = np.asarray(confusion.addressable_data(0))
  result = metrics_lib.metrics_from_confusion(confusion, class_names, foreground)
  result['confusion'] = confusion.tolist()
  return result
