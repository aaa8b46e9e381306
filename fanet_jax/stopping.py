"""Stopping a run cleanly on SIGTERM or Ctrl-C, after a step every process agrees on.

SIGTERM (a scheduler's pre-emption notice) and the first Ctrl-C (SIGINT) only set a
flag that the loop reads between steps. The step in flight finishes first: its input
state was donated to it, so interrupting it would leave no state to save. The loop
then saves and exits. A second Ctrl-C gives up on saving and raises
KeyboardInterrupt at once; the newest checkpoint already on disk is where the next
run resumes.

With several processes each gets the signal at a slightly different step, but the
checkpoint is written by all of them together: `agreed(step)` all-gathers the flags
every `sync_every` steps (a tiny collective), so all stop after the same step.
"""
import signal
import sys
from typing import Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

_NAMES = {signal.SIGTERM: 'SIGTERM', signal.SIGINT: 'SIGINT'}


class StopRequest:
  """Installs the handlers on construction; `close()` puts the previous ones back."""

  def __init__(self, sync_every: int = 10):
    self.signal_name: Optional[str] = None  # of the first signal received
    self._sync_every = sync_every
    self._previous = {}
    for signum in _NAMES:
      try:
        self._previous[signum] = signal.signal(signum, self._handle)
      except ValueError:  # Not the main thread (e.g. inside some test runners).
        pass

  @property
  def requested(self) -> bool:
    return self.signal_name is not None

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.signal_name == 'SIGINT':
      raise KeyboardInterrupt  # the second Ctrl-C: quit without saving
    if self.signal_name is None:
      self.signal_name = _NAMES[signum]
      if signum == signal.SIGINT and jax.process_index() == 0:
        print('\nCtrl-C: saving a checkpoint after this step (Ctrl-C again to quit '
              'without saving)', file=sys.stderr, flush=True)

  def agreed(self, step: int) -> bool:
    """Whether every process should stop after `step`."""
    if jax.process_count() == 1:
      return self.requested
    if step % self._sync_every:
      return False
    flags = multihost_utils.process_allgather(np.int32(self.requested))
    return bool(np.any(flags))

  def close(self):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}
