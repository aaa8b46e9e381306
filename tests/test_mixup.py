"""Mixup / CutMix with label smoothing (fanet_jax/mixup.py) against timm's semantics.

The CutMix box is checked against a NumPy transcription of timm's `rand_bbox` +
`correct_lam`; the rest is checked on images whose values reveal where each pixel
came from, and the random decisions by their frequencies over many keys.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fanet_jax import mixup


def _constant_images(batch, height, width, channels=3):
  """Example i is filled with the value i + 1, so pixels name their source."""
  values = np.arange(1, batch + 1, dtype=np.float32)
  return np.broadcast_to(values[:, None, None, None],
                         (batch, height, width, channels)).copy()


def _numpy_rand_bbox(lam, cy, cx, height, width):
  """timm's `rand_bbox` for a given centre, then `correct_lam`.

  The ratio is computed in float32 like the JAX code (timm uses double); the
  test values keep clear of integer boundaries where the two could differ.
  """
  ratio = np.sqrt(np.float32(1.0) - np.float32(lam))
  cut_h, cut_w = int(height * ratio), int(width * ratio)
  y_lo, y_hi = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
  x_lo, x_hi = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
  mask = np.zeros((height, width), bool)
  mask[y_lo:y_hi, x_lo:x_hi] = True
  return mask, 1.0 - (y_hi - y_lo) * (x_hi - x_lo) / (height * width)


def test_smooth_one_hot_values_are_timms():
  labels = jnp.array([0, 999, 17])
  y = np.asarray(mixup.smooth_one_hot(labels, 1000, 0.1))
  assert y.dtype == np.float32 and y.shape == (3, 1000)
  off, on = np.float32(0.1 / 1000), np.float32(1.0 - 0.1 + 0.1 / 1000)
  expected = np.full((3, 1000), off, np.float32)
  expected[np.arange(3), np.asarray(labels)] = on
  np.testing.assert_array_equal(y, expected)
  np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(mixup.smooth_one_hot(jnp.array([0, 4]), 5, 0.0),
                                np.eye(5, dtype=np.float32)[[0, 4]])


def test_mixup_blends_images_and_targets_with_the_flipped_batch():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(6, 8, 8, 3)).astype(np.float32)
  labels = rng.integers(0, 10, size=6)
  mix = jax.jit(functools.partial(mixup.mix_batch, num_classes=10, cutmix_alpha=0.0))
  y = np.asarray(mixup.smooth_one_hot(jnp.asarray(labels), 10, 0.1))
  for seed in range(4):
    mixed, targets, lam = mix(jax.random.key(seed), images, labels)
    lam = float(lam)
    assert 0.0 < lam < 1.0
    np.testing.assert_allclose(mixed, lam * images + (1 - lam) * images[::-1],
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(targets, lam * y + (1 - lam) * y[::-1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(targets).sum(-1), 1.0, atol=1e-5)


def test_cutmix_box_matches_timm_rand_bbox():
  height, width = 12, 20
  lams, cys, cxs = np.meshgrid(np.array([0.0, 0.1, 0.3, 0.55, 0.8, 0.97, 1.0], np.float32),
                               np.array([0, 3, 6, 11]), np.array([0, 1, 9, 19]),
                               indexing='ij')
  lams, cys, cxs = lams.ravel(), cys.ravel(), cxs.ravel()
  box = jax.jit(jax.vmap(lambda l, y, x: mixup.cutmix_box(l, y, x, height, width)))
  masks, new_lams = box(lams, cys.astype(np.int32), cxs.astype(np.int32))
  for i in range(len(lams)):
    ref_mask, ref_lam = _numpy_rand_bbox(lams[i], cys[i], cxs[i], height, width)
    np.testing.assert_array_equal(masks[i], ref_mask, err_msg=f'case {i}')
    np.testing.assert_allclose(new_lams[i], ref_lam, rtol=0, atol=1e-6)


def test_cutmix_pastes_one_rectangle_from_the_flipped_example():
  batch, height, width = 4, 12, 20
  images = _constant_images(batch, height, width)
  labels = np.array([3, 1, 4, 1])
  mix = jax.jit(jax.vmap(
      functools.partial(mixup.mix_batch, num_classes=5, mixup_alpha=0.0),
      in_axes=(0, None, None)))
  mixed, targets, lams = mix(jax.random.split(jax.random.key(1), 64), images, labels)
  mixed, targets, lams = np.asarray(mixed), np.asarray(targets), np.asarray(lams)
  y = np.asarray(mixup.smooth_one_hot(jnp.asarray(labels), 5, 0.1))
  pasted_some = 0
  for k in range(len(lams)):
    masks = mixed[k] != images               # (B, H, W, C)
    mask = masks[0, :, :, 0]
    assert (masks == mask[None, :, :, None]).all(), 'same box for every channel/example'
    # The box is the only thing that changed, and it came from example B-1-i.
    np.testing.assert_array_equal(mixed[k][masks], images[::-1][masks])
    # Kept-area lambda, exactly.
    np.testing.assert_allclose(lams[k], 1.0 - mask.sum() / (height * width),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(targets[k], lams[k] * y + (1 - lams[k]) * y[::-1],
                               rtol=0, atol=1e-6)
    if mask.any():
      pasted_some += 1
      rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
      rect = np.zeros_like(mask)
      rect[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
      np.testing.assert_array_equal(mask, rect, err_msg='one axis-aligned rectangle')
  assert pasted_some > 40


def test_switch_probability_and_mixup_lambda_distribution():
  # Two examples valued 0 and 1: CutMix leaves only 0s and 1s in example 0, Mixup
  # fills it with 1 - lam, strictly between them.
  images = np.stack([np.zeros((8, 8, 1), np.float32), np.ones((8, 8, 1), np.float32)])
  labels = np.array([0, 1])
  num_keys = 4000
  mix = jax.jit(jax.vmap(functools.partial(mixup.mix_batch, num_classes=2),
                         in_axes=(0, None, None)))
  mixed, _, lams = mix(jax.random.split(jax.random.key(2), num_keys), images, labels)
  mixed, lams = np.asarray(mixed), np.asarray(lams)
  is_cutmix = ((mixed[:, 0] == 0) | (mixed[:, 0] == 1)).all(axis=(1, 2, 3))
  # Binomial(4000, 0.5): standard deviation 0.008 in frequency; allow 5 of them.
  assert abs(is_cutmix.mean() - 0.5) < 0.04
  mixup_lams = lams[~is_cutmix]
  np.testing.assert_allclose(mixed[~is_cutmix, 0, 0, 0, 0], 1.0 - mixup_lams, atol=1e-6)
  # Beta(0.8, 0.8): mean 0.5, variance 0.64 / (2.56 * 2.6) = 0.096.
  assert abs(mixup_lams.mean() - 0.5) < 0.04
  assert abs(mixup_lams.var() - 0.0962) < 0.02


def test_disabled_mixing_is_the_identity():
  images = jnp.asarray(np.random.default_rng(3).normal(size=(4, 8, 8, 3)), jnp.bfloat16)
  labels = jnp.array([0, 1, 2, 3])
  y = mixup.smooth_one_hot(labels, 4, 0.1)
  for kwargs in ({'prob': 0.0}, {'mixup_alpha': 0.0, 'cutmix_alpha': 0.0}):
    mixed, targets, lam = mixup.mix_batch(jax.random.key(0), images, labels,
                                          num_classes=4, **kwargs)
    np.testing.assert_array_equal(mixed, images)
    np.testing.assert_array_equal(targets, y)
    assert float(lam) == 1.0
  # prob=0.5 leaves about half of the batches alone (Mixup only: lam < 1 when mixed).
  mix = jax.jit(jax.vmap(functools.partial(mixup.mix_batch, num_classes=4, prob=0.5,
                                           cutmix_alpha=0.0), in_axes=(0, None, None)))
  mixed, _, lams = mix(jax.random.split(jax.random.key(4), 1000), images, labels)
  assert mixed.dtype == jnp.bfloat16
  assert abs((np.asarray(lams) == 1.0).mean() - 0.5) < 0.08


def test_sharded_batch_matches_unsharded():
  mesh = Mesh(np.asarray(jax.devices()), ('data',))
  assert mesh.size == 8
  rng = np.random.default_rng(5)
  images = rng.normal(size=(16, 12, 12, 3)).astype(np.float32)
  labels = rng.integers(0, 7, size=16)
  fn = functools.partial(mixup.mix_batch, num_classes=7)
  batch = NamedSharding(mesh, P('data'))
  sharded = jax.jit(fn, in_shardings=(NamedSharding(mesh, P()), batch, batch))
  single = jax.jit(fn)
  used_cutmix = set()
  for seed in range(6):
    key = jax.random.key(seed)
    out_sharded = sharded(key, jax.device_put(images, batch), jax.device_put(labels, batch))
    out_single = single(key, images, labels)
    for a, b in zip(out_sharded, out_single):
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # CutMix keeps some pixels exactly; Mixup (0 < lam < 1) changes them all.
    used_cutmix.add(bool((np.asarray(out_single[0]) == images).any()))
  assert used_cutmix == {True, False}, 'both modes should occur among these keys'
