"""fanet_jax.distributed: which settings start a multi-process run (none are started
here; tests/test_imagenet_training.py runs two real processes through launch.py)."""
import jax
import pytest

from fanet_jax import distributed


def test_single_process_needs_nothing(monkeypatch):
  for var in ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS'):
    monkeypatch.delenv(var, raising=False)
  assert distributed.slurm_tasks() == 1
  assert not distributed.initialize()


def test_partial_explicit_settings_are_refused():
  with pytest.raises(ValueError, match='all of --coordinator_address'):
    distributed.initialize('127.0.0.1:1234', None, 0)
  with pytest.raises(ValueError, match='not in'):
    distributed.initialize('127.0.0.1:1234', 2, 2)


def test_a_multi_task_slurm_step_initialises(monkeypatch):
  monkeypatch.setenv('SLURM_JOB_ID', '77')
  monkeypatch.setenv('SLURM_STEP_NODELIST', 'gpu[01-02]')
  monkeypatch.setenv('SLURM_NTASKS', '16')
  calls = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kw: calls.append(kw))
  assert distributed.slurm_tasks() == 16 and distributed.initialize()
  assert calls == [{}]  # JAX reads SLURM's variables itself
