"""Non-finite steps never reach the parameters, a checkpoint or `best/`.

The jitted step skips a non-finite update (state unchanged but for the step count),
`SkippedSteps` stops a run after `max_nonfinite_steps` in a row, a model with
non-finite logits gets no score, and a NaN metric is never the best.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fanet_jax import checkpoints, losses, optim
from fanet_jax import train_step as train_step_lib
from fanet_jax.nonfinite import NonFiniteError, SkippedSteps


class _TinySegmentor(nn.Module):
  """A 1x1 conv and a BatchNorm: parameters, batch statistics, (logits, None)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(8, (1, 1))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Conv(5, (1, 1))(nn.relu(x)), None


def _batch(poison: bool, seed: int = 0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 5, size=(4, 8, 8)).astype(np.int32)
  images = rng.normal(size=(4, 8, 8, 3)).astype(np.float32)
  if poison:
    images[3, 5, 7, 1] = np.nan  # one pixel of one example of one micro-batch
  return {'image': images, 'label': labels}


@pytest.mark.parametrize('accum_steps', [1, 2])
def test_a_non_finite_step_changes_nothing_but_the_step_count(accum_steps):
  model = _TinySegmentor()
  tx = optim.adamw(lambda step: 1e-3, betas=(0.9, 0.999), weight_decay=1e-3)
  state = train_step_lib.init_state(model, tx, jax.random.key(0), (1, 8, 8, 3))
  loss_fn = losses.make_loss_fn(aux_weight=0.5, ignore_index=255)
  # With two micro-batches the poisoned example is in the second one only.
  step = jax.jit(train_step_lib.make_train_step(model, tx, loss_fn,
                                                accum_steps=accum_steps),
                 donate_argnums=0)
  before = jax.device_get(state)
  state, metrics = step(state, _batch(True), jax.random.key(1))
  assert bool(metrics['skipped']) and not np.isfinite(float(metrics['loss']))
  after = jax.device_get(state)
  assert int(after.step) == 1
  jax.tree.map(np.testing.assert_array_equal,
               (after.params, after.batch_stats, after.opt_state),
               (before.params, before.batch_stats, before.opt_state))

  state, metrics = step(state, _batch(False), jax.random.key(1))
  assert not bool(metrics['skipped']) and np.isfinite(float(metrics['loss']))
  assert np.isfinite(float(metrics['grad_norm'])) and float(metrics['grad_norm']) > 0
  trained = jax.device_get(state)
  assert int(trained.step) == 2
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)),
                                         (trained.params, trained.batch_stats),
                                         (before.params, before.batch_stats)))
  assert all(changed)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(trained))


def test_skipped_steps_are_counted_and_a_streak_stops_the_run():
  flags = {1: False, 2: True, 3: False, 4: True, 5: True}
  skipped = SkippedSteps(limit=3, total=7)
  for step, flag in flags.items():
    skipped.push(step, np.bool_(flag))
  assert (skipped.total, skipped.consecutive) == (9, 1)  # step 5 is still pending
  skipped.flush()
  assert (skipped.total, skipped.consecutive) == (10, 2)
  skipped.push(6, np.bool_(True))
  with pytest.raises(NonFiniteError, match=r'not finite in steps 4-6 \(3 in a row, '
                     r'max_nonfinite_steps=3\).*parameters are still those of step 3'):
    skipped.flush()
  one = SkippedSteps(limit=1)
  one.push(9, np.bool_(True))
  with pytest.raises(NonFiniteError, match='not finite in step 9 '):
    one.flush()
  with pytest.raises(ValueError, match='at least 1'):
    SkippedSteps(limit=0)


def test_a_nan_metric_is_never_the_best(tmp_path):
  ckpt = checkpoints.Checkpointer(str(tmp_path), save_every=10, keep=1)
  state = {'w': jnp.arange(3.0)}
  assert not ckpt.save_best(1, state, {'mIoU': float('nan')})
  assert ckpt.save_best(2, state, {'mIoU': 0.25})
  assert not ckpt.save_best(3, state, {'mIoU': float('nan')})
  ckpt.wait()
  assert ckpt.best_step() == 2
  ckpt.close()


def test_launch_reports_a_diverged_run_in_one_line(monkeypatch, tmp_path, capsys):
  import launch
  from fanet_jax import trainer

  def diverge(config, workdir):
    raise NonFiniteError('training diverged: the loss or gradients were not finite '
                         'in steps 2-4')
  monkeypatch.setattr(trainer, 'train_and_evaluate', diverge)
  assert launch.main(['--workdir', str(tmp_path / 'run')]) == 1
  assert capsys.readouterr().err == ('error: training diverged: the loss or gradients '
                                     'were not finite in steps 2-4\n')


def test_without_the_guard_the_step_is_the_plain_one():
  model = _TinySegmentor()
  tx = optim.adamw(lambda step: 1e-3, betas=(0.9, 0.999), weight_decay=1e-3)
  state = train_step_lib.init_state(model, tx, jax.random.key(0), (1, 8, 8, 3))
  step = jax.jit(train_step_lib.make_train_step(
      model, tx, losses.make_loss_fn(aux_weight=0.5, ignore_index=255),
      skip_nonfinite=False))
  state, metrics = step(state, _batch(True), jax.random.key(1))
  assert 'skipped' not in metrics and 'grad_norm' not in metrics
  assert not all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))
