"""The train state and the pure training step of the segmentor (STYLE.md rule 5).

`train_step(state, batch, rng)` is a pure function: the trainer jits it with the
state replicated and the batch sharded over the mesh's 'data' axis, donating the
old state's buffers. Nothing in it knows how many devices there are.
"""
from typing import Any, Callable

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
    model: the segmentor.
    tx: the optimiser.
    rng: PRNG key for the initialisers.
    image_shape: (B, H, W, C) of a dummy batch (parameters do not depend on H, W).

  Returns:
    A TrainState at step 0.
  """
  # XLA:CPU compiles a hundred threefry truncated-normal draws slowly (about 3x the
  # time of the model's forward pass, measured here); the 'rbg' generator compiles
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


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    loss_fn: Callable, *, ignore_index: int = 255) -> Callable:
  """Builds `train_step(state, batch, rng) -> (state, metrics)`.

  Args:
    model: the segmentor; `apply(..., train=True)` returns (logits, aux_logits) at
      the input resolution (aux_logits None without an auxiliary head).
    tx: the optimiser.
    loss_fn: `(logits, aux_logits, labels) -> (loss, parts)`, see
      `losses.make_loss_fn`.
    ignore_index: label value left out of the logged pixel accuracy.

  Returns:
    The pure step function. `batch` holds `image` (B, H, W, 3) float32 and `label`
    (B, H, W) int32; `rng` is folded with the step so every step draws fresh dropout.
  """
  def train_step(state: TrainState, batch: dict, rng: jax.Array):
    step_rng = jax.random.fold_in(rng, state.step)

    def objective(params):
      (logits, aux_logits), updates = model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, batch['image'],
          train=True, rngs={'dropout': step_rng}, mutable=['batch_stats'])
      loss, parts = loss_fn(logits, aux_logits, batch['label'])
      valid = batch['label'] != ignore_index
      correct = (jnp.argmax(logits, -1) == batch['label']) & valid
      parts['pixel_acc'] = jnp.sum(correct) / jnp.maximum(jnp.sum(valid), 1)
      return loss, (updates['batch_stats'], parts)

    (loss, (batch_stats, parts)), grads = jax.value_and_grad(
        objective, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = TrainState(step=state.step + 1, params=params,
                           batch_stats=batch_stats, opt_state=opt_state)
    return new_state, {'loss': loss, **parts}

  return train_step
