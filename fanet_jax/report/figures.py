"""The report's figures (matplotlib, headless): the training curves of the runs'
metrics.jsonl, the per-class IoU bars and the row-normalised confusion heat map.

Training does not log a throughput: `throughput` measures it between log lines.
"""
import math
import os
from typing import Optional

from fanet_jax.report.runs import SCORE_KEYS, Run

LOSS_KEYS = ('loss', 'decode_loss', 'aux_loss', 'contour_loss')
STYLES = ('-', '--', ':', '-.', (0, (5, 1, 1, 1)))  # the terms' lines for several runs


def pyplot():
  import matplotlib
  matplotlib.use('Agg')  # headless: files only
  import matplotlib.pyplot as plt
  return plt


def save_figure(fig, path: str) -> str:
  """Saves a figure through a temporary file; returns the file's name."""
  fig.savefig(path + '.tmp', format='png', dpi=100, bbox_inches='tight')
  os.replace(path + '.tmp', path)
  pyplot().close(fig)
  return os.path.basename(path)


def throughput(history: list[dict], batch_size: int) -> tuple[list, list]:
  """(steps, images per second) between consecutive training log lines: from the
  records' `images_per_sec` where they have it, else from their times; an interval
  holding an evaluation, or over ten times the median (a restart, a compile), is
  not training time and left out."""
  import numpy as np
  if any('images_per_sec' in r for r in history):
    pairs = [(r['step'], r['images_per_sec']) for r in history if 'images_per_sec' in r]
    return [s for s, _ in pairs], [v for _, v in pairs]
  train = [r for r in history if 'loss' in r and 'time' in r]
  others = sorted(r['time'] for r in history if 'loss' not in r and 'time' in r)
  steps, rates = [], []
  for a, b in zip(train, train[1:]):
    took = b['time'] - a['time']
    between = np.searchsorted(others, b['time']) - np.searchsorted(others, a['time'],
                                                                  'right')
    if b['step'] > a['step'] and took > 0 and not between:
      steps.append(b['step'])
      rates.append((b['step'] - a['step']) * batch_size / took)
  if rates:
    per_image = np.median(1 / np.asarray(rates))
    kept = [(s, r) for s, r in zip(steps, rates) if 1 / r <= 10 * per_image]
    steps, rates = [s for s, _ in kept], [r for _, r in kept]
  return steps, rates


