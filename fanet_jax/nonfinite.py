"""Non-finite training steps: counted as they happen, and a run that keeps making
them is stopped before its next checkpoint, evaluation or log line.

The jitted step (`train_step.make_train_step`) never applies a non-finite loss or
gradient: it keeps the parameters, BatchNorm statistics and optimiser state, consumes
the batch and reports `skipped`. A lone overflow (one bad batch in 40k) then costs
one step, as `optax.apply_if_finite` would have it, while a run that has diverged
for good, or a model that cannot train on the data, makes nothing but skipped steps:
`SkippedSteps` stops it after `limit` in a row with an error that names the steps.
Parameters are only ever changed by finite updates, so every checkpoint and `best/`
state is one a finite step produced.

The flag of a step is read on the host one step late, after the next step has been
queued, so checking it never leaves the device idle; `flush()` reads the pending
flag at once (before a checkpoint, an evaluation or a log line).
"""
from typing import Any, Optional

import numpy as np

SKIPPED_KEY = 'skipped_steps'  # metrics.jsonl / progress bar: skipped steps so far


class NonFiniteError(RuntimeError):
  """`limit` consecutive training steps had a non-finite loss or gradient."""


class SkippedSteps:
  """Counts skipped (non-finite) steps and raises after `limit` in a row.

  Args:
    limit: consecutive skipped steps that stop the run (at least 1).
    total: skipped steps counted before this run resumed (from the metrics log).
  """

  def __init__(self, limit: int, total: int = 0):
    if limit < 1:
      raise ValueError(f'the limit of consecutive non-finite steps must be at least 1, '
                       f'got {limit}')
    self.limit = limit
    self.total = total
    self.consecutive = 0
    self._pending: Optional[tuple[int, Any]] = None

  def push(self, step: int, skipped: Any):
    """Records the `skipped` flag (a device scalar) of `step`, and reads the one
    pushed before it, which has finished by now or soon will."""
    self.flush()
    self._pending = (step, skipped)

  def flush(self):
    """Reads the pending flag.

    Raises:
      NonFiniteError: it made `limit` consecutive skipped steps.
    """
    if self._pending is None:
      return
    step, skipped = self._pending
    self._pending = None
    if not bool(np.asarray(skipped)):
      self.consecutive = 0
      return
    self.total += 1
    self.consecutive += 1
    if self.consecutive >= self.limit:
      first = step - self.consecutive + 1
      steps = f'step {step}' if first == step else f'steps {first}-{step}'
      raise NonFiniteError(
          f'training diverged: the loss or gradients were not finite in {steps} '
          f'({self.consecutive} in a row, max_nonfinite_steps={self.limit}); their '
          f'updates were skipped, so the parameters are still those of step '
          f'{first - 1}, and no checkpoint holds a non-finite value. Lower '
          'learning_rate, set grad_clip_norm or check the data, then rerun: the run '
          'resumes from its last checkpoint')
