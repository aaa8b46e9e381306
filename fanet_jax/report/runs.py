"""What the report reads of a run: its workdir (config, log, checkpoints), its model
and its scores.

The scores of the best checkpoint come from `WORKDIR/eval/<split>-<mode>[-tta].json`
(python -m fanet_jax.evaluate) where it scores that checkpoint; else they are
computed by the per-image pass (examples.py); else, when the split cannot be read,
they are training's `results.json`.
"""
import argparse
import dataclasses
import json
import math
import os
import re
from typing import Any, Optional

from fanet_jax import trained

SCORE_KEYS = ('mIoU', 'aAcc', 'mAcc', 'fwIoU', 'fgIoU')
SWITCHES = (('use_scm', 'SCM'), ('use_frm_high', 'FRM-high'), ('use_frm_low', 'FRM-low'))


@dataclasses.dataclass
class Run:
  """One workdir: its config and log, and what the report found or computed."""
  workdir: str
  name: str                   # legend and table label
  slug: str                   # in file names
  config: Any
  history: list               # metrics.jsonl's records
  best_step: Optional[int]    # the best/ checkpoint's, else the best logged val mIoU's
  has_checkpoint: bool
  model: Any = None           # trained.Trained, once loaded
  segmenter: Any = None       # its predict.Segmenter, once it predicted
  scores: Optional[dict] = None
  scores_from: str = ''
  notes: list = dataclasses.field(default_factory=list)
  examples: dict = dataclasses.field(default_factory=dict)  # index -> (classes, mIoU)


def read_history(path: str) -> list[dict]:
  """The records of a metrics.jsonl; a line cut short (a run writing now) is left out."""
  records = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue
        if isinstance(record, dict) and 'step' in record:
          records.append(record)
  return records


def read_run(workdir: str) -> Run:
  """A workdir's config, log and checkpoints.

  Raises:
    RunError: not a folder, no config.json, not a segmentation run, or neither
      metrics.jsonl nor a checkpoint (nothing to report).
  """
  from fanet_jax import checkpoints
  from fanet_jax.progress import METRICS_FILE
  if not os.path.isdir(workdir):
    what = 'not a' if os.path.exists(workdir) else 'no such'
    raise trained.RunError(f'{workdir}: {what} folder; give the workdir of a training run')
  config = trained.run_config(workdir)
  if config.task != 'segmentation':
    raise trained.RunError(f'{workdir}: a {config.task} run; this report is for '
                           'segmentation runs')
  best = checkpoints.saved_steps(os.path.join(workdir, 'best'))
  rolling = checkpoints.saved_steps(os.path.join(workdir, 'checkpoints'))
  history = read_history(os.path.join(workdir, METRICS_FILE))
  if not history and not (best or rolling):
    raise trained.RunError(f'{workdir}: neither a {METRICS_FILE} with records nor a '
                           'checkpoint: nothing to report yet')
  best_step = best[-1] if best else None
  key = f'{config.eval_split}/mIoU'
  logged = [(r[key], r['step']) for r in history
            if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
  if best_step is None and logged:
    best_step = max(logged)[1]
  name = os.path.basename(os.path.normpath(workdir)) or workdir
  return Run(workdir, name, name, config, history, best_step, bool(best or rolling))


def read_runs(workdirs: list[str]) -> list[Run]:
  """`read_run` of each workdir, named apart (`name_runs`).

  Raises:
    RunError: `read_run`'s, or runs on different data sets or numbers of classes.
  """
  runs = [read_run(workdir) for workdir in workdirs]
  name_runs(runs)
  first = runs[0].config
  for run in runs[1:]:
    if (run.config.dataset, run.config.num_classes) != (first.dataset, first.num_classes):
      raise trained.RunError(
          f'{run.workdir} is a run on {run.config.dataset} ({run.config.num_classes} '
          f'classes), {runs[0].workdir} on {first.dataset} ({first.num_classes}): the '
          'runs of one report must share a data set')
  return runs


def name_runs(runs: list[Run]) -> None:
  """Gives runs of one folder name their paths as names, and every run a unique slug."""
  names = [r.name for r in runs]
  for run in runs:
    if names.count(run.name) > 1:
      run.name = os.path.normpath(run.workdir)
  slugs = set()
  for i, run in enumerate(runs):
    slug = re.sub(r'[^A-Za-z0-9_-]+', '_', run.name).strip('_') or 'run'
    run.slug = slug if slug not in slugs else f'{slug}_{i}'
    slugs.add(run.slug)


def switches(config) -> Optional[dict]:
  """FANet's ablation switches of a run (label -> on), or None for other models."""
  from fanet_jax.models import fanet
  if not config.model.startswith('fanet'):
    return None
  defaults = {f.name: f.default for f in dataclasses.fields(fanet.FANet)}
  return {label: bool(config.model_kwargs.get(key, defaults[key]))
          for key, label in SWITCHES}


def last_step(run: Run) -> int:
  """The highest step the run's log reaches (0 for none)."""
  return max((r['step'] for r in run.history), default=0)


def load_model(run: Run) -> None:
  """Loads the run's best checkpoint (trained.load), or notes why there is none."""
  if not run.has_checkpoint:
    run.notes.append(
        f'No checkpoint in {run.workdir} yet (the run saves every '
        f'{run.config.checkpoint_every} steps; its log reaches step {last_step(run)}): '
        'only the training curves are shown. The scores and the examples need a saved '
        'model.')
    return
  parser = argparse.ArgumentParser()
  trained.add_arguments(parser)
  run.model = trained.load(parser.parse_args(['--workdir', run.workdir]))


def read_scores(run: Run, split: str) -> None:
  """The scores of `evaluate`'s JSON for the loaded checkpoint, if it has them."""
  config = run.config
  name = f'{split}-{config.eval_mode}{"-tta" if config.eval_tta_scales else ""}.json'
  path = os.path.join(run.workdir, 'eval', name)
  if run.model is None or not os.path.exists(path):
    return
  try:
    with open(path) as f:
      scores = json.load(f)
  except (OSError, ValueError) as e:
    run.notes.append(f'{path} cannot be read ({e}): computed again.')
    return
  if scores.get('step') == run.model.step:
    run.scores, run.scores_from = scores, f'{path} (python -m fanet_jax.evaluate)'
    print(f'{run.name}: the {split} scores of step {run.model.step} from {path}')
  else:
    run.notes.append(f'{path} scores step {scores.get("step")}, not the checkpoint '
                     f'shown here (step {run.model.step}): computed again.')


def results_scores(run: Run, split: str, why: str) -> None:
  """Falls back on the test scores training wrote (results.json), saying why."""
  from fanet_jax.trainer import RESULTS_FILE
  path = os.path.join(run.workdir, RESULTS_FILE)
  scores = None
  if os.path.exists(path):
    with open(path) as f:
      scores = json.load(f)
  if scores and scores.get('split', run.config.test_split) == split:
    run.scores, run.scores_from = scores, f'{path} (written by training)'
    run.notes.append(f'{why}; the scores are those training wrote at its end.')
  else:
    run.notes.append(f'{why}; and no {RESULTS_FILE} of the {split} split: no scores.')
