"""Variable shapes of factory models for the conversion tests: traced, never computed.

`shapes(name)` is `jax.eval_shape` of the model's init in training mode (so that the
auxiliary head has its variables) on 64x64 RGB input; `flat(variables)` keys the
`params` and `batch_stats` leaves by (collection, *path), as the converter's tables do.
"""
import jax
import jax.numpy as jnp
from flax import traverse_util

from fanet_jax import models

RNGS = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}


def shapes(name: str) -> dict:
  """Args: name: a factory model. Returns: its variables as ShapeDtypeStructs."""
  model = models.create(name)
  return jax.eval_shape(lambda: model.init(RNGS, jnp.zeros((1, 64, 64, 3)), train=True))


def flat(variables: dict) -> dict:
  """Args: variables {'params', 'batch_stats'}. Returns: {(collection, *path): leaf}."""
  return {(c,) + k: v for c in ('params', 'batch_stats')
          for k, v in traverse_util.flatten_dict(variables.get(c) or {}).items()}
