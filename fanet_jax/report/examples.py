"""The per-image pass of the report and the choice of the examples it shows.

The first run (with a model and a readable split) predicts every image of the split
once (evaluate.per_image); each image gets its mIoU: the mean IoU over the classes
in its labels or its prediction (NaN if every pixel is ignored). With N examples
(at most the split's size) and k = round(N / 3) (at least 1), the page shows:
- the k images of lowest mIoU, worst first (ties: the earlier image first);
- the k images of highest mIoU, best first (ties: the later image first; fewer if
  N < 2k);
- the rest at random: the first of a permutation of the split drawn from the seed
  that are not among those, in the split's order (images without a mIoU only here).
The pass keeps the predictions of those only: two bounded heaps for the worst and
the best, and the first N images of the permutation (enough, since at most N of
them are among the worst and the best). The other runs predict the chosen images
only, unless they need the whole split for their scores.
"""
import dataclasses
import heapq
import math
from typing import Any, Callable, Optional

from fanet_jax.report.runs import Run, load_model, read_scores, results_scores


def image_miou(confusion) -> float:
  """An image's mean IoU over the classes in its labels or its prediction (NaN if
  none: every pixel ignored)."""
  from fanet_jax import metrics
  return metrics.metrics_from_confusion(confusion)['mIoU']


class Selection:
  """The examples shown, chosen while the images go by (`add`), holding what is kept
  of at most about 2 `count` of them."""

  def __init__(self, size: int, count: int, seed: int):
    import numpy as np
    self.count = min(count, size)
    self.extreme = min(max(1, round(self.count / 3)), self.count) if self.count else 0
    self._worst = []  # heap of (-mIoU, -index, kept): the `extreme` lowest (mIoU, index)
    self._best = []   # heap of (mIoU, index, kept): the 2 `extreme` highest
    order = np.random.default_rng(seed).permutation(size)[:self.count]
    self._order = [int(i) for i in order]
    self._drawn = dict.fromkeys(self._order)  # index -> kept, of the candidates

  def add(self, index: int, miou: float, kept: Any = None) -> None:
    """Image `index` (in the split's order) of mIoU `miou`, and what to keep of it
    if it is shown."""
    if index in self._drawn:
      self._drawn[index] = kept
    if math.isnan(miou) or not self.extreme:
      return
    for heap, item, size in ((self._worst, (-miou, -index, kept), self.extreme),
                             (self._best, (miou, index, kept), 2 * self.extreme)):
      if len(heap) < size:
        heapq.heappush(heap, item)
      else:
        heapq.heappushpop(heap, item)  # (mIoU, index) is unique: `kept` never compared

  def chosen(self) -> list[tuple[int, str, Any]]:
    """(index, why, kept) of the examples shown: worst, best, then random."""
    worst = [(-i, kept) for _, i, kept in sorted(self._worst, reverse=True)]
    taken = {i for i, _ in worst}
    best = [(i, kept) for _, i, kept in sorted(self._best, reverse=True)
            if i not in taken][:min(self.extreme, self.count - len(worst))]
    taken |= {i for i, _ in best}
    drawn = [i for i in self._order if i not in taken][:self.count - len(taken)]
    return ([(i, f'worst {k + 1}', kept) for k, (i, kept) in enumerate(worst)]
            + [(i, f'best {k + 1}', kept) for k, (i, kept) in enumerate(best)]
            + [(i, 'random', self._drawn[i]) for i in sorted(drawn)])


def choose_images(mious, count: int, seed: int) -> list[tuple[int, str]]:
  """(index, why) of the examples `Selection` shows of images of these mIoUs."""
  selection = Selection(len(mious), count, seed)
  for index, miou in enumerate(mious):
    selection.add(index, float(miou))
  return [(index, why) for index, why, _ in selection.chosen()]


