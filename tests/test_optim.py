"""The learning-rate schedule equals mmcv's PolyLrUpdaterHook with linear warm-up."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fanet_jax import optim


def _mmcv_lr(step, base, total, power, min_lr, warmup, ratio):
  # mmcv: regular lr from poly, then warm-up scales it: lr * (1 - k).
  regular = (base - min_lr) * (1 - step / total) ** power + min_lr
  if step < warmup:
    k = (1 - step / warmup) * (1 - ratio)
    return regular * (1 - k)
  return regular


@pytest.mark.parametrize('step', [0, 1, 700, 1499, 1500, 20000, 39999, 40000])
def test_poly_with_warmup_matches_mmcv(step):
  schedule = optim.poly_with_linear_warmup(9e-5, 40000, power=0.95, min_lr=1e-7,
                                           warmup_steps=1500, warmup_ratio=1e-6)
  want = _mmcv_lr(step, 9e-5, 40000, 0.95, 1e-7, 1500, 1e-6)
  np.testing.assert_allclose(float(schedule(step)), want, rtol=1e-5)


def test_step_decay_multiplies_every_period():
  schedule = optim.step_decay(1e-3, every=80_000, factor=0.8)
  for step, want in [(0, 1e-3), (79_999, 1e-3), (80_000, 8e-4), (240_000, 1e-3 * 0.8**3)]:
    np.testing.assert_allclose(float(schedule(step)), want, rtol=1e-6)


def test_adam_bn_l2_penalises_only_batchnorm_parameters():
  params = {'conv': {'kernel': jnp.full((2,), 2.0)},
            'bn': {'scale': jnp.full((2,), 3.0), 'bias': jnp.full((2,), -10.0)},
            'ln': {'scale': jnp.full((2,), 4.0)}}
  batch_stats = {'bn': {'mean': jnp.zeros(2), 'var': jnp.ones(2)}}
  mask = optim.batchnorm_mask(params, batch_stats)
  assert mask == {'conv': {'kernel': False}, 'bn': {'scale': True, 'bias': True},
                  'ln': {'scale': False}}
  wd, lr, grad = 0.1, 0.5, 0.25
  tx = optim.adam_bn_l2(lambda step: lr, betas=(0.9, 0.999), weight_decay=wd, mask=mask)
  grads = jax.tree.map(lambda p: jnp.full_like(p, grad), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  # PyTorch Adam(weight_decay): g += wd * p, and the first step is -lr * g / (|g| + eps)
  # (the decay turns the bias's gradient negative: its step changes sign).
  for module, name in [('conv', 'kernel'), ('bn', 'scale'), ('bn', 'bias'), ('ln', 'scale')]:
    g = grad + wd * params[module][name] * mask[module][name]
    np.testing.assert_allclose(updates[module][name], -lr * g / (jnp.abs(g) + 1e-8),
                               rtol=1e-5)


def _timm_cosine(step, base, total, min_lr, warmup, warmup_init):
  # timm CosineLRScheduler(t_initial=total, lr_min, warmup_t, warmup_lr_init), per step.
  if step < warmup:
    return warmup_init + step * (base - warmup_init) / warmup
  return min_lr + 0.5 * (base - min_lr) * (1 + np.cos(np.pi * step / total))


@pytest.mark.parametrize('step', [0, 1, 10_000, 19_999, 20_000, 150_000, 299_999, 300_000])
def test_cosine_with_warmup_matches_timm(step):
  schedule = optim.cosine_with_linear_warmup(1e-3, 300_000, min_lr=1e-5,
                                             warmup_steps=20_000, warmup_ratio=1e-3)
  want = _timm_cosine(step, 1e-3, 300_000, 1e-5, 20_000, 1e-6)
  assert float(schedule(step)) == pytest.approx(want, rel=1e-5)


def test_no_weight_decay_on_norms_and_biases():
  params = {'conv': {'kernel': jnp.ones((3, 3, 2, 2)), 'bias': jnp.ones(2)},
            'norm': {'scale': jnp.ones(2), 'bias': jnp.ones(2)}}
  tx = optim.adamw(lambda step: 0.1, betas=(0.9, 0.999), weight_decay=0.5,
                   mask=optim.decay_mask(params))
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  # Zero gradients: only the decoupled decay moves a parameter, -lr * wd * p.
  np.testing.assert_allclose(updates['conv']['kernel'], -0.05)
  for leaf in (updates['conv']['bias'], updates['norm']['scale'], updates['norm']['bias']):
    np.testing.assert_array_equal(leaf, 0.0)


def test_sgd_follows_pytorch_sgd_with_momentum_and_weight_decay():
  # torch.optim.SGD(lr, momentum, weight_decay), written out: d = g + wd * p;
  # buf = d on the first step, then momentum * buf + d; p -= lr * buf.
  rng = np.random.default_rng(0)
  p = {'w': rng.normal(size=(3, 2)).astype(np.float32), 'b': np.float32([0.5, -1.0])}
  lrs, momentum, wd = [0.01, 0.009, 0.008], 0.9, 5e-4
  tx = optim.sgd(lambda step: jnp.asarray(lrs)[step], momentum=momentum, weight_decay=wd)
  state, params = tx.init(p), jax.tree.map(jnp.asarray, p)
  want, buf = jax.tree.map(np.float64, p), None
  for lr in lrs:
    grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in p.items()}
    updates, state = tx.update(grads, state, params)
    params = jax.tree.map(lambda a, u: a + u, params, updates)
    d = {k: grads[k] + wd * want[k] for k in want}
    buf = d if buf is None else {k: momentum * buf[k] + d[k] for k in d}
    want = {k: want[k] - lr * buf[k] for k in want}
  for k in want:
    np.testing.assert_allclose(params[k], want[k], rtol=1e-5, atol=1e-7)
