"""Variable shapes of factory models for the conversion tests: traced, never computed.

`shapes(name)` is `jax.eval_shape` of the model's init in training mode (so that the
auxiliary head has its variables) on 64x64 RGB input; `flat(variables)` keys the
`params` and `batch_stats` leaves by (collection, *path), as the converter's tables do;
`numpy_variables(model, shape)` fills a model's traced variables with seeded numpy
draws, for the tests that run a model without compiling its init.
"""
import jax
import jax.numpy as jnp
import numpy as np
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


def numpy_variables(model, shape: tuple, seed: int = 0) -> dict:
  """Variables of `model` (eval-mode init on zeros of `shape`) drawn with numpy:
  kernels N(0, 1/fan_in), other leaves 0.1 N(0, 1) (scales around 1), BN variance 1."""
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == 'var':
      return jnp.ones(s.shape, s.dtype)
    std = 1.0 / np.sqrt(np.prod(s.shape[:-1])) if name == 'kernel' else 0.1
    value = std * rng.standard_normal(s.shape) + (1.0 if name == 'scale' else 0.0)
    return jnp.asarray(value, s.dtype)
  return jax.tree_util.tree_map_with_path(
      fill, jax.eval_shape(lambda: model.init(RNGS, jnp.zeros(shape))))
