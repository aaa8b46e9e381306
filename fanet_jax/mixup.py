"""Mixup / CutMix on the device batch, with label smoothing (docs/recipes.md section 4).

The ImageNet pretraining recipe follows Swin / ConvNeXt, which use timm's `Mixup`
with mixup_alpha 0.8, cutmix_alpha 1.0, prob 1.0, switch_prob 0.5, mode 'batch',
correct_lam True and label smoothing 0.1. This module reproduces those semantics
in pure jax.numpy so it runs inside the jitted train step on the sharded batch:

* one decision per batch: with probability `prob` the batch is mixed, and then
  CutMix is chosen with probability `switch_prob` (when both alphas are > 0);
* lambda ~ Beta(alpha, alpha) of the chosen method;
* example i is paired with example B-1-i (the batch flipped);
* Mixup blends `lam * x + (1 - lam) * x_flipped`;
* CutMix pastes a box from the flipped batch, the box drawn like timm's
  `rand_bbox` (side `int(side * sqrt(1 - lam))`, centre uniform over the
  image, clipped), and lambda is corrected to 1 - (box area) / (H * W);
* targets are label-smoothed one-hots mixed as `lam * y + (1 - lam) * y_flipped`.

Shapes stay static: the box is a dynamic (H, W) mask built from iota comparisons,
and both methods are one blend with a per-pixel weight, so there is no branch.
"""
import jax
import jax.numpy as jnp


def smooth_one_hot(labels: jax.Array, num_classes: int,
                   smoothing: float = 0.1) -> jax.Array:
  """Label-smoothed one-hot targets, as timm's `mixup_target` builds them.

  Args:
    labels: (B,) integer class ids.
    num_classes: number of classes.
    smoothing: label smoothing; every class gets `smoothing / num_classes` and
      the true class `1 - smoothing + smoothing / num_classes`.

  Returns:
    (B, num_classes) float32 targets, each row summing to 1.
  """
  # The two values are computed in Python (double) and rounded once to float32,
  # as timm does with `torch.full(..., off_value)` and `scatter_(..., on_value)`.
  off_value = smoothing / num_classes
  on_value = 1.0 - smoothing + off_value
  hot = labels[:, None] == jnp.arange(num_classes, dtype=labels.dtype)[None, :]
  return jnp.where(hot, jnp.float32(on_value), jnp.float32(off_value))


