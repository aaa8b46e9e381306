"""`train_and_evaluate(config, workdir)`: the whole run, read top to bottom.

Mesh, data, model, shardings, step, restore, loop (STYLE.md rule 5), as big_vision's
`train.py` does it. Resuming is automatic: the newest checkpoint in `workdir` (state
and data-iterator position) is restored, so re-running the same command continues
where the last run stopped, or reports that the run already finished. SIGTERM and
Ctrl-C save a checkpoint before exiting, so nothing is lost when a job dies.
"""
import functools
import json
import os
import signal

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from fanet_jax import checkpoints, evaluation, models, optim, pretrained, sharding
from fanet_jax import metrics as metrics_lib
from fanet_jax import train_step as train_step_lib
from fanet_jax.config import Config
from fanet_jax.progress import MetricWriter, ProgressBar
from input_pipeline import datasets, pipeline

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


def _load_sources(config: Config, splits: tuple[str, ...]) -> dict:
  """Prepares the data set on process 0 first (others wait), then opens `splits`."""
  load = functools.partial(datasets.load_source, config.dataset, data_dir=config.data_dir,
                           manual_dir=config.manual_dir,
                           builder_config=config.dataset_config)
  if jax.process_index() == 0:
    load(splits[0])
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('dataset prepared')
  return {split: load(split) for split in splits}


def _eval_batches(config: Config, source, mesh) -> list:
  """This process's evaluation batches of one split (global batch: whole devices)."""
  global_batch = -(-config.eval_batch_size // mesh.size) * mesh.size
  shard_index, shard_count = pipeline.per_process_shard()
  return pipeline.eval_batches(
      source, batch_size=global_batch // shard_count, num_classes=config.num_classes,
      img_scale=config.img_scale, size_divisor=config.size_divisor, mean=config.mean,
      std=config.std, ignore_index=config.ignore_index, shard_index=shard_index,
      shard_count=shard_count)


def _evaluate(config: Config, model, state, source, mesh, split: str) -> dict:
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  return evaluation.evaluate(
      model, variables, _eval_batches(config, source, mesh), mesh=mesh,
      num_classes=config.num_classes, ignore_index=config.ignore_index,
      class_names=datasets.ZEROWASTE_CLASSES[:config.num_classes])


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
  mesh = sharding.create_mesh()
  replicated = sharding.replicated(mesh)

  model = models.create(config.model, num_classes=config.num_classes,
                        **config.model_kwargs)
  schedule = optim.poly_with_linear_warmup(
      config.learning_rate, config.num_steps, power=config.poly_power,
      min_lr=config.min_learning_rate, warmup_steps=config.warmup_steps,
      warmup_ratio=config.warmup_ratio)
  tx = optim.adamw(schedule, betas=config.betas, weight_decay=config.weight_decay)
  init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
  init = jax.jit(functools.partial(train_step_lib.init_state, model, tx,
                                   image_shape=(1, 64, 64, 3)),
                 out_shardings=replicated)
  abstract_state = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
      jax.eval_shape(init, init_rng))

  ckpt = checkpoints.Checkpointer(workdir, save_every=config.checkpoint_every,
                                  keep=config.keep_checkpoints)
  start_step = ckpt.latest_step() or 0
  if start_step >= config.num_steps and os.path.exists(results_path):
    with open(results_path) as f:
      results = json.load(f)
    if is_main:
      print(f'{workdir}: the run already finished ({config.num_steps} steps); '
            'its test results:')
      print(metrics_lib.format_table(results))
    ckpt.close()
    return results

  sources = _load_sources(config, (config.train_split, config.eval_split,
                                   config.test_split))
  shard_index, shard_count = pipeline.per_process_shard()
  loader = pipeline.train_loader(
      sources[config.train_split],
      batch_size=sharding.local_batch_size(config.batch_size, mesh),
      num_classes=config.num_classes, crop_size=config.crop_size,
      img_scale=config.img_scale, ratio_range=config.ratio_range,
      cat_max_ratio=config.cat_max_ratio, flip_prob=config.flip_prob,
      photometric=config.photometric, mean=config.mean, std=config.std,
      ignore_index=config.ignore_index, seed=config.seed, shard_index=shard_index,
      shard_count=shard_count, worker_count=config.worker_count)
  data_iter = iter(loader)

  if start_step:
    state = ckpt.restore(abstract_state, data_iter)
    logging.info('Resumed from step %d', start_step)
    if is_main:
      print(f'Resuming from the checkpoint at step {start_step} in {workdir}')
  else:
    state = init(init_rng)
    if config.init_from:
      state = _init_from(state, config.init_from, replicated)

  step_fn = jax.jit(
      train_step_lib.make_train_step(model, tx, aux_weight=config.aux_weight,
                                     ignore_index=config.ignore_index),
      in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
      out_shardings=(replicated, replicated), donate_argnums=0)

  writer = MetricWriter(workdir, enabled=is_main, resume_step=start_step)
  progress = ProgressBar(start_step, config.num_steps, config.batch_size,
                         enabled=is_main)
  stop = _StopRequest()
  step = start_step
  try:
    while step < config.num_steps:
      batch = sharding.shard_batch(next(data_iter), mesh)
      state, step_metrics = step_fn(state, batch, train_rng)
      step += 1
      if step % config.log_every == 0 or step == config.num_steps:
        scalars = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        scalars['lr'] = float(schedule(step - 1))
        writer.write(step, scalars)
        progress.update(step, scalars)
      else:
        progress.update(step)
      ckpt.save(step, state, data_iter, force=step == config.num_steps)
      if step % config.eval_every == 0 or step == config.num_steps:
        progress.pause()
        val = _evaluate(config, model, state, sources[config.eval_split], mesh,
                        config.eval_split)
        writer.write(step, {f'{config.eval_split}/{k}': val[k]
                            for k in ('mIoU', 'aAcc', 'mAcc', 'fwIoU')})
        ckpt.save_best(step, state, val)
        if is_main:
          print(f'\n{config.eval_split} split at step {step}:')
          print(metrics_lib.format_table(val))
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
  results = _evaluate(config, model, best, sources[config.test_split], mesh,
                      config.test_split)
  results['step'] = int(best_step if best_step is not None else step)
  results['split'] = config.test_split
  if is_main:
    with open(results_path, 'w') as f:
      json.dump(results, f, indent=2)
    writer.write(step, {f'{config.test_split}/{k}': results[k]
                        for k in ('mIoU', 'aAcc', 'mAcc', 'fwIoU')})
    print(f'\n{config.test_split} split, best {config.eval_split} checkpoint '
          f'(step {results["step"]}):')
    print(metrics_lib.format_table(results))
  ckpt.close()
  writer.close()
  return results