@dataclasses.dataclass
class Shown:
  """What the examples section shows: chosen by `selector`'s per-image mIoUs."""
  selector: Run
  per_image: list   # (file name, mIoU) of every image of the split
  chosen: list      # (index, why)
  examples: list    # the source's example of each


def predict_split(run: Run, source, split: str,
                  on_image: Callable[[int, str, Any, float], None]) -> None:
  """`run`'s pass over the whole split: `on_image(index, file name, classes, mIoU)`
  of each image; the split's scores from the summed confusions where no JSON had
  them (as `python -m fanet_jax.evaluate --per-image` computes them)."""
  from tqdm import tqdm

  from fanet_jax import evaluate, predict
  from fanet_jax.tasks import segmentation
  print(f'{run.name}: evaluating the {split} split ({len(source)} images) with '
        f'{run.model.origin}')
  run.segmenter = run.segmenter or predict.Segmenter(run.model)
  total, nonfinite = 0, 0
  images = evaluate.per_image(run.model, source, run.segmenter)
  for index, (name, confusion, bad, classes) in enumerate(tqdm(
      images, total=len(source), desc=split, unit='image', dynamic_ncols=True)):
    total, nonfinite = total + confusion, nonfinite + bad
    on_image(index, name, classes, image_miou(confusion))
  if run.scores is None:
    names = source.class_names[:run.config.num_classes]
    run.scores = segmentation.scored(total, nonfinite, names,
                                     run.config.foreground_classes)
    run.scores['step'] = run.model.step
    run.scores_from = f'computed now from {run.model.origin}'


def choose_examples(run: Run, source, split: str, count: int, seed: int) -> Shown:
  """The first run's pass: every image's mIoU, the examples chosen, their
  predictions kept in `run.examples` (index -> (classes, mIoU))."""
  selection, per_image = Selection(len(source), count, seed), []

  def on_image(index, name, classes, miou):
    per_image.append((name, miou))
    selection.add(index, miou, (classes, miou))
  if count or run.scores is None:
    predict_split(run, source, split, on_image)
  chosen = selection.chosen()
  run.examples = {index: kept for index, _, kept in chosen}
  return Shown(run, per_image, [(index, why) for index, why, _ in chosen],
               [source[index] for index, _, _ in chosen])


def predict_chosen(run: Run, source, split: str, shown: Shown) -> None:
  """Another run's predictions of the chosen examples, in `run.examples`: from its
  pass over the whole split where it needs scores, else of those images only."""
  from fanet_jax import evaluate, predict
  wanted = {index for index, _ in shown.chosen}

  def on_image(index, name, classes, miou):
    if index in wanted:
      run.examples[index] = (classes, miou)
  if run.scores is None:
    predict_split(run, source, split, on_image)
    return
  if not shown.examples:
    return
  print(f'{run.name}: predicting {len(shown.examples)} examples')
  run.segmenter = run.segmenter or predict.Segmenter(run.model)
  for (index, _), (_, confusion, _, classes) in zip(
      shown.chosen, evaluate.per_image(run.model, shown.examples, run.segmenter)):
    run.examples[index] = (classes, image_miou(confusion))


def score_runs(runs: list[Run], split: str, count: int, seed: int) -> Optional[Shown]:
  """Loads each run's model and scores, and predicts what the page shows (`count`
  examples); None where no run has a model or the split cannot be read (noted in
  the runs)."""
  from fanet_jax import tasks
  from input_pipeline.errors import DataError
  for run in runs:
    load_model(run)
    read_scores(run, split)
  loaded = [run for run in runs if run.model is not None]
  if not loaded:
    return None
  try:
    source = tasks.create(loaded[0].config).load_sources((split,))[split]
  except DataError as e:  # e.g. a data set on another machine: the log still shows
    for run in loaded:
      results_scores(run, split, f'the {split} split cannot be read ({e})')
    return None
  shown = choose_examples(loaded[0], source, split, count, seed)
  for run in loaded[1:]:
    predict_chosen(run, source, split, shown)
  return shown
