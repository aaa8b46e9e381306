"""Device mesh and shardings: data parallelism over one `('data',)` mesh axis.

The state is replicated, batches are split along their first axis over every device
of every process. Under `jax.jit` with these shardings, BatchNorm statistics are
reduced over the global batch (SyncBN semantics, docs/models.md section 2) with no extra code.
"""
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def create_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh named 'data' over the given devices (default: all of them)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), ('data',))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding that puts a full copy on every device."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding that splits the leading (batch) axis over the 'data' axis."""
  return NamedSharding(mesh, P('data'))


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """This process's share of a global batch.

  Raises:
    ValueError: the global batch does not split evenly over the devices.
  """
  if global_batch_size % mesh.size:
    raise ValueError(f'global batch size {global_batch_size} is not divisible by the '
                     f'{mesh.size} devices of the mesh')
  return global_batch_size // jax.process_count()


def shard_batch(local_batch: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles per-process numpy batches into global arrays sharded over 'data'."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def eval_local_batch_size(batch_size: int, mesh: Mesh) -> int:
  """This process's share of an evaluation batch of `batch_size` examples rounded up to
  whole devices (evaluation batches are padded, so any size works)."""
  global_batch = -(-batch_size // mesh.size) * mesh.size
  return global_batch // jax.process_count()