def cutmix_box(lam: jax.Array, cy: jax.Array, cx: jax.Array, height: int,
               width: int) -> tuple[jax.Array, jax.Array]:
  """timm's `rand_bbox` + `correct_lam` for a given centre: box mask and lambda.

  Args:
    lam: scalar float32 lambda drawn from the Beta distribution.
    cy: scalar int32 row of the box centre, in [0, H).
    cx: scalar int32 column of the box centre, in [0, W).
    height: image height H.
    width: image width W.

  Returns:
    `(in_box, lam)`: an (H, W) bool mask of the pasted box and the corrected
    lambda `1 - area / (H * W)`, exactly the fraction of pixels kept.
  """
  cut_rat = jnp.sqrt(1.0 - lam)
  # int() truncates toward zero, which is floor for these non-negative values.
  cut_h = jnp.floor(height * cut_rat).astype(jnp.int32)
  cut_w = jnp.floor(width * cut_rat).astype(jnp.int32)
  # timm extends the box by `cut // 2` on both sides of the centre, so before
  # clipping its sides are `cut` rounded down to even; kept for fidelity.
  y_lo = jnp.clip(cy - cut_h // 2, 0, height)
  y_hi = jnp.clip(cy + cut_h // 2, 0, height)
  x_lo = jnp.clip(cx - cut_w // 2, 0, width)
  x_hi = jnp.clip(cx + cut_w // 2, 0, width)
  rows = jax.lax.broadcasted_iota(jnp.int32, (height, width), 0)
  cols = jax.lax.broadcasted_iota(jnp.int32, (height, width), 1)
  in_box = (rows >= y_lo) & (rows < y_hi) & (cols >= x_lo) & (cols < x_hi)
  area = (y_hi - y_lo) * (x_hi - x_lo)
  lam = 1.0 - area.astype(jnp.float32) / jnp.float32(height * width)
  return in_box, lam


def mix_batch(rng: jax.Array, images: jax.Array, labels: jax.Array, *,
              num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
              switch_prob: float = 0.5, prob: float = 1.0,
              label_smoothing: float = 0.1):
  """Mixup or CutMix of a whole batch against its flipped self (timm, mode 'batch').

  Jit-compatible with static shapes; the keyword arguments are Python values
  fixed at trace time. The batch axis may be sharded: the flip of the global
  batch is left to XLA, and the random decisions are scalars.

  Args:
    rng: PRNG key; all decisions of this batch derive from it.
    images: (B, H, W, C) float images (any float dtype; the output keeps it).
    labels: (B,) integer class ids.
    num_classes: number of classes of the targets.
    mixup_alpha: Beta parameter of Mixup's lambda; 0 disables Mixup.
    cutmix_alpha: Beta parameter of CutMix's lambda; 0 disables CutMix.
    switch_prob: probability of CutMix rather than Mixup when both are enabled.
    prob: probability that the batch is mixed at all.
    label_smoothing: smoothing of the one-hot targets, applied before mixing.

  Returns:
    `(mixed_images, targets, lam)`: images of the input shape and dtype,
    (B, num_classes) float32 soft targets, and the scalar float32 lambda (the
    weight of each example's own label; 1 when the batch was not mixed).
  """
  y = smooth_one_hot(labels, num_classes, label_smoothing)
  if prob <= 0.0 or (mixup_alpha <= 0.0 and cutmix_alpha <= 0.0):
    return images, y, jnp.float32(1.0)

  rng_apply, rng_switch, rng_lam, rng_box = jax.random.split(rng, 4)
  if mixup_alpha > 0.0 and cutmix_alpha > 0.0:
    use_cutmix = jax.random.uniform(rng_switch) < switch_prob
    alpha = jnp.where(use_cutmix, jnp.float32(cutmix_alpha), jnp.float32(mixup_alpha))
  else:
    use_cutmix = jnp.asarray(cutmix_alpha > 0.0)
    alpha = jnp.float32(max(mixup_alpha, cutmix_alpha))
  lam = jax.random.beta(rng_lam, alpha, alpha, dtype=jnp.float32)
  # Not mixing is lambda 1: an empty box for CutMix, the identity for Mixup.
  lam = jnp.where(jax.random.uniform(rng_apply) < prob, lam, jnp.float32(1.0))

  height, width = images.shape[1:3]
  rng_y, rng_x = jax.random.split(rng_box)
  # The centre is uniform over the image, as timm's `np.random.randint(0, H)`.
  cy = jax.random.randint(rng_y, (), 0, height)
  cx = jax.random.randint(rng_x, (), 0, width)
  in_box, lam_box = cutmix_box(lam, cy, cx, height, width)
  lam = jnp.where(use_cutmix, lam_box, lam)
  # One blend serves both methods: weight 0 inside the box and 1 outside for
  # CutMix (x * 1 + x_flipped * 0 is exact), lambda everywhere for Mixup.
  weight = jnp.where(use_cutmix, jnp.where(in_box, 0.0, 1.0), lam)
  weight = weight.astype(jnp.float32)[None, :, :, None]
  # Blend in (at least) float32 so bfloat16 inputs round once, at the end.
  compute_dtype = jnp.promote_types(images.dtype, jnp.float32)
  x = images.astype(compute_dtype)
  x_flipped = jnp.flip(x, axis=0)
  mixed = x * weight + x_flipped * (1.0 - weight)

  targets = lam * y + (1.0 - lam) * jnp.flip(y, axis=0)
  return mixed.astype(images.dtype), targets, lam