def _series(history: list[dict], key: str, scale: float = 1.0) -> tuple[list, list]:
  pairs = [(r['step'], scale * r[key]) for r in history
           if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
  return [s for s, _ in pairs], [v for _, v in pairs]


def curve_panels(run: Run) -> list[tuple[str, str, dict]]:
  """(title, y label, {term: (steps, values)}) of each panel the run's log fills."""
  split = run.config.eval_split
  panels = [
      ('Loss', 'loss', {k: _series(run.history, k) for k in LOSS_KEYS}),
      ('Learning rate', 'learning rate', {'lr': _series(run.history, 'lr')}),
      ('Training throughput', 'images / s',
       {'images/s': throughput(run.history, run.config.batch_size)}),
      ('Pixel accuracy of the training batches', '%',
       {'pixel_acc': _series(run.history, 'pixel_acc', 100)}),
      ('Gradient norm', 'global norm', {'grad_norm': _series(run.history, 'grad_norm')}),
      (f'{split} split', '%', {k: _series(run.history, f'{split}/{k}', 100)
                               for k in SCORE_KEYS}),
  ]
  return [(title, unit, {k: v for k, v in terms.items() if v[0]})
          for title, unit, terms in panels]


def _draw_panel(ax, i: int, last: bool, runs: list[Run], per_run: list, colours) -> list:
  """Panel `i` of every run's `curve_panels` on `ax`; returns the terms drawn. `last`:
  the validation panel, where a star marks the best step's mIoU."""
  several = len(runs) > 1
  terms = list(dict.fromkeys(t for p in per_run for t in p[i][2]))
  for r, (run, panels) in enumerate(zip(runs, per_run)):
    for t, term in enumerate(terms):
      if term not in panels[i][2]:
        continue
      steps, values = panels[i][2][term]
      colour = colours[(r if several else t) % len(colours)]
      ax.plot(steps, values, color=colour, linestyle=STYLES[t % len(STYLES)] if several
              else '-', linewidth=1.4, label=None if several else term,
              marker='o' if len(steps) < 4 else None)  # a line needs two points
    if run.best_step is None:
      continue
    ax.axvline(run.best_step, color=colours[r % len(colours)] if several else 'grey',
               linestyle='--', linewidth=0.9, alpha=0.7)
    at = dict(zip(*panels[i][2].get('mIoU', ([], []))))
    if last and run.best_step in at:
      ax.plot([run.best_step], [at[run.best_step]], marker='*', markersize=12,
              color=colours[r % len(colours)] if several else colours[0])
      ax.annotate(f'best {at[run.best_step]:.2f}\nstep {run.best_step}',
                  (run.best_step, at[run.best_step]), textcoords='offset points',
                  xytext=(-8, -28), ha='right', fontsize=8)
  return terms


def plot_curves(runs: list[Run], path: str) -> Optional[str]:
  """The training curves of every run, overlaid; None if no run logged anything."""
  plt = pyplot()
  from matplotlib.lines import Line2D
  per_run = [curve_panels(run) for run in runs]
  titles = [title for title, _, _ in per_run[0]]
  shown = [i for i in range(len(titles)) if any(p[i][2] for p in per_run)]
  if not shown:
    return None
  cols = min(3, len(shown))
  rows = math.ceil(len(shown) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
  colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
  several = len(runs) > 1
  for ax, i in zip(axes.flat, shown):
    terms = _draw_panel(ax, i, i == len(titles) - 1, runs, per_run, colours)
    if several and len(terms) > 1:
      ax.legend([Line2D([], [], color='black', linestyle=STYLES[t % len(STYLES)])
                 for t in range(len(terms))], terms, fontsize=8)
    elif len(terms) > 1:
      ax.legend(fontsize=8)
    ax.ticklabel_format(axis='y', style='sci', scilimits=(-3, 4))
    ax.set_title(per_run[0][i][0])
    ax.set_xlabel('step')
    ax.set_ylabel(per_run[0][i][1])
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(shown):]:
    ax.axis('off')
  if several:
    fig.legend([Line2D([], [], color=colours[r % len(colours)]) for r in range(len(runs))],
               [run.name for run in runs], loc='upper center', ncol=min(len(runs), 5),
               bbox_to_anchor=(0.5, 1.0 + 0.06 / rows), fontsize=10)
  fig.suptitle('dashed vertical line: the best step (best/ checkpoint)', y=0.0,
               fontsize=9, color='dimgrey')
  fig.tight_layout()
  return save_figure(fig, path)


def plot_class_iou(runs: list[Run], names, palette, split: str, path: str) -> str:
  """Per-class IoU bars: the class colours for one run, one colour per run for
  several."""
  import numpy as np
  plt = pyplot()
  scored = [run for run in runs if run.scores]
  fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) * max(1, len(scored)) + 2), 4))
  width = 0.8 / len(scored)
  colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
  x = np.arange(len(names))
  for r, run in enumerate(scored):
    iou = 100 * np.nan_to_num(np.asarray(run.scores['IoU'], np.float64))
    colour = ([np.asarray(c) / 255 for c in palette] if len(scored) == 1
              else colours[runs.index(run) % len(colours)])
    bars = ax.bar(x + (r - (len(scored) - 1) / 2) * width, iou, width, color=colour,
                  edgecolor='black', linewidth=0.6, label=run.name)
    ax.bar_label(bars, fmt='%.1f', fontsize=8)
  ax.set_xticks(x, names, rotation=20, ha='right')
  ax.set_ylabel('IoU (%)')
  ax.set_ylim(0, 105)
  ax.set_title(f'IoU per class, {split} split')
  if len(scored) > 1:
    ax.legend(fontsize=8)
  ax.grid(axis='y', alpha=0.3)
  return save_figure(fig, path)


def plot_confusion(run: Run, names, path: str) -> str:
  """The confusion matrix with each row (a label class) divided by its sum."""
  import numpy as np
  plt = pyplot()
  confusion = np.asarray(run.scores['confusion'], np.float64)
  rows = confusion.sum(1, keepdims=True)
  normed = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
  size = 1.6 + 0.75 * len(names)
  fig, ax = plt.subplots(figsize=(size + 1.5, size))
  image = ax.imshow(100 * normed, cmap='Blues', vmin=0, vmax=100)
  fig.colorbar(image, ax=ax, fraction=0.046, label='% of the label class')
  ticks = range(len(names))
  ax.set_xticks(ticks, names, rotation=35, ha='right')
  ax.set_yticks(ticks, names)
  ax.set_xlabel('prediction')
  ax.set_ylabel('label')
  ax.set_title(f'{run.name}: confusion (rows sum to 100 %)')
  if len(names) <= 12:
    for i in ticks:
      for j in ticks:
        ax.text(j, i, f'{100 * normed[i, j]:.1f}', ha='center', va='center', fontsize=8,
                color='white' if normed[i, j] > 0.55 else 'black')
  return save_figure(fig, path)

