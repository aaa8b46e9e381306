"""Cross-entropy with ignore index, against a direct NumPy computation."""
import jax.numpy as jnp
import numpy as np
import pytest

from fanet_jax import losses


def _numpy_ce(logits, labels, ignore, weights=None):
  logits = logits - logits.max(-1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  total = norm = 0.0
  for idx in np.ndindex(labels.shape):
    if labels[idx] == ignore:
      continue
    w = 1.0 if weights is None else weights[labels[idx]]
    total -= w * logp[idx + (labels[idx],)]
    norm += w
  return total / norm


def test_cross_entropy_ignores_and_averages_over_valid_pixels():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  labels = rng.integers(0, 5, size=(2, 3, 4))
  labels[0, 0, :] = 255
  got = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), ignore_index=255)
  assert float(got) == pytest.approx(_numpy_ce(logits, labels, 255), rel=1e-5)


def test_class_weighted_cross_entropy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(1, 4, 4, 3)).astype(np.float32)
  labels = rng.integers(0, 3, size=(1, 4, 4))
  weights = (1.0, 5.0, 5.0)
  got = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels),
                             class_weights=weights)
  assert float(got) == pytest.approx(_numpy_ce(logits, labels, 255, weights), rel=1e-5)


def test_all_ignored_gives_zero():
  logits = jnp.ones((1, 2, 2, 3))
  labels = jnp.full((1, 2, 2), 255)
  assert float(losses.cross_entropy(logits, labels)) == 0.0


def test_segmentation_loss_weights_the_auxiliary_head():
  rng = np.random.default_rng(2)
  logits, aux = (jnp.asarray(rng.normal(size=(1, 3, 3, 4)), jnp.float32) for _ in range(2))
  labels = jnp.asarray(rng.integers(0, 4, size=(1, 3, 3)))
  total, parts = losses.segmentation_loss(logits, aux, labels, aux_weight=0.5)
  assert float(total) == pytest.approx(
      float(parts['decode_loss']) + 0.5 * float(parts['aux_loss']), rel=1e-6)


def test_loss_fn_adds_the_weighted_contour_term():
  from fanet_jax import contour_loss
  rng = np.random.default_rng(3)
  logits = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 3, size=(2, 8, 8)))
  ce_only = losses.make_loss_fn(aux_weight=0.5, ignore_index=255, class_weights=(1, 5, 5))
  both = losses.make_loss_fn(aux_weight=0.5, ignore_index=255, class_weights=(1, 5, 5),
                             ce_weight=1.0, contour_weight=0.005)
  ce, parts = ce_only((logits, None), {'label': labels})
  total, parts_both = both((logits, None), {'label': labels})
  assert 'contour_loss' not in parts
  expected_contour = contour_loss.contour_loss(logits, labels)
  assert float(parts_both['contour_loss']) == pytest.approx(float(expected_contour))
  assert float(total) == pytest.approx(float(ce) + 0.005 * float(expected_contour), rel=1e-6)
