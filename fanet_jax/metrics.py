"""Segmentation metrics from a confusion matrix (mmsegmentation / FCN definitions).

The confusion matrix is accumulated on device (rows: label, columns: prediction);
the metrics are computed from it on the host in float64. A class absent from both
the labels and the predictions has an undefined IoU (NaN) and is left out of the
means, as mmsegmentation's `nanmean` does.
"""
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(labels: jax.Array, predictions: jax.Array, num_classes: int,
                     ignore_index: int = 255) -> jax.Array:
  """Counts (label, prediction) pairs over the non-ignored pixels.

  Args:
    labels: integer labels of any shape.
    predictions: integer predictions of the same shape.
    num_classes: number of classes C.
    ignore_index: label value that is not counted (labels >= C are not counted either).

  Returns:
    (C, C) int32 matrix, rows indexed by label, columns by prediction.
  """
  labels = labels.reshape(-1).astype(jnp.int32)
  predictions = predictions.reshape(-1).astype(jnp.int32)
  valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
  index = jnp.where(valid, labels * num_classes + predictions, 0)
  counts = jnp.bincount(index, weights=valid.astype(jnp.int32),
                        length=num_classes * num_classes)
  return counts.reshape(num_classes, num_classes).astype(jnp.int32)


def _nanmean(x: np.ndarray) -> float:
  x = x[~np.isnan(x)]
  return float(x.mean()) if x.size else float('nan')


def metrics_from_confusion(confusion: np.ndarray, class_names: Sequence[str] = (),
                           foreground: Sequence[int] = ()) -> dict:
  """Turns a confusion matrix into the usual segmentation metrics.

  Args:
    confusion: (C, C) counts, rows label, columns prediction.
    class_names: optional names for the per-class entries.
    foreground: classes whose mean IoU is also reported as `fgIoU`
      (DenseAttentionSeg's "mean IOU" of hand and object).

  Returns:
    dict with `aAcc` (pixel accuracy), `mAcc` (mean class accuracy), `mIoU`
    (mean IU), `fwIoU` (frequency-weighted IU), and per-class lists `IoU`, `Acc`
    (NaN where undefined), plus `class_names` (and `fgIoU` with `foreground`).
  """
  confusion = np.asarray(confusion, np.float64)
  true_positive = np.diag(confusion)
  label_count = confusion.sum(axis=1)
  predicted_count = confusion.sum(axis=0)
  union = label_count + predicted_count - true_positive
  total = confusion.sum()
  with np.errstate(invalid='ignore', divide='ignore'):
    iou = np.where(union > 0, true_positive / union, np.nan)
    acc = np.where(label_count > 0, true_positive / label_count, np.nan)
  frequency = label_count / total if total > 0 else np.zeros_like(label_count)
  present = label_count > 0
  names = list(class_names) or [str(i) for i in range(len(confusion))]
  result = {
      'aAcc': float(true_positive.sum() / total) if total > 0 else float('nan'),
      'mAcc': _nanmean(acc),
      'mIoU': _nanmean(iou),
      'fwIoU': float(np.sum(frequency[present] * iou[present])),
      'IoU': [float(v) for v in iou],
      'Acc': [float(v) for v in acc],
      'class_names': names,
  }
  if foreground:
    result['fgIoU'] = _nanmean(iou[list(foreground)])
  return result


def format_table(metrics: dict) -> str:
  """A per-class table (IoU, Acc in percent) followed by the summary line."""
  names = metrics['class_names']
  width = max(12, *(len(n) for n in names))
  lines = [f'{"class":<{width}}  {"IoU":>6}  {"Acc":>6}', '-' * (width + 16)]
  for name, iou, acc in zip(names, metrics['IoU'], metrics['Acc']):
    lines.append(f'{name:<{width}}  {100 * iou:6.2f}  {100 * acc:6.2f}')
  lines.append('-' * (width + 16))
  summary = (f'aAcc {100 * metrics["aAcc"]:.2f}  mAcc {100 * metrics["mAcc"]:.2f}  '
             f'mIoU {100 * metrics["mIoU"]:.2f}  fwIoU {100 * metrics["fwIoU"]:.2f}')
  if 'fgIoU' in metrics:
    summary += f'  fgIoU {100 * metrics["fgIoU"]:.2f}'
  lines.append(summary)
  return '\n'.join(lines)


def unscored(metrics: dict) -> dict:
  """`metrics` with every score NaN (for a model whose outputs were not finite)."""
  nan = float('nan')
  return {k: ([nan] * len(v) if k in ('IoU', 'Acc') else nan)
          if k in ('aAcc', 'mAcc', 'mIoU', 'fwIoU', 'fgIoU', 'IoU', 'Acc') else v
          for k, v in metrics.items()}
