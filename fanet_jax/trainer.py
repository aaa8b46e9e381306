"""`train_and_evaluate(config, workdir)`: the whole run, read top to bottom.

Mesh, data, model, shardings, step, restore, loop (STYLE.md rule 5), as big_vision's
`train.py` does it. Resuming is automatic: the newest checkpoint in `workdir` (state
and data-iterator position) is restored, so re-running the same command continues
where the last run stopped, or reports that the run already finished. SIGTERM and
Ctrl-C save a checkpoint before exiting, so nothing is lost when a job dies.

A run has up to two phases (DenseAttentionSeg, SPEC section 3): `num_steps` of
cross-entropy, then `contour_steps` of cross-entropy plus the contour loss, which
start from the state the first phase ended with; one checkpoint series spans both,
so an interrupted run resumes in whichever phase it was.
"""
import functools
import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from fanet_jax import (checkpoints, evaluation, inputs, losses, models, optim,
                       pretrained, sharding)
from fanet_jax import metrics as metrics_lib
from fanet_jax import train_step as train_step_lib
from fanet_jax.config import Config
from fanet_jax.progress import MetricWriter, ProgressBar

RESULTS_FILE = 'results.json'


class _StopRequest:
  """Turns SIGTERM (a scheduler's pre-emption notice) into a flag the loop checks."""

  def __init__(self):
    self.requested = False
    try:
      signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread (e.g. inside some test runners).
      pass

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True


def _optimizer(config: Config, total_steps: int, abstract_params, abstract_stats):
  """The config's schedule and optimiser: (schedule, optax transformation)."""
  if config.lr_schedule == 'poly':
    schedule = optim.poly_with_linear_warmup(
        config.learning_rate, total_steps, power=config.poly_power,
        min_lr=config.min_learning_rate, warmup_steps=config.warmup_steps,
        warmup_ratio=config.warmup_ratio)
  elif config.lr_schedule == 'step':
    schedule = optim.step_decay(config.learning_rate, every=config.lr_decay_every,
                                factor=config.lr_decay_factor)
  else:
    raise ValueError(f"lr_schedule must be 'poly' or 'step', got {config.lr_schedule!r}")
  if config.optimizer == 'adamw':
    return schedule, optim.adamw(schedule, betas=config.betas,
                                 weight_decay=config.weight_decay)
  if config.optimizer == 'adam_bn_l2':
    mask = optim.batchnorm_mask(abstract_params, abstract_stats)
    return schedule, optim.adam_bn_l2(schedule, betas=config.betas,
                                      weight_decay=config.weight_decay, mask=mask)
  raise ValueError(f"optimizer must be 'adamw' or 'adam_bn_l2', got {config.optimizer!r}")


def _evaluate(config: Config, model, state, source, mesh) -> dict:
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  return evaluation.evaluate(
      model, variables, inputs.eval_batches(config, source, mesh), mesh=mesh,
      num_classes=config.num_classes, ignore_index=config.ignore_index,
      class_names=inputs.class_names(config), foreground=config.foreground_classes)


def _summary(prefix: str, metrics: dict) -> dict:
  return {f'{prefix}/{k}': metrics[k] for k in ('mIoU', 'aAcc', 'mAcc', 'fwIoU', 'fgIoU')
          if k in metrics}


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


def train_and_evaluate(config: Config, workdir: str) -> dict:
  """Trains the segmentor of `config`, evaluating on the eval split as it goes, then
  evaluates the best checkpoint on the test split.

  Args:
    config: the resolved experiment config.
    workdir: where checkpoints, `metrics.jsonl` and `results.json` go.

  Returns:
    The test-split metrics of the best checkpoint (as written to `results.json`).
  """
  is_main = jax.process_index() == 0
  results_path = os.path.join(workdir, RESULTS_FILE)
  total_steps = config.num_steps + config.contour_steps
  mesh = sharding.create_mesh()
  replicated = sharding.replicated(mesh)

  model = models.create(config.model, num_classes=config.num_classes,
                        **config.model_kwargs)
  channels = 1 if config.modality == 'depth' else 3
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
      jax.eval_shape(init, init_rng))

  ckpt = checkpoints.Checkpointer(workdir, save_every=config.checkpoint_every,
                                  keep=config.keep_checkpoints)
  start_step = ckpt.latest_step() or 0
  if start_step >= total_steps and os.path.exists(results_path):
    with open(results_path) as f:
      results = json.load(f)
    if is_main:
      print(f'{workdir}: the run already finished ({total_steps} steps); '
            'its test results:')
      print(metrics_lib.format_table(results))
    ckpt.close()
    return results

  sources = inputs.load_sources(config, (config.train_split, config.eval_split,
                                         config.test_split))
  data_iter = iter(inputs.train_loader(config, sources[config.train_split], mesh))
  if start_step:
    state = ckpt.restore(abstract_state, data_iter)
    logging.info('Resumed from step %d', start_step)
    if is_main:
      print(f'Resuming from the checkpoint at step {start_step} in {workdir}')
  else:
    state = init(init_rng)
    if config.init_from:
      state = _init_from(state, config.init_from, replicated)

  def compile_step(contour: bool):
    loss_fn = losses.make_loss_fn(
        aux_weight=config.aux_weight, ignore_index=config.ignore_index,
        class_weights=config.class_weights,
        contour_weight=config.contour_weight if contour else 0.0)
    return jax.jit(
        train_step_lib.make_train_step(model, tx, loss_fn,
                                       ignore_index=config.ignore_index),
        in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
        out_shardings=(replicated, replicated), donate_argnums=0)

  step_fns = {}  # phase (contour loss on?) -> jitted step, compiled when reached
  writer = MetricWriter(workdir, enabled=is_main, resume_step=start_step)
  progress = ProgressBar(start_step, total_steps, config.batch_size, enabled=is_main)
  stop = _StopRequest()
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
      if step % config.log_every == 0 or step == total_steps:
        scalars = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        scalars['lr'] = float(schedule(step - 1))
        writer.write(step, scalars)
        progress.update(step, scalars)
      else:
        progress.update(step)
      ckpt.save(step, state, data_iter, force=step in (config.num_steps, total_steps))
      if step % config.eval_every == 0 or step in (config.num_steps, total_steps):
        progress.pause()
        val = _evaluate(config, model, state, sources[config.eval_split], mesh)
        writer.write(step, _summary(config.eval_split, val))
        ckpt.save_best(step, state, val)
        if is_main:
          progress.write(f'\n{config.eval_split} split at step {step}:\n'
                         f'{metrics_lib.format_table(val)}')
      if stop.requested:
        ckpt.save_now(step, state, data_iter)
        raise SystemExit(f'Stopped by SIGTERM at step {step}; checkpoint saved. '
                         'Run the same command again to resume.')
  except KeyboardInterrupt:
    ckpt.save_now(step, state, data_iter)
    raise SystemExit(f'Interrupted at step {step}; checkpoint saved. '
                     'Run the same command again to resume.') from None
  finally:
    progress.close()

  ckpt.wait()
  best_step = ckpt.best_step()
  best = ckpt.restore_best(abstract_state) if best_step is not None else state
  results = _evaluate(config, model, best, sources[config.test_split], mesh)
  results['step'] = int(best_step if best_step is not None else step)
  results['split'] = config.test_split
  if is_main:
    with open(results_path, 'w') as f:
      json.dump(results, f, indent=2)
    writer.write(step, _summary(config.test_split, results))
    print(f'\n{config.test_split} split, best {config.eval_split} checkpoint '
          f'(step {results["step"]}):')
    print(metrics_lib.format_table(results))
  ckpt.close()
  writer.close()
  return results
