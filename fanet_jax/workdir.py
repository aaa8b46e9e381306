"""One run per workdir, and a resumed run with the configuration it was started with.

`lock(workdir)` holds an exclusive `flock` on `workdir/.lock` for the life of the run
(process 0 only): a second run started in the same folder stops at once, instead of
rewriting the first one's logs and deleting its checkpoints. The kernel drops the lock
when the process dies, however it dies, so a killed run never leaves a stale lock.

`check_resume(saved, config)` compares the configuration of the run being resumed
(`workdir/config.json`) with the new one. Keys that only change how long the run is,
how often it reports or saves, or where its data lives may change (`MAY_CHANGE`);
anything else (model, data, classes, recipe) must be allowed by name with
`allow_config_change`, or the run refuses with the differences listed.
"""
import contextlib
import fcntl
import json
import os
from typing import Iterator

from fanet_jax.config import Config, ConfigError, to_json

LOCK_FILE = '.lock'
CONFIG_FILE = 'config.json'
MAY_CHANGE = frozenset({
    'num_steps', 'contour_steps', 'eval_every', 'checkpoint_every', 'keep_checkpoints',
    'log_every', 'eval_batch_size', 'eval_mode', 'eval_crop', 'eval_stride',
    'eval_tta_scales',    'worker_count', 'max_nonfinite_steps', 'data_dir', 'manual_dir',
    'allow_config_change'})


class WorkdirBusyError(RuntimeError):
  """Another run holds the workdir."""


@contextlib.contextmanager
def lock(workdir: str, enabled: bool = True) -> Iterator[None]:
  """Holds `workdir`'s lock for the duration of the `with` block.

  Raises:
    WorkdirBusyError: another process holds it (its pid is named).
  """
  if not enabled:
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  with open(path, 'a+') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or 'unknown'
      raise WorkdirBusyError(
          f'{workdir} is in use by another run (pid {holder}); wait for it to end, '
          'or use another --workdir') from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def differences(saved: dict, config: Config) -> dict:
  """key -> (saved value, new value) of the keys whose values differ."""
  current = json.loads(to_json(config))
  return {key: (saved.get(key), value) for key, value in current.items()
          if saved.get(key) != value}


def check_resume(saved: dict, config: Config, workdir: str) -> None:
  """Refuses to resume a run whose configuration changed in a key that may not change.

  Raises:
    ConfigError: naming each changed key with its old and new value.
  """
  allowed = MAY_CHANGE | set(config.allow_config_change)
  refused = {key: change for key, change in differences(saved, config).items()
             if key not in allowed}
  if refused:
    listed = ', '.join(f'{key} {old!r} -> {new!r}' for key, (old, new) in refused.items())
    raise ConfigError(
        f'config differs from the run in {workdir}: {listed}; use a new --workdir, or '
        f'--set allow_config_change={tuple(refused)!r} to resume with the change')
