"""Checkpoints: a small wrapper around Orbax's `CheckpointManager`.

`workdir/checkpoints/<step>/` holds the train state and, when given, the grain data
iterator's position (one small file per process), so a resumed run sees exactly the
batches it would have seen. `workdir/best/<step>/` keeps the single best state (by
mIoU, or top-1 for classifiers) apart from the rolling ones. Restores always go into
an explicit abstract target, so the shardings of the restored arrays are the
caller's (a checkpoint written on 8 devices restores on 1).

What a killed run leaves behind is made good on the next start: Orbax's unfinished
`*.orbax-checkpoint-tmp-*` folders (a save that never committed) are removed, a
newest checkpoint that cannot be read is set aside (renamed `<step>.unreadable`) and
the one before it restored, and a best state saved before the kill is not saved
again when the resumed run evaluates the same step. A save that fails to write (a
full disk, a quota) ends the run with one `CheckpointError` line naming the step, the
reason and the newest complete checkpoint, after removing the partial files.
"""
import contextlib
import math
import os
import re
import shutil
from typing import Any, Optional

import grain.python as grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

TMP_MARK = '.orbax-checkpoint-tmp'
UNREADABLE_SUFFIX = '.unreadable'


class CheckpointError(RuntimeError):
  """No checkpoint of a run could be restored, or one could not be written."""


def remove_unfinished_saves(directory: str) -> list[str]:
  """Deletes the temporary folders of saves that never committed.

  Returns:
    The paths removed.
  """
  removed = []
  if os.path.isdir(directory):
    for name in sorted(os.listdir(directory)):
      if TMP_MARK in name:
        path = os.path.join(directory, name)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
  return removed


def _first_line(error: Exception) -> str:
  text = str(error).strip().splitlines()
  return f'{type(error).__name__}: {text[0] if text else ""}'.rstrip(': ')


def _write_failure(error: Exception) -> str:
  """Why a write failed, in the operating system's words where it gave any.

  Orbax's Python writes raise OSError; its array writes (tensorstore) raise a
  ValueError of one long line that ends in `[os_error_code='28']`.
  """
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  code = re.search(r"os_error_code='(\d+)'", str(error))
  if code:
    return os.strerror(int(code.group(1)))
  return _first_line(error)[:200]


