"""Connecting the JAX processes of a multi-host (or multi-process) run.

One process per host, or per GPU, each started with the same command. They find
each other through `jax.distributed.initialize`, from either
- explicit flags: `--coordinator_address HOST:PORT --num_processes N --process_id I`
  (any launcher; all three together), or
- SLURM's environment (`srun`: SLURM_JOB_ID, SLURM_NTASKS, SLURM_PROCID,
  SLURM_LOCALID, SLURM_STEP_NODELIST), which JAX reads itself: the coordinator is
  the job's first node, and with several tasks per node task `SLURM_LOCALID` takes
  that local GPU (so start one task per GPU, every task seeing all the node's GPUs).
A single process (no flags, not under a multi-task SLURM step) needs nothing.
After this, `jax.devices()` lists the devices of every process, and the trainer's
mesh spans them all.
"""
import os
from typing import Any, Callable, Optional, Sequence

import jax
from jax.experimental import multihost_utils


def slurm_tasks() -> int:
  """Number of tasks of the current SLURM step (1 outside SLURM)."""
  if 'SLURM_JOB_ID' not in os.environ or 'SLURM_STEP_NODELIST' not in os.environ:
    return 1
  return int(os.environ.get('SLURM_NTASKS', '1'))


def initialize(coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> bool:
  """Connects this process to the others of the run, if there are others.

  Args:
    coordinator_address: 'host:port' of process 0's coordinator service.
    num_processes: number of processes in the run.
    process_id: this process's index in [0, num_processes).

  Returns:
    Whether `jax.distributed.initialize` was called.

  Raises:
    ValueError: only some of the three explicit settings were given, or they
      disagree with each other.
  """
  explicit = (coordinator_address, num_processes, process_id)
  if any(value is not None for value in explicit):
    if any(value is None for value in explicit):
      raise ValueError('give all of --coordinator_address, --num_processes and '
                       f'--process_id, or none of them; got {explicit}')
    if not 0 <= process_id < num_processes:
      raise ValueError(f'process_id {process_id} is not in [0, {num_processes})')
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
    return True
  if slurm_tasks() > 1:
    jax.distributed.initialize()  # SLURM: JAX reads the task layout itself.
    return True
  return False


def prepare_then_open(load: Callable[[str], Any], splits: Sequence[str]) -> dict:
  """Opens `splits` with `load(split)`, process 0 first.

  The first call may prepare a data set (generate or convert it); the other processes
  wait for process 0 to finish that before they open anything.

  Returns:
    split -> what `load` returned.
  """
  if jax.process_index() == 0:
    load(splits[0])
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('dataset prepared')
  return {split: load(split) for split in splits}
