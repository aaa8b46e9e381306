"""Metrics on hand-computed confusion matrices, and the on-device confusion matrix."""
import jax.numpy as jnp
import numpy as np
import pytest

from fanet_jax import metrics


def test_confusion_matrix_counts_pairs_and_skips_ignored():
  labels = jnp.array([[0, 1, 1], [2, 255, 2]])
  preds = jnp.array([[0, 1, 2], [2, 0, 0]])
  got = np.asarray(metrics.confusion_matrix(labels, preds, 3, ignore_index=255))
  np.testing.assert_array_equal(got, [[1, 0, 0], [0, 1, 1], [1, 0, 1]])


def test_metrics_by_hand():
  # rows: label, columns: prediction.
  confusion = np.array([[3, 1, 0],
                        [2, 4, 0],
                        [0, 0, 0]])  # class 2 absent from labels and predictions.
  m = metrics.metrics_from_confusion(confusion, ['a', 'b', 'c'])
  # IoU_a = 3 / (4 + 5 - 3) = 0.5, IoU_b = 4 / (6 + 5 - 4) = 4/7, IoU_c undefined.
  np.testing.assert_allclose(m['IoU'][:2], [0.5, 4 / 7])
  assert np.isnan(m['IoU'][2]) and np.isnan(m['Acc'][2])
  assert m['mIoU'] == pytest.approx((0.5 + 4 / 7) / 2)
  assert m['aAcc'] == pytest.approx(7 / 10)
  assert m['mAcc'] == pytest.approx((3 / 4 + 4 / 6) / 2)
  assert m['fwIoU'] == pytest.approx(0.4 * 0.5 + 0.6 * 4 / 7)
  assert m['class_names'] == ['a', 'b', 'c']


def test_class_only_predicted_has_zero_iou_not_nan():
  confusion = np.array([[2, 2], [0, 0]])  # class 1 predicted but never labelled.
  m = metrics.metrics_from_confusion(confusion)
  assert m['IoU'] == [0.5, 0.0]
  assert np.isnan(m['Acc'][1])
  assert m['mIoU'] == pytest.approx(0.25)
  assert m['mAcc'] == pytest.approx(0.5)


def test_perfect_prediction():
  confusion = np.diag([5, 7, 1])
  m = metrics.metrics_from_confusion(confusion)
  assert m['mIoU'] == m['aAcc'] == m['mAcc'] == m['fwIoU'] == 1.0


def test_format_table_lists_every_class():
  m = metrics.metrics_from_confusion(np.diag([1, 2]), ['belt', 'can'])
  table = metrics.format_table(m)
  assert 'belt' in table and 'can' in table and 'mIoU 100.00' in table


def test_foreground_mean_iou_of_hand_and_object():
  confusion = np.array([[8, 1, 1],
                        [1, 3, 0],
                        [0, 1, 1]])
  m = metrics.metrics_from_confusion(confusion, ['bg', 'hand', 'object'], foreground=(1, 2))
  # IoU_hand = 3 / (4 + 5 - 3) = 0.5, IoU_object = 1 / (2 + 2 - 1) = 1/3.
  assert m['fgIoU'] == pytest.approx((0.5 + 1 / 3) / 2)
  assert 'fgIoU 41.67' in metrics.format_table(m)
