"""Optimiser and learning-rate schedule of the FANet fine-tuning recipe (SPEC section 4).

AdamW (decoupled weight decay, as PyTorch's `AdamW`) with mmsegmentation's
`PolyLrUpdaterHook(power, min_lr, warmup='linear', warmup_iters, warmup_ratio)`:
the poly learning rate is computed first and the linear warm-up scales it, exactly
as mmcv does (warm-up is applied on top of the decayed value, not of the base value).
"""
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


def adamw(schedule: optax.Schedule, *, betas: tuple[float, float],
          weight_decay: float) -> optax.GradientTransformation:
  """AdamW with PyTorch's defaults (eps 1e-8) and decay applied to every parameter.

  Args:
    schedule: learning-rate schedule.
    betas: Adam's (beta1, beta2).
    weight_decay: decoupled weight decay coefficient (multiplied by the lr, as PyTorch).

  Returns:
    The optax transformation.
  """
  return optax.adamw(schedule, b1=betas[0], b2=betas[1], eps=1e-8,
                     weight_decay=weight_decay)
