"""Contour loss (DenseAttentionSeg Eq. 3-5) against a direct NumPy/SciPy computation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from fanet_jax import contour_loss as cl
from fanet_jax import losses


def _onehot(labels, classes):
  return (labels[..., None] == np.arange(classes)).astype(np.float32)


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _numpy_contour(probs, onehot, valid, eps=1e-6, sigma=2.121):
  """Eq. 3-5 written out with 2-D kernels and scipy's zero-padded 'same' correlation."""
  kh = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)
  kv = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float64)
  yy, xx = np.mgrid[-2:3, -2:3]
  gauss = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
  gauss /= gauss.sum()
  corr = lambda m, k: signal.correlate2d(m, k, mode='same', boundary='fill', fillvalue=0)
  probs = np.where(valid[..., None], probs, 0).astype(np.float64)
  onehot = np.where(valid[..., None], onehot, 0).astype(np.float64)
  total = count = 0.0
  for b in range(probs.shape[0]):
    blurred = []
    for maps in (onehot[b], probs[b]):
      s = sum(np.sqrt(corr(maps[..., l], kh)**2 + corr(maps[..., l], kv)**2 + eps)
              for l in range(1, maps.shape[-1]))
      blurred.append(corr(s, gauss))
    err = (blurred[0] - blurred[1])**2
    total += err[valid[b]].sum()
    count += valid[b].sum()
  return total / count


def _example(seed=0, shape=(2, 9, 11), classes=3, ignore=True):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=shape + (classes,)).astype(np.float32)
  labels = np.zeros(shape, np.int32)
  labels[:, 2:7, 3:8] = 1                       # a blob, and another class beside it
  labels[:, 4:9, 6:11] = 2
  if ignore:
    labels[0, 0:3, 0:4] = 255
  return logits, labels


def test_zero_for_a_perfect_prediction():
  _, labels = _example(ignore=False)
  y = _onehot(labels, 3)
  assert float(cl.contour_loss_from_probs(y, y)) == 0.0
  assert float(cl.contour_loss_from_probs(y, y, labels >= 0)) == 0.0


def test_positive_otherwise():
  logits, labels = _example(ignore=False)
  y = _onehot(labels, 3)
  random = float(cl.contour_loss_from_probs(_softmax(logits), y))
  assert random > 1e-3
  # A confident correct prediction is close to, but not exactly, one-hot.
  near = float(cl.contour_loss(jnp.asarray(5.0 * y), jnp.asarray(labels)))
  assert 0.0 < near < 1e-2 * random


@pytest.mark.parametrize('ignore', [False, True])
def test_matches_numpy_eq_3_to_5(ignore):
  logits, labels = _example(ignore=ignore)
  valid = labels != 255
  expected = _numpy_contour(_softmax(logits), _onehot(labels, 3), valid)
  got = jax.jit(cl.contour_loss)(jnp.asarray(logits), jnp.asarray(labels))
  assert float(got) == pytest.approx(expected, rel=1e-4)
  if not ignore:   # the unmasked form is the plain mean over pixels
    got = cl.contour_loss_from_probs(_softmax(logits), _onehot(labels, 3))
    assert float(got) == pytest.approx(expected, rel=1e-4)


def test_kernels():
  assert np.array_equal(cl.SOBEL_H, [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
  assert np.array_equal(cl.SOBEL_V, cl.SOBEL_H.T)
  g = cl.gaussian_taps()
  assert g.shape == (5,) and np.isclose(np.outer(g, g).sum(), 1.0)
  assert np.isclose(g[1] / g[2], np.exp(-1 / (2 * 2.121**2)))


def test_finite_gradients_where_the_sobel_magnitude_is_zero():
  # Constant logits and labels: every Sobel response inside the image is 0.
  logits = jnp.zeros((1, 8, 8, 3))
  labels = jnp.full((1, 8, 8), 1)
  grad = jax.grad(cl.contour_loss)(logits, labels)
  assert np.all(np.isfinite(grad))
  probs = jnp.full((1, 8, 8, 3), 1 / 3)
  y = jax.nn.one_hot(labels, 3)
  grad = jax.grad(cl.contour_loss_from_probs)(probs, y)
  assert np.all(np.isfinite(grad))
  # Without eps the same gradient is not finite: the test exercises the eps.
  grad = jax.grad(lambda p: cl.contour_loss_from_probs(p, y, eps=0.0))(probs)
  assert not np.all(np.isfinite(grad))


def test_ignored_pixels_neither_count_nor_get_gradients():
  logits, labels = _example()
  ignored = labels == 255
  other = np.where(ignored[..., None], 50.0 * logits, logits)
  a = cl.contour_loss(jnp.asarray(logits), jnp.asarray(labels))
  b = cl.contour_loss(jnp.asarray(other), jnp.asarray(labels))
  assert float(a) == pytest.approx(float(b), rel=1e-6)
  grad = jax.grad(cl.contour_loss)(jnp.asarray(logits), jnp.asarray(labels))
  assert np.all(grad[ignored] == 0) and np.any(grad[~ignored] != 0)
  all_ignored = jnp.full(labels.shape, 255)
  assert float(cl.contour_loss(jnp.asarray(logits), all_ignored)) == 0.0


def test_fine_tuning_loss_is_alpha_weighted_ce_plus_beta_contour():
  logits, labels = _example()
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  loss_fn = losses.make_loss_fn(aux_weight=0.4, ignore_index=255, class_weights=(1, 5, 5),
                                ce_weight=0.7, contour_weight=0.25)
  total, parts = loss_fn((logits, None), {'label': labels})
  ce = losses.cross_entropy(logits, labels, class_weights=(1, 5, 5))
  contour = cl.contour_loss(logits, labels)
  assert float(parts['decode_loss']) == pytest.approx(float(ce), rel=1e-6)
  assert float(parts['contour_loss']) == pytest.approx(float(contour), rel=1e-6)
  assert float(total) == pytest.approx(0.7 * float(ce) + 0.25 * float(contour), rel=1e-6)