def saved_steps(directory: str) -> list[int]:
  """Steps with a finished save in a checkpoint folder, read from the disk."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def state_path(workdir: str, which: str = 'best') -> tuple[int, str]:
  """(step, path of the saved train state) of a run's checkpoint `which`: 'best'
  (the best state, or the newest rolling one of a run that never evaluated),
  'latest' (the newest rolling one) or a step number.

  Raises:
    CheckpointError: no such checkpoint (the steps there are named).
  """
  best = saved_steps(os.path.join(workdir, 'best'))
  rolling = saved_steps(os.path.join(workdir, 'checkpoints'))
  if which == 'best' and best:
    return best[-1], os.path.join(workdir, 'best', str(best[-1]), 'state')
  if which in ('best', 'latest') and rolling:
    return rolling[-1], os.path.join(workdir, 'checkpoints', str(rolling[-1]), 'state')
  if which.isdigit():
    for folder, found in (('checkpoints', rolling), ('best', best)):
      if int(which) in found:
        return int(which), os.path.join(workdir, folder, which, 'state')
  raise CheckpointError(f'{workdir}: no checkpoint {which!r} (steps in checkpoints/: '
                        f'{rolling or "none"}, in best/: {best or "none"})')


class Checkpointer:
  """Rolling checkpoints every `save_every` steps, the last `keep` kept, plus the best.

  Args:
    workdir: the experiment's working directory.
    save_every: save interval in steps (a forced save ignores it).
    keep: how many rolling checkpoints to keep.
    best_metric: the evaluation metric (higher is better) that picks the best state.
  """

  def __init__(self, workdir: str, *, save_every: int, keep: int,
               best_metric: str = 'mIoU'):
    self._best_metric = best_metric
    workdir = os.path.abspath(workdir)
    self._workdir = workdir
    self._directory = os.path.join(workdir, 'checkpoints')
    self._started = None  # the step of the newest save started
    if jax.process_index() == 0:
      for folder in ('checkpoints', 'best'):
        for path in remove_unfinished_saves(os.path.join(workdir, folder)):
          logging.info('Removed the unfinished save %s', path)
    self._manager = ocp.CheckpointManager(
        os.path.join(workdir, 'checkpoints'),
        options=ocp.CheckpointManagerOptions(
            save_interval_steps=save_every, max_to_keep=keep, create=True))
    self._best = ocp.CheckpointManager(
        os.path.join(workdir, 'best'),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda m: m[best_metric], best_mode='max', create=True))

  def latest_step(self) -> Optional[int]:
    """The newest rolling checkpoint's step, or None."""
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_iterator: Optional[Any] = None, *,
           force: bool = False) -> bool:
    """Saves `state` (and the data position) if `step` is due or `force` is set.

    Returns:
      Whether a checkpoint was started (saving runs in the background).
    """
    items = {'state': ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items['data'] = grain.PyGrainCheckpointSave(data_iterator)
    with self._writing():  # also where the previous save's failure surfaces
      started = self._manager.save(step, args=ocp.args.Composite(**items), force=force)
    if started:
      self._started = step
    return started

  def save_now(self, step: int, state: Any, data_iterator: Optional[Any] = None):
    """Saves at once, unless `step` is already saved; waits until it is on disk.

    For exits (pre-emption, Ctrl-C), where the run must not end before the save does.
    """
    if self._manager.latest_step() != step:
      self.save(step, state, data_iterator, force=True)
    self.close()
    if jax.process_count() > 1:  # no process exits before every one has saved
      multihost_utils.sync_global_devices(f'saved step {step} to stop')

  def restore(self, abstract_state: Any, data_iterator: Optional[Any] = None,
              step: Optional[int] = None) -> Any:
    """Restores the state of `step` (default: the newest readable one) into
    `abstract_state`'s shapes, dtypes and shardings; moves `data_iterator` to the
    saved position if given.

    Without `step`, a checkpoint that fails to restore (truncated, corrupted) is
    renamed `<step>.unreadable`, one line says so, and the next older one is tried.

    Raises:
      CheckpointError: no rolling checkpoint could be restored.
    """
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items['data'] = grain.PyGrainCheckpointRestore(data_iterator)
    if step is not None:
      return self._manager.restore(step, args=ocp.args.Composite(**items))['state']
    for candidate in sorted(self._manager.all_steps(), reverse=True):
      if data_iterator is not None:
        self._check_process_count(candidate)
      try:
        return self._manager.restore(candidate, args=ocp.args.Composite(**items))['state']
      except Exception as e:  # pylint: disable=broad-except  (any unreadable file)
        self._set_aside(candidate, e)
    raise CheckpointError(f'{self._directory}: no checkpoint could be restored (each '
                          f'was renamed *{UNREADABLE_SUFFIX}); start again with a new '
                          '--workdir')

  def _check_process_count(self, step: int):
    """Refuses a checkpoint whose data-iterator positions were saved by another
    number of processes (grain saves one per process, `process_<i>-of-<n>.json`):
    it is readable, but not by this run.

    Raises:
      CheckpointError: naming both process counts.
    """
    folder = os.path.join(self._directory, str(step), 'data')
    names = os.listdir(folder) if os.path.isdir(folder) else []
    counts = {int(match.group(1)) for match in
              (re.fullmatch(r'process_\d+-of-(\d+)\.json', name) for name in names)
              if match}
    if len(counts) == 1 and counts != {jax.process_count()}:
      raise CheckpointError(
          f'the checkpoint at step {step} in {self._directory} was written by '
          f'{counts.pop()} processes and this run has {jax.process_count()}: resume it '
          'with as many processes (each saved its own position in the data)')

  def _set_aside(self, step: int, error: Exception):
    """Renames an unreadable step folder so that Orbax no longer lists it."""
    path = os.path.join(self._directory, str(step))
    if jax.process_index() == 0:
      print(f'The checkpoint at step {step} in {self._directory} cannot be read '
            f'({_first_line(error)}); set aside as {path}{UNREADABLE_SUFFIX}, trying '
            'the previous one')
      os.replace(path, path + UNREADABLE_SUFFIX)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'set aside checkpoint {step}')
    self._manager.reload()

  def save_best(self, step: int, state: Any, metrics: dict) -> bool:
    """Keeps `state` in `best/` if its best metric beats the stored best.

    A non-finite metric is never a candidate (Orbax would rank NaN as a value).

    Returns:
      Whether the state was offered to `best/`.
    """
    value = float(metrics[self._best_metric])
    if not math.isfinite(value):
      return False
    if step in self._best.all_steps():
      # Saved before the run was killed, and evaluated again after resuming from an
      # older rolling checkpoint: the same state (training is deterministic).
      return True
    self._started = step
    with self._writing():
      return self._best.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state)), metrics={self._best_metric: value},
          force=True)

  def due(self, step: int) -> bool:
    """Whether `save(step, ...)` without `force` would write a checkpoint."""
    return self._manager.should_save(step)

  def best_step(self) -> Optional[int]:
    """Step of the best checkpoint, or None."""
    return self._best.best_step()

  def restore_best(self, abstract_state: Any) -> Any:
    """Restores the best state into `abstract_state`."""
    return self._best.restore(self._best.best_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))['state']

  def wait(self):
    """Blocks until background saves are on disk."""
    with self._writing():
      self._manager.wait_until_finished()
      self._best.wait_until_finished()

  def close(self):
    """Waits for pending saves and releases the managers."""
    with self._writing():
      self._manager.close()
      self._best.close()

  @contextlib.contextmanager
  def _writing(self):
    """Turns a failed save (raised when it is started or waited for) into one
    `CheckpointError` line, after removing what the save left unfinished."""
    try:
      yield
    except Exception as error:  # pylint: disable=broad-except  (any failed write)
      raise self._save_failed(error) from error

  def _save_failed(self, error: Exception) -> CheckpointError:
    for manager in (self._manager, self._best):
      try:
        manager.close()
      except Exception:  # pylint: disable=broad-except  (the same failure again)
        pass
    if jax.process_index() == 0:
      for folder in (self._directory, os.path.join(self._workdir, 'best')):
        remove_unfinished_saves(folder)
    free = shutil.disk_usage(self._workdir).free / 2**20
    steps = saved_steps(self._directory)
    newest = (f'the newest complete checkpoint is step {steps[-1]}' if steps else
              'no complete checkpoint is left')
    return CheckpointError(
        f'saving the checkpoint of step {self._started} in {self._workdir} failed '
        f'({_write_failure(error)}; {free:.0f} MiB free there); its partial files were '
        f'removed and {newest}. Make room, then run the same command again')


def abstract_like(tree: Any) -> Any:
  """Shape/dtype/sharding structs of a pytree of arrays (a restore target)."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
