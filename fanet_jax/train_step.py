"""The train state and the pure training step, for both tasks.

`train_step(state, batch, rng)` is a pure function: the trainer jits it with the
state replicated and the batch sharded over the mesh's 'data' axis, donating the
old state's buffers. Nothing in it knows how many devices or processes there are.
With `accum_steps = k` the batch is cut into k micro-batches whose gradients are
averaged (a `lax.scan`, so one micro-batch of activations is alive at a time) before
one optimiser step: the step on the whole batch, in about 1/k of the memory.
A step whose loss or gradients are not finite changes nothing but the step count
(`fanet_jax.nonfinite` counts such steps and stops a run that keeps making them).
"""
from typing import Any, Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (and is checkpointed)."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def init_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
               image_shape: tuple[int, ...]) -> TrainState:
  """Initialises parameters, BatchNorm statistics and the optimiser state.

  Args:
    model: the segmentor or classifier.
    tx: the optimiser.
    rng: PRNG key for the initialisers.
    image_shape: (B, H, W, C) of a dummy batch (parameters do not depend on H, W).

  Returns:
    A TrainState at step 0.
  """
  # XLA:CPU compiles a hundred threefry truncated-normal draws slowly
  # (docs/performance.md, Initialisation random-number generator); the 'rbg' generator compiles
  # to one RngBitGenerator op per draw. Initial values only need to be reproducible.
  rng = jax.random.key(jax.random.randint(rng, (), 0, 2**31 - 1), impl='rbg')
  params_rng, dropout_rng = jax.random.split(rng)
  # train=True so that train-only parts (the auxiliary head) get their parameters.
  variables = model.init({'params': params_rng, 'dropout': dropout_rng},
                         jnp.zeros(image_shape, jnp.float32), train=True)
  params = variables['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}),
                    opt_state=tx.init(params))


def state_shapes(tx: optax.GradientTransformation, variables: Any) -> TrainState:
  """The shapes and dtypes of `init_state`'s result, from those of the model's
  variables (`jax.eval_shape` of `model.init`), without tracing the model again.

  Args:
    tx: the optimiser.
    variables: {'params': ..., 'batch_stats': ... (if the model has any)} of
      `jax.ShapeDtypeStruct`s.

  Returns:
    A TrainState of `jax.ShapeDtypeStruct`s.
  """
  def state(variables):
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                      batch_stats=variables.get('batch_stats', {}),
                      opt_state=tx.init(variables['params']))
  return jax.eval_shape(state, variables)


def micro_batches(batch: dict, count: int) -> dict:
  """Cuts (B, ...) arrays into (count, B / count, ...): micro-batch i holds examples
  i, i + count, i + 2 count, ..., so a batch sharded over devices along B stays
  sharded the same way in every micro-batch (no data moves between devices)."""
  def cut(x):
    if x.shape[0] % count:
      raise ValueError(f'batch of {x.shape[0]} does not split into {count} micro-batches')
    return jnp.swapaxes(x.reshape(x.shape[0] // count, count, *x.shape[1:]), 0, 1)
  return jax.tree.map(cut, batch)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    loss_fn: Callable, *, accum_steps: int = 1,
                    prepare_batch: Optional[Callable] = None,
                    skip_nonfinite: bool = True) -> Callable:
  """Builds `train_step(state, batch, rng) -> (state, metrics)`.

  Args:
    model: `apply(variables, batch['image'], train=True)` gives the outputs that
      `loss_fn` takes (a segmentor's (logits, aux_logits), a classifier's logits).
    tx: the optimiser.
    loss_fn: `(outputs, batch) -> (loss, parts)`, e.g. `losses.make_loss_fn`.
    accum_steps: micro-batches per step (gradient accumulation); the batch size
      must be a multiple of it.
    prepare_batch: optional `(batch, rng) -> batch` applied to the whole batch
      first (Mixup / CutMix on the device batch).
    skip_nonfinite: guard the update (below). The guard makes the update wait for
      every gradient, so XLA keeps the whole gradient and optimiser trees alive at
      once instead of updating each tensor as its gradient is ready: more
      temporaries (docs/performance.md, Non-finite guard cost). False gives the unguarded step.

  Returns:
    The pure step function. `rng` is folded with the step so every step draws fresh
    stochastic depth (and mixing); `metrics` holds the loss and `loss_fn`'s parts,
    averaged over the micro-batches, the gradient's global norm `grad_norm`
    (before any clipping), and `skipped`: True when the loss or the gradient's
    norm was not finite, in which case the parameters, BatchNorm statistics and
    optimiser state are returned unchanged (only `step` advances). Without
    `skip_nonfinite` neither `grad_norm` nor `skipped` is computed.
  """
  def train_step(state: TrainState, batch: dict, rng: jax.Array):
    step_rng = jax.random.fold_in(rng, state.step)
    if prepare_batch is not None:
      batch = prepare_batch(batch, jax.random.fold_in(step_rng, 1))

    def objective(params, batch_stats, micro, dropout_rng):
      outputs, updates = model.apply(
          {'params': params, 'batch_stats': batch_stats}, micro['image'], train=True,
          rngs={'dropout': dropout_rng}, mutable=['batch_stats'])
      loss, parts = loss_fn(outputs, micro)
      return loss, (updates.get('batch_stats', {}), parts)

    grad_fn = jax.value_and_grad(objective, has_aux=True)
    if accum_steps == 1:
      (loss, (batch_stats, parts)), grads = grad_fn(state.params, state.batch_stats,
                                                    batch, step_rng)
    else:
      def accumulate(carry, inputs):
        grad_sum, batch_stats = carry
        micro, index = inputs
        (loss, (batch_stats, parts)), grads = grad_fn(
            state.params, batch_stats, micro, jax.random.fold_in(step_rng, index))
        return (jax.tree.map(jnp.add, grad_sum, grads), batch_stats), (loss, parts)

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (grads, batch_stats), (loss, parts) = jax.lax.scan(
          accumulate, (zeros, state.batch_stats),
          (micro_batches(batch, accum_steps), jnp.arange(accum_steps)))
      grads = jax.tree.map(lambda g: g / accum_steps, grads)
      loss, parts = jnp.mean(loss), jax.tree.map(jnp.mean, parts)

    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    updated = TrainState(step=state.step + 1, params=params,
                         batch_stats=batch_stats, opt_state=opt_state)
    if not skip_nonfinite:
      return updated, {'loss': loss, **parts}
    # A non-finite loss or gradient never reaches the state: the step is skipped
    # (the batch is consumed, nothing else changes) and reported. A NaN or inf in any
    # gradient makes the global norm non-finite, and so does a gradient too large to
    # square in float32 (above ~1e19), which no step should apply either. The norm
    # is one sum per leaf that the logged `grad_norm` needs anyway; an isfinite
    # reduction per leaf made XLA compile the step much more slowly.
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    kept = state.replace(step=state.step + 1)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, kept)
    return new_state, {'loss': loss, **parts, 'grad_norm': grad_norm,
                       'skipped': jnp.logical_not(finite)}

  return train_step
