"""The learning-rate schedule equals mmcv's PolyLrUpdaterHook with linear warm-up."""
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
