"""The report's examples as pictures: for each chosen image, the image (depth grey
as `python -m fanet_jax.predict` shows it), the ground truth and, for each run, its
prediction and its error map; with the HTML table that shows them and the per-image
CSV.
"""
import html
import math
import os

from fanet_jax.report.examples import Shown
from fanet_jax.report.runs import Run

# Error maps: a palette image whose values are these.
CORRECT, WRONG, IGNORED = 0, 1, 2
ERROR_PALETTE = ((245, 245, 245), (220, 20, 60), (150, 150, 150))
IGNORED_COLOUR = (150, 150, 150)  # ignored label pixels in the ground truth


def percent(value) -> str:
  """`value` in percent with two decimals; – where it is not a finite number."""
  finite = isinstance(value, (int, float)) and math.isfinite(value)
  return f'{100 * value:.2f}' if finite else '–'


def swatch(colour) -> str:
  """A square of `colour` (RGB) in the text."""
  return f'<span class="swatch" style="background: rgb{tuple(colour)}"></span>'


def legend(names, palette) -> str:
  """The class colours and the error maps' colours."""
  classes = ' '.join(f'{swatch(c)}{html.escape(n)}' for n, c in zip(names, palette))
  errors = ' '.join(f'{swatch(ERROR_PALETTE[k])}{w}' for k, w in
                    ((CORRECT, 'correct'), (WRONG, 'wrong'), (IGNORED, 'ignored')))
  return (f'<p>Classes: {classes} {swatch(IGNORED_COLOUR)}ignored label<br>'
          f'Error maps: {errors}</p>')


def _padded(palette) -> list:
  """A 256-entry palette: the classes', then the ignored label's grey."""
  return list(palette) + [IGNORED_COLOUR] * (256 - len(palette))


def shown_image(image, config):
  """An example's image as RGB: depth in mm grey as predict's overlays show it."""
  from fanet_jax import predict
  if image.shape[-1] != 1:
    return image
  return predict.depth_to_grey(image, config.depth_range_mm)


def error_map(label, classes, ignore_index: int):
  """CORRECT, WRONG or IGNORED for every pixel."""
  import numpy as np
  return np.where(label == ignore_index, IGNORED,
                  np.where(label == classes, CORRECT, WRONG)).astype(np.uint8)


class _Folder:
  """The examples/ folder: saves PNGs and remembers which, to remove the others."""

  def __init__(self, output: str):
    self.path, self.written = os.path.join(output, 'examples'), set()

  def save(self, image, name: str) -> str:
    """Writes `image` as examples/`name`; returns its linked <img>."""
    from input_pipeline.image_files import save_atomically
    save_atomically(image, os.path.join(self.path, name), format='PNG')
    self.written.add(name)
    return (f'<a href="examples/{name}"><img src="examples/{name}" '
            f'alt="{html.escape(name)}"></a>')

  def remove_others(self) -> None:
    for name in os.listdir(self.path):  # those of an earlier report with more examples
      if name.endswith('.png') and name not in self.written:
        os.remove(os.path.join(self.path, name))


def _row(rank: int, why: str, index: int, example, runs: list[Run], palette,
         folder: _Folder) -> str:
  """One example's cells: why and name, image, ground truth, each run's panels."""
  from fanet_jax import predict
  config = runs[0].config
  stem, label = f'{rank + 1:02d}', example['label']
  cells = [f'<td><b>{why}</b><br>{html.escape(str(example["file_name"]))}</td>',
           f'<td>{folder.save(shown_image(example["image"], config), f"{stem}-image.png")}'
           '</td>',
           f'<td>{folder.save(predict.class_map_png(label, palette), f"{stem}-label.png")}'
           '</td>']
  for run in runs:
    classes, miou = run.examples[index]
    wrong = error_map(label, classes, config.ignore_index)
    scored = max(1, int((wrong != IGNORED).sum()))
    cells.append('<td>' + folder.save(predict.class_map_png(classes, palette),
                                      f'{stem}-{run.slug}-pred.png')
                 + f'mIoU {percent(miou)} %</td>')
    cells.append('<td>' + folder.save(predict.class_map_png(wrong, ERROR_PALETTE),
                                      f'{stem}-{run.slug}-error.png')
                 + f'{percent((wrong == WRONG).sum() / scored)} % wrong</td>')
  return '<tr>' + ''.join(cells) + '</tr>'


def write_examples(runs: list[Run], shown: Shown, output: str) -> str:
  """Writes the examples' panels into `output/examples/`; returns their table."""
  from input_pipeline import datasets
  config = runs[0].config
  palette = _padded(datasets.PALETTES[config.dataset][:config.num_classes])
  predicted = [run for run in runs if run.model is not None]
  folder = _Folder(output)
  head = ('<tr><th></th><th>image</th><th>ground truth</th>' + ''.join(
      f'<th>{html.escape(run.name)}: prediction</th><th>errors</th>' for run in predicted)
      + '</tr>')
  rows = [_row(rank, why, index, example, predicted, palette, folder)
          for rank, ((index, why), example) in enumerate(zip(shown.chosen,
                                                             shown.examples))]
  folder.remove_others()
  return f'<table class="examples">{head}{"".join(rows)}</table>'


def write_per_image(per_image: list[tuple[str, float]], path: str) -> str:
  """Every image's file name and mIoU, worst first; returns the file's name."""
  import csv
  import io
  from fanet_jax.progress import write_atomically
  rows = sorted(per_image, key=lambda row: (math.isnan(row[1]), row[1]))
  text = io.StringIO()
  writer = csv.writer(text)
  writer.writerow(['file_name', 'mIoU'])
  writer.writerows([name, '' if math.isnan(v) else f'{v:.6f}'] for name, v in rows)
  write_atomically(path, text.getvalue())
  return os.path.basename(path)
