"""`train_and_evaluate(config, workdir)`: the whole run, read top to bottom.

Mesh, data, model, shardings, step, restore, loop, as big_vision's
`train.py` does it. Resuming is automatic: the newest checkpoint in `workdir` (state
and data-iterator position) is restored, so re-running the same command continues
where the last run stopped, or reports that the run already finished. SIGTERM and
Ctrl-C save a checkpoint before exiting, so nothing is lost when a job dies.

One loop serves both tasks: it asks the task (`fanet_jax/tasks/`: segmentation, scored
by mIoU, or ImageNet classification, scored by top-1) for the data, the objective and
the evaluation, and never branches on the task itself. It runs
on every device of every JAX process (`fanet_jax.distributed` connects them first):
each process feeds its rows of the global batch, all of them take part in the
checkpoints, and only process 0 writes logs and results.

A run has up to two phases (DenseAttentionSeg, docs/recipes.md section 3): `num_steps` of
cross-entropy, then `contour_steps` of cross-entropy plus the contour loss, which
start from the state the first phase ended with; one checkpoint series spans both,
so an interrupted run resumes in whichever phase it was.
"""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from fanet_jax import (checkpoints, models, nonfinite, optim, pretrained, sharding,
                       stopping, tasks)
from fanet_jax import config as config_lib
from fanet_jax import workdir as workdir_lib
from fanet_jax import train_step as train_step_lib
from fanet_jax.config import Config, ConfigError
from fanet_jax.progress import MetricWriter, ProgressBar, write_atomically

RESULTS_FILE = 'results.json'


def _optimizer(config: Config, total_steps: int, abstract_params, abstract_stats):
  """The config's schedule and optimiser: (schedule, optax transformation)."""
  if config.lr_schedule == 'cosine':
    schedule = optim.cosine_with_linear_warmup(
        config.learning_rate, total_steps, min_lr=config.min_learning_rate,
        warmup_steps=config.warmup_steps, warmup_ratio=config.warmup_ratio)
  elif config.lr_schedule == 'poly':
    schedule = optim.poly_with_linear_warmup(
        config.learning_rate, total_steps, power=config.poly_power,
        min_lr=config.min_learning_rate, warmup_steps=config.warmup_steps,
        warmup_ratio=config.warmup_ratio)
  elif config.lr_schedule == 'step':
    schedule = optim.step_decay(config.learning_rate, every=config.lr_decay_every,
                                factor=config.lr_decay_factor)
  else:
    raise ValueError("lr_schedule must be 'poly', 'step' or 'cosine', got "
                     f'{config.lr_schedule!r}')
  if config.optimizer == 'adamw':
    mask = None if config.decay_norms_and_biases else optim.decay_mask(abstract_params)
    tx = optim.adamw(schedule, betas=config.betas, weight_decay=config.weight_decay,
                     mask=mask)
  elif config.optimizer == 'adam_bn_l2':
    mask = optim.batchnorm_mask(abstract_params, abstract_stats)
    tx = optim.adam_bn_l2(schedule, betas=config.betas, weight_decay=config.weight_decay,
                          mask=mask)
  elif config.optimizer == 'sgd':
    tx = optim.sgd(schedule, momentum=config.momentum, weight_decay=config.weight_decay)
  else:
    raise ValueError("optimizer must be 'adamw', 'adam_bn_l2' or 'sgd', got "
                     f'{config.optimizer!r}')
  if config.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  return schedule, tx


def _summary(prefix: str, task, metrics: dict) -> dict:
  return {f'{prefix}/{k}': metrics[k] for k in task.summary_keys if k in metrics}


def _variables(state) -> dict:
  return {'params': state.params, 'batch_stats': state.batch_stats}


def _init_from(state, path: str, replicated):
  """Copies the subtrees `path` shares with the model into a fresh state."""
  host = lambda tree: jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)
  variables, loaded = pretrained.merge(
      {'params': host(state.params), 'batch_stats': host(state.batch_stats)},
      pretrained.load_variables(path))
  if jax.process_index() == 0:
    print(f'Initialised {", ".join(loaded)} from {path}')
  return state.replace(params=jax.device_put(variables['params'], replicated),
                       batch_stats=jax.device_put(variables['batch_stats'], replicated))


