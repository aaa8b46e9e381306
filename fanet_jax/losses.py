"""Segmentation losses (docs/recipes.md section 1).

Cross-entropy with an ignore index, averaged over the pixels that are not ignored
(mmsegmentation's `CrossEntropyLoss` with `avg_non_ignore=True`), optionally with
per-class weights. The auxiliary FCN head adds the same loss with weight 0.5. The
DenseAttentionSeg fine-tuning phase adds the contour loss: `alpha * CE + beta * L_c`.
"""
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from fanet_jax import contour_loss as contour_lib


def cross_entropy(logits: jax.Array, labels: jax.Array, *, ignore_index: int = 255,
                  class_weights: Optional[Sequence[float]] = None) -> jax.Array:
  """Softmax cross-entropy averaged over non-ignored pixels.

  Args:
    logits: (..., num_classes) unnormalised scores, at the labels' resolution.
    labels: (...) integer class ids; `ignore_index` marks pixels that count for nothing.
    ignore_index: the label value to ignore.
    class_weights: optional per-class weights; the mean is then weighted like
      PyTorch's `CrossEntropyLoss(weight=...)` (divided by the summed weights).

  Returns:
    The scalar mean loss (0 when every pixel is ignored).
  """
  logits = logits.astype(jnp.float32)
  valid = labels != ignore_index
  safe_labels = jnp.where(valid, labels, 0)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
  weight = valid.astype(jnp.float32)
  if class_weights is not None:
    weight = weight * jnp.asarray(class_weights, jnp.float32)[safe_labels]
  return jnp.sum(nll * weight) / jnp.maximum(jnp.sum(weight), 1e-12)


def segmentation_loss(logits: jax.Array, aux_logits: Optional[jax.Array],
                      labels: jax.Array, *, aux_weight: float = 0.5,
                      ignore_index: int = 255,
                      class_weights: Optional[Sequence[float]] = None
                      ) -> tuple[jax.Array, dict]:
  """Decode-head loss plus the weighted auxiliary-head loss.

  Args:
    logits: (B, H, W, C) decode-head logits at the label size.
    aux_logits: (B, H, W, C) auxiliary-head logits, or None.
    labels: (B, H, W) integer labels.
    aux_weight: weight of the auxiliary loss (0.5 in the FANet reference config).
    ignore_index: label value to ignore.
    class_weights: optional per-class cross-entropy weights.

  Returns:
    (total loss, dict of the parts for logging).
  """
  ce = lambda x: cross_entropy(x, labels, ignore_index=ignore_index,
                               class_weights=class_weights)
  decode = ce(logits)
  parts = {'decode_loss': decode}
  total = decode
  if aux_logits is not None:
    parts['aux_loss'] = ce(aux_logits)
    total = total + aux_weight * parts['aux_loss']
  return total, parts


def make_loss_fn(*, aux_weight: float, ignore_index: int,
                 class_weights: Optional[Sequence[float]] = None,
                 ce_weight: float = 1.0, contour_weight: float = 0.0) -> Callable:
  """The segmentor's training objective `loss_fn(outputs, batch) -> (loss, parts)`.

  `outputs` is the segmentor's `(logits, aux_logits)` (aux_logits None without an
  auxiliary head) and `batch['label']` the (B, H, W) labels.

  Args:
    aux_weight: weight of the auxiliary head's cross-entropy.
    ignore_index: label value to ignore (also left out of the logged pixel accuracy).
    class_weights: per-class cross-entropy weights (DenseAttentionSeg: 1, 5, 5).
    ce_weight: alpha, the weight of the cross-entropy terms.
    contour_weight: beta, the weight of the contour loss (0: not computed).

  Returns:
    The loss function; its parts include `pixel_acc`, and `contour_loss` when beta
    is not 0.
  """
  def loss_fn(outputs, batch):
    (logits, aux_logits), labels = outputs, batch['label']
    total, parts = segmentation_loss(logits, aux_logits, labels, aux_weight=aux_weight,
                                     ignore_index=ignore_index,
                                     class_weights=class_weights)
    total = ce_weight * total
    if contour_weight:
      parts['contour_loss'] = contour_lib.contour_loss(logits, labels,
                                                       ignore_index=ignore_index)
      total = total + contour_weight * parts['contour_loss']
    valid = labels != ignore_index
    correct = (jnp.argmax(logits, -1) == labels) & valid
    parts['pixel_acc'] = jnp.sum(correct) / jnp.maximum(jnp.sum(valid), 1)
    return total, parts
  return loss_fn
