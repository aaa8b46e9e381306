"""The report's page: one static HTML file with inline styles, whose every reference
is a PNG or CSV beside it, written by `make_report`.
"""
import html
import os
import time

from fanet_jax.report import examples, figures, panels
from fanet_jax.report.panels import percent, swatch
from fanet_jax.report.runs import (SCORE_KEYS, SWITCHES, Run, last_step, read_runs,
                                   switches)

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
.meta { color: #555; } .note { background: #fff4d6; border-left: 4px solid #e0a800;
        padding: 0.5em 1em; margin: 0.5em 0; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.summary td { font-weight: bold; background: #f4f4f4; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border: 1px solid #000;
          vertical-align: middle; margin-right: 0.3em; }
img.figure { max-width: 100%; }
table.examples img { width: 220px; image-rendering: pixelated; display: block; }
table.examples td { vertical-align: top; font-size: 0.85em; }
"""



def runs_table(runs: list[Run]) -> str:
  """One row per run: the FANet switches (paper Table 2), the scores, the source."""
  flags = [switches(run.config) for run in runs]
  shown = [label for _, label in SWITCHES] if any(flags) else []
  keys = [k for k in SCORE_KEYS if any(run.scores and k in run.scores for run in runs)]
  head = ''.join(f'<th>{h}</th>' for h in ['run', 'model', *shown]
                 + [f'{k} (%)' for k in keys] + ['step', 'scores from'])
  body = []
  for run, on in zip(runs, flags):
    scores = run.scores or {}
    cells = [f'<td>{html.escape(run.name)}</td><td>{html.escape(run.config.model)}</td>']
    cells += [f'<td>{"–" if on is None else "✓" if on[label] else "✗"}</td>'
              for label in shown]
    cells += [f'<td class="num">{percent(scores.get(k))}</td>' for k in keys]
    cells += [f'<td class="num">{scores.get("step", "–")}</td>'
              f'<td>{html.escape(run.scores_from)}</td>']
    body.append('<tr>' + ''.join(cells) + '</tr>')
  return (f'<table id="runs"><tr>{head}</tr>' + ''.join(body) + '</table>')


def classes_table(runs: list[Run], names, palette) -> str:
  """IoU and accuracy of every class, two columns per run."""
  scored = [run for run in runs if run.scores]
  head = ('<tr><th rowspan="2">class</th>' + ''.join(
      f'<th colspan="2">{html.escape(run.name)}</th>' for run in scored) + '</tr><tr>'
      + '<th>IoU (%)</th><th>Acc (%)</th>' * len(scored) + '</tr>')
  rows = [f'<tr><td>{swatch(colour)}{html.escape(name)}</td>' + ''.join(
      f'<td class="num">{percent(run.scores["IoU"][c])}</td>'
      f'<td class="num">{percent(run.scores["Acc"][c])}</td>' for run in scored) + '</tr>'
          for c, (name, colour) in enumerate(zip(names, palette))]
  return f'<table id="classes">{head}{"".join(rows)}</table>'


def header(runs: list[Run]) -> list[str]:
  """The title, a line per run and the runs' notes."""
  title = html.escape(', '.join(run.name for run in runs))
  rows = [f'<b>{html.escape(r.name)}</b>: {html.escape(os.path.abspath(r.workdir))}, '
          f'model {html.escape(r.config.model)}, data set {html.escape(r.config.dataset)}'
          f' ({html.escape(str(r.config.dataset_config))}), '
          f'{last_step(r)} of '
          f'{r.config.num_steps + r.config.contour_steps} steps logged'
          + (f', best step {r.best_step}' if r.best_step is not None else '')
          for r in runs]
  return ([f'<h1>Training report: {title}</h1>', '<p class="meta">' + '<br>'.join(rows)
           + f'<br>Generated {time.strftime("%Y-%m-%d %H:%M")} by python -m '
           'fanet_jax.report.</p>']
          + [f'<p class="note">{html.escape(run.name)}: {html.escape(note)}</p>'
             for run in runs for note in run.notes])


def scores_section(runs: list[Run], names, palette, split: str, output: str) -> list:
  """The runs' table, the per-class table, the IoU bars and the confusion matrices."""
  scored = [run for run in runs if run.scores]
  if not scored:
    return ['<p class="note">No scores: see the notes above.</p>']
  bars = figures.plot_class_iou(runs, names, palette, split,
                                os.path.join(output, 'class_iou.png'))
  section = [
      "<p>Each run's best checkpoint (its best/ one; before the first evaluation, its "
      'newest). aAcc: pixel accuracy; mAcc: mean class accuracy; mIoU: mean IoU; '
      'fwIoU: frequency-weighted IoU; fgIoU: mean IoU of the foreground classes.</p>',
      runs_table(runs), classes_table(runs, names, palette),
      f'<img class="figure" src="{bars}" alt="IoU per class">']
  for run in scored:
    if run.scores.get('confusion'):
      path = os.path.join(output, f'confusion-{run.slug}.png')
      matrix = figures.plot_confusion(run, names, path)
      section.append(f'<img class="figure" src="{matrix}" alt="confusion matrix of '
                     f'{html.escape(run.name)}">')
  return section



def examples_section(runs: list[Run], shown, images: int, seed: int,
                     output: str) -> list:
  """The examples chosen by the first evaluated run, or why there are none."""
  from input_pipeline import datasets
  if not (shown and images):
    why = ('--images 0' if shown else
           'no model and readable split to predict with (see the notes above)')
    return [f'<p class="note">No examples: {why}.</p>']
  config = runs[0].config
  names = datasets.CLASS_NAMES[config.dataset][:config.num_classes]
  palette = datasets.PALETTES[config.dataset][:config.num_classes]
  listed = panels.write_per_image(shown.per_image, os.path.join(output, 'per_image.csv'))
  return [f'<p>{len(shown.chosen)} of {len(shown.per_image)} images: the worst and the '
          f'best by the per-image mIoU of {html.escape(shown.selector.name)} (the mean '
          "IoU over the classes in the image's labels or prediction; every image's in "
          f'<a href="{listed}">{listed}</a>), and the rest drawn at random (seed '
          f'{seed}). Click an image for its full size.</p>',
          panels.legend(names, palette), panels.write_examples(runs, shown, output)]


CAPTIONS = {
    'frm': "FANet's FRM (paper Fig. 6) in each stage's last block: the image, its "
           'input F, Q (F smoothed: a stride-2 depthwise conv, resized back), the high '
           'frequency R = F - Q, the low frequency S = F * Q and its output.',
    'attention': 'The dense attention (DenseAttentionSeg Fig. 7), over the depth: each '
                 "level's attention map a_j (top) and the weight its skip gets from the "
                 'other five, their product resized to its size (bottom).',
    'contours': 'The contour loss (DenseAttentionSeg Fig. 8): Gaussian-blurred Sobel edge '
                'strength B(S(.)) of the labels and of the predicted probabilities, and '
                'their squared difference, whose mean is the loss.'}


def internals_section(shown, output: str) -> list:
  """Section 4: the maps inside the first run's model (report/internals.py) for its
  worst and its best example; nothing for a model without such maps."""
  from fanet_jax.report import internals
  if not (shown and shown.chosen) or internals.family(shown.selector.model.model) is None:
    return []
  run = shown.selector.model
  print(f'{shown.selector.name}: drawing the maps inside the model')
  capture, section = internals.Capture(run), ['<h2>4. Inside the model</h2>',
                                               '<p>Heat maps of the channel means, each '
                                               'with its own colour range (under it).</p>']
  picks = [k for k, (_, why) in enumerate(shown.chosen) if why in ('worst 1', 'best 1')]
  for k in picks:
    example, why = shown.examples[k], shown.chosen[k][1]
    label = example['label'] if internals.family(run.model) == 'dense_attention' else None
    for path in internals.write_figures(run, capture, example['image'], label,
                                        os.path.join(output, 'internals'), f'{k + 1:02d}-'):
      name = os.path.relpath(path, output)
      what = os.path.splitext(os.path.basename(path))[0].split('-', 1)[1]
      section.append(f'<p><a href="{name}"><img class="figure" src="{name}" '
                     f'alt="{what} of {html.escape(str(example["file_name"]))}"></a><br>'
                     f'{why}, {html.escape(str(example["file_name"]))}: '
                     f'{CAPTIONS[what]}</p>')
  return section


def make_report(args) -> str:
  """Everything `python -m fanet_jax.report` does; returns the path of index.html."""
  from fanet_jax.progress import write_atomically
  from input_pipeline import datasets
  start = time.perf_counter()
  runs = read_runs(args.workdirs)
  shown = examples.score_runs(runs, args.split, args.images, args.seed)

  print('drawing the curves and the scores')
  output = args.output or os.path.join(args.workdirs[0], 'report')
  os.makedirs(os.path.join(output, 'examples'), exist_ok=True)
  first = runs[0].config
  names = datasets.CLASS_NAMES[first.dataset][:first.num_classes]
  palette = datasets.PALETTES[first.dataset][:first.num_classes]
  curves = figures.plot_curves(runs, os.path.join(output, 'curves.png'))
  sections = header(runs) + [
      '<h2>1. Training curves</h2>',
      f'<img class="figure" src="{curves}" alt="training curves">' if curves
      else '<p class="note">No run has logged a step yet.</p>',
      f'<h2>2. Scores on the {args.split} split</h2>',
      *scores_section(runs, names, palette, args.split, output),
      f'<h2>3. Examples from the {args.split} split</h2>',
      *examples_section(runs, shown, args.images, args.seed, output),
      *(internals_section(shown, output) if args.internals else [])]
  title = html.escape(', '.join(run.name for run in runs))
  path = os.path.join(output, 'index.html')
  write_atomically(path, '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                   f'<title>Report: {title}</title><style>{CSS}</style></head><body>\n'
                   + '\n'.join(sections) + '\n</body></html>\n')
  compiling = sum(run.segmenter.compile_seconds for run in runs if run.segmenter)
  print(f'done in {time.perf_counter() - start:.1f} s ({compiling:.1f} s of it '
        'compiling the model)')
  return path