def build_model(config: Config):
  """The config's model, in its compute dtype."""
  if config.compute_dtype not in ('float32', 'bfloat16'):
    raise ValueError("compute_dtype must be 'float32' or 'bfloat16', got "
                     f'{config.compute_dtype!r}')
  dtype = {} if config.compute_dtype == 'float32' else {'dtype': jnp.bfloat16}
  return models.create(config.model, num_classes=config.num_classes, **dtype,
                       **config.model_kwargs)


def train_and_evaluate(config: Config, workdir: str, *, devices=None) -> dict:
  """Trains the model of `config`, evaluating on the eval split as it goes, then
  evaluates the best checkpoint on the test split.

  Args:
    config: the resolved experiment config.
    workdir: where checkpoints, `metrics.jsonl`, `config.json` and `results.json` go.
    devices: the devices to train on (default: every device of every process).

  Returns:
    The test-split metrics of the best checkpoint (as written to `results.json`).

  Raises:
    workdir_lib.WorkdirBusyError: another run holds `workdir`.
    ConfigError: resuming with a config that differs in a key that may not change
      (`workdir_lib.check_resume`).
  """
  with workdir_lib.lock(workdir, enabled=jax.process_index() == 0):
    return _train_and_evaluate(config, workdir, devices)


def _write_config(config: Config, workdir: str, resuming: bool):
  """Checks a resumed run's config against the one it started with, then records it."""
  path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
  if resuming and os.path.exists(path):
    with open(path) as f:
      workdir_lib.check_resume(json.load(f), config, workdir)
  if jax.process_index() == 0:
    write_atomically(path, config_lib.to_json(config))


