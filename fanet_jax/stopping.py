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

The run then ends with `Stopped`, whose `exit_code` tells a scheduler what happened:
75 (EX_TEMPFAIL, "try again later") after SIGTERM, so that a SLURM script can requeue
the job (scripts/slurm_imagenet.sh), and 130 (128 + SIGINT, the shell's code for
Ctrl-C) after Ctrl-C, which nothing requeues. The handlers are in place while the
loop runs; before it (preparing data, compiling) the signals keep their default
effect, SIGTERM ending the process and Ctrl-C exiting 130 through launch.py: no step
of this launch has run, so nothing is lost.
"""
import signal
import sys
from typing import Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

_NAMES = {signal.SIGTERM: 'SIGTERM', signal.SIGINT: 'SIGINT'}
EXIT_PREEMPTED = 75
EXIT_INTERRUPTED = 130


class Stopped(Exception):
  """The run stopped on a signal. `exit_code`: 75 after SIGTERM, 130 after Ctrl-C."""

  def __init__(self, message: str, signal_name: str):
    super().__init__(message)
    self.signal_name = signal_name
    self.exit_code = EXIT_PREEMPTED if signal_name == 'SIGTERM' else EXIT_INTERRUPTED


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
    """Whether every process should stop after `step`. Where it should, every
    process's `signal_name` names a signal one of them received (SIGTERM before
    SIGINT), so that all of them exit with the same code."""
    if jax.process_count() == 1:
      return self.requested
    if step % self._sync_every:
      return False
    received = {name: signum for signum, name in _NAMES.items()}
    signums = multihost_utils.process_allgather(
        np.int32(received.get(self.signal_name, 0)))
    if not np.any(signums):
      return False
    # SIGTERM is 15, SIGINT 2: a scheduler's notice wins, and the job is requeued.
    self.signal_name = _NAMES[signal.Signals(int(np.max(signums)))]
    return True

  def close(self):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}
