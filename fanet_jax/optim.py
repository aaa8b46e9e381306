"""Optimisers and learning-rate schedules of the two papers' recipes.

FANet fine-tuning (docs/recipes.md section 2): AdamW (decoupled weight decay, as PyTorch's
`AdamW`) with mmsegmentation's `PolyLrUpdaterHook(power, min_lr, warmup='linear',
warmup_iters, warmup_ratio)`: the poly learning rate is computed first and the
linear warm-up scales it, exactly as mmcv does (warm-up is applied on top of the
decayed value, not of the base value).

ImageNet pretraining (docs/recipes.md section 4, the Swin recipe FANet follows): AdamW without
weight decay on norms and biases, timm's `CosineLRScheduler` per step (linear warm-up
from `warmup_ratio * base_lr`, then a cosine to `min_lr` over the whole run, the
warm-up overriding its start), gradients clipped to a global norm.

DenseAttentionSeg (docs/recipes.md section 3): Adam, lr 1e-3 multiplied by 0.8 every 80k steps,
and the paper's "batch-norm loss weight" read as an L2 penalty of 1e-3 on the
BatchNorm parameters only, added to the gradient as PyTorch's `Adam(weight_decay)`
does (coupled, not decoupled).

DeepLabv3+ on ZeroWaste-f (docs/recipes.md section 5, mmsegmentation's schedule for
that model family): PyTorch's `SGD(momentum, weight_decay)`, whose L2 term is added to
every gradient before the momentum buffer, with the poly schedule without warm-up.
"""
from typing import Any

import jax
import jax.numpy as jnp
import optax


def poly_with_linear_warmup(base_lr: float, num_steps: int, *, power: float,
                            min_lr: float, warmup_steps: int,
                            warmup_ratio: float) -> optax.Schedule:
  """mmcv's poly schedule with linear warm-up.

  Args:
    base_lr: learning rate at step 0 before warm-up.
    num_steps: total optimisation steps (the poly curve reaches `min_lr` there).
    power: poly exponent.
    min_lr: floor of the decay.
    warmup_steps: length of the linear warm-up (0 disables it).
    warmup_ratio: warm-up starts at `warmup_ratio` times the poly value.

  Returns:
    A schedule: step -> learning rate.
  """
  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    # (T - t) / T rather than 1 - t / T: exact near the end in float32.
    remaining = jnp.clip((num_steps - step) / num_steps, 0.0, 1.0)
    lr = (base_lr - min_lr) * remaining ** power + min_lr
    if warmup_steps > 0:
      # mmcv scales by 1 - k with k = (1 - t / W) * (1 - ratio); written out as
      # t / W + ratio * (1 - t / W) so that float32 keeps the 1e-6 start exactly.
      frac = step / warmup_steps
      lr = jnp.where(step < warmup_steps, lr * (frac + warmup_ratio * (1.0 - frac)), lr)
    return lr
  return schedule


def cosine_with_linear_warmup(base_lr: float, num_steps: int, *, min_lr: float,
                              warmup_steps: int, warmup_ratio: float) -> optax.Schedule:
  """timm's `CosineLRScheduler(t_initial=num_steps, lr_min, warmup_t, warmup_lr_init)`.

  Args:
    base_lr: peak learning rate.
    num_steps: total optimisation steps (the cosine reaches `min_lr` there).
    min_lr: floor of the cosine.
    warmup_steps: length of the linear warm-up (0 disables it).
    warmup_ratio: warm-up starts at `warmup_ratio * base_lr`.

  Returns:
    A schedule: step -> learning rate.
  """
  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    progress = jnp.clip(step / num_steps, 0.0, 1.0)
    lr = min_lr + 0.5 * (base_lr - min_lr) * (1.0 + jnp.cos(jnp.pi * progress))
    if warmup_steps > 0:
      start = warmup_ratio * base_lr
      lr = jnp.where(step < warmup_steps,
                     start + step * (base_lr - start) / warmup_steps, lr)
    return lr
  return schedule


def decay_mask(params: Any) -> Any:
  """False for norms and biases (every parameter of 0 or 1 dimension), else True."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def adamw(schedule: optax.Schedule, *, betas: tuple[float, float], weight_decay: float,
          mask: Any = None) -> optax.GradientTransformation:
  """AdamW with PyTorch's defaults (eps 1e-8).

  Args:
    schedule: learning-rate schedule.
    betas: Adam's (beta1, beta2).
    weight_decay: decoupled weight decay coefficient (multiplied by the lr, as PyTorch).
    mask: pytree of bools (or a function of the params giving one) choosing the
      decayed parameters; None decays every parameter.

  Returns:
    The optax transformation.
  """
  return optax.adamw(schedule, b1=betas[0], b2=betas[1], eps=1e-8,
                     weight_decay=weight_decay, mask=mask)


def step_decay(base_lr: float, *, every: int, factor: float) -> optax.Schedule:
  """`base_lr * factor ** (step // every)` (PyTorch's StepLR per iteration)."""
  return lambda step: base_lr * factor ** (jnp.asarray(step) // every)


def batchnorm_mask(params: Any, batch_stats: Any) -> Any:
  """True for the parameters of modules that keep BatchNorm statistics.

  A BatchNorm's `scale` / `bias` sit at the same module path in `params` as its
  `mean` / `var` in `batch_stats`, which is how they are told from every other
  `scale` / `bias` (LayerNorm, conv biases).
  """
  norm_modules = {path[:-1] for path, _ in
                  jax.tree_util.tree_flatten_with_path(batch_stats)[0]}
  return jax.tree_util.tree_map_with_path(lambda path, _: path[:-1] in norm_modules,
                                          params)


def adam_bn_l2(schedule: optax.Schedule, *, betas: tuple[float, float],
               weight_decay: float, mask: Any) -> optax.GradientTransformation:
  """Adam (eps 1e-8) with an L2 penalty added to the gradients of `mask`ed parameters.

  Args:
    schedule: learning-rate schedule.
    betas: Adam's (beta1, beta2).
    weight_decay: the L2 coefficient (gradient += weight_decay * param).
    mask: pytree of bools over the params (see `batchnorm_mask`).

  Returns:
    The optax transformation.
  """
  return optax.chain(optax.masked(optax.add_decayed_weights(weight_decay), mask),
                     optax.scale_by_adam(b1=betas[0], b2=betas[1], eps=1e-8),
                     optax.scale_by_learning_rate(schedule))


def sgd(schedule: optax.Schedule, *, momentum: float,
        weight_decay: float) -> optax.GradientTransformation:
  """PyTorch's SGD: `buf = momentum * buf + (g + weight_decay * p)`, `p -= lr * buf`.

  Args:
    schedule: learning-rate schedule.
    momentum: momentum of the buffer (no dampening, not Nesterov).
    weight_decay: L2 coefficient added to every gradient (coupled, as PyTorch).

  Returns:
    The optax transformation.
  """
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.sgd(schedule, momentum=momentum))