def _train_and_evaluate(config: Config, workdir: str, devices) -> dict:
  task = tasks.create(config)
  is_main = jax.process_index() == 0
  results_path = os.path.join(workdir, RESULTS_FILE)
  total_steps = config.num_steps + config.contour_steps
  mesh = sharding.create_mesh(devices)
  replicated = sharding.replicated(mesh)
  if config.batch_size % (config.grad_accum_steps * mesh.size):
    raise ConfigError(
        f'batch_size {config.batch_size} must be a multiple of grad_accum_steps x '
        f'devices = {config.grad_accum_steps} x {mesh.size} (set batch_size, or make '
        'fewer devices visible, e.g. CUDA_VISIBLE_DEVICES)')

  # Before the model is traced: a refused config or a finished run answers at once.
  ckpt = checkpoints.Checkpointer(workdir, save_every=config.checkpoint_every,
                                  keep=config.keep_checkpoints,
                                  best_metric=task.best_metric)
  start_step = ckpt.latest_step() or 0
  try:
    _write_config(config, workdir, resuming=bool(start_step))
  except ConfigError:
    ckpt.close()
    raise
  if start_step >= total_steps and os.path.exists(results_path):
    with open(results_path) as f:
      results = json.load(f)
    if is_main:
      print(f'{workdir}: the run already finished ({total_steps} steps); '
            'its test results:')
      print(task.format_table(results))
    ckpt.close()
    return results

  model = build_model(config)
  channels = task.image_channels
  init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
  abstract_variables = jax.eval_shape(
      functools.partial(model.init, train=True),
      {'params': init_rng, 'dropout': init_rng}, jnp.zeros((1, 64, 64, channels)))
  schedule, tx = _optimizer(config, total_steps, abstract_variables['params'],
                            abstract_variables.get('batch_stats', {}))
  init = jax.jit(functools.partial(train_step_lib.init_state, model, tx,
                                   image_shape=(1, 64, 64, channels)),
                 out_shardings=replicated)
  abstract_state = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
      train_step_lib.state_shapes(tx, abstract_variables))

  sources = task.load_sources((config.train_split, config.eval_split,
                               config.test_split))
  data_iter = iter(task.train_loader(sources[config.train_split], mesh))
  if start_step:
    state = ckpt.restore(abstract_state, data_iter)
    # The newest readable checkpoint: older than `latest_step()` if that one was not.
    start_step = int(np.asarray(state.step.addressable_data(0)))
    logging.info('Resumed from step %d', start_step)
    if is_main:
      print(f'Resuming from the checkpoint at step {start_step} in {workdir}')
  else:
    state = init(init_rng)
    if config.init_from:
      state = _init_from(state, config.init_from, replicated)

  def compile_step(contour: bool):
    loss_fn, prepare_batch = task.objective(contour)
    return jax.jit(
        train_step_lib.make_train_step(model, tx, loss_fn,
                                       accum_steps=config.grad_accum_steps,
                                       prepare_batch=prepare_batch,
                                       skip_nonfinite=config.skip_nonfinite),
        in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
        out_shardings=(replicated, replicated), donate_argnums=0)

  step_fns = {}  # phase (contour loss on?) -> jitted step, compiled when reached
  writer = MetricWriter(workdir, enabled=is_main, resume_step=start_step)
  skipped = nonfinite.SkippedSteps(
      config.max_nonfinite_steps, total=int(writer.last.get(nonfinite.SKIPPED_KEY, 0)))
  progress = ProgressBar(start_step, total_steps, config.batch_size, enabled=is_main)
  # Processes agree on a stop every 10 steps, or every checkpoint interval if shorter.
  stop = stopping.StopRequest(sync_every=min(10, config.checkpoint_every))
  step = start_step
  try:
    while step < total_steps:
      contour = step >= config.num_steps
      if contour not in step_fns:
        if contour and is_main:
          progress.write(f'Step {step}: fine-tuning phase, cross-entropy + '
                         f'{config.contour_weight} x contour loss')
        step_fns[contour] = compile_step(contour)
      batch = sharding.shard_batch(next(data_iter), mesh)
      state, step_metrics = step_fns[contour](state, batch, train_rng)
      step += 1
      if config.skip_nonfinite:
        skipped.push(step, step_metrics.pop('skipped'))
      forced = step in (config.num_steps, total_steps)
      evaluate = step % config.eval_every == 0 or forced
      log = step % config.log_every == 0 or step == total_steps
      if log or evaluate or ckpt.due(step):
        skipped.flush()  # a diverged run stops here, before it saves anything
      if log:
        scalars = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        scalars['lr'] = float(schedule(step - 1))
        if config.skip_nonfinite:
          scalars[nonfinite.SKIPPED_KEY] = skipped.total
        writer.write(step, scalars)
        progress.update(step, scalars)
      else:
        progress.update(step)
      ckpt.save(step, state, data_iter, force=forced)
      if evaluate:
        progress.pause()
        val = task.evaluate(model, _variables(state), sources[config.eval_split], mesh)
        writer.write(step, _summary(config.eval_split, task, val))
        offered = ckpt.save_best(step, state, val)
        if is_main:
          progress.write(f'\n{config.eval_split} split at step {step}:\n'
                         f'{task.format_table(val)}')
          if not offered:
            progress.write(f'{config.eval_split} {task.best_metric} is not '
                           f'finite at step {step}: not a candidate for best/')
      if stop.agreed(step):
        ckpt.save_now(step, state, data_iter)
        raise stopping.Stopped(f'Stopped by {stop.signal_name} at step {step}; '
                               'checkpoint saved. Run the same command again to '
                               'resume.', stop.signal_name)
  except nonfinite.NonFiniteError:
    ckpt.close()  # let earlier (finite) saves finish
    raise
  except KeyboardInterrupt:
    if stop.signal_name == 'SIGINT' or any(x.is_deleted() for x in jax.tree.leaves(state)):
      # A second Ctrl-C (quit without saving), or one inside a step, whose input
      # state was donated: nothing to save.
      ckpt.close()  # lets saves already started finish
      raise stopping.Stopped(f'Interrupted after step {step}, not saved; the newest '
                             f'checkpoint is step {ckpt.latest_step() or 0}. Run the '
                             'same command again to resume from it.', 'SIGINT') from None
    ckpt.save_now(step, state, data_iter)
    raise stopping.Stopped(f'Interrupted at step {step}; checkpoint saved. Run the same '
                           'command again to resume.', 'SIGINT') from None
  finally:
    stop.close()
    progress.close()

  ckpt.wait()
  best_step = ckpt.best_step()
  best = state
  if best_step is not None:
    try:
      best = ckpt.restore_best(abstract_state)
    except Exception as e:  # pylint: disable=broad-except  (any unreadable file)
      if is_main:
        print(f'The best checkpoint (step {best_step}) in {workdir} cannot be read '
              f'({type(e).__name__}); testing the final state of step {step} instead')
      best_step = None
  results = task.evaluate(model, _variables(best), sources[config.test_split], mesh)
  results['step'] = int(best_step if best_step is not None else step)
  results['split'] = config.test_split
  if is_main:
    write_atomically(results_path, json.dumps(results, indent=2))
    writer.write(step, _summary(config.test_split, task, results))
    print(f'\n{config.test_split} split, best {config.eval_split} checkpoint '
          f'(step {results["step"]}):')
    print(task.format_table(results))
  ckpt.close()
  writer.close()
  return results
