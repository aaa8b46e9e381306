"""Whole-image evaluation on a data split (SPEC section 4, test pipeline).

The segmentor sees the rescaled image; its logits are resized bilinearly back to the
original label size before the arg-max (mmsegmentation's whole-image inference), and
a confusion matrix is accumulated on device. Padding examples in the batches carry
only ignored labels, so they count for nothing. A model whose logits are not finite
at some scored pixel gets no score (NaN metrics, never a best checkpoint): the
arg-max of NaN logits is class 0, which would otherwise score as background.
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
  """Builds `eval_step(variables, batch, (confusion, nonfinite)) -> the same, updated`;
  `nonfinite` counts the scored pixels whose logits are not all finite.

  Args:
    model: the segmentor (`apply(variables, images, train=False)` -> logits at the
      input size).
    num_classes: number of classes.
    ignore_index: label value not counted.

  Returns:
    The pure step; `batch['label']` may be larger or smaller than the image.
  """
  def eval_step(variables, batch, counts):
    confusion, nonfinite = counts
    logits = model.apply(variables, batch['image'], train=False)
    logits = layers.resize_bilinear(logits.astype(jnp.float32),
                                    batch['label'].shape[1:3])
    predictions = jnp.argmax(logits, axis=-1)
    scored = batch['label'] != ignore_index
    bad = scored & ~jnp.all(jnp.isfinite(logits), axis=-1)
    return (confusion + metrics_lib.confusion_matrix(
        batch['label'], predictions, num_classes, ignore_index),
            nonfinite + jnp.sum(bad, dtype=jnp.int32))
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
    The metrics dict, plus `confusion` (the matrix as nested lists). Where some
    scored pixel's logits were not finite, `nonfinite_pixels` gives their count
    and every metric is NaN.
  """
  step = jax.jit(make_eval_step(model, num_classes, ignore_index),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh),
                               sharding.replicated(mesh)),
                 out_shardings=sharding.replicated(mesh), donate_argnums=2)
  counts = jax.device_put((jnp.zeros((num_classes, num_classes), jnp.int32),
                           jnp.zeros((), jnp.int32)), sharding.replicated(mesh))
  for batch in batches:
    counts = step(variables, sharding.shard_batch(batch, mesh), counts)
  # Replicated: every process holds the whole matrix, even across hosts.
  confusion, nonfinite = (np.asarray(c.addressable_data(0)) for c in counts)
  result = metrics_lib.metrics_from_confusion(confusion, class_names, foreground)
  result['confusion'] = confusion.tolist()
  if nonfinite:
    result = metrics_lib.unscored(result)
    result['nonfinite_pixels'] = int(nonfinite)
  return result
