"""What a run reports as it goes: a console progress bar and a JSON-lines log.

Only process 0 writes; the others construct disabled instances, so the training
loop needs no `if process_index == 0` around every call.
"""
import json
import os
import time
from typing import Optional

from tqdm import tqdm

from fanet_jax.nonfinite import SKIPPED_KEY

METRICS_FILE = 'metrics.jsonl'


def write_atomically(path: str, text: str):
  """Writes `text` to `path` through a temporary file and a rename: a reader (or a
  run killed midway) sees the old file or the new one, never part of one."""
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


class MetricWriter:
  """Appends `{"step": ..., **metrics}` lines to `workdir/metrics.jsonl`.

  On resume, lines from steps after the restored checkpoint (written by the run that
  died before it could checkpoint them) are dropped, so the log matches the state;
  so is a line the dying run left half-written. `last` holds the newest value of each
  key among the lines kept.

  Args:
    workdir: the run's directory.
    enabled: whether this process writes.
    resume_step: the step training resumes from (0 for a fresh run).
  """

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int = 0):
    self._file = None
    self.last = {}
    if not enabled:
      return
    path = os.path.join(workdir, METRICS_FILE)
    kept = []
    if os.path.exists(path):
      with open(path) as f:
        for line in f:
          try:
            record = json.loads(line) if line.strip() else None
          except json.JSONDecodeError:
            print(f'{path}: dropped a line cut short by an earlier run: {line[:60]!r}')
            continue
          if record is not None and record.get('step', 0) <= resume_step:
            kept.append(line if line.endswith('\n') else line + '\n')
            self.last.update(record)
    write_atomically(path, ''.join(kept))
    self._file = open(path, 'a')

  def write(self, step: int, metrics: dict):
    """Writes one line (no-op on processes other than 0)."""
    if self._file is None:
      return
    self._file.write(json.dumps({'step': step, 'time': time.time(), **metrics}) + '\n')
    self._file.flush()

  def close(self):
    if self._file is not None:
      self._file.close()
      self._file = None


class ProgressBar:
  """tqdm bar over training steps showing loss, images/second and the ETA.

  Args:
    start_step: the step the run starts (or resumes) from.
    num_steps: the last step.
    batch_size: global batch size, for images/second.
    enabled: whether this process shows the bar.
  """

  def __init__(self, start_step: int, num_steps: int, batch_size: int, *,
               enabled: bool = True):
    self._batch_size = batch_size
    self._bar = tqdm(total=num_steps, initial=start_step, unit='step',
                     dynamic_ncols=True, disable=not enabled, smoothing=0.1)
    self._last: Optional[tuple[int, float]] = None

  def update(self, step: int, scalars: Optional[dict] = None):
    """Moves the bar to `step`; with `scalars`, refreshes the shown figures."""
    self._bar.update(step - self._bar.n)
    if scalars is None:
      return
    now = time.perf_counter()
    shown = {'loss': f'{scalars["loss"]:.4f}', 'lr': f'{scalars["lr"]:.2e}'}
    if scalars.get(SKIPPED_KEY):
      shown['skipped'] = str(scalars[SKIPPED_KEY])
    if self._last is not None and step > self._last[0]:
      rate = (step - self._last[0]) * self._batch_size / (now - self._last[1])
      shown['img/s'] = f'{rate:.1f}'
    self._last = (step, now)
    self._bar.set_postfix(shown, refresh=True)

  def write(self, text: str):
    """Prints above the bar without breaking it (no-op when disabled)."""
    if not self._bar.disable:
      self._bar.write(text)

  def pause(self):
    """Forgets the throughput window (evaluation is not training time)."""
    self._last = None

  def close(self):
    self._bar.close()
